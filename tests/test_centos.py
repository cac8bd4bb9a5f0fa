"""CentOS 6.4, proven offline: it cannot boot here (no CentOS mirror or vault is
reachable), so these tests check everything short of a boot with the real tools.
packer validate (both builders), vagrant validate and nginx -t run in test_render.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from goldbox import PROJECT_ROOT
from goldbox.config import load_config
from goldbox.image import prepare_wheelhouse
from goldbox.keys import insecure_public_key
from goldbox.render import render_platform
from tests.py27 import python27

CONFIG = load_config()
CENTOS = CONFIG.platform("centos-6.4")
EXPECTED_DRY_RUN = PROJECT_ROOT / "tests" / "data" / "centos-6.4-dry-run.txt"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    return render_platform(CONFIG, CENTOS, tmp_path_factory.mktemp("centos"))


def test_kickstart_passes_ksvalidator_for_rhel6(rendered):
    ksvalidator = Path(sys.executable).parent / "ksvalidator"
    result = subprocess.run([str(ksvalidator), "-v", "RHEL6", str(rendered.answer_file)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ksvalidator_rejects_a_broken_kickstart(rendered, tmp_path):
    broken = tmp_path / "ks.cfg"
    broken.write_text(rendered.answer_file.read_text().replace("autopart", "autopart --bogus"))
    ksvalidator = Path(sys.executable).parent / "ksvalidator"
    result = subprocess.run([str(ksvalidator), "-v", "RHEL6", str(broken)],
                            capture_output=True, text=True, check=False)
    assert result.returncode != 0


def test_kickstart_prepares_vagrant_and_the_vault(rendered):
    text = rendered.answer_file.read_text()
    assert insecure_public_key() in text
    assert "Defaults:vagrant !requiretty" in text
    assert "vagrant ALL=(ALL) NOPASSWD: ALL" in text
    assert "baseurl=http://vault.centos.org/6.4/os/$basearch/" in text
    assert "baseurl=http://vault.centos.org/6.4/updates/$basearch/" in text
    assert "selinux --enforcing" in text


def test_sysv_init_script_is_valid_shell_with_chkconfig_header(rendered):
    assert rendered.uwsgi_unit.name == "goldbox-uwsgi"
    subprocess.run(["bash", "-n", str(rendered.uwsgi_unit)], check=True)
    text = rendered.uwsgi_unit.read_text()
    assert "# chkconfig:   2345 85 15" in text
    assert "USER=goldbox" in text
    # uWSGI writes its pidfile as root, in root's /var/run, then drops to the app user:
    # the app user cannot point root's killproc at another process.
    assert "PIDFILE=/var/run/$NAME.pid" in text
    assert '--uid "$USER" --gid "$USER"' in text and '--pidfile "$PIDFILE"' in text
    assert "runuser" not in text and "RUNDIR" not in text


def test_el6_dry_run_under_python_2_7_matches_the_pinned_commands(rendered):
    result = subprocess.run([*python27(CONFIG.cache_dir), "-m", "provision",
                             str(rendered.plan), "--dry-run"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    actions = lines[lines.index("==> repositories"):lines.index(
        next(line for line in lines if line.startswith("step ")))]
    # A change to this list is a change to what CentOS guests run: review it, then
    # regenerate tests/data/centos-6.4-dry-run.txt. `make -j` follows the CPU count of
    # the machine provision runs on (here, the test host's), so the file says {cpus}.
    expected = EXPECTED_DRY_RUN.read_text().replace("{cpus}", str(os.cpu_count()))
    assert actions == expected.splitlines()


def test_el6_wheelhouse_resolves_for_python_2_7_with_hashes(tmp_path):
    files = prepare_wheelhouse(CONFIG, CENTOS, tmp_path, log=None)
    names = sorted(path.name for path in files)
    assert "Flask-1.1.4-py2.py3-none-any.whl" in names
    assert "MarkupSafe-1.1.1-cp27-cp27mu-manylinux1_x86_64.whl" in names
    assert "uwsgi-2.0.21.tar.gz" in names
    assert {"pip-20.3.4-py2.py3-none-any.whl", "setuptools-44.1.1-py2.py3-none-any.whl",
            "virtualenv-16.7.12-py2.py3-none-any.whl"} <= set(names)
    # The plan's pip bootstrap names a wheel that the wheelhouse really holds.
    assert Path(CENTOS.python.pip_bootstrap).name in names


def test_image_without_the_tarball_names_the_import_command(project_copy, tmp_path,
                                                           monkeypatch):
    """python.org is not reachable here: the build stops at its first phase, clearly."""
    from tests.conftest import run_invoke

    monkeypatch.setenv("GOLDBOX_CACHE", str(tmp_path / "cache"))
    result = run_invoke(project_copy, "image", "--platform", "centos-6.4")
    assert result.returncode == 1
    assert "phase 'artifacts' failed" in result.stderr
    assert "import a copy: invoke artifacts --platform centos-6.4 --import PATH" in result.stderr
    assert not (project_copy / "dist").exists()


def test_refresh_is_refused_where_there_is_no_base_disk(project_copy, tmp_path, monkeypatch):
    from tests.conftest import run_invoke

    monkeypatch.setenv("GOLDBOX_CACHE", str(tmp_path / "cache"))
    result = run_invoke(project_copy, "image", "--platform", "centos-6.4", "--refresh")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "goldbox: error: --refresh: centos-6.4 has no base disk to refresh (its source is "
        "iso; only debootstrap platforms have one)"]
    assert not (project_copy / "dist").exists() and not (tmp_path / "cache").exists()


def test_import_refuses_a_file_that_is_not_the_tarball(project_copy, tmp_path):
    from tests.conftest import run_invoke

    impostor = tmp_path / "Python-2.7.6.tgz"
    impostor.write_bytes(b"not python")
    result = run_invoke(project_copy, "artifacts", "--platform", "centos-6.4",
                        "--import", str(impostor))
    assert result.returncode == 1
    assert str(impostor) in result.stderr

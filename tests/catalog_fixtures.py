"""Helpers shared by the catalog tests: the real Vagrant CLI in a private VAGRANT_HOME,
`invoke catalog-serve` (a real nginx) on a free port of 127.0.0.1, a test CA made with
the real openssl, a teammate's folder, tokens made by `invoke catalog-token`, and the
`catalog` and `boxes_dir` fixtures (import catalog_fixture, boxes_dir_fixture into a
test module to use them)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.testca import make_test_ca  # noqa: F401 (the tests' CA, shared with bench)
from tests.boxes import make_box
from tests.conftest import run_invoke

QUIET = lambda line: None  # noqa: E731 (a progress callback that says nothing)


@pytest.fixture(name="catalog")
def catalog_fixture(tmp_path: Path) -> Path:
    """An empty catalog directory."""
    path = tmp_path / "catalog"
    path.mkdir()
    return path


@pytest.fixture(name="boxes_dir")
def boxes_dir_fixture(tmp_path: Path) -> Callable[..., Path]:
    """Build a test box of a version under tmp/dist/<version>/: boxes_dir(version) -> manifest."""
    def build(version: str, **options) -> Path:
        return make_box(tmp_path / "dist" / version, version, **options)
    return build


def issue_token(project: Path, catalog: Path, name: str) -> str:
    """A teammate's read token, made by `invoke catalog-token add`."""
    result = run_invoke(project, "catalog-token", "add", name, "--catalog", str(catalog))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The one `goldbox: error:` line a failed command must print (exit 1)."""
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("goldbox: error: "), result.stderr
    return lines[0]


def team_folder(tmp_path: Path, box: str, ca: Path) -> Path:
    """A teammate's project folder whose Vagrantfile names `box` and trusts the test CA."""
    team = tmp_path / "team"
    team.mkdir()
    (team / "Vagrantfile").write_text(
        f'Vagrant.configure("2") do |config|\n  config.vm.box = "{box}"\n'
        f'  config.vm.box_download_ca_cert = "{ca}"\nend\n')
    return team


def nginx_accepts(host: Path, include: Path) -> None:
    """`nginx -t` of a host's nginx.conf (in the new folder `host`) that includes
    `include`, as /etc/nginx/conf.d/ would."""
    host.mkdir()
    (host / "nginx.conf").write_text(
        f"pid {host}/nginx.pid;\nerror_log {host}/error.log;\nevents {{}}\n"
        f"http {{\n include {include};\n}}\n")
    checked = subprocess.run(["nginx", "-t", "-p", f"{host}/", "-c", str(host / "nginx.conf"),
                              "-e", str(host / "error.log")],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr


def vagrant(home: Path, *args: str, check: bool = True,
            env: dict[str, str] | None = None,
            command: tuple[str, ...] = ("vagrant",)) -> subprocess.CompletedProcess:
    """Stock vagrant 2.3.4 (or `command`, e.g. vagrant_2_4()) with its own VAGRANT_HOME
    (nothing of the host's)."""
    full_env = {**os.environ, "VAGRANT_HOME": str(home), "VAGRANT_CHECKPOINT_DISABLE": "1",
                **(env or {})}
    for inherited in ("VAGRANT_CLOUD_TOKEN", "VAGRANT_SERVER_URL",
                      "VAGRANT_SERVER_ACCESS_TOKEN_BY_URL"):
        if inherited not in (env or {}):
            full_env.pop(inherited, None)
    home.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([*command, *args], cwd=home.parent, env=full_env,
                            capture_output=True, text=True, timeout=300, check=False)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def installed(home: Path, command: tuple[str, ...] = ("vagrant",)) -> list[str]:
    return vagrant(home, "box", "list", command=command).stdout.strip().splitlines()


# Vagrant >= 2.4 (what a teammate on a Mac or on HashiCorp's packages runs: it reads
# `architecture` and `default_architecture`) is not packaged for Debian, whose vagrant
# stays 2.3.4, and its source cannot be fetched by CI here. A tree of its source (e.g.
# `git archive v2.4.9` of hashicorp/vagrant) runs as a whole CLI with Debian's ruby and the
# gems Debian's vagrant package installs (no stub, no patch): give its folder here.
VAGRANT_2_4_SOURCE = "GOLDBOX_VAGRANT_2_4_SOURCE"


def vagrant_2_4() -> tuple[str, ...]:
    """The command that runs Vagrant 2.4's CLI from $GOLDBOX_VAGRANT_2_4_SOURCE; the test
    is skipped, saying why, when that is not set."""
    source = os.environ.get(VAGRANT_2_4_SOURCE)
    if not source:
        pytest.skip(f"Vagrant >= 2.4 is not packaged for Debian and CI cannot fetch its "
                    f"source: set {VAGRANT_2_4_SOURCE} to a source tree of it to run this")
    executable = Path(source) / "bin" / "vagrant"
    assert executable.is_file(), f"{VAGRANT_2_4_SOURCE}={source}: no bin/vagrant in it"
    # Its own lib/ first: Debian's vagrant 2.3.4 gem would be loaded instead.
    command = ("env", f"RUBYLIB={Path(source) / 'lib'}", "ruby", str(executable))
    version = subprocess.run([*command, "--version"], capture_output=True, text=True,
                             check=False, env={**os.environ, "VAGRANT_CHECKPOINT_DISABLE": "1"})
    assert version.stdout.startswith("Vagrant 2.4."), version.stdout + version.stderr
    return command


def let_workers_in(catalog: Path) -> None:
    """As root, catalog-serve runs nginx's workers as www-data, who must reach the
    catalog: pytest's own temporary folders are 0700, so give others the right to enter
    them (x only) as a team's /srv would. Nothing outside the temporary folder changes."""
    temporary = Path(tempfile.gettempdir()).resolve()
    for folder in [catalog.resolve(), *catalog.resolve().parents]:
        if temporary in folder.parents:
            folder.chmod(folder.stat().st_mode | 0o001)


@contextlib.contextmanager
def serving(project: Path, catalog: Path, *options: str,
            wrapper: tuple[str, ...] = ()) -> Iterator[str]:
    """`invoke catalog-serve` of `catalog` on a free port (with `options`, e.g. --cert F
    --key F); yields its base URL. `wrapper` runs it inside something, e.g. `ip netns
    exec NAME` (the e2e's network namespace)."""
    if os.geteuid() == 0:
        let_workers_in(catalog)
    invoke = Path(sys.executable).parent / "invoke"
    server = subprocess.Popen(
        [*wrapper, str(invoke), "catalog-serve", "--catalog", str(catalog), "--port", "0",
         *options],
        cwd=project, env={**os.environ, "PYTHONUNBUFFERED": "1"}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = server.stdout.readline()
        scheme = "https" if "--cert" in options else "http"
        assert first.startswith(f"serving {catalog} at {scheme}://127.0.0.1:"), (
            first + server.stderr.read() if server.poll() is not None else first)
        yield first.split(" at ")[1].split()[0]
    finally:
        server.terminate()
        server.wait(timeout=30)
        server.stdout.close()
        server.stderr.close()


def set_catalog_keys(project: Path, **keys: str) -> None:
    """Add `keys` to the [catalog] table of a project copy's goldbox.toml."""
    toml = project / "goldbox.toml"
    lines = "".join(f'{key} = "{value}"\n' for key, value in keys.items())
    toml.write_text(toml.read_text().replace("[catalog]\n", "[catalog]\n" + lines, 1))

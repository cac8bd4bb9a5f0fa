"""The served stack's sandbox, scored offline by systemd's own `systemd-analyze security`
on the rendered units (the host's systemd 252 is the guest's, Debian 12's)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from goldbox.config import load_config
from goldbox.plan import NGINX_DROPIN_PATH
from goldbox.render import render_platform
from tests.test_config import break_file

CONFIG = load_config()
DEBIAN = CONFIG.platform("debian-12")
# Debian 12's own nginx.service, from the nginx package the guest installs too.
NGINX_UNIT = Path("/lib/systemd/system/nginx.service")
UWSGI_MAXIMUM = 2.0

pytestmark = pytest.mark.skipif(not shutil.which("systemd-analyze"),
                                reason="needs systemd-analyze (package systemd)")


def exposure(unit: str, root: Path) -> float:
    """systemd's "Overall exposure level" of `unit` as found under `root`; any directive
    this systemd does not know fails the test (it would be ignored in the guest too)."""
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", f"--root={root}",
                             "--no-pager", unit], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    unknown = [line for line in result.stderr.splitlines() if "Unknown" in line
               or "ignoring" in line]
    assert unknown == [], unknown
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-500:]
    return float(match.group(1))


def install_units(root: Path, units: dict[str, str]) -> Path:
    """Lay `units` (path under /etc/systemd/system -> text) out under `root`."""
    for relative, text in units.items():
        path = root / "etc/systemd/system" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def uwsgi_exposure(rendered, root: Path) -> float:
    install_units(root, {"goldbox-uwsgi.service": rendered.uwsgi_unit.read_text()})
    return exposure("goldbox-uwsgi.service", root)


def test_uwsgi_unit_on_its_unix_socket_is_safe(tmp_path):
    rendered = render_platform(CONFIG, DEBIAN, tmp_path / "build")
    assert "RestrictAddressFamilies=AF_UNIX\n" in rendered.uwsgi_unit.read_text()
    figure = uwsgi_exposure(rendered, tmp_path / "root")
    print(f"goldbox-uwsgi.service (unix socket): {figure}")
    assert figure <= UWSGI_MAXIMUM


def test_uwsgi_unit_with_the_tcp_option_is_safe(project_copy, tmp_path):
    break_file(project_copy, "goldbox.toml", 'uwsgi_socket = "unix"', 'uwsgi_socket = "tcp"')
    config = load_config(project_copy)
    rendered = render_platform(config, config.platform("debian-12"), tmp_path / "build")
    assert "AF_INET" in rendered.uwsgi_unit.read_text()
    assert "socket = 127.0.0.1:8080" in rendered.uwsgi_ini.read_text()
    assert "server 127.0.0.1:8080;" in rendered.nginx_conf.read_text()
    figure = uwsgi_exposure(rendered, tmp_path / "root")
    print(f"goldbox-uwsgi.service (tcp): {figure}")
    assert figure <= UWSGI_MAXIMUM


def test_the_unhardened_unit_scores_what_the_readme_says(tmp_path):
    """The figure this replaces: a unit with User= and Group= only (README, Security)."""
    text = render_platform(CONFIG, DEBIAN, tmp_path / "build").uwsgi_unit.read_text()
    service = text[text.index("[Service]"):text.index("RestartSec=")]
    bare = text[:text.index("[Service]")] + service + "\n[Install]\nWantedBy=multi-user.target\n"
    install_units(tmp_path / "root", {"goldbox-uwsgi.service": bare})
    assert exposure("goldbox-uwsgi.service", tmp_path / "root") == 9.2


@pytest.mark.skipif(not NGINX_UNIT.is_file(), reason="needs Debian's nginx package")
def test_nginx_drop_in_lowers_its_exposure(tmp_path):
    rendered = render_platform(CONFIG, DEBIAN, tmp_path / "build")
    plan_dropin = str(Path(NGINX_DROPIN_PATH).relative_to("/etc/systemd/system"))
    before = exposure("nginx.service", install_units(
        tmp_path / "before", {"nginx.service": NGINX_UNIT.read_text()}))
    after = exposure("nginx.service", install_units(
        tmp_path / "after", {"nginx.service": NGINX_UNIT.read_text(),
                             plan_dropin: rendered.nginx_dropin.read_text()}))
    print(f"nginx.service: {before} before, {after} with the drop-in")
    assert after < before
    assert after <= 3.0


def test_sysv_platform_has_no_systemd_drop_in(tmp_path):
    rendered = render_platform(CONFIG, CONFIG.platform("centos-6.4"), tmp_path)
    assert rendered.nginx_dropin is None

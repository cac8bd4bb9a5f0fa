"""The served stack's sandbox: the hardening directives goldbox renders into the units, and
those units scored offline by systemd's own `systemd-analyze security` (the host's systemd
252 is the guest's, Debian 12's)."""

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


def service_directives(unit_text: str) -> dict[str, str]:
    """The [Service] section of a rendered unit as systemd reads it: key -> value, with
    comments and blank lines left out (a repeated key would be a rendering error)."""
    section = unit_text[unit_text.index("[Service]\n") + len("[Service]\n"):]
    section = section[:section.index("\n[")] if "\n[" in section else section
    pairs = [line.split("=", 1) for line in section.splitlines()
             if line and not line.startswith("#")]
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), keys
    return dict(pairs)


# What docs/security.md promises of goldbox-uwsgi.service, whatever socket it listens on.
UWSGI_CONFINEMENT = {
    "NoNewPrivileges": "yes", "CapabilityBoundingSet": "", "AmbientCapabilities": "",
    "RestrictSUIDSGID": "yes", "PrivateDevices": "yes", "ProtectSystem": "strict",
    "ProtectHome": "yes", "PrivateTmp": "yes", "ProtectProc": "invisible",
    "RestrictNamespaces": "yes", "RestrictRealtime": "yes", "MemoryDenyWriteExecute": "yes",
    "SystemCallFilter": "@system-service", "UMask": "0027",
}


@pytest.mark.parametrize(("socket", "network"), [
    ("unix", {"PrivateNetwork": "yes", "IPAddressDeny": "any",
              "RestrictAddressFamilies": "AF_UNIX"}),
    ("tcp", {"IPAddressDeny": "any", "IPAddressAllow": "localhost"}),
])
def test_uwsgi_unit_confines_it_as_the_security_doc_says(project_copy, tmp_path, socket,
                                                          network):
    """goldbox's own output: the directives it writes into the unit (the exposure tests
    above only score them through systemd)."""
    break_file(project_copy, "goldbox.toml", 'uwsgi_socket = "unix"',
               f'uwsgi_socket = "{socket}"')
    config = load_config(project_copy)
    rendered = render_platform(config, config.platform("debian-12"), tmp_path / "build")
    directives = service_directives(rendered.uwsgi_unit.read_text())
    expected = {"User": config.project.app.user, "Group": config.project.app.user,
                **UWSGI_CONFINEMENT, **network}
    assert {key: directives.get(key) for key in expected} == expected
    if socket == "tcp":
        assert "PrivateNetwork" not in directives
        assert "AF_INET" in directives["RestrictAddressFamilies"]


def test_goldbox_hardening_is_what_lowers_the_uwsgi_score(tmp_path):
    """The same unit without goldbox's hardening (User= and Group= only) scores worse: the
    figure comes from the directives goldbox writes, not from systemd's defaults."""
    text = render_platform(CONFIG, DEBIAN, tmp_path / "build").uwsgi_unit.read_text()
    service = text[text.index("[Service]"):text.index("RestartSec=")]
    bare = text[:text.index("[Service]")] + service + "\n[Install]\nWantedBy=multi-user.target\n"
    install_units(tmp_path / "bare", {"goldbox-uwsgi.service": bare})
    install_units(tmp_path / "hardened", {"goldbox-uwsgi.service": text})
    before = exposure("goldbox-uwsgi.service", tmp_path / "bare")
    after = exposure("goldbox-uwsgi.service", tmp_path / "hardened")
    print(f"goldbox-uwsgi.service: {before} with User=/Group= only, {after} as rendered")
    assert after < before


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

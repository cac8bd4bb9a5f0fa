"""Every bad input stops before anything runs, with one line naming file, key and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from goldbox.config import load_config
from goldbox.errors import GoldboxError
from tests.conftest import run_invoke

DEBIAN = "platforms/debian-12.toml"
SHA = load_config().platforms["debian-12"].python.sha256  # whatever the pin is

# (case, file, text to replace, replacement, expected error line)
BAD_INPUTS = [
    ("unknown key", "goldbox.toml", 'name = "goldbox-flask"',
     'name = "goldbox-flask"\ncolour = "gold"',
     "goldbox.toml: unknown key 'box.colour' (allowed: default_platform, description, name, "
     "version)"),
    ("unknown nested platform key", DEBIAN, 'suite = "bookworm"', 'suite = "bookworm"\nflavour = 1',
     f"{DEBIAN}: unknown key 'source.flavour' (allowed: kernel_package, kind, mirror, suite)"),
    ("wrong type", "goldbox.toml", "uwsgi_processes = 2", 'uwsgi_processes = "two"',
     "goldbox.toml: app.uwsgi_processes = 'two': Input should be a valid integer"),
    ("out of range", "goldbox.toml", "host_http = 8088", "host_http = 70000",
     "goldbox.toml: ports.host_http = 70000: Input should be less than or equal to 65535"),
    ("unknown platform", "goldbox.toml", 'default_platform = "debian-13"',
     'default_platform = "ubuntu-24.04"',
     "goldbox.toml: box.default_platform = 'ubuntu-24.04': unknown platform (known: "),
    ("malformed version", "goldbox.toml", 'version = "0.1.0"', 'version = "0.1"',
     "goldbox.toml: box.version = '0.1': expected a semantic version MAJOR.MINOR.PATCH, "
     "e.g. 1.2.0"),
    ("missing sha256", DEBIAN, f'sha256 = "{SHA}"', "",
     f"{DEBIAN}: missing key 'python.sha256'"),
    ("malformed sha256", DEBIAN, f'sha256 = "{SHA}"', 'sha256 = "93e583f2"',
     f"{DEBIAN}: python.sha256 = '93e583f2': expected a sha256: 64 lowercase hex characters"),
    ("missing requirements file", DEBIAN, 'requirements = "requirements/py313.txt"',
     'requirements = "requirements/py399.txt"',
     f"{DEBIAN}: python.requirements = "),
    ("missing answer file", DEBIAN,
     'kind = "debootstrap"     # no ISO is needed: goldbox builds the base disk from the mirror\n'
     'suite = "bookworm"\nmirror = "http://deb.debian.org/debian"\n'
     'kernel_package = "linux-image-cloud-amd64"',
     f'kind = "iso"\nurl = "http://example.invalid/x.iso"\nchecksum = "sha256:{SHA}"\n'
     'answer_file = "packer/http/missing-ks.cfg.j2"\nboot_command = []',
     f"{DEBIAN}: source.answer_file = "),
    ("unknown source kind", DEBIAN, 'kind = "debootstrap"', 'kind = "netboot"',
     f"{DEBIAN}: source.kind = 'netboot': expected one of 'debootstrap', 'iso'"),
    ("unknown family", DEBIAN, 'family = "debian"', 'family = "arch"',
     f"{DEBIAN}: family = 'arch': Input should be 'debian' or 'el'"),
    ("catalog base_url not http", "goldbox.toml", 'location = "dist/catalog"',
     'location = "dist/catalog"\nbase_url = "boxes.example.org"',
     "goldbox.toml: catalog.base_url = 'boxes.example.org': expected the http:// or https:// "
     "URL the catalog directory is served under"),
    ("invalid TOML", "goldbox.toml", "[box]", "[box",
     "goldbox.toml: invalid TOML: "),
    # Paths and URLs are rendered unquoted into nginx, the unit, the init script, packer.
    ("shell in a guest path", "goldbox.toml", 'root = "/srv/goldbox/MyApplication"',
     'root = "/srv/my app; echo pwned"',
     "goldbox.toml: app.root = '/srv/my app; echo pwned': expected no whitespace, quotes, "
     "backticks, backslashes, ';' or '$' (it is rendered unquoted into configs and shell "
     "commands)"),
    ("newline in a guest path", "goldbox.toml", 'root = "/srv/goldbox/MyApplication"',
     'root = "/srv/app\\n}\\nserver {"',
     "goldbox.toml: app.root = '/srv/app\\n}\\nserver {': expected no whitespace"),
    ("quote in a platform path", DEBIAN, 'conf_path = "/etc/nginx/conf.d/goldbox.conf"',
     'conf_path = "/etc/nginx/conf.d/it\'s.conf"',
     f"{DEBIAN}: nginx.conf_path = \"/etc/nginx/conf.d/it's.conf\": expected no whitespace"),
    ("dollar in a URL", DEBIAN, 'mirror = "http://deb.debian.org/debian"',
     'mirror = "http://deb.debian.org/$(id)"',
     f"{DEBIAN}: source.mirror = 'http://deb.debian.org/$(id)': expected no whitespace"),
    ("backtick in a URL", "goldbox.toml", 'location = "dist/catalog"',
     'location = "dist/catalog"\nbase_url = "https://boxes.example.org/`id`"',
     "goldbox.toml: catalog.base_url = 'https://boxes.example.org/`id`': expected no "
     "whitespace"),
    ("unknown uwsgi socket kind", "goldbox.toml", 'uwsgi_socket = "unix"',
     'uwsgi_socket = "abstract"',
     "goldbox.toml: ports.uwsgi_socket = 'abstract': Input should be 'unix' or 'tcp'"),
    # Settings that contradict each other: one line naming both keys.
    ("uwsgi on nginx's port", "goldbox.toml", "uwsgi = 8080", "uwsgi = 80",
     "goldbox.toml: ports.uwsgi = 80 and ports.guest_http = 80: uWSGI (on TCP for "
     "centos-6.4) and nginx cannot listen on the same port in the guest"),
    ("nginx on sshd's port", "goldbox.toml", "guest_http = 80", "guest_http = 22",
     "goldbox.toml: ports.guest_http = 22: the guest's sshd listens there"),
    ("native bundle without debootstrap", "platforms/centos-6.4.toml",
     "native_bundle = false", "native_bundle = true",
     "platforms/centos-6.4.toml: python.native_bundle = true and source.kind = 'iso': the "
     "native build runs in a debootstrap chroot of the release; set native_bundle = false"),
    ("builder the source cannot feed", DEBIAN, 'builders = ["qemu"]',
     'builders = ["qemu", "virtualbox"]',
     f"{DEBIAN}: builders = ['qemu', 'virtualbox'] and source.kind = 'debootstrap': "
     "virtualbox cannot build from a debootstrap source (usable: qemu)"),
    ("VM disk smaller than the box's", "goldbox.toml", "cpus = 2", "cpus = 2\ndisk_gib = 3",
     "goldbox.toml: vm.disk_gib = 3 and platforms/centos-6.4.toml: its box's disk is 10 GiB, "
     "and a VM's disk can only be as large or larger"),
    ("unix socket under SysV", "platforms/centos-6.4.toml", 'uwsgi_socket = "tcp"', "",
     "platforms/centos-6.4.toml: service_manager = 'sysv' and goldbox.toml "
     "ports.uwsgi_socket = 'unix': goldbox serves uWSGI on TCP under SysV init"),
]


def break_file(root: Path, relative: str, old: str, new: str) -> None:
    path = root / relative
    text = path.read_text()
    assert old in text, f"test row out of date: {old!r} not in {relative}"
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(("case", "relative", "old", "new", "expected"), BAD_INPUTS,
                         ids=[row[0] for row in BAD_INPUTS])
def test_bad_input_stops_with_one_line(project_copy, case, relative, old, new, expected):
    break_file(project_copy, relative, old, new)
    with pytest.raises(GoldboxError) as caught:
        load_config(project_copy)
    message = str(caught.value)
    assert message.startswith(expected), message
    assert "\n" not in message


@pytest.mark.parametrize("row", [BAD_INPUTS[0], BAD_INPUTS[4], BAD_INPUTS[7],
                                 *(r for r in BAD_INPUTS if r[0] in (
                                     "shell in a guest path", "uwsgi on nginx's port"))],
                         ids=lambda row: row[0])
def test_bad_input_from_the_command_line(project_copy, row):
    """The task prints the same line, exits non-zero and renders nothing."""
    _, relative, old, new, expected = row
    break_file(project_copy, relative, old, new)
    result = run_invoke(project_copy, "render")
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"goldbox: error: {expected}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (project_copy / "build").exists()


def test_unknown_platform_option(project_copy):
    result = run_invoke(project_copy, "render", "--platform", "solaris-10")
    assert result.returncode == 1
    assert result.stderr.startswith("goldbox: error: --platform 'solaris-10': unknown platform")


def test_shipped_config_loads():
    config = load_config()
    assert config.project.box.default_platform == "debian-13"
    assert {"debian-13", "debian-12", "centos-6.4"} <= set(config.platforms)
    assert config.platforms["debian-12"].python.version == "3.13.15"


@pytest.mark.parametrize(("value", "expected"), [
    ("3", "goldbox: error: up --disk-gib = 3 and platforms/debian-13.toml: its box's disk is "
          "4 GiB, and a VM's disk can only be as large or larger"),
    ("big", "goldbox: error: up --disk-gib 'big': expected a whole number of GiB"),
])
def test_up_refuses_a_disk_it_cannot_give(project_copy, value, expected):
    result = run_invoke(project_copy, "up", "--platform", "debian-13", "--disk-gib", value)
    assert result.returncode == 1
    assert result.stderr.strip() == expected, result.stderr

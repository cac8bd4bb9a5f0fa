"""Every bad input stops before anything runs, with one line naming file, key and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from goldbox.config import load_config
from goldbox.errors import GoldboxError
from tests.conftest import run_invoke

DEBIAN = "platforms/debian-12.toml"
SHA = load_config().platforms["debian-12"].python.sha256  # whatever the pin is
GUEST_PATH_EXPECTED = ("expected an absolute path in the guest: '/'-separated components "
                       "of letters, digits, '.', '_' or '-' (no '.' or '..' component, no "
                       "'//')")
URL_EXPECTED = ("expected an http://, https://, ftp:// or file:// URL of letters, digits and "
                ". _ ~ % + , = : @ / - (no whitespace, quotes, backslashes or shell "
                "characters)")

# (case, file, text to replace, replacement, expected error line)
BAD_INPUTS = [
    ("unknown key", "goldbox.toml", 'name = "goldbox-flask"',
     'name = "goldbox-flask"\ncolour = "gold"',
     "goldbox.toml: unknown key 'box.colour' (allowed: default_platform, description, name, "
     "targets, version)"),
    ("unknown nested platform key", DEBIAN, 'suite = "bookworm"', 'suite = "bookworm"\nflavour = 1',
     f"{DEBIAN}: unknown key 'source.flavour' (allowed: kernel_package, kind, mirror, suite)"),
    ("wrong type", "goldbox.toml", "uwsgi_processes = 2", 'uwsgi_processes = "two"',
     "goldbox.toml: app.uwsgi_processes = 'two': expected a valid integer"),
    ("out of range", "goldbox.toml", "host_http = 8088", "host_http = 70000",
     "goldbox.toml: ports.host_http = 70000: expected less than or equal to 65535"),
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
     f"{DEBIAN}: family = 'arch': expected 'debian' or 'el'"),
    ("catalog base_url not http", "goldbox.toml", 'location = "dist/catalog"',
     'location = "dist/catalog"\nbase_url = "boxes.example.org"',
     "goldbox.toml: catalog.base_url = 'boxes.example.org': expected an http:// or https:// "
     "URL of letters, digits and . _ ~ % + , = : @ / - (no whitespace, quotes, backslashes "
     "or shell characters)"),
    ("invalid TOML", "goldbox.toml", "[box]", "[box",
     "goldbox.toml: invalid TOML: "),
    # Names, paths and URLs are rendered into nginx, the unit, the init script, packer's
    # HCL and inline shell, repo files: each is an allow-list matched in full.
    ("shell in a guest path", "goldbox.toml", 'root = "/srv/goldbox/MyApplication"',
     'root = "/srv/my app; echo pwned"',
     "goldbox.toml: app.root = '/srv/my app; echo pwned': " + GUEST_PATH_EXPECTED),
    ("shell operator in a guest path", "goldbox.toml", 'root = "/srv/goldbox/MyApplication"',
     'root = "/srv/x&&reboot"',
     "goldbox.toml: app.root = '/srv/x&&reboot': " + GUEST_PATH_EXPECTED),
    ("newline in a guest path", "goldbox.toml", 'root = "/srv/goldbox/MyApplication"',
     'root = "/srv/app\\n}\\nserver {"',
     "goldbox.toml: app.root = '/srv/app\\n}\\nserver {': " + GUEST_PATH_EXPECTED),
    ("trailing newline in a guest path", "goldbox.toml", 'root = "/srv/goldbox/MyApplication"',
     'root = "/srv/app\\n"', "goldbox.toml: app.root = '/srv/app\\n': " + GUEST_PATH_EXPECTED),
    ("dot-dot in a guest path", "goldbox.toml", 'root = "/srv/goldbox/MyApplication"',
     'root = "/srv/../etc"', "goldbox.toml: app.root = '/srv/../etc': " + GUEST_PATH_EXPECTED),
    ("double slash in a guest path", "goldbox.toml", 'root = "/srv/goldbox/MyApplication"',
     'root = "/srv//app"', "goldbox.toml: app.root = '/srv//app': " + GUEST_PATH_EXPECTED),
    ("relative guest path", DEBIAN, 'guest_python = "/usr/bin/python3"',
     'guest_python = "usr/bin/python3"',
     f"{DEBIAN}: guest_python = 'usr/bin/python3': " + GUEST_PATH_EXPECTED),
    ("quote in a platform path", DEBIAN, 'conf_path = "/etc/nginx/conf.d/goldbox.conf"',
     'conf_path = "/etc/nginx/conf.d/it\'s.conf"',
     f"{DEBIAN}: nginx.conf_path = \"/etc/nginx/conf.d/it's.conf\": " + GUEST_PATH_EXPECTED),
    ("shell in a path to remove", DEBIAN, 'remove = ["/etc/nginx/sites-enabled/default"]',
     'remove = ["/etc/nginx/sites-enabled/*"]',
     f"{DEBIAN}: nginx.remove[0] = '/etc/nginx/sites-enabled/*': " + GUEST_PATH_EXPECTED),
    ("trailing newline in a box name", "goldbox.toml", 'name = "goldbox-flask"',
     'name = "goldbox-flask\\n"',
     "goldbox.toml: box.name = 'goldbox-flask\\n': expected lowercase letters, digits, '.', "
     "'_' or '-'"),
    ("trailing newline in a version", "goldbox.toml", 'version = "0.1.0"',
     'version = "0.1.0\\n"',
     "goldbox.toml: box.version = '0.1.0\\n': expected a semantic version"),
    ("other script's digits in a version", "goldbox.toml", 'version = "0.1.0"',
     'version = "0.1.1\u0661"',
     "goldbox.toml: box.version = '0.1.1\u0661': expected a semantic version"),
    ("trailing newline in a sha256", DEBIAN, f'sha256 = "{SHA}"', f'sha256 = "{SHA}\\n"',
     f"{DEBIAN}: python.sha256 = '{SHA}\\n': expected a sha256"),
    ("trailing newline in a user", "goldbox.toml", 'user = "goldbox"', 'user = "goldbox\\n"',
     "goldbox.toml: app.user = 'goldbox\\n': expected a Unix user name"),
    ("trailing newline in a suite", DEBIAN, 'suite = "bookworm"', 'suite = "bookworm\\n"',
     f"{DEBIAN}: source.suite = 'bookworm\\n': expected lowercase letters"),
    ("dollar in a URL", DEBIAN, 'mirror = "http://deb.debian.org/debian"',
     'mirror = "http://deb.debian.org/$(id)"',
     f"{DEBIAN}: source.mirror = 'http://deb.debian.org/$(id)': " + URL_EXPECTED),
    ("shell operator in a URL", DEBIAN, 'mirror = "http://deb.debian.org/debian"',
     'mirror = "http://deb.debian.org/debian&&reboot"',
     f"{DEBIAN}: source.mirror = 'http://deb.debian.org/debian&&reboot': " + URL_EXPECTED),
    ("trailing newline in a URL", DEBIAN, 'mirror = "http://deb.debian.org/debian"',
     'mirror = "http://deb.debian.org/debian\\n"',
     f"{DEBIAN}: source.mirror = 'http://deb.debian.org/debian\\n': " + URL_EXPECTED),
    ("URL scheme not allowed", DEBIAN, 'mirror = "http://deb.debian.org/debian"',
     'mirror = "gopher://deb.debian.org/debian"',
     f"{DEBIAN}: source.mirror = 'gopher://deb.debian.org/debian': " + URL_EXPECTED),
    ("backtick in a URL", "goldbox.toml", 'location = "dist/catalog"',
     'location = "dist/catalog"\nbase_url = "https://boxes.example.org/`id`"',
     "goldbox.toml: catalog.base_url = 'https://boxes.example.org/`id`': expected an "
     "http:// or https:// URL"),
    ("nginx directive in the catalog location", "goldbox.toml", 'location = "dist/catalog"',
     'location = "dist/x\\";alias /etc/;#"',
     "goldbox.toml: catalog.location = 'dist/x\";alias /etc/;#': expected a directory of "
     "'/'-separated components"),
    ("an option as a package", DEBIAN, '"build-essential", ',
     '"-oAPT::Update::Pre-Invoke::=reboot", ',
     f"{DEBIAN}: packages.build[0] = '-oAPT::Update::Pre-Invoke::=reboot': expected a "
     "package name"),
    ("two packages in a kernel package", DEBIAN, 'kernel_package = "linux-image-cloud-amd64"',
     'kernel_package = "linux-image-cloud-amd64,netcat"',
     f"{DEBIAN}: source.kernel_package = 'linux-image-cloud-amd64,netcat': expected a "
     "package name"),
    ("newline in a description (an HCL comment)", DEBIAN,
     'description = "Debian 12 (bookworm), CPython 3.13.15 from source"',
     'description = "Debian 12\\n}\\nbuild {"',
     f"{DEBIAN}: description = 'Debian 12\\n}}\\nbuild {{': expected one line of printable "
     "text"),
    ("apt source marked trusted", DEBIAN, "deb http://deb.debian.org/debian bookworm main",
     "deb [trusted=yes] http://evil.example/debian bookworm main",
     f"{DEBIAN}: repositories.apt_sources = "),
    ("HCL template in a boot command", "platforms/centos-6.4.toml",
     'boot_command = ["<tab> text', 'boot_command = ["${file(\\"/etc/shadow\\")}", "<tab> text',
     "platforms/centos-6.4.toml: source.boot_command[0] = '${file(\"/etc/shadow\")}': "
     "expected no '${' or '%{'"),
    ("newline in a yum repo name", "platforms/centos-6.4.toml",
     'name = "CentOS 6.4 - Base (vault)"', 'name = "Base\\ngpgcheck=0"',
     "platforms/centos-6.4.toml: repositories.yum_repos[0].name = 'Base\\ngpgcheck=0': "
     "expected one line of printable text"),
    ("newline in a yum baseurl", "platforms/centos-6.4.toml",
     'baseurl = "http://vault.centos.org/6.4/os/$basearch/"',
     'baseurl = "http://vault.centos.org/6.4/os/$basearch/\\ngpgcheck=0"',
     "platforms/centos-6.4.toml: repositories.yum_repos[0].baseurl = "
     "'http://vault.centos.org/6.4/os/$basearch/\\ngpgcheck=0': expected an http://, https://, "
     "ftp:// or file:// URL"),
    ("option as an SELinux boolean", "platforms/centos-6.4.toml",
     "booleans = { httpd_can_network_connect = true }", 'booleans = { "-P" = true }',
     "platforms/centos-6.4.toml: selinux.booleans.-P.[key] = '-P': expected lowercase"),
    ("shell in a configure flag", DEBIAN, '"--disable-test-modules"]',
     '"--disable-test-modules", "--with-x=$(id)"]',
     f"{DEBIAN}: python.configure_flags[2] = '--with-x=$(id)': expected a ./configure option"),
    ("staged file outside the stage", "platforms/centos-6.4.toml",
     'pip_bootstrap = "wheelhouse/pip-20.3.4-py2.py3-none-any.whl"',
     'pip_bootstrap = "../../etc/shadow"',
     "platforms/centos-6.4.toml: python.pip_bootstrap = '../../etc/shadow': expected a "
     "relative path"),
    ("unknown uwsgi socket kind", "goldbox.toml", 'uwsgi_socket = "unix"',
     'uwsgi_socket = "abstract"',
     "goldbox.toml: ports.uwsgi_socket = 'abstract': expected 'unix' or 'tcp'"),
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


@pytest.mark.unit
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
                                     "shell operator in a guest path", "uwsgi on nginx's port"))],
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


@pytest.mark.unit
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

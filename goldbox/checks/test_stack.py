"""What a golden guest holds, checked the same way in a rootfs (chroot backend) and in a
booted VM (SSH backend). Every expectation comes from the plan."""

from __future__ import annotations

import re

import pytest

from goldbox.checks.guest import unit_files_enabled, unit_properties

SERVICES = ["uwsgi", "nginx"]


@pytest.fixture(scope="module")
def systemd(plan) -> bool:
    return plan["adapters"]["services"] == "systemd"


@pytest.fixture(scope="module")
def enabled(host, plan, root, systemd) -> dict[str, bool]:
    """plan key -> whether its service starts at boot: one systemctl for both."""
    if not systemd:
        with root():  # chkconfig, as the tutorial's CentOS has it in /sbin
            return {key: host.service(plan[key]["service"]).is_enabled for key in SERVICES}
    states = unit_files_enabled(host, root, [plan[key]["service"] for key in SERVICES])
    return {key: states[plan[key]["service"]] == "enabled" for key in SERVICES}


@pytest.fixture(scope="module")
def units(host, plan, root, systemd) -> dict[str, dict[str, str]]:
    """plan key -> its running unit's state, user and main process: one systemctl (none
    on a SysV guest, which has no systemctl to ask)."""
    if not systemd:
        return {}
    properties = unit_properties(host, root, [plan[key]["service"] for key in SERVICES],
                                 ["ActiveState", "SubState", "User", "MainPID"])
    return {key: properties[plan[key]["service"]] for key in SERVICES}


def test_runtime_packages_installed(host, plan):
    """With apt, one dpkg-query for them all: each command is an SSH round trip, a
    fraction of a second under TCG (goldbox.checks.guest)."""
    names = plan["packages"]["runtime"]
    if plan["adapters"]["packages"] != "apt":
        for name in names:
            assert host.package(name).is_installed, name
        return
    # Exit status 1 when one is unknown: its line is missing, and it counts as absent.
    listed = host.run("dpkg-query -W -f '${Package} ${db:Status-Abbrev}\\n' -- "
                      + " ".join(names)).stdout
    status = dict(line.split(" ", 1) for line in listed.splitlines() if " " in line)
    assert [name for name in names if status.get(name, "").strip() != "ii"] == []


def test_cpython_built_from_source_is_the_planned_version(host, plan):
    python = plan["python"]
    result = host.run(f"{python['binary']} -c 'import platform; print(platform.python_version())'")
    assert result.stdout.strip() == python["version"]
    assert host.file(python["binary"]).is_file
    assert python["binary"].startswith(python["prefix"])


def test_cpython_has_its_extension_modules(host, plan):
    modules = "ssl, sqlite3, bz2, zlib, ctypes" + (", lzma" if plan["python"]["version"] >= "3"
                                                   else "")
    result = host.run(f"{plan['python']['binary']} -c 'import {modules}'")
    assert result.rc == 0, result.stderr


def test_app_user_is_unprivileged(host, plan):
    user = host.user(plan["app"]["user"])
    assert user.exists
    assert user.uid != 0
    assert user.shell.endswith("nologin")


def test_app_tree_like_the_tutorials_myapplication(host, plan):
    root = plan["app"]["root"]
    assert 'return "Hello!"' in host.file(f"{root}/app/__init__.py").content_string
    assert "from app import app" in host.file(f"{root}/WSGI.py").content_string
    assert host.file(f"{root}/static").is_directory
    assert host.file(f"{root}/env/bin/python").exists


def _project_name(name: str) -> str:
    """A distribution's name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def test_venv_has_the_pinned_packages(host, plan, pins):
    """Read from the names of the venv's metadata folders (`Name-Version.dist-info`, or
    `Name-Version-pyX.Y.egg-info` from older pips), which is what `pip list` reads: one
    `ls`, where starting pip under TCG took 6.5 s."""
    listing = host.check_output(f"ls -d {plan['app']['root']}/env/lib/python*/site-packages/"
                                f"*.dist-info {plan['app']['root']}/env/lib/python*/"
                                "site-packages/*.egg-info 2>/dev/null || true")
    installed = {}
    for path in listing.split():
        name, version = path.rsplit("/", 1)[1].rsplit(".", 1)[0].split("-")[:2]
        installed[_project_name(name)] = version
    wanted = {_project_name(name): version for name, version in pins.items()}
    assert {name: installed.get(name) for name in wanted} == wanted


@pytest.mark.parametrize("service", ["uwsgi", "nginx"])
def test_rendered_configs_are_in_place(host, plan, service):
    for item in plan[service]["files"]:
        file = host.file(item["path"])
        assert file.content_string == item["content"], item["path"]
        assert file.mode == int(item["mode"], 8), item["path"]


def test_nginx_accepts_its_configuration(host, root):
    with root():  # it opens its logs and pid file as it would to start
        result = host.run("/usr/sbin/nginx -t")
    assert result.rc == 0, result.stderr


def test_distribution_default_site_removed(host, plan):
    for path in plan["nginx"]["remove"]:
        assert not host.file(path).exists, path


@pytest.mark.live
def test_uwsgi_never_runs_as_root(host, plan, systemd, units):
    """Every live uWSGI process, read from the guest's /proc: its real, effective, saved
    and file-system uids are all the app user's. Under systemd the unit itself runs as
    that user (`systemctl show`) and its main process is one of them; under SysV the
    master starts as root only to write its pidfile, then drops (seen here as dropped)."""
    uid = str(host.user(plan["app"]["user"]).uid)
    processes = host.process.filter(comm="uwsgi")
    assert processes, "no uwsgi process runs"
    # One command for every process's Uid line (`/proc/<pid>/status:Uid: r e s fs`).
    lines = host.check_output("grep -H '^Uid:' -- "
                              + " ".join(f"/proc/{process.pid}/status" for process in processes))
    uids = {int(line.split("/")[2]): line.split(":", 2)[2].split() for line in lines.splitlines()}
    assert set(uids) == {process.pid for process in processes}, lines
    for pid, ids in uids.items():
        assert ids == [uid] * 4, f"uwsgi {pid} runs with uids {ids}, not {uid}"
    if systemd:
        unit = units["uwsgi"]
        assert unit["User"] == plan["app"]["user"]
        assert int(unit["MainPID"]) in {process.pid for process in processes}


@pytest.mark.parametrize("key", SERVICES)
def test_services_enabled_at_boot(enabled, key):
    assert enabled[key]


@pytest.mark.parametrize("key", SERVICES)
@pytest.mark.live
def test_services_running(host, plan, root, systemd, units, key):
    if not systemd:
        with root():
            assert host.service(plan[key]["service"]).is_running
        return
    unit = units[key]
    assert (unit["ActiveState"], unit["SubState"]) == ("active", "running"), unit


@pytest.mark.live
def test_uwsgi_workers_run_as_the_app_user(host, plan):
    workers = host.process.filter(comm="uwsgi")
    assert len(workers) >= 2  # master + at least one worker
    assert {worker.user for worker in workers} == {plan["app"]["user"]}


@pytest.mark.live
def test_uwsgi_listens_where_planned(host, plan, root):
    socket = plan["uwsgi"]["socket"]
    if socket["kind"] == "tcp":
        assert host.socket(f"tcp://{socket['address']}").is_listening
        return
    # uWSGI runs with PrivateNetwork=yes, so its socket is missing from `ss` in the
    # host's network namespace; a path-bound unix socket is reachable across namespaces,
    # as nginx reaches it: connect to it.
    with root():  # the socket is 0660, its group nginx's
        connect = host.run(f"{plan['python']['binary']} -c 'import socket, sys; "
                           "socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "
                           f"{socket['path']}")
    assert connect.rc == 0, connect.stderr
    # The socket and its folder in one stat: type, owner, group, octal mode. Its folder
    # is the app user's; others may pass through to the socket, not list it.
    folder = socket["path"].rsplit("/", 1)[0]
    stats = host.check_output(f"stat -c '%F %U %G %a' -- {socket['path']} {folder}").split("\n")
    kind, user, group, mode = stats[0].split()
    assert (kind, user, group, mode) == ("socket", socket["owner"], socket["group"],
                                         f"{int(socket['mode'], 8):o}"), stats[0]
    kind, user, _, mode = stats[1].split()
    assert (kind, user, mode) == ("directory", socket["owner"],
                                  f"{int(socket['directory_mode'], 8):o}"), stats[1]


@pytest.mark.live
def test_guest_listens_on_tcp_only_for_ssh_and_http(host, plan):
    """nginx's port, sshd (absent in a container) and, only with the TCP option, uWSGI's."""
    http = plan["firewall"]["tcp_ports"][0]
    allowed = {22, http}
    socket = plan["uwsgi"]["socket"]
    if socket["kind"] == "tcp":
        allowed.add(int(socket["address"].rsplit(":", 1)[1]))
    ports = {int(address.rsplit(":", 1)[1]) for address in host.socket.get_listening_sockets()
             if address.startswith("tcp")}
    assert http in ports
    assert ports <= allowed, f"listening on TCP {sorted(ports - allowed)} besides SSH and HTTP"


@pytest.mark.live
def test_root_filesystem_fills_its_disk(host):
    """The box's root partition and ext4 grow to the VM's disk at boot (a VM given a
    bigger disk than the box's gets the space)."""
    part = host.check_output("findmnt --noheadings --output SOURCE --mountpoint /")
    disk = host.check_output(f"lsblk --noheadings --nodeps --output PKNAME {part}")
    disk_bytes = int(host.check_output(f"lsblk --bytes --noheadings --nodeps --output SIZE "
                                       f"/dev/{disk}"))
    fs_bytes = int(host.check_output("df --block-size=1 --output=size / | tail -n 1"))
    # ext4's own metadata and the 1 MiB before the partition take a few percent.
    assert fs_bytes >= 0.9 * disk_bytes, (part, fs_bytes, disk, disk_bytes)


@pytest.mark.live
def test_one_kernel_and_it_is_the_running_one(host):
    """The box keeps one kernel (the base disk's update to a new kernel ABI purged the one
    it superseded) and boots that one."""
    kernels = sorted(name for name in host.file("/boot").listdir()
                     if name.startswith("vmlinuz-"))
    assert kernels == [f"vmlinuz-{host.check_output('uname -r')}"], kernels

"""What a golden guest holds, checked the same way in a rootfs (chroot backend) and in a
booted VM (SSH backend). Every expectation comes from the plan.

Each command is an SSH round trip under TCG (goldbox.checks.guest), so what several
checks read is read once, by a module fixture, and what one check reads is read in one
command where the shell can gather it."""

from __future__ import annotations

import base64
import re
import shlex

import pytest

from goldbox.checks.guest import unit_files_enabled, unit_properties
from goldbox.keys import insecure_public_key

SERVICES = ["uwsgi", "nginx"]
# Started within this many seconds of boot means "started by the boot", not by hand.
BOOT_WINDOW_SECONDS = 600
EXTENSION_MODULES = ["ssl", "sqlite3", "bz2", "zlib", "ctypes"]


@pytest.fixture(scope="module")
def systemd(plan) -> bool:
    return plan["adapters"]["services"] == "systemd"


@pytest.fixture(scope="module")
def units(host, plan, root, systemd, live) -> dict[str, dict[str, str]]:
    """plan key -> its unit's state, user, main process, when it became active and its
    unit file's state: one systemctl for both, which needs a running systemd (none in a
    rootfs, and none on a SysV guest)."""
    if not (systemd and live):
        return {}
    properties = unit_properties(host, root, [plan[key]["service"] for key in SERVICES],
                                 ["ActiveState", "SubState", "User", "MainPID",
                                  "ActiveEnterTimestampMonotonic", "UnitFileState"])
    return {key: properties[plan[key]["service"]] for key in SERVICES}


@pytest.fixture(scope="module")
def enabled(host, plan, root, systemd, units) -> dict[str, bool]:
    """plan key -> whether its service starts at boot: from the live units' own answer,
    or one offline `systemctl is-enabled` for both (a rootfs)."""
    if units:
        return {key: units[key]["UnitFileState"] == "enabled" for key in SERVICES}
    if not systemd:
        with root():  # chkconfig, as the tutorial's CentOS has it in /sbin
            return {key: host.service(plan[key]["service"]).is_enabled for key in SERVICES}
    states = unit_files_enabled(host, root, [plan[key]["service"] for key in SERVICES])
    return {key: states[plan[key]["service"]] == "enabled" for key in SERVICES}


@pytest.fixture(scope="module")
def app_user(host, plan) -> dict[str, str]:
    """The app user's passwd entry (empty when there is none): one getent."""
    entry = host.run(f"getent passwd {shlex.quote(plan['app']['user'])}").stdout.strip()
    fields = entry.split(":")
    if len(fields) != 7:
        return {}
    return {"name": fields[0], "uid": fields[2], "shell": fields[6]}


@pytest.fixture(scope="module")
def cpython(host, plan):
    """The planned interpreter asked once, in one start of it (a second under TCG): that
    it is a file, its version, then that its extension modules import."""
    binary = shlex.quote(plan["python"]["binary"])
    modules = ", ".join(EXTENSION_MODULES + (["lzma"] if plan["python"]["version"] >= "3"
                                             else []))
    return host.run(f"test -f {binary} && {binary} -c 'import platform; "
                    f"print(platform.python_version()); import {modules}'")


@pytest.fixture(scope="module")
def uwsgi_processes(host) -> list:
    """Every live uWSGI process: one `ps`."""
    return host.process.filter(comm="uwsgi")


def test_runtime_packages_installed(host, plan):
    """With apt, one dpkg-query for them all."""
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


def test_cpython_built_from_source_is_the_planned_version(plan, cpython):
    python = plan["python"]
    assert cpython.stdout.split("\n", 1)[0].strip() == python["version"], \
        f"{python['binary']}: {cpython.stdout!r} {cpython.stderr!r}"
    assert python["binary"].startswith(python["prefix"])


def test_cpython_has_its_extension_modules(cpython):
    assert cpython.rc == 0, cpython.stderr


def test_app_user_is_unprivileged(app_user):
    assert app_user, "no such user"
    assert app_user["uid"] != "0"
    assert app_user["shell"].endswith("nologin")


def test_app_tree_like_the_tutorials_myapplication(host, plan):
    """The tutorial's myapplication layout, in one command: each part found says so."""
    root = shlex.quote(plan["app"]["root"])
    found = host.run(
        f"cd {root} || exit; "
        "grep -qF 'return \"Hello!\"' app/__init__.py && echo app; "
        "grep -qF 'from app import app' WSGI.py && echo wsgi; "
        "test -d static && echo static; test -e env/bin/python && echo env").stdout.split()
    assert sorted(found) == ["app", "env", "static", "wsgi"]


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


@pytest.fixture(scope="module")
def rendered(host, plan) -> dict[str, tuple[int, str] | None]:
    """path -> (mode, content) of every file the plan renders for uWSGI and nginx, or
    None for one that is not there: one command for them all."""
    paths = [item["path"] for service in SERVICES for item in plan[service]["files"]]
    script = ("for f in " + " ".join(shlex.quote(path) for path in paths) + "; do "
              "if [ -f \"$f\" ]; then stat -c %a \"$f\"; base64 -w0 \"$f\"; echo; "
              "else echo none; echo; fi; done")
    lines = host.check_output(script).split("\n")
    found: dict[str, tuple[int, str] | None] = {}
    for number, path in enumerate(paths):
        mode, content = lines[2 * number], lines[2 * number + 1]
        found[path] = None if mode == "none" else (
            int(mode, 8), base64.b64decode(content).decode("utf-8", errors="replace"))
    return found


@pytest.mark.parametrize("service", ["uwsgi", "nginx"])
def test_rendered_configs_are_in_place(plan, rendered, service):
    for item in plan[service]["files"]:
        assert rendered[item["path"]] is not None, f"{item['path']} is missing"
        mode, content = rendered[item["path"]]
        assert content == item["content"], item["path"]
        assert mode == int(item["mode"], 8), item["path"]


def test_nginx_accepts_its_configuration(host, root):
    with root():  # it opens its logs and pid file as it would to start
        result = host.run("/usr/sbin/nginx -t")
    assert result.rc == 0, result.stderr


def test_distribution_default_site_removed(host, plan):
    paths = " ".join(shlex.quote(path) for path in plan["nginx"]["remove"])
    present = host.run(f"for f in {paths}; do [ ! -e \"$f\" ] || echo \"$f\"; done").stdout
    assert present.split() == []


@pytest.mark.live
def test_uwsgi_never_runs_as_root(host, plan, systemd, units, app_user, uwsgi_processes):
    """Every live uWSGI process, read from the guest's /proc: its real, effective, saved
    and file-system uids are all the app user's. Under systemd the unit itself runs as
    that user (`systemctl show`) and its main process is one of them; under SysV the
    master starts as root only to write its pidfile, then drops (seen here as dropped)."""
    uid = app_user["uid"]
    processes = uwsgi_processes
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
    """Running, and under systemd started by the boot itself (active within
    BOOT_WINDOW_SECONDS of it), not by a hand after it."""
    if not systemd:
        with root():
            assert host.service(plan[key]["service"]).is_running
        return
    unit = units[key]
    assert (unit["ActiveState"], unit["SubState"]) == ("active", "running"), unit
    seconds = int(unit["ActiveEnterTimestampMonotonic"] or 0) / 1e6
    assert 0 < seconds < BOOT_WINDOW_SECONDS, f"active {seconds:.0f} s after boot"


@pytest.mark.live
def test_uwsgi_workers_run_as_the_app_user(plan, uwsgi_processes):
    assert len(uwsgi_processes) >= 2  # master + at least one worker
    assert {worker.user for worker in uwsgi_processes} == {plan["app"]["user"]}


@pytest.mark.live
def test_uwsgi_listens_where_planned(host, plan, root):
    socket = plan["uwsgi"]["socket"]
    if socket["kind"] == "tcp":
        assert host.socket(f"tcp://{socket['address']}").is_listening
        return
    # uWSGI runs with PrivateNetwork=yes, so its socket is missing from `ss` in the
    # host's network namespace; a path-bound unix socket is reachable across namespaces,
    # as nginx reaches it: connect to it, then stat it and its folder (type, owner,
    # group, octal mode), in one command as root (the socket is 0660, its group nginx's).
    path = shlex.quote(socket["path"])
    folder = shlex.quote(socket["path"].rsplit("/", 1)[0])
    with root():
        connect = host.run(f"{plan['python']['binary']} -c 'import socket, sys; "
                           f"socket.socket(socket.AF_UNIX).connect(sys.argv[1])' {path} && "
                           f"stat -c '%F %U %G %a' -- {path} {folder}")
    assert connect.rc == 0, connect.stderr
    stats = connect.stdout.splitlines()
    kind, user, group, mode = stats[0].split()
    assert (kind, user, group, mode) == ("socket", socket["owner"], socket["group"],
                                         f"{int(socket['mode'], 8):o}"), stats[0]
    kind, user, _, mode = stats[1].split()
    # Its folder is the app user's; others may pass through to the socket, not list it.
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
    bigger disk than the box's gets the space). One command: the root's partition, its
    disk, the disk's bytes, the file system's bytes."""
    facts = host.check_output(
        "part=$(findmnt --noheadings --output SOURCE --mountpoint /) && "
        "disk=$(lsblk --noheadings --nodeps --output PKNAME \"$part\") && "
        "echo \"$part\" \"$disk\" "
        "$(lsblk --bytes --noheadings --nodeps --output SIZE \"/dev/$disk\") "
        "$(df --block-size=1 --output=size / | tail -n 1)").split()
    part, disk, disk_bytes, fs_bytes = facts[0], facts[1], int(facts[2]), int(facts[3])
    # ext4's own metadata and the 1 MiB before the partition take a few percent.
    assert fs_bytes >= 0.9 * disk_bytes, (part, fs_bytes, disk, disk_bytes)


@pytest.mark.live
def test_one_kernel_and_it_is_the_running_one(host):
    """The box keeps one kernel (the base disk's update to a new kernel ABI purged the one
    it superseded) and boots that one."""
    running, *boot = host.check_output("uname -r; ls -1 /boot").split("\n")
    kernels = sorted(name for name in boot if name.startswith("vmlinuz-"))
    assert kernels == [f"vmlinuz-{running}"], kernels


@pytest.mark.live
def test_vagrants_insecure_key_is_authorized_no_more(host):
    """The box authorizes Vagrant's public insecure key, for a first login; the VM must not
    keep it: Vagrant swapped it for a key of its own, or the guest put the key `invoke up`
    gave it in its place (goldbox/basedisk.py SSH_KEY_UNIT). Read as the login user."""
    authorized = host.check_output("cat ~/.ssh/authorized_keys")
    assert authorized.strip(), "no key is authorized, yet this check logged in with one"
    assert insecure_public_key().split()[1] not in authorized, (
        "Vagrant's insecure key still logs in")

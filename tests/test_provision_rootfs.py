"""provision/ for real in a Debian 12 rootfs, at native speed: the whole plan with the
real CPython build (the pinned version) from its verified tarball, then uWSGI and nginx
started in the rootfs inside a network namespace of the test's own, the HTTP checks, the
testinfra suite (goldbox.checks) over the chroot backend, and a second run that must
change nothing."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from bench.stack_rootfs import STAGE, booted, chroot, run_provision, staged_rootfs, step_table
from goldbox import PROJECT_ROOT, checks
from goldbox.config import load_config
from goldbox.rootfs import chroot_mounts
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

CONFIG = load_config()
PLATFORM = CONFIG.platform("debian-12")
UWSGI_PID = "/tmp/goldbox-uwsgi.pid"  # writable by the app user


def http(netns: str, path: str) -> tuple[int, dict[str, str], str]:
    out = subprocess.run(["ip", "netns", "exec", netns, "curl", "-s", "-i", "--max-time",
                          "10", f"http://127.0.0.1{path}"], capture_output=True, text=True,
                         check=False).stdout
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    lines = head.splitlines() or ["HTTP/1.1 000"]
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def fingerprint(root: Path, plan: dict) -> dict[str, tuple[int, str]]:
    """mtime + content hash of every file the plan writes or installs."""
    paths = [root / item["path"].lstrip("/") for key in ("uwsgi", "nginx")
             for item in plan[key]["files"]]
    app_root = root / plan["app"]["root"].lstrip("/")
    paths += [p for p in app_root.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    paths += [root / "etc/apt/sources.list", root / "usr/local/bin/python3.13"]
    return {str(p): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(paths)}


def uwsgi_processes(root: Path) -> list[tuple[int, int]]:
    """(pid, uid) of the uWSGI processes running in this rootfs (not another test's)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (proc / "comm").read_text().strip() == "uwsgi" and \
                    Path(os.readlink(proc / "root")) == root:
                uids = next(line for line in (proc / "status").read_text().splitlines()
                            if line.startswith("Uid:"))
                found.append((int(proc.name), int(uids.split()[2])))  # effective uid
        except OSError:
            continue  # gone meanwhile
    return found


def pids(root: Path) -> dict[str, str]:
    return {"uwsgi": (root / UWSGI_PID.lstrip("/")).read_text().strip(),
            "nginx": (root / "run/nginx.pid").read_text().strip()}


@pytest.fixture(scope="module")
def rootfs():
    """A bookworm rootfs staged for the plan (not yet provisioned), and its plan."""
    with staged_rootfs(CONFIG, PLATFORM) as staged:
        yield staged


@pytest.fixture
def mounted(rootfs):
    """The rootfs with proc, sys and dev mounted for chroot, for one test."""
    root, plan = rootfs
    with chroot_mounts(root):
        yield root, plan


@pytest.fixture(scope="module")
def netns():
    name = f"gb-prov-{time.time_ns() % 10**8}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
    yield name
    subprocess.run(["ip", "netns", "delete", name], check=False)


def test_plan_in_a_real_rootfs_serves_hello_and_is_idempotent(mounted, netns):
    root, plan = mounted
    first, first_seconds = run_provision(root)
    print(f"first run ({first_seconds:.0f} s):\n{first.stdout[-3000:]}")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr
    table = step_table(first.stdout)
    assert table["python"] == "changed"
    assert f"CPython {PLATFORM.python.version} built from source" in first.stdout
    assert set(table.values()) <= {"changed", "unchanged"}

    user = plan["app"]["user"]
    app_root = plan["app"]["root"]
    socket = plan["uwsgi"]["socket"]
    # What systemd would do at boot, by hand in the netns: the socket's folder as the
    # unit's RuntimeDirectory= makes it, uWSGI as the app user in nginx's group too
    # (SupplementaryGroups=).
    chroot(root, "install", "-d", "-m", socket["directory_mode"], "-o", user, "-g", user,
           os.path.dirname(socket["path"]))
    chroot(root, f"{app_root}/env/bin/uwsgi", "--ini", "/etc/goldbox/uwsgi.ini",
           "--daemonize", "/tmp/goldbox-uwsgi.log", "--pidfile", UWSGI_PID,
           netns=netns, userspec=f"{user}:{user}", groups=f"{user},{socket['group']}")
    chroot(root, "/usr/sbin/nginx", netns=netns)
    try:
        deadline = time.monotonic() + 30
        while http(netns, "/")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        status, _, body = http(netns, "/")
        assert (status, body) == (200, "Hello!")
        status, headers, body = http(netns, "/static/style.css")
        assert status == 200
        assert body == (CONFIG.app_dir / "static/style.css").read_text()
        assert headers.get("cache-control") == "max-age=3600"  # nginx's `expires`
        assert headers.get("server") == "nginx"  # server_tokens off: no version

        sock = root / socket["path"].lstrip("/")
        stat = chroot(root, "stat", "-c", "%U %G %a %F", socket["path"]).stdout.split()
        assert stat == [user, socket["group"], socket["mode"].lstrip("0"), "socket"]
        assert sock.is_socket()

        uid = int(chroot(root, "id", "-u", user).stdout)
        workers = uwsgi_processes(root)
        assert len(workers) == 1 + CONFIG.project.app.uwsgi_processes  # master + workers
        assert {process_uid for _, process_uid in workers} == {uid}

        infra = subprocess.run(
            checks.pytest_command(f"--hosts={root}", "--connection=chroot", "-q"),
            env={"GOLDBOX_PLAN": str(root / STAGE.lstrip("/") / "plan.json"),
                 "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
            capture_output=True, text=True, check=False, cwd=PROJECT_ROOT)
        print(infra.stdout[-2000:])
        assert infra.returncode == 0, infra.stdout[-4000:]
        assert re.search(r"\b1[0-9] passed\b", infra.stdout)

        before, pids_before = fingerprint(root, plan), pids(root)
        second, second_seconds = run_provision(root)
        print(f"second run ({second_seconds:.0f} s):\n{second.stdout}")
        assert second.returncode == 0, second.stdout + second.stderr
        assert set(step_table(second.stdout).values()) == {"unchanged"}
        assert fingerprint(root, plan) == before
        assert pids(root) == pids_before

        # The static file comes from nginx itself: with uWSGI gone it is still served.
        chroot(root, f"{app_root}/env/bin/uwsgi", "--stop", UWSGI_PID,
               netns=netns)
        wait_until(lambda: not uwsgi_processes(root), "uWSGI to stop", seconds=30)
        assert http(netns, "/static/style.css")[0] == 200
        assert http(netns, "/")[0] == 502
    finally:
        chroot(root, "/usr/sbin/nginx", "-s", "stop", netns=netns, check=False)
        chroot(root, f"{app_root}/env/bin/uwsgi", "--stop", UWSGI_PID,
               netns=netns, check=False)


def test_booted_services_start_at_boot_restart_on_change_and_on_failure(rootfs, tmp_path):
    """The same rootfs booted by systemd (in a container): the units provision enabled
    start at boot; provision run under a live init changes nothing and keeps the PIDs; a
    changed uWSGI config restarts uWSGI, a changed nginx config reloads nginx; a killed
    uWSGI comes back by itself."""
    if not shutil.which("systemd-nspawn"):
        pytest.skip("needs systemd-nspawn (apt package systemd-container)")
    root, plan = rootfs
    assert (root / plan["app"]["root"].lstrip("/") / "env/bin/uwsgi").is_file(), \
        "runs after the chroot test, on its provisioned rootfs"
    uwsgi, nginx = plan["uwsgi"]["service"], plan["nginx"]["service"]
    # /tmp in the container is a fresh tmpfs (and a boot empties /tmp anyway): the stage
    # waits in /root meanwhile, and the plans run there name it as their stage_dir.
    stage, parked = root / STAGE.lstrip("/"), root / "root/goldbox-stage"

    def provision_inside(plan: dict, name: str) -> dict[str, str]:
        (parked / name).write_text(json.dumps({**plan, "stage_dir": "/root/goldbox-stage"}))
        result = container.run("/bin/sh", "-c", "cd /root/goldbox-stage && exec "
                               f"/usr/bin/python3 -m provision {name}", check=False)
        print(f"booted, {name}:\n" + result.stdout[result.stdout.find("step "):])
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr
        return step_table(result.stdout)

    def main_pid(service: str) -> int:
        return int(container.run("systemctl", "show", "-p", "MainPID", "--value",
                                 service).stdout)

    def uwsgi_users() -> list[str]:
        return container.run("ps", "-o", "user=", "-C", "uwsgi").stdout.split()

    def get(path: str) -> tuple[int, str]:
        out = subprocess.run([*container.in_network, "curl", "-s", "-w", "\n%{http_code}",
                              "--max-time", "10", f"http://127.0.0.1{path}"],
                             capture_output=True, text=True, check=False).stdout
        body, _, code = out.rpartition("\n")
        return int(code or 0), body

    def wait_for_hello() -> None:
        deadline = time.monotonic() + 30
        while get("/") != (200, "Hello!") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert get("/") == (200, "Hello!")

    stage.rename(parked)
    try:
        with booted(root, tmp_path / "console.log") as container:
            # Started at boot, by the units that provision enabled in the chroot.
            active = container.run("systemctl", "is-active", uwsgi, nginx).stdout.split()
            assert active == ["active", "active"]
            wait_for_hello()
            assert uwsgi_users() == [plan["app"]["user"]] * (
                1 + CONFIG.project.app.uwsgi_processes)
            # The hardened unit's socket, made by systemd's RuntimeDirectory=, and no TCP
            # but nginx's (the container has no sshd).
            socket = plan["uwsgi"]["socket"]
            assert container.run("stat", "-c", "%U %G %a", socket["path"],
                                 os.path.dirname(socket["path"])).stdout.split() == [
                socket["owner"], socket["group"], "660",
                socket["owner"], socket["owner"], socket["directory_mode"].lstrip("0")]
            listening = container.run("ss", "-Hltn").stdout.split("\n")
            assert {line.split()[3].rsplit(":", 1)[1] for line in listening if line} == {"80"}
            # Both units run sandboxed (the drop-in reached nginx.service).
            for unit, setting in ((uwsgi, "PrivateNetwork"), (nginx, "ProtectSystem")):
                assert container.run("systemctl", "show", "-p", setting, "--value",
                                     unit).stdout.strip() in ("yes", "strict"), unit

            pids = {name: main_pid(name) for name in (uwsgi, nginx)}
            assert set(provision_inside(plan, "plan-booted.json").values()) == {"unchanged"}
            assert {name: main_pid(name) for name in (uwsgi, nginx)} == pids

            # Changed configurations: uWSGI restarts (new PID), nginx reloads (same master).
            changed = json.loads(json.dumps(plan))
            ini = changed["uwsgi"]["files"][0]
            assert "processes = 2" in ini["content"]
            ini["content"] = ini["content"].replace("processes = 2", "processes = 3")
            changed["nginx"]["files"][0]["content"] += "# changed by the test\n"
            table = provision_inside(changed, "plan-changed.json")
            assert (table["uwsgi"], table["nginx"]) == ("changed", "changed"), table
            # uWSGI must stop on the unit's KillSignal; with die-on-term, SIGQUIT makes it
            # re-exec itself instead and systemd SIGKILLs it only after TimeoutStopSec (90 s),
            # saying so in the unit's journal.
            journal = container.run("journalctl", "--no-pager", "-u", uwsgi).stdout
            assert "Stopped" in journal, journal[-2000:]
            assert "timed out" not in journal, journal[-2000:]
            assert main_pid(uwsgi) != pids[uwsgi]
            assert main_pid(nginx) == pids[nginx]
            wait_for_hello()
            assert len(uwsgi_users()) == 1 + 3
            assert set(provision_inside(changed, "plan-changed.json").values()) == {"unchanged"}

            # Restart=on-failure: a killed uWSGI master is back within seconds.
            killed = main_pid(uwsgi)
            container.run("kill", "-9", str(killed))
            deadline = time.monotonic() + 30
            while main_pid(uwsgi) in (0, killed) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert main_pid(uwsgi) not in (0, killed), container.run(
                "journalctl", "--no-pager", "-n", "30", "-u", uwsgi, check=False).stdout
            wait_for_hello()

            # Back to the planned configuration, as the chroot test left it.
            provision_inside(plan, "plan-booted.json")
    finally:
        for name in ("plan-booted.json", "plan-changed.json"):
            (parked / name).unlink(missing_ok=True)
        parked.rename(stage)


def test_cleanup_leaves_no_identity_caches_logs_or_build_files(mounted):
    """Runs last, on the provisioned rootfs: the golden-image step for real (zeroing free
    space is for booted guests, so the chroot skips it)."""
    root, plan = mounted
    assert (root / "usr/local/bin/python3.13").is_file(), "needs the provisioned rootfs"
    identity = [root / "etc/ssh/ssh_host_ed25519_key", root / "etc/ssh/ssh_host_ed25519_key.pub",
                root / "root/.bash_history"]
    for path in identity:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("from the build\n")
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "var/log/syslog.1").write_text("old\n")
    plan = {**plan, "cleanup": {"enabled": True, "paths": [STAGE], "zero_free_space": True}}
    (root / "root/cleanup-plan.json").write_text(json.dumps(plan))

    result = chroot(root, "/bin/sh", "-c", f"cd {STAGE} && exec /usr/bin/python3 -m provision "
                    "/root/cleanup-plan.json --only cleanup", check=False)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "zero free space: skipped (not a booted guest)" in result.stdout
    assert [p for p in identity if p.exists()] == []
    assert (root / "etc/machine-id").read_text() == ""
    assert not (root / STAGE.lstrip("/")).exists()
    assert not (root / "usr/local/src/goldbox-python").exists()
    assert list((root / "var/cache/apt/archives").glob("*.deb")) == []
    assert list((root / "var/lib/apt/lists").glob("*_Packages")) == []
    assert not (root / "var/log/syslog.1").exists()
    logs = [p for p in (root / "var/log").rglob("*") if p.is_file() and p.stat().st_size]
    assert logs == []
    # What stays: the stack itself.
    assert (root / plan["app"]["root"].lstrip("/") / "env/bin/uwsgi").is_file()

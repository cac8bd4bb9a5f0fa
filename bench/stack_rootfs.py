"""The golden stack in a Debian rootfs at native speed, shared by the rootfs test
(tests/test_provision_rootfs.py) and the serving benchmark (bench/bench_serve.py): a
bookworm rootfs staged for provision/, provisioned with chroot, then booted by its own
systemd in a container with a private network (loopback only). It lives in bench/,
which imports nothing from tests/."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from goldbox import PROJECT_ROOT
from goldbox.cache import Cache
from goldbox.config import Config, Platform
from goldbox.image import ensure_tarball, prepare_wheelhouse
from goldbox.render import RenderOptions, render_platform
from goldbox.rootfs import debootstrap_rootfs

STAGE = "/tmp/goldbox-stage"
# What the base disk has that provision relies on: its Python, systemd's tools, ps/ss.
ROOTFS_PACKAGES = ["python3", "systemd-sysv", "procps", "iproute2", "ca-certificates"]


def python_tarball(config: Config, platform: Platform) -> Path:
    """The pinned CPython tarball, from its verified sources (goldbox.sources)."""
    return ensure_tarball(config, platform)[0]


@contextlib.contextmanager
def staged_rootfs(config: Config, platform: Platform) -> Iterator[tuple[Path, dict]]:
    """A bookworm rootfs (in a scratch folder of the cache, locked while in use) with the
    stage provision/ needs in STAGE, and the plan; removed afterwards. The plan builds
    CPython from its tarball, as the tutorial does (no bundle), and does not clean up."""
    cache = Cache(config.cache_dir)
    with cache.scratch("provision-test") as scratch:
        root = debootstrap_rootfs(cache, suite=platform.source.suite,
                                  mirror=platform.source.mirror, packages=ROOTFS_PACKAGES,
                                  dest=scratch / "root")
        with tempfile.TemporaryDirectory(prefix="goldbox-render-") as build:
            rendered = render_platform(config, platform, Path(build),
                                       RenderOptions(cleanup=False))
            plan = json.loads(rendered.plan.read_text())
            stage = root / STAGE.lstrip("/")
            stage.mkdir(parents=True)
            shutil.copy(rendered.plan, stage / "plan.json")
        shutil.copytree(PROJECT_ROOT / "provision", stage / "provision",
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(config.app_dir, stage / "app",
                        ignore=shutil.ignore_patterns("__pycache__"))
        prepare_wheelhouse(config, platform, stage / "wheelhouse", log=None)
        tarball = python_tarball(config, platform)
        shutil.copy(tarball, stage / tarball.name)
        # Package scripts must not start services in a chroot.
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        yield root, plan


def chroot(root: Path, *argv: str, netns: str | None = None, check: bool = True,
           userspec: str | None = None, groups: str | None = None
           ) -> subprocess.CompletedProcess:
    command = ["chroot", *([f"--userspec={userspec}"] if userspec else []),
               *([f"--groups={groups}"] if groups else []), str(root), *argv]
    if netns:
        command = ["ip", "netns", "exec", netns, *command]
    return subprocess.run(command, capture_output=True, text=True, check=check, timeout=1800)


def run_provision(root: Path) -> tuple[subprocess.CompletedProcess, float]:
    """`python -m provision` of the staged plan in the rootfs (chroot mounts needed)."""
    start = time.monotonic()
    result = subprocess.run(
        ["chroot", str(root), "/usr/bin/env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin:"
         "/usr/sbin:/sbin", "HOME=/root", "/bin/sh", "-c",
         f"cd {STAGE} && exec /usr/bin/python3 -m provision {STAGE}/plan.json"],
        capture_output=True, text=True, check=False, timeout=3600)
    return result, time.monotonic() - start


def step_table(output: str) -> dict[str, str]:
    """step -> changed/unchanged/FAILED, from provision's closing table."""
    rows = {}
    for line in output.splitlines():
        match = re.match(r"^(\w+)\s+(changed|unchanged|FAILED)\s+([\d.]+)\s", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


class Container:
    """A booted container, entered with nsenter: `run` inside it; `in_network` prefixes a
    host command (curl, wrk) to run in its network namespace only."""

    def __init__(self, leader: int):
        self.in_network = ["nsenter", "-t", str(leader), "-n"]
        self._enter = ["nsenter", "-t", str(leader), "-m", "-u", "-i", "-n", "-p", "--"]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*self._enter, *argv], capture_output=True, text=True,
                              check=check, timeout=600)

    def start(self, *argv: str) -> None:
        """Run a command that leaves a daemon behind (nginx, uwsgi --daemonize): its
        output goes to /dev/null, so no pipe is left waiting for the daemon to end."""
        subprocess.run([*self._enter, *argv], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                       timeout=60)


@contextlib.contextmanager
def booted(root: Path, console: Path) -> Iterator[Container]:
    """`root` booted by its own systemd in a container with a private network (loopback
    only), powered off afterwards. The host runs no systemd: --register=no --keep-unit."""
    with open(console, "w") as log:
        nspawn = subprocess.Popen(["systemd-nspawn", "--quiet", "-D", str(root),
                                   "--private-network", "--register=no", "--keep-unit",
                                   "--console=passive", "-b"],
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        leader = None
        deadline = time.monotonic() + 60
        while leader is None and time.monotonic() < deadline and nspawn.poll() is None:
            leader = next((int(p.name) for p in Path("/proc").glob("[0-9]*")
                           if _parent_and_comm(p) == (nspawn.pid, "systemd")), None)
            time.sleep(0.2)
        if not leader:
            raise RuntimeError(f"the container's systemd did not start: "
                               f"{console.read_text()[-2000:]}")
        container = Container(leader)
        state = ""
        while state not in ("running", "degraded") and time.monotonic() < deadline:
            time.sleep(0.5)
            state = container.run("systemctl", "is-system-running", check=False).stdout.strip()
        if state not in ("running", "degraded"):
            raise RuntimeError(f"the container did not finish booting: {state!r}")
        yield container
    finally:
        nspawn.terminate()  # systemd-nspawn powers the container off
        try:
            nspawn.wait(timeout=120)
        except subprocess.TimeoutExpired:
            nspawn.kill()
            nspawn.wait()


def _parent_and_comm(proc: Path) -> tuple[int, str] | None:
    try:
        stat = (proc / "stat").read_text()
    except OSError:
        return None
    comm = stat[stat.index("(") + 1:stat.rindex(")")]
    return int(stat[stat.rindex(")") + 2:].split()[1]), comm

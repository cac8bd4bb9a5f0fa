"""libvirt's daemons for goldbox: does one answer, and where no service manager can start
them (a container-like host: no systemd as PID 1), start virtlogd and libvirtd ourselves.

/dev/kvm: where it exists but libvirt's QEMU user cannot open it (0600 root:root, as on a
host without udev; udev sets 0660 root:kvm), libvirtd's capability probe and its later
check disagree about KVM, nothing is cached, and every call re-probes QEMU (`virsh
capabilities` 8 s instead of 0.02 s here; `vagrant up` loses a minute). goldbox never
changes the host's devices: `doctor` prints the fix, and the libvirtd goldbox starts runs
in a private mount namespace where /dev/kvm is the same device node with udev's
permissions (a bind mount that only that namespace sees)."""

from __future__ import annotations

import contextlib
import grp
import os
import signal
import socket
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from goldbox import proc
from goldbox.errors import GoldboxError
from goldbox.virt import URI, daemon_answers

KVM = Path("/dev/kvm")
KVM_GROUP = "kvm"  # what Debian's udev rules and libvirt's qemu.conf use
VIRTLOGD_SOCKET = Path("/run/libvirt/virtlogd-sock")
# Where goldbox keeps the pid files of the daemons it starts on the host.
RUN_DIR = Path("/run/goldbox")
DAEMONS = ("virtlogd", "libvirtd")


def has_service_manager() -> bool:
    """systemd runs as PID 1 (sd_booted()'s test)."""
    return Path("/run/systemd/system").is_dir()


def kvm_permission_problem() -> str | None:
    """What is wrong with /dev/kvm's permissions for libvirt, or None (also when there is
    no /dev/kvm: then there is nothing for libvirt to disagree about)."""
    try:
        info = KVM.stat()
    except FileNotFoundError:
        return None
    try:
        kvm_gid = grp.getgrnam(KVM_GROUP).gr_gid
    except KeyError:
        return f"{KVM} exists but there is no group {KVM_GROUP!r}"
    mode = stat.S_IMODE(info.st_mode)
    if info.st_gid == kvm_gid and mode & 0o060 == 0o060:
        return None
    owner = grp.getgrgid(info.st_gid).gr_name
    return f"{KVM} is {mode:04o} root:{owner}, not 0660 root:{KVM_GROUP} (no udev?)"


KVM_FIX = (f"chgrp {KVM_GROUP} {KVM} && chmod 0660 {KVM} (what udev sets; to keep it, "
           "install udev or add that to the host's start-up)")


def _kvm_namespace_script() -> str:
    """Shell lines, run in a fresh private mount namespace, that put over /dev/kvm a node
    of the same device with udev's permissions (in a tmpfs only that namespace sees)."""
    info = KVM.stat()
    staging = RUN_DIR / "kvm-node"
    return "\n".join([
        f"mkdir -p {staging}",
        f"mount -t tmpfs -o mode=0755,size=4k goldbox-kvm {staging}",
        f"mknod -m 0660 {staging}/kvm c {os.major(info.st_rdev)} {os.minor(info.st_rdev)}",
        f"chgrp {KVM_GROUP} {staging}/kvm",
        f"mount --bind {staging}/kvm {KVM}",
        'exec "$@"',
    ])


def libvirtd_command(pidfile: Path) -> list[str]:
    """libvirtd as a daemon writing `pidfile`; where the host's /dev/kvm has the
    permission problem, in a private mount namespace with a usable view of it."""
    command = ["libvirtd", "-d", "-p", str(pidfile)]
    problem = kvm_permission_problem()
    if problem is None or problem.endswith(f"no group {KVM_GROUP!r}"):
        return command
    return ["unshare", "--mount", "--propagation", "private", "sh", "-ec",
            _kvm_namespace_script(), "libvirtd", *command]


def _wait_for(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise GoldboxError(f"timed out after {seconds:.0f} s waiting for {what}")


def _socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class Started:
    """The daemons goldbox started: name -> (pid, pid file)."""

    daemons: dict[str, tuple[int, Path]]

    def stop_hint(self) -> str:
        files = " ".join(f"$(cat {pidfile})" for _, pidfile in self.daemons.values())
        return f"kill {files}" if files else "nothing to stop"

    def stop(self) -> None:
        """TERM each daemon we started (libvirtd first), wait for it to exit."""
        for name in reversed(list(self.daemons)):
            pid, pidfile = self.daemons[name]
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(GoldboxError):
                _wait_for(lambda p=pid: not Path(f"/proc/{p}").exists(), 20, f"{name} to exit")
            pidfile.unlink(missing_ok=True)


def start_daemons(run_dir: Path = RUN_DIR, wrapper: Sequence[str] = (),
                  timeout: float = 60) -> Started:
    """Start virtlogd (unless one already listens) and libvirtd as daemons, pid files in
    `run_dir`, each command prefixed by `wrapper` (e.g. `ip netns exec NAME`); wait
    until libvirtd answers. On a failure, stop what was started and raise."""
    run_dir.mkdir(parents=True, exist_ok=True)
    daemons: dict[str, tuple[int, Path]] = {}
    started = Started(daemons)
    try:
        for name in DAEMONS:
            if name == "virtlogd" and _socket_answers(VIRTLOGD_SOCKET):
                continue
            pidfile = run_dir / f"{name}.pid"
            pidfile.unlink(missing_ok=True)
            command = ["virtlogd", "-d", "-p", str(pidfile)] if name == "virtlogd" \
                else libvirtd_command(pidfile)
            proc.capture([*wrapper, *command])
            _wait_for(lambda p=pidfile: p.is_file() and p.read_text().strip(), 20,
                      f"{name}'s pid file {pidfile}")
            daemons[name] = (int(pidfile.read_text()), pidfile)
        _wait_for(lambda: daemon_answers(wrapper), timeout, f"libvirtd to answer at {URI}")
    except BaseException:
        started.stop()
        raise
    return started


def ensure_answering() -> Started | None:
    """Make sure a libvirt daemon answers before goldbox boots a box: nothing to do if one
    does; with a service manager, one line with the systemctl command; without one, start
    the daemons and return them (the caller says so, and how to stop them)."""
    if daemon_answers():
        return None
    if has_service_manager():
        raise GoldboxError(f"the libvirt daemon does not answer at {URI}: start it with "
                           "`sudo systemctl start libvirtd` (and `sudo systemctl enable "
                           "libvirtd` to start it at boot)")
    return start_daemons()

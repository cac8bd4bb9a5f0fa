"""Test and benchmark harness: libvirt inside a network namespace of our own.

vagrant-libvirt always puts a VM on a libvirt network with a private address; running
libvirtd inside a fresh network namespace keeps that network, and every port Vagrant
forwards, invisible to the rest of the machine. The product itself uses stock
networking: this is only how the tests and benchmarks run it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def _wait_for(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


@contextlib.contextmanager
def libvirt_netns(name: str | None = None) -> Iterator[str]:
    """Create a netns, start virtlogd + libvirtd in it, yield its name; stop the daemons
    we started (by PID) and delete the netns afterwards."""
    name = name or f"gb-e2e-{os.getpid()}"
    daemons: list[int] = []
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        with tempfile.TemporaryDirectory(prefix="goldbox-libvirt-") as scratch:
            subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
                           check=True)
            for daemon in ("virtlogd", "libvirtd"):
                pidfile = Path(scratch) / f"{daemon}.pid"
                subprocess.run(["ip", "netns", "exec", name, daemon, "-d", "-p", str(pidfile)],
                               check=True)
                _wait_for(lambda p=pidfile: p.is_file() and p.read_text().strip(), 20,
                          f"{daemon}'s pid file")
                daemons.append(int(pidfile.read_text()))
            _wait_for(lambda: subprocess.run(
                ["ip", "netns", "exec", name, "virsh", "-c", "qemu:///system", "version"],
                capture_output=True, check=False).returncode == 0, 30, "libvirtd to answer")
            yield name
    finally:
        for pid in reversed(daemons):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in daemons:
            with contextlib.suppress(RuntimeError):
                _wait_for(lambda p=pid: not Path(f"/proc/{p}").exists(), 15, f"pid {pid}")
        subprocess.run(["ip", "netns", "delete", name], check=False)

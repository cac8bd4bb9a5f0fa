"""Test and benchmark harness: libvirt inside a network namespace of our own.

vagrant-libvirt always puts a VM on a libvirt network with a private address; running
libvirtd inside a fresh network namespace keeps that network, and every port Vagrant
forwards, invisible to the rest of the machine. The product itself uses stock
networking: this is only how the tests and benchmarks run it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from goldbox.libvirtd import start_daemons
from goldbox.virt import URI, daemon_answers


@contextlib.contextmanager
def libvirt_netns(name: str | None = None) -> Iterator[str]:
    """Create a netns, start virtlogd + libvirtd in it (as goldbox starts them on a host
    without a service manager: libvirtd sees a usable /dev/kvm, see goldbox.libvirtd),
    yield its name; stop the daemons we started (by PID) and delete the netns afterwards.
    Refused while another libvirt daemon answers on the host's socket (a host libvirtd, or
    another harness's): the namespace shares the file system, so both would fight over
    /run/libvirt and break each other's VMs."""
    if daemon_answers():
        raise RuntimeError(f"a libvirt daemon already answers at {URI} (a host libvirtd or "
                           "another test's or bench's): stop it first; this harness starts "
                           "its own in a network namespace and cannot share the socket")
    name = name or f"gb-e2e-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        with tempfile.TemporaryDirectory(prefix="goldbox-libvirt-") as scratch:
            subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
                           check=True)
            daemons = start_daemons(Path(scratch), wrapper=["ip", "netns", "exec", name])
            try:
                yield name
            finally:
                daemons.stop()
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)

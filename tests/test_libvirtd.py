"""goldbox.libvirtd for real: virtlogd and libvirtd started inside a network namespace this
test creates (as on a host without a service manager), answering, with a usable /dev/kvm
view that leaves the host's device untouched, then stopped: no daemon is left running.

Starts libvirtd: run it under `flock /work/vm.lock` on a shared machine (libvirtd in a
netns shares /run/libvirt with the host)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from goldbox import libvirtd
from goldbox.errors import GoldboxError


@pytest.fixture
def netns():
    name = f"gb-libvirtd-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
                       check=True)
        yield ["ip", "netns", "exec", name]
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def _capabilities_seconds(wrapper: list[str]) -> float:
    started = time.monotonic()
    subprocess.run([*wrapper, "virsh", "-c", libvirtd.URI, "capabilities"], check=True,
                   capture_output=True)
    return time.monotonic() - started


def test_daemons_start_answer_and_stop(netns, tmp_path):
    host_kvm = libvirtd.KVM.stat() if libvirtd.KVM.exists() else None
    daemons = libvirtd.start_daemons(tmp_path, wrapper=netns)
    try:
        assert "libvirtd" in daemons.daemons
        for pid, pidfile in daemons.daemons.values():
            assert Path(f"/proc/{pid}").exists() and int(pidfile.read_text()) == pid
        assert libvirtd.answers(netns)
        pid = daemons.daemons["libvirtd"][0]
        if libvirtd.kvm_permission_problem():
            # libvirtd's own view of /dev/kvm has udev's permissions ...
            seen = Path(f"/proc/{pid}/root/dev/kvm").stat()
            assert oct(seen.st_mode & 0o777) == oct(0o660), seen
            assert seen.st_rdev == host_kvm.st_rdev
            # ... so its QEMU capabilities are probed once and cached.
            _capabilities_seconds(netns)
            assert _capabilities_seconds(netns) < 2
        assert "kill $(cat " in daemons.stop_hint()
    finally:
        daemons.stop()
    for pid, pidfile in daemons.daemons.values():
        assert not Path(f"/proc/{pid}").exists() and not pidfile.exists()
    assert not libvirtd.answers(netns, timeout=10)
    if host_kvm is not None:  # the host's device is left as it was
        after = libvirtd.KVM.stat()
        assert (after.st_mode, after.st_uid, after.st_gid) == \
            (host_kvm.st_mode, host_kvm.st_uid, host_kvm.st_gid)


def test_with_a_service_manager_the_error_names_the_systemctl_command(monkeypatch):
    monkeypatch.setattr(libvirtd, "answers", lambda *a, **k: False)
    monkeypatch.setattr(libvirtd, "has_service_manager", lambda: True)
    with pytest.raises(GoldboxError, match=r"sudo systemctl start libvirtd"):
        libvirtd.ensure_answering()

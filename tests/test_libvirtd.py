"""goldbox.libvirtd for real: virtlogd and libvirtd started inside a network namespace this
test creates (as on a host without a service manager), answering, with a usable /dev/kvm
view that leaves the host's device untouched, then stopped: no daemon is left running.

The scenario runs in a private mount namespace with fresh tmpfs over libvirt's runtime and
state folders, so it neither sees nor disturbs another libvirtd on the machine (one that
runs a VM of `invoke up` or of another test): it boots no VM and may run beside them."""

from __future__ import annotations

import grp
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from goldbox import PROJECT_ROOT, libvirtd
from goldbox.errors import GoldboxError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="starts libvirtd: needs root")

# libvirt's sockets, pid and lock files, QEMU capability cache and driver state.
PRIVATE = ["/run/libvirt", "/var/lib/libvirt", "/var/cache/libvirt"]

SCENARIO = r"""
import json, os, subprocess, sys
from pathlib import Path
from goldbox import libvirtd, virt

netns, run_dir, private = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
for folder in private:
    subprocess.run(["mount", "-t", "tmpfs", "goldbox-test", folder], check=True)
wrapper = ["ip", "netns", "exec", netns]

def capabilities_cache():
    # `virsh capabilities`, then libvirt's QEMU capability cache files: (name, inode,
    # mtime). A probe that is not cached rewrites them at every call.
    subprocess.run([*wrapper, *virt.VIRSH, "capabilities"], check=True,
                   capture_output=True)
    folder = Path("/var/cache/libvirt/qemu/capabilities")
    return sorted((path.name, path.stat().st_ino, path.stat().st_mtime_ns)
                  for path in folder.glob("*.xml"))

report = {"answered_before": virt.daemon_answers(wrapper, timeout=10)}
daemons = libvirtd.start_daemons(run_dir, wrapper=wrapper)
try:
    report["daemons"] = {name: [pid, str(pidfile), int(pidfile.read_text()),
                                Path(f"/proc/{pid}").exists()]
                         for name, (pid, pidfile) in daemons.daemons.items()}
    report["answers"] = virt.daemon_answers(wrapper)
    seen = os.stat(f"/proc/{daemons.daemons['libvirtd'][0]}/root/dev/kvm")
    report["libvirtd_kvm"] = [seen.st_mode & 0o777, seen.st_gid, seen.st_rdev]
    report["capabilities_cache"] = [capabilities_cache() for _ in range(3)]
    report["stop_hint"] = daemons.stop_hint()
finally:
    daemons.stop()
report["answers_after"] = virt.daemon_answers(wrapper, timeout=10)
print(json.dumps(report))
"""


@pytest.fixture
def netns():
    name = f"gb-libvirtd-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
                       check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


@pytest.mark.skipif(not libvirtd.KVM.exists(), reason="the /dev/kvm view needs a /dev/kvm")
def test_daemons_start_answer_and_stop(netns, tmp_path):
    host_kvm = libvirtd.KVM.stat()
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", SCENARIO,
         netns, str(tmp_path), *PRIVATE],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    print(report)
    assert not report["answered_before"]
    assert set(report["daemons"]) == {"virtlogd", "libvirtd"}
    for pid, pidfile, pid_in_file, alive in report["daemons"].values():
        assert alive and pid == pid_in_file and Path(pidfile).parent == tmp_path
        # Stopped: the process is gone and so is its pid file.
        assert not Path(f"/proc/{pid}").exists() and not Path(pidfile).exists()
    assert report["answers"] and not report["answers_after"]
    mode, gid, rdev = report["libvirtd_kvm"]
    assert rdev == host_kvm.st_rdev  # the same device ...
    assert (mode, gid) == (0o660, grp.getgrnam(libvirtd.KVM_GROUP).gr_gid)  # ... as udev sets it
    # So QEMU's capabilities are probed once and then cached (8-10 s per call otherwise):
    # the cache files the first call wrote are the ones the next calls find.
    first, *later = report["capabilities_cache"]
    assert first and later == [first, first], report["capabilities_cache"]
    assert report["stop_hint"] == " ".join(
        ["kill", *(f"$(cat {pidfile})" for _, pidfile, _, _ in report["daemons"].values())])
    after = libvirtd.KVM.stat()  # the host's device is left as it was
    assert (after.st_mode, after.st_uid, after.st_gid) == \
        (host_kvm.st_mode, host_kvm.st_uid, host_kvm.st_gid)


def test_with_a_service_manager_the_error_names_the_systemctl_command(monkeypatch):
    monkeypatch.setattr(libvirtd, "daemon_answers", lambda *a, **k: False)
    monkeypatch.setattr(libvirtd, "has_service_manager", lambda: True)
    with pytest.raises(GoldboxError, match=r"sudo systemctl start libvirtd"):
        libvirtd.ensure_answering()

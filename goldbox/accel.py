"""Decide between KVM and TCG by booting a real kernel, not by looking at /dev/kvm.

A nested "PVM" /dev/kvm can run a boot sector yet hang a normal kernel, so the probe
boots a Linux kernel without a root disk and waits for its "VFS: Unable to mount root"
panic: reaching it proves the accelerator runs a kernel to the end of its start-up.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from goldbox import proc
from goldbox.files import write_atomically

PANIC = "VFS: Unable to mount root fs"
PROBE_SECONDS = 20


@dataclass(frozen=True)
class Acceleration:
    accelerator: str  # "kvm" or "tcg"
    reason: str

    @property
    def libvirt_driver(self) -> str:
        return "kvm" if self.accelerator == "kvm" else "qemu"


def probe_kernel() -> Path | None:
    kernels = sorted(glob.glob("/boot/vmlinuz-*"), key=os.path.getmtime)
    return Path(kernels[-1]) if kernels else None


def boots_with(accel: str, kernel: Path, seconds: float = PROBE_SECONDS) -> tuple[bool, float]:
    """Boot `kernel` under `-accel accel`; True when it reaches its root-fs panic in time."""
    argv = ["qemu-system-x86_64", "-accel", accel, "-display", "none", "-serial", "stdio",
            "-monitor", "none", "-no-reboot", "-m", "256", "-kernel", str(kernel),
            "-append", "console=ttyS0 panic=-1 loglevel=3"]
    if shutil.which(argv[0]) is None:
        return False, 0.0
    start = time.monotonic()
    try:
        out = proc.capture(argv, timeout=seconds, check=False).stdout
    except proc.TimedOut:  # it hangs: the probe's very case (a nested PVM /dev/kvm)
        return False, time.monotonic() - start
    return PANIC in out, time.monotonic() - start


def detect(cache_dir: Path | None = None) -> Acceleration:
    """KVM when a kernel boots under it, TCG otherwise; cached per host kernel and qemu."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Acceleration("tcg", "/dev/kvm is missing or not accessible")
    kernel = probe_kernel()
    if kernel is None:
        return Acceleration("tcg", "no /boot/vmlinuz-* to probe KVM with")
    key = f"{os.uname().release}|{kernel}|{kernel.stat().st_mtime_ns}"
    cache = cache_dir / "accel-probe.json" if cache_dir else None
    if cache and cache.is_file():
        try:
            saved = json.loads(cache.read_text())
            if saved.get("key") == key and saved["accelerator"] in ("kvm", "tcg"):
                return Acceleration(saved["accelerator"], saved["reason"] + " (cached probe)")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            print(f"note: {cache} is unreadable or corrupt; probing again")
    ok, seconds = boots_with("kvm", kernel)
    result = (Acceleration("kvm", f"{kernel.name} booted under KVM in {seconds:.1f} s") if ok
              else Acceleration("tcg", f"{kernel.name} did not boot under KVM within "
                                f"{PROBE_SECONDS} s (nested or unusable KVM)"))
    if cache:
        write_atomically(cache, json.dumps({"key": key, **vars(result)}) + "\n")
    return result

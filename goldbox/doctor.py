"""`invoke doctor`: one line per host prerequisite, with a fix hint when it is missing."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from goldbox import accel, proc
from goldbox.errors import GoldboxError

MIN_FREE_GIB = 15


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    hint: str = ""
    required: bool = True


def _version(argv: list[str], pattern: str) -> str | None:
    try:
        out = proc.capture(argv, timeout=60, check=False)
    except GoldboxError:  # not installed, or hung
        return None
    match = re.search(pattern, out.stdout + out.stderr)
    return match.group(1) if match else None


def _tool(name: str, argv: list[str], pattern: str, hint: str) -> Check:
    if shutil.which(argv[0]) is None:
        return Check(name, False, f"{argv[0]} not found on PATH", hint)
    version = _version(argv, pattern)
    if version is None:
        return Check(name, False, f"`{' '.join(argv)}` gave no version", hint)
    return Check(name, True, version)


def check_vagrant_libvirt() -> Check:
    hint = "apt-get install vagrant-libvirt"
    if shutil.which("vagrant") is None:
        return Check("vagrant-libvirt", False, "vagrant not found", hint)
    version = _version(["vagrant", "plugin", "list"], r"vagrant-libvirt \(([^,)]+)")
    return Check("vagrant-libvirt", version is not None,
                 version or "plugin not installed", "" if version else hint)


def check_libvirtd() -> Check:
    """A daemon that does not answer is a missing prerequisite only where `invoke up`
    cannot start it: with a service manager (the user starts it), or without the daemons'
    programs. Where no service manager runs, `up` starts virtlogd and libvirtd itself
    (libvirtd.ensure_answering): a warning that says so, not a failure."""
    from goldbox.libvirtd import DAEMONS, has_service_manager
    from goldbox.virt import URI, daemon_version

    managed = has_service_manager()
    hint = ("apt-get install libvirt-daemon-system, then `sudo systemctl start libvirtd`"
            if managed else "apt-get install libvirt-daemon-system")
    if shutil.which("virsh") is None:
        return Check("libvirt daemon", False, "virsh not found", hint)
    version = daemon_version(timeout=60)
    if version is not None:
        return Check("libvirt daemon", True, f"{URI}, daemon {version}")
    missing = [name for name in DAEMONS if shutil.which(name) is None]
    if managed or missing:
        detail = f"{URI} is not reachable" + (
            f" ({', '.join(missing)} not found on PATH)" if missing else "")
        return Check("libvirt daemon", False, detail, hint)
    return Check("libvirt daemon", False, f"{URI} is not reachable (no daemon runs)",
                 "no service manager runs here: `invoke up` starts virtlogd and libvirtd "
                 "itself", required=False)


def check_acceleration(cache_dir: Path) -> Check:
    result = accel.detect(cache_dir)
    if result.accelerator == "kvm":
        return Check("acceleration", True, f"KVM works: {result.reason}")
    return Check("acceleration", False, f"TCG will be used: {result.reason}",
                 "builds and boots are ~11x slower under TCG", required=False)


def check_kvm_permissions() -> Check:
    """/dev/kvm that libvirt's QEMU user cannot open makes libvirtd re-probe QEMU on every
    call (seconds each); goldbox does not change host devices, it says how."""
    from goldbox.libvirtd import KVM_FIX, kvm_permission_problem

    problem = kvm_permission_problem()
    if problem is None:
        return Check("/dev/kvm permissions", True, "as udev sets them (or no /dev/kvm)")
    return Check("/dev/kvm permissions", False,
                 f"{problem}: a libvirtd you start re-probes QEMU on every call "
                 "(the one `invoke up` starts works around it)", KVM_FIX, required=False)


def check_disk(path: Path) -> Check:
    probe = path
    while not probe.exists():
        probe = probe.parent
    free_gib = shutil.disk_usage(probe).free / 2**30
    return Check("free disk", free_gib >= MIN_FREE_GIB,
                 f"{free_gib:.0f} GiB free at {path} (needs {MIN_FREE_GIB} GiB)",
                 "" if free_gib >= MIN_FREE_GIB else "free space or set cache.dir / GOLDBOX_CACHE")


def run_checks(cache_dir: Path) -> list[Check]:
    return [
        _tool("packer", ["packer", "version"], r"Packer v(\S+)", "apt-get install packer"),
        _tool("vagrant", ["vagrant", "--version"], r"Vagrant (\S+)", "apt-get install vagrant"),
        check_vagrant_libvirt(),
        _tool("qemu-system-x86_64", ["qemu-system-x86_64", "--version"], r"version (\S+)",
              "apt-get install qemu-system-x86"),
        _tool("qemu-img", ["qemu-img", "--version"], r"version (\S+)",
              "apt-get install qemu-utils"),
        check_libvirtd(),
        check_kvm_permissions(),
        check_acceleration(cache_dir),
        _tool("debootstrap", ["debootstrap", "--version"], r"debootstrap (\S+)",
              "apt-get install debootstrap"),
        check_disk(cache_dir),
    ]


def format_checks(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for check in checks:
        mark = "ok  " if check.ok else ("FAIL" if check.required else "warn")
        line = f"{mark}  {check.name:<{width}}  {check.detail}"
        if check.hint and (not check.ok or not check.required):
            line += f"  -> {check.hint}"
        lines.append(line)
    return "\n".join(lines)

"""The guest architectures goldbox builds for, as data: what debootstrap, grub, the
kernel and qemu need to know about each. amd64 is the host's own (and the default of
every function taking an `arch`); arm64 is built here through qemu-user (binfmt_misc)
and booted under qemu-system-aarch64 with UEFI firmware (TCG)."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from goldbox import proc
from goldbox.errors import GoldboxError

BINFMT_MISC = Path("/proc/sys/fs/binfmt_misc")


@dataclass(frozen=True)
class Architecture:
    """One Debian architecture and the way its guests boot."""

    name: str                 # Debian's name: debootstrap --arch, package suffixes
    gnu_type: str             # the multiarch triplet: /usr/lib/<gnu_type>, cross gcc
    grub_package: str         # the grub flavour installed in the rootfs
    grub_target: str          # grub-mkimage -O, and the module folder /usr/lib/grub/<it>
    console: str              # the serial console the kernel writes to
    qemu_binary: str          # qemu-system-*
    machine: str              # qemu -machine type
    cpu: str | None           # qemu -cpu (None: qemu's default for the machine)
    firmware: str | None      # UEFI code image (None: SeaBIOS, the i386-pc grub boots)
    qemu_user: str | None     # binfmt_misc entry that runs its binaries on this host

    @property
    def efi(self) -> bool:
        return self.firmware is not None

    def qemu_machine_args(self) -> list[str]:
        """qemu's machine, CPU and firmware options for a guest of this architecture
        (the accelerator, disk and network are the caller's)."""
        return ["-machine", self.machine, *(["-cpu", self.cpu] if self.cpu else []),
                *(["-bios", self.firmware] if self.firmware else [])]

    def packer_variables(self) -> dict[str, str]:
        """The variables of packer/debootstrap.pkr.hcl.j2 that choose the guest's
        architecture (its defaults are amd64's)."""
        return {"qemu_binary": self.qemu_binary, "machine_type": self.machine,
                "cpu_model": self.cpu or "", "firmware": self.firmware or ""}

    @property
    def uname_machine(self) -> str:
        """The kernel's machine name (`uname -m`): x86_64, aarch64."""
        return self.gnu_type.split("-", 1)[0]

    def wheel_platforms(self, amd64_tags: list[str]) -> list[str]:
        """The platform's wheel tags (named for amd64, e.g. manylinux2014_x86_64) for
        this architecture: the same tags with its machine name."""
        return [re.sub(r"_x86_64\Z", f"_{self.uname_machine}", tag) for tag in amd64_tags]

    def cross_packages(self, build_packages: list[str]) -> list[str]:
        """What compiling for this architecture on an amd64 host takes, from the
        platform's build packages: Debian's cross toolchain for build-essential, the
        libraries' -dev packages of this architecture (multiarch), the tools as they are."""
        return [f"crossbuild-essential-{self.name}" if name == "build-essential" else
                f"{name}:{self.name}" if name.endswith("-dev") else name
                for name in build_packages]

    def kernel_package(self, platform_kernel: str) -> str:
        """The platform's kernel package (named for amd64, e.g. linux-image-cloud-amd64)
        for this architecture: Debian names its flavours the same with the arch's
        suffix (linux-image-cloud-arm64)."""
        return re.sub(r"-amd64\Z", f"-{self.name}", platform_kernel)


AMD64 = Architecture(
    name="amd64", gnu_type="x86_64-linux-gnu", grub_package="grub-pc", grub_target="i386-pc",
    console="ttyS0", qemu_binary="qemu-system-x86_64", machine="pc",
    # The CPU of packer/debootstrap.pkr.hcl.j2 and vagrant/Vagrantfile.j2 (issue 22).
    cpu="qemu64,+rdrand", firmware=None,
    qemu_user=None)
ARM64 = Architecture(
    name="arm64", gnu_type="aarch64-linux-gnu", grub_package="grub-efi-arm64",
    grub_target="arm64-efi",
    # The `virt` machine's PL011 UART.
    console="ttyAMA0", qemu_binary="qemu-system-aarch64", machine="virt",
    # TCG's `max`: every feature qemu emulates (virt's default is a 32-bit cortex-a15).
    cpu="max",
    firmware="/usr/share/qemu-efi-aarch64/QEMU_EFI.fd", qemu_user="qemu-aarch64")
ARCHITECTURES = {arch.name: arch for arch in (AMD64, ARM64)}


def architecture(name: str) -> Architecture:
    """The architecture called `name` (Debian's name), or one error line listing those
    goldbox knows."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise GoldboxError(f"unknown architecture {name!r}: expected one of "
                           f"{', '.join(sorted(ARCHITECTURES))}") from None


def check_foreign_binaries(arch: Architecture, binfmt: Path = BINFMT_MISC) -> None:
    """Stop with one line unless this host can run `arch`'s binaries (debootstrap and
    every chroot of that arch need it): binfmt_misc mounted and qemu-user registered
    for it, as qemu-user-static + binfmt-support do (`update-binfmts --enable`).

    binfmt-support's service does that at boot; on a host where no service manager ran
    it (a container, a VM started without systemd), goldbox does it itself when it can
    (root, update-binfmts and qemu-user-static's entry installed), and says so."""
    if arch.qemu_user is None:
        return
    try:
        _check_registered(arch, binfmt)
    except GoldboxError:
        if binfmt != BINFMT_MISC or not _can_register(arch):
            raise
        _register(arch, binfmt)
        _check_registered(arch, binfmt)


# Where qemu-user-static puts its binfmt_misc entries for update-binfmts to import.
BINFMTS = Path("/usr/share/binfmts")


def _can_register(arch: Architecture) -> bool:
    return (os.geteuid() == 0 and shutil.which("update-binfmts") is not None
            and (BINFMTS / str(arch.qemu_user)).is_file())


def _register(arch: Architecture, binfmt: Path) -> None:
    """What binfmt-support's boot service does, for `arch` only."""
    done = []
    if not (binfmt / "status").is_file():
        proc.run(["mount", "-t", "binfmt_misc", "binfmt_misc", binfmt], prefix="binfmt_misc")
        done.append(f"mounted {binfmt}")
    proc.run(["update-binfmts", "--enable", str(arch.qemu_user)], prefix="binfmt_misc")
    done.append(f"enabled {arch.qemu_user} (update-binfmts --enable {arch.qemu_user})")
    print(f"no service registered qemu-user here: goldbox {' and '.join(done)}", flush=True)


def _check_registered(arch: Architecture, binfmt: Path) -> None:
    entry = binfmt / str(arch.qemu_user)
    if not (binfmt / "status").is_file():
        raise GoldboxError(f"{binfmt} is not mounted: an {arch.name} chroot needs "
                           f"binfmt_misc (mount -t binfmt_misc binfmt_misc {binfmt}; "
                           f"update-binfmts --enable {arch.qemu_user})")
    try:
        registered = entry.read_text()
    except OSError:
        registered = ""
    if not registered.startswith("enabled"):
        raise GoldboxError(f"{entry}: {arch.qemu_user} is not registered and enabled: install "
                           f"qemu-user-static and binfmt-support, then update-binfmts "
                           f"--enable {arch.qemu_user}")
    # The F flag: the kernel opens the interpreter when it is registered, so it also runs
    # inside a chroot that has no /usr/bin/qemu-aarch64-static of its own.
    flags = re.search(r"^flags: *(\S*)$", registered, re.M)
    if not flags or "F" not in flags.group(1):
        raise GoldboxError(f"{entry}: {arch.qemu_user} is registered without the F (fix "
                           "binary) flag, so it cannot run inside a chroot: use "
                           "qemu-user-static's registration")


def host_architecture() -> Architecture:
    """The architecture of this host (its kernel's machine name is the first part of the
    multiarch triplet), or one error line."""
    machine = os.uname().machine
    for arch in ARCHITECTURES.values():
        if arch.uname_machine == machine:
            return arch
    raise GoldboxError(f"this host's machine {machine!r} is none goldbox boots boxes on "
                       f"(known: {', '.join(sorted(ARCHITECTURES))})")

"""arm64: the architecture table, the host check for running its binaries, and what the
base disk's identity says for it (fast); the real arm64 base disk is in
test_arm64_boot.py (slow)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from goldbox import PROJECT_ROOT
from goldbox.arch import AMD64, ARM64, architecture, check_foreign_binaries
from goldbox.basedisk import base_disk_identity, kernel_args
from goldbox.bundle import build_cpython_bundle, bundle_identity
from goldbox.cache import identity_key
from goldbox.config import load_config
from goldbox.efidisk import esp_fstab_line, esp_uuid
from goldbox.errors import GoldboxError
from goldbox.native import release_of
from goldbox.recipe import goldbox_code
from goldbox.render import render_platform
from goldbox.rootfs import rootfs_identity
from goldbox.validate import declared_variables, packer_placeholder_vars

TRIXIE = {"suite": "trixie", "mirror": "http://deb.debian.org/debian", "variant": "minbase",
          "packages": ["python3"]}
FSTAB_GENERATOR = "/lib/systemd/system-generators/systemd-fstab-generator"
# The kernel's own registration line for qemu-user-static's aarch64 entry.
REGISTERED = ("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: {flags}\n"
              "offset 0\nmagic 7f454c460201010000000000000000000200b700\n")


def test_unknown_architecture_is_one_line_naming_the_known_ones():
    assert architecture("arm64") is ARM64
    with pytest.raises(GoldboxError, match=r"unknown architecture 'riscv64': expected one of "
                                           r"amd64, arm64"):
        architecture("riscv64")


def test_kernel_flavour_follows_the_architecture():
    assert ARM64.kernel_package("linux-image-cloud-amd64") == "linux-image-cloud-arm64"
    assert ARM64.kernel_package("linux-image-amd64") == "linux-image-arm64"
    assert AMD64.kernel_package("linux-image-cloud-amd64") == "linux-image-cloud-amd64"


def test_arm64_kernel_writes_to_the_virt_machines_uart_last():
    assert kernel_args(ARM64).split()[-2:] == ["console=ttyAMA0", "net.ifnames=0"]
    assert kernel_args() == "console=tty0 console=ttyS0 net.ifnames=0 no_timer_check tsc=unstable"


def test_amd64_cache_identities_are_those_made_before_there_were_architectures():
    """Adding arm64 must not rebuild anyone's amd64 rootfs: its identity names no arch."""
    assert "arch" not in rootfs_identity(**TRIXIE)
    assert identity_key("rootfs", rootfs_identity(**TRIXIE)) == identity_key(
        "rootfs", rootfs_identity(**TRIXIE, arch="amd64"))
    assert identity_key("rootfs", rootfs_identity(**TRIXIE)) != identity_key(
        "rootfs", rootfs_identity(**TRIXIE, arch="arm64"))


def test_arm64_base_disk_takes_uefi_grub_and_the_arm64_kernel():
    platform = load_config().platform("debian-13")
    amd64 = base_disk_identity(platform)
    arm64 = base_disk_identity(platform, arch=ARM64)
    kernel = platform.source.kernel_package  # named for amd64, e.g. linux-image-amd64
    assert amd64["arch"] == {"name": "amd64", "gnu_type": "x86_64-linux-gnu",
                             "grub": "i386-pc", "console": "ttyS0", "efi": False}
    assert {"grub-pc", kernel} <= set(amd64["packages"])
    assert arm64["arch"]["name"] == "arm64" and arm64["arch"]["efi"]
    assert {"grub-efi-arm64", ARM64.kernel_package(kernel)} <= set(arm64["packages"])
    assert not {"grub-pc", kernel} & set(arm64["packages"])


def test_esp_is_mounted_by_its_volume_id_and_never_blocks_the_boot():
    assert esp_uuid("0a1b2c3d") == "0A1B-2C3D"
    assert esp_fstab_line("0a1b2c3d").startswith("UUID=0A1B-2C3D /boot/efi vfat ")


def test_the_boot_waits_for_no_esp_device_the_esp_mounts_on_first_access(tmp_path):
    """systemd's own fstab generator, run on the fstab line: local-fs.target (the boot)
    pulls in only the ESP's automount, never its mount (which waits for the device)."""
    fstab = tmp_path / "fstab"
    fstab.write_text(esp_fstab_line("0a1b2c3d"))
    units = tmp_path / "units"
    units.mkdir()
    subprocess.run([FSTAB_GENERATOR, units, units, units], check=True,
                   env={"SYSTEMD_FSTAB": str(fstab), "SYSTEMD_PROC_CMDLINE": ""})
    wanted = {path.name for path in (units / "local-fs.target.wants").iterdir()}
    assert "boot-efi.automount" in wanted
    assert "boot-efi.mount" not in wanted
    assert "What=/dev/disk/by-uuid/0A1B-2C3D" in (units / "boot-efi.mount").read_text()


def binfmt_folder(tmp_path: Path, entry: str | None) -> Path:
    (tmp_path / "status").write_text("enabled\n")
    if entry is not None:
        (tmp_path / "qemu-aarch64").write_text(entry)
    return tmp_path


def test_foreign_binaries_need_binfmt_misc_mounted(tmp_path):
    with pytest.raises(GoldboxError, match=rf"^{tmp_path} is not mounted: .*update-binfmts "
                                           r"--enable qemu-aarch64\)$"):
        check_foreign_binaries(ARM64, tmp_path)


def test_foreign_binaries_need_qemu_aarch64_registered_and_enabled(tmp_path):
    with pytest.raises(GoldboxError, match="qemu-aarch64 is not registered and enabled"):
        check_foreign_binaries(ARM64, binfmt_folder(tmp_path, None))
    (tmp_path / "qemu-aarch64").write_text(REGISTERED.format(flags="PF").replace(
        "enabled", "disabled", 1))
    with pytest.raises(GoldboxError, match="qemu-aarch64 is not registered and enabled"):
        check_foreign_binaries(ARM64, tmp_path)


def test_foreign_binaries_need_the_fix_binary_flag_to_run_in_a_chroot(tmp_path):
    with pytest.raises(GoldboxError, match="without the F"):
        check_foreign_binaries(ARM64, binfmt_folder(tmp_path, REGISTERED.format(flags="P")))
    check_foreign_binaries(ARM64, binfmt_folder(tmp_path, REGISTERED.format(flags="PF")))


REGISTER_ON_A_BARE_HOST = """
from goldbox.arch import ARM64, BINFMT_MISC, check_foreign_binaries
check_foreign_binaries(ARM64)
print((BINFMT_MISC / "qemu-aarch64").read_text())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting binfmt_misc needs root")
def test_on_a_host_no_service_prepared_goldbox_registers_qemu_aarch64_itself():
    """A host with no service manager (like this one): nothing mounted binfmt_misc or ran
    binfmt-support's update-binfmts at boot. Seen in a user namespace of its own, whose
    binfmt_misc is an empty instance (Linux >= 6.7) and whose /proc/sys/fs/binfmt_misc
    starts as an empty folder: the host's own registrations are not touched."""
    script = ('mount -t tmpfs empty /proc/sys/fs/binfmt_misc && exec "$0" -c "$1"')
    result = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-ec",
                             script, sys.executable, REGISTER_ON_A_BARE_HOST],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    said, registered = result.stdout.split("\n", 1)
    assert said == ("no service registered qemu-user here: goldbox mounted "
                    "/proc/sys/fs/binfmt_misc and enabled qemu-aarch64 (update-binfmts "
                    "--enable qemu-aarch64)")
    assert registered.startswith("enabled\n")
    assert re.search(r"^flags: \S*F", registered, re.M), registered


def test_the_hosts_own_architecture_needs_no_binfmt(tmp_path):
    check_foreign_binaries(AMD64, tmp_path)


def test_the_packer_template_takes_the_arm64_machine_as_variables(tmp_path):
    """The same template for both architectures: packer accepts arm64's variables, and
    they land in qemu's command line options (-cpu, -bios) only when set."""
    config = load_config()
    rendered = render_platform(config, config.platform("debian-13"), tmp_path / "out")
    template = rendered.packer_template
    assert set(ARM64.packer_variables()) <= declared_variables(template)
    values = {**packer_placeholder_vars(template, tmp_path), **ARM64.packer_variables()}
    argv = ["packer", "validate", *(f"-var={name}={value}" for name, value in values.items()),
            template.name]
    result = subprocess.run(argv, cwd=template.parent, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = template.read_text()
    assert 'var.cpu_model == "" ? [] : [["-cpu", var.cpu_model]]' in text
    assert 'var.firmware == "" ? [] : [["-bios", var.firmware]]' in text
    assert AMD64.packer_variables() == {"qemu_binary": "qemu-system-x86_64",
                                        "machine_type": "pc", "cpu_model": "qemu64,+rdrand",
                                        "firmware": ""}


def test_an_arm64_native_build_is_an_entry_of_its_own_and_amd64s_keep_their_keys():
    """The cross build: the amd64 identity plus the architecture and the cross code."""
    platform = load_config().platform("debian-13")
    inputs = {"platform": "debian-13", "python_version": "3.13.15", "tarball_sha256": "0" * 64,
              "configure_flags": []}
    amd64 = bundle_identity(release=release_of(platform), **inputs)
    arm64_release = release_of(platform, "arm64")
    arm64 = bundle_identity(release=arm64_release, **inputs)
    assert "arch" not in amd64 and "cross" not in amd64
    assert {key: value for key, value in arm64.items()
            if key not in ("arch", "cross")} == amd64
    assert arm64["arch"] == "arm64" and arm64["cross"] == goldbox_code("cross")
    assert arm64_release.cross and not release_of(platform).cross
    assert arm64_release.label("debian-13") == "debian-13-arm64"
    assert release_of(platform).label("debian-13") == "debian-13"


def test_cross_packages_are_the_toolchain_and_the_targets_dev_packages():
    build = load_config().platform("debian-13").packages.build
    cross = ARM64.cross_packages(list(build))
    assert cross[0] == "crossbuild-essential-arm64" and "build-essential" not in cross
    assert "libssl-dev:arm64" in cross and "zlib1g-dev:arm64" in cross
    # Tools run on the host: its own architecture.
    assert "pkg-config" in cross and "xz-utils" in cross


def test_wheel_tags_follow_the_architecture():
    tags = load_config().platform("debian-13").python.wheel_platforms
    assert ARM64.wheel_platforms(list(tags)) == ["manylinux_2_17_aarch64",
                                                 "manylinux2014_aarch64"]
    assert AMD64.wheel_platforms(list(tags)) == list(tags)
    assert (ARM64.uname_machine, AMD64.uname_machine) == ("aarch64", "x86_64")


def test_a_cross_bundle_without_its_build_python_is_one_error_before_any_work(tmp_path):
    platform = load_config().platform("debian-13")
    with pytest.raises(GoldboxError, match=r"CPython 3.13.15 for arm64: a cross build needs "
                                           r"the amd64 bundle"):
        build_cpython_bundle(tmp_path, platform="debian-13",
                             release=release_of(platform, "arm64"), python_version="3.13.15",
                             tarball=tmp_path / "Python-3.13.15.tar.xz",
                             tarball_sha256="0" * 64, configure_flags=[])
    assert not any(tmp_path.iterdir())

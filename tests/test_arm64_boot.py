"""The arm64 base disk of debian-13: debootstrapped through qemu-user, made into a GPT
disk with an EFI system partition (no loop device, no mount), then booted for real under
qemu-system-aarch64 (`virt`, `-cpu max`, UEFI firmware, TCG) and logged into over SSH
as vagrant with Vagrant's insecure key. Run it under `flock /work/vm.lock`."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from goldbox.arch import ARM64
from goldbox.basedisk import base_disk_file, build_base_disk
from goldbox.config import BOX_DISK_GIB, load_config
from goldbox.efidisk import ESP_OFFSET, ROOT_OFFSET
from goldbox.keys import insecure_private_key
from tests.test_basedisk import CACHE, SSH_OPTIONS, free_port, raw_copy
from tests.test_basedisk import debugfs as basedisk_debugfs
from tests.test_basedisk import pytestmark as basedisk_marks

# Opt-in until it has passed once: its arm64 debootstrap through qemu-user took 64 min on
# this 2-core machine under load, beyond what CI's run can hold. Run it with
# GOLDBOX_TEST_ARM64=1 (docs/platforms.md, "arm64").
pytestmark = [*basedisk_marks, pytest.mark.skipif(
    os.environ.get("GOLDBOX_TEST_ARM64") != "1",
    reason="arm64 boot: opt-in with GOLDBOX_TEST_ARM64=1 (not yet passed; ~1 h under TCG)")]


# A liveness bound, not a speed check: under TCG on this 2-core machine, with other builds
# running, an arm64 trixie took ~9 min from power-on to sshd (the kernel alone ~100 s to
# /init; the first boot's ldconfig, journal catalog and host keys run emulated too).
SSH_WAIT_S = 1500


@pytest.fixture(scope="module")
def arm64_base_disk(tmp_path_factory):
    platform = load_config().platform("debian-13")
    log = tmp_path_factory.mktemp("log") / "basedisk-arm64.log"
    started = time.monotonic()
    entry = build_base_disk(CACHE, platform, log=log, arch=ARM64)
    disk = entry.file(base_disk_file(entry))
    print(f"arm64 base disk: {time.monotonic() - started:.1f} s, "
          f"{disk.stat().st_size / 2**20:.0f} MiB, {disk}")
    return disk


@pytest.fixture(scope="module")
def arm64_raw(arm64_base_disk, tmp_path_factory):
    return raw_copy(arm64_base_disk, tmp_path_factory)


def debugfs(raw: Path, request: str) -> str:
    return basedisk_debugfs(raw, request, f"?offset={ROOT_OFFSET}")


def test_arm64_disk_is_gpt_with_grub_at_the_removable_uefi_path(arm64_raw):
    table = json.loads(subprocess.run(["sfdisk", "--json", arm64_raw], capture_output=True,
                                      text=True, check=True).stdout)["partitiontable"]
    assert table["label"] == "gpt"
    esp, root = table["partitions"]
    assert esp["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    assert (esp["start"] * 512, root["start"] * 512) == (ESP_OFFSET, ROOT_OFFSET)
    listing = subprocess.run(["mdir", "-b", "-i", f"{arm64_raw}@@{ESP_OFFSET}", "::/EFI/BOOT"],
                             capture_output=True, text=True, check=True).stdout
    assert "BOOTAA64.EFI" in listing
    fstab = debugfs(arm64_raw, "cat /etc/fstab")
    assert " /boot/efi vfat " in fstab
    assert "console=ttyAMA0" in debugfs(arm64_raw, "cat /boot/grub/grub.cfg")
    assert "ssh_host_" not in debugfs(arm64_raw, "ls -l /etc/ssh")


def test_arm64_kernel_has_the_virt_machines_drivers(arm64_raw):
    """Built in or as modules: the PL011 UART (console), virtio PCI, block and net."""
    config_name = next(line.split()[-1] for line in debugfs(arm64_raw, "ls -l /boot").splitlines()
                       if line.split() and line.split()[-1].startswith("config-"))
    config = debugfs(arm64_raw, f"cat /boot/{config_name}")
    for option in ("SERIAL_AMBA_PL011", "VIRTIO_PCI", "VIRTIO_BLK", "VIRTIO_NET", "EFI"):
        assert f"CONFIG_{option}=y" in config or f"CONFIG_{option}=m" in config, option


def test_arm64_base_disk_boots_by_uefi_under_tcg_and_vagrant_logs_in(arm64_base_disk, tmp_path):
    """Booted from an overlay 2 GiB larger than the base disk: / grows to fill it."""
    grown_gib = BOX_DISK_GIB + 2
    disk = tmp_path / "vm.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(arm64_base_disk),
                    "-F", "qcow2", str(disk), f"{grown_gib}G"], check=True)
    key = tmp_path / "vagrant"
    shutil.copyfile(insecure_private_key(), key)
    key.chmod(0o600)
    port = free_port()
    console = tmp_path / "console.log"
    started = time.monotonic()
    vm = subprocess.Popen([
        ARM64.qemu_binary, *ARM64.qemu_machine_args(), "-accel", "tcg", "-m", "1024",
        "-smp", "2", "-drive", f"file={disk},if=virtio,format=qcow2",
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=net0",
        "-display", "none", "-serial", f"file:{console}", "-monitor", "none",
    ])
    ssh = ["ssh", *SSH_OPTIONS, "-i", key, "-p", str(port), "vagrant@127.0.0.1"]
    login_prompt = None
    try:
        deadline = time.monotonic() + SSH_WAIT_S
        while subprocess.run([*ssh, "true"], capture_output=True).returncode != 0:
            if login_prompt is None and "login:" in console.read_text(errors="replace"):
                login_prompt = time.monotonic() - started
            assert vm.poll() is None, "qemu exited early:\n" + console.read_text()[-3000:]
            assert time.monotonic() < deadline, f"no SSH after {SSH_WAIT_S} s:\n" + \
                console.read_text(errors="replace")[-3000:]
            time.sleep(2)
        print(f"arm64 boot (TCG): login prompt {login_prompt} s, "
              f"SSH {time.monotonic() - started:.1f} s")
        result = subprocess.run(
            [*ssh, "uname -m && sudo -n true && python3 --version && ip -o link show eth0 "
                   "&& sudo -n ls /boot/efi/EFI/BOOT && cat /etc/machine-id "
                   "&& df --block-size=1 --output=size / | tail -n 1"],
            capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == "aarch64"
        assert lines[1].startswith("Python 3.13")
        assert "state UP" in lines[2]
        assert lines[3] == "BOOTAA64.EFI"
        assert len(lines[4]) == 32  # a machine-id generated on this boot
        assert int(lines[5]) > 0.9 * grown_gib * 2**30, lines[5]
        subprocess.run([*ssh, "sudo -n systemctl poweroff"], capture_output=True, timeout=60)
        vm.wait(timeout=600)
    finally:
        if vm.poll() is None:
            vm.kill()
            vm.wait()

"""What the base disk's own files make its first boot do (goldbox.basedisk.boot_files):
the SSH host keys it makes (with the real ssh-keygen), what networking waits for, and
grub's menu. Fast: no disk is built and no VM booted (the boots: bench/boot_cycles.py
and test_basedisk.py)."""

from __future__ import annotations

import re
import subprocess

import pytest

from goldbox.basedisk import (
    BLACKLISTED_MODULES,
    IFUPDOWN_PRE_DROPIN,
    INITRAMFS_CONF,
    MASKED,
    MODPROBE_CONF,
    SSH_HOST_KEYS_DROPIN,
    SSHD_HOST_KEYS_CONF,
    boot_files,
    ssh_unit_beside_the_network,
)
from goldbox.errors import GoldboxError

FILES = boot_files(fs_uuid="aa8cf604-39c8-43f3-a1d1-670c109b33d1", kernel="6.12.118+deb13-amd64")
KEYS_SCRIPT = "usr/local/sbin/goldbox-ssh-host-keys"


def make_host_keys(folder) -> dict[str, bytes]:
    script = folder.parent / "goldbox-ssh-host-keys"
    script.write_text(FILES[KEYS_SCRIPT])
    subprocess.run(["sh", script, folder], check=True, capture_output=True)
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_first_boot_makes_ed25519_and_ecdsa_host_keys_once_and_no_rsa_key(tmp_path):
    """An RSA key takes seconds under TCG on the way to SSH; sshd loads exactly the keys
    made, and a second start keeps them (a VM's identity does not change per boot)."""
    keys = tmp_path / "ssh"
    keys.mkdir()
    made = make_host_keys(keys)
    assert sorted(made) == ["ssh_host_ecdsa_key", "ssh_host_ecdsa_key.pub",
                            "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]
    assert made["ssh_host_ed25519_key.pub"].startswith(b"ssh-ed25519 ")
    assert made["ssh_host_ecdsa_key.pub"].startswith(b"ecdsa-sha2-nistp256 ")
    assert make_host_keys(keys) == made
    loaded = re.findall(r"^HostKey /etc/ssh/(\S+)$", FILES[SSHD_HOST_KEYS_CONF], re.M)
    assert sorted(loaded) == [name for name in sorted(made) if not name.endswith(".pub")]
    start = [line for line in FILES[SSH_HOST_KEYS_DROPIN].splitlines()
             if line.startswith("ExecStartPre=")]
    assert start == ["ExecStartPre=", f"ExecStartPre=/{KEYS_SCRIPT}"]
    # trixie's own first-boot keygen would make an RSA key as well.
    assert "etc/systemd/system/sshd-keygen.service" in MASKED
    # No /run/nologin while the boot goes on: pam_nologin refused Vagrant's first logins.
    assert "etc/tmpfiles.d/systemd-nologin.conf" in MASKED


# Debian 13's openssh-server 1:10.0p1 ssh.service, as packaged (its first lines).
TRIXIE_SSH_UNIT = """[Unit]
Description=OpenBSD Secure Shell server
Documentation=man:sshd(8) man:sshd_config(5)
After=network.target nss-user-lookup.target auditd.service
ConditionPathExists=!/etc/ssh/sshd_not_to_be_run

[Service]
ExecStartPre=/usr/sbin/sshd -t
ExecStart=/usr/sbin/sshd -D $SSHD_OPTS
"""


def test_sshd_starts_beside_dhcp_not_after_network_target():
    unit = ssh_unit_beside_the_network(TRIXIE_SSH_UNIT)
    assert "After=nss-user-lookup.target auditd.service\n" in unit
    assert "network.target" not in unit.split("\n", 1)[1]
    # Nothing else changes.
    assert [line for line in unit.splitlines()[1:] if not line.startswith("After=")] == [
        line for line in TRIXIE_SSH_UNIT.splitlines() if not line.startswith("After=")]
    bookworm = ssh_unit_beside_the_network("[Unit]\nAfter=network.target\n[Service]\n")
    assert bookworm.splitlines()[1:] == ["[Unit]", "[Service]"]
    with pytest.raises(GoldboxError, match=r"^x/ssh.service: no After=network.target"):
        ssh_unit_beside_the_network("[Unit]\nAfter=auditd.service\n", "x/ssh.service")


def test_networking_waits_for_the_interface_it_raises_not_for_all_of_udev():
    """ifupdown's helper ran `udevadm settle` (every queued event: 10 s idle, minutes on
    a loaded host); the drop-in replaces it with a wait for the one NIC ifup raises."""
    raised = re.findall(r"^auto (\S+)$", FILES["etc/network/interfaces"], re.M)
    assert raised == ["lo", "eth0"]
    start = [line for line in FILES[IFUPDOWN_PRE_DROPIN].splitlines()
             if line.startswith("ExecStart")]
    assert start == ["ExecStart=",
                     "ExecStart=/usr/bin/udevadm wait --timeout=180 /sys/class/net/eth0"]


def test_grub_boots_its_one_entry_without_a_menu_wait():
    assert FILES["boot/grub/grub.cfg"].startswith("set timeout=0\n")


def test_the_initramfs_holds_the_root_disks_drivers_of_every_target_and_no_more():
    """MODULES=list: Debian's `most` loads the emulated PC's floppy, USB and PATA drivers
    in the initramfs (15 s under TCG). What mounts / must stay: virtio (libvirt, packer,
    vagrant-qemu), AHCI + sd (VirtualBox's SATA disk), ext4. Booted for real by
    test_basedisk (virtio) and test_virtualbox (AHCI)."""
    assert FILES[INITRAMFS_CONF] == "MODULES=list\n"
    listed = FILES["etc/initramfs-tools/modules"].split()
    assert {"virtio_blk", "virtio_pci", "ahci", "sd_mod", "ext4"} <= set(listed)
    # Not for /: the NIC recorded by the initramfs' udev, so networking need not wait for
    # the real udev's coldplug to reach it.
    assert "virtio_net" in listed
    assert not set(listed) & set(BLACKLISTED_MODULES)
    blacklisted = re.findall(r"^blacklist (\S+)$", FILES[MODPROBE_CONF], re.M)
    assert blacklisted == list(BLACKLISTED_MODULES)

"""The base disk of a debootstrap platform (debian-12): a grub-bootable qcow2 built
from the Debian mirror, with sshd and the `vagrant` user, that packer then provisions.

No loop device and no mount (loop partitions get no /dev node on the build machine):
`mkfs.ext4 -d` fills the partition straight from the rootfs folder, grub's boot.img
and a core.img from `grub-mkimage` are written into the first MiB with dd.

Golden-image hygiene is built in: no SSH host keys (a drop-in makes sshd generate them
at first boot), an empty /etc/machine-id, no resolv.conf of the build host."""

from __future__ import annotations

import contextlib
import re
import shutil
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from goldbox import proc
from goldbox.arch import AMD64, Architecture, architecture
from goldbox.cache import Cache, Check, Entry, as_cache, identity_key
from goldbox.chroot_provision import plan_head, provision_in_chroot
from goldbox.config import BOX_DISK_GIB
from goldbox.efidisk import esp_fstab_line, make_efi_raw_disk
from goldbox.errors import GoldboxError
from goldbox.keys import insecure_public_key
from goldbox.plan import repositories_section
from goldbox.recipe import goldbox_code, provision_code
from goldbox.rootfs import _TAR_OPTIONS, TARBALL, chroot_run, debootstrap_rootfs

# What the base needs to boot under qemu, get an address by DHCP and let Vagrant and
# packer in; the architecture adds its grub and the platform its kernel package. rsync
# serves Vagrant's default synced folder; growpart (cloud-guest-utils) and resize2fs
# (e2fsprogs) grow / at boot.
BASE_PACKAGES = ["systemd-sysv", "openssh-server", "python3", "sudo", "ifupdown",
                 "isc-dhcp-client", "iproute2", "rsync", "cloud-guest-utils", "e2fsprogs"]
HOSTNAME = "goldbox"
# The entry keeps, beside its qcow2, the tree that qcow2 was made of (a tar in the rootfs
# cache's format): the system image is made from it natively (goldbox/system_image.py).
ROOTFS_TAR = TARBALL
_PARTITION_OFFSET = 1 << 20  # the partition starts at sector 2048
SSH_HOST_KEYS_DROPIN = "etc/systemd/system/ssh.service.d/goldbox-host-keys.conf"
SSHD_HOST_KEYS_CONF = "etc/ssh/sshd_config.d/goldbox-host-keys.conf"
# The host keys each VM makes at its first boot: Ed25519 and ECDSA take milliseconds; an
# RSA key (ssh-keygen -A makes a 3072-bit one) takes seconds under TCG, on the path to
# SSH, and no client Vagrant or packer uses needs it (net-ssh and Go's x/crypto verify
# both). sshd is told to load exactly these (no RSA HostKey left to miss).
SSH_HOST_KEY_TYPES = ("ed25519", "ecdsa")
SSH_HOST_KEYS_SCRIPT = textwrap.dedent(f"""\
    #!/bin/sh
    # Makes the host keys sshd lacks, in $1 (default: sshd's /etc/ssh).
    set -eu
    for type in {" ".join(SSH_HOST_KEY_TYPES)}; do
        key=${{1:-/etc/ssh}}/ssh_host_${{type}}_key
        [ -e "$key" ] || ssh-keygen -q -t "$type" -N "" -C "" -f "$key"
    done
    """)
# No menu to wait at: nobody picks a boot entry of a VM, and each second of it is a second
# of every boot.
GRUB_TIMEOUT_S = 0
NETWORK_INTERFACE = "eth0"  # net.ifnames=0: the kernel's name, never renamed
# ifupdown's own helper runs `udevadm settle` before `ifup -a`: it waits for every queued
# udev event (drm, kvm, pcspkr modules loading ...), 10 s on an idle host and minutes on
# a loaded one. ifup needs the one interface it raises, so it waits for that one only.
IFUPDOWN_PRE_DROPIN = "etc/systemd/system/ifupdown-pre.service.d/goldbox-wait-for-nic.conf"
GROW_ROOT_UNIT = "goldbox-grow-root.service"
# The SSH key `invoke up` makes for its VM reaches the guest as a systemd credential (an
# SMBIOS OEM string, read by PID 1 since systemd 252: Debian 12 and 13); before sshd starts
# this unit makes it vagrant's one authorized key, in place of Vagrant's insecure key. So
# Vagrant logs in once with it, instead of logging in with the insecure key and swapping
# it over seven more SSH sessions (~10 s under TCG). A VM given no credential (a teammate's
# stock Vagrant, packer's boots) skips the unit and keeps the insecure key for Vagrant to
# swap. The box says so in its metadata.json (goldbox/golden_cache.py).
SSH_KEY_CREDENTIAL = "goldbox.ssh_key"
SSH_KEY_UNIT = "goldbox-ssh-key.service"
# The initramfs holds only what mounts / on the machines a box boots on (virtio under
# qemu/libvirt and the vagrant-qemu plugin, AHCI under VirtualBox), not Debian's `most`:
# with the full kernel (VirtualBox's e1000 needs it) udev in the initramfs loaded floppy,
# USB, PATA and SMBus drivers for the emulated PC, 15 s of each boot under TCG, and a
# 36 MB initrd to unpack. Modules built into one architecture's kernel are skipped there.
# virtio_net too, though / does not need it: loaded there, the NIC is eth0 and recorded
# by the initramfs' udev before / is mounted, and that record stays (initramfs-tools
# moves /run), so the wait for eth0 (IFUPDOWN_PRE_DROPIN) ends as soon as systemd starts
# instead of when the real udev's coldplug reaches the NIC (14 s into a TCG boot).
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "virtio_scsi", "ahci", "sd_mod", "ext4",
                     "crc32c_generic", "virtio_net")
INITRAMFS_CONF = "etc/initramfs-tools/conf.d/goldbox-modules.conf"
# Drivers udev would load for an emulated PC's parts that a box never uses: each one is
# seconds of a TCG boot. kvm_amd and powernow_k8 come from qemu64's AMD family and svm
# flag (nested virtualization is not offered under TCG); the rest are the i440FX's
# floppy, speaker, SMBus, IDE and USB controllers (the disk is virtio or AHCI, the
# keyboard PS/2). `blacklist` stops only the automatic loading: `modprobe X` still works.
BLACKLISTED_MODULES = ("kvm", "kvm_amd", "kvm_intel", "powernow_k8", "floppy", "pcspkr",
                       "i2c_piix4", "ata_piix", "uhci_hcd", "ehci_pci", "joydev")
MODPROBE_CONF = "etc/modprobe.d/goldbox-vm.conf"
# Units and generators masked (a link to /dev/null): systemd-ssh-generator probes
# AF_VSOCK, which loads the vsock and VMCI modules on the way to the first unit (~5 s
# under TCG) to offer SSH over a socket nobody uses here; getty-static starts five more
# gettys on tty2-6 when D-Bus is absent, as it is here.
MASKED = ("etc/systemd/system-generators/systemd-ssh-generator",
          "etc/systemd/system/getty-static.service",
          # trixie's first-boot `ssh-keygen -A`: it makes an RSA key too (seconds under
          # TCG, beside the boot); goldbox-ssh-host-keys makes the keys sshd loads.
          "etc/systemd/system/sshd-keygen.service",
          # /run/nologin, made as the boot starts and removed by systemd-user-sessions
          # after network.target: pam_nologin refused Vagrant's first logins while sshd
          # already listened ("Remote connection disconnect. Retrying..."), seconds of
          # every boot. A box's one user logs in when sshd lets it.
          "etc/tmpfiles.d/systemd-nologin.conf")
# sshd listens on every address, so it need not wait for network.target (DHCP's lease):
# started beside DHCP, it is listening when the address comes. A drop-in cannot take an
# After= away, so the unit is the package's own, copied here without that one ordering.
SSH_UNIT = "etc/systemd/system/ssh.service"
PACKAGED_SSH_UNIT = "lib/systemd/system/ssh.service"
# At every boot, before anything writes much: the root partition, then its ext4, take the
# whole disk, so a VM given a bigger disk than the box's (vagrant-libvirt's
# machine_virtual_size) gets the space. growpart exits 1 for "nothing to grow". It runs
# only when the disk has room after the partition (more than the 1 MiB growpart itself
# ignores; a GPT's backup table takes the last 33 sectors): growpart always ends with
# `udevadm settle`, which waits for every udev event of the boot (10 s on an idle host,
# minutes on a loaded one) while local-fs.target, so the whole boot, waits for this unit.
GROW_ROOT_SCRIPT = textwrap.dedent("""\
    #!/bin/sh
    set -eu
    part=$(findmnt --noheadings --output SOURCE --mountpoint /)
    disk=$(lsblk --noheadings --nodeps --output PKNAME "$part")
    sectors() { cat "/sys/class/block/$1/$2"; }
    number=$(sectors "${part#/dev/}" partition)
    end=$(( $(sectors "${part#/dev/}" start) + $(sectors "${part#/dev/}" size) ))
    room=$(( $(sectors "$disk" size) - end ))
    if [ "$room" -gt 2048 ]; then
        growpart "/dev/$disk" "$number" || [ $? -eq 1 ]
    fi
    resize2fs "$part"
    """)


# The steps of provision the base disk runs natively (install_runtime_packages), and the
# goldbox code that makes it (the policy: goldbox/recipe.py).
BASE_STEPS = ("repositories", "packages")
_CODE = ("basedisk", "chroot_provision", "rootfs", "efidisk")


def kernel_args(arch: Architecture = AMD64) -> str:
    """The kernel's command line: its serial console last (that one is /dev/console).

    amd64's has no_timer_check: under TCG on a busy host the kernel's early check that
    the timer interrupt arrives (a few ticks within ~160M TSC cycles) fails and it panics
    with "IO-APIC + timer doesn't work!" 0.08 s into the boot (seen here, issue 22); the
    check guards against broken PC hardware, which an emulated i440FX is not. Cloud images
    (cirros, Fedora) boot with it for the same reason.

    And tsc=unstable: under TCG with two vCPUs (QEMU 7.2's multi-threaded TCG) a kernel
    that rewrites its own code while the other vCPU runs it can die. Its static keys are
    flipped by text_poke_bp (an int3 written over the site, an IPI to sync the CPUs, the
    new bytes, the int3 taken out); the other vCPU may still run a translation made with
    the int3 in it after the patch is done, and the kernel, finding no patch under way,
    dies: "Oops: int3" at sched_clock_cpu+0x9 right after "sched_clock: Marking stable",
    4 s into a boot here (issue 22), and the earlier crng_make_state panic was the same
    race on the random generator's key. sched_clock is marked stable (that key flipped
    with both CPUs up) only on a boot whose TSCs pass the kernel's sync check, which
    under TCG is chance (4 boots in 32 here); with tsc=unstable no boot flips it, and
    every boot runs as the other 28 did (HPET as clocksource). Under KVM the clock is
    kvm-clock, which this does not touch; under VirtualBox, clock reads go to the ACPI
    PM timer instead of the TSC (slower, a syscall each)."""
    extra = " no_timer_check tsc=unstable" if arch is AMD64 else ""
    return f"console=tty0 console={arch.console} net.ifnames=0{extra}"


def base_disk_identity(platform: Any, size_gib: int = BOX_DISK_GIB,
                       arch: Architecture = AMD64) -> dict:
    """What goes into the base disk of `platform`: suite, mirror, packages, size, the
    Vagrant public key, the runtime packages provision installs natively (with the
    repositories it installs them from, and the code of those two steps) and the code
    that makes it. Nothing of the platform's Python: a pin or a configure flag keeps
    the base disk (and the OS updates it was made with). Of the architecture, what the
    disk is made of (not how qemu boots it: its machine, CPU and firmware file)."""
    source = platform.source
    return {
        "platform": platform.name, "suite": source.suite, "mirror": source.mirror,
        "arch": {"name": arch.name, "gnu_type": arch.gnu_type, "grub": arch.grub_target,
                 "console": arch.console, "efi": arch.efi},
        "packages": sorted({*BASE_PACKAGES, arch.grub_package,
                            arch.kernel_package(source.kernel_package)}),
        "size_gib": size_gib,
        "authorized_key": insecure_public_key(),
        "runtime": runtime_plan(platform),
        "provision": provision_code(BASE_STEPS),
        "code": goldbox_code(*_CODE),
    }


def runtime_plan(platform: Any) -> dict:
    """The plan whose repositories and packages steps the base disk runs natively: the
    platform's runtime packages, from its repositories (updates and security included),
    so the guest's packages step finds them installed instead of running apt under TCG;
    and the updates of everything debootstrap installed from the release alone (sshd,
    libc, ...), so the box leaves with what was published when its base disk was made."""
    return {
        **plan_head(platform.name),
        "repositories": repositories_section(platform),
        "packages": {"groups": [], "build": [], "runtime": list(platform.packages.runtime),
                     "update": True},
    }


@contextlib.contextmanager
def apt_from_the_host(root: Path) -> Iterator[None]:
    """The rootfs with the build host's resolver for apt and a policy-rc.d that lets no
    package's scripts start a service; both gone again afterwards."""
    resolv = root / "etc/resolv.conf"
    policy = root / "usr/sbin/policy-rc.d"
    resolv.unlink(missing_ok=True)
    shutil.copyfile("/etc/resolv.conf", resolv)
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    try:
        yield
    finally:
        policy.unlink(missing_ok=True)
        resolv.unlink(missing_ok=True)


def install_runtime_packages(root: Path, plan: dict, log: Path | None = None) -> None:
    """provision's repositories and packages steps in the rootfs (see runtime_plan)."""
    provision_natively(root, plan, list(BASE_STEPS), label="the base disk's runtime plan",
                       prefix="base disk", log=log)


def provision_natively(root: Path, plan: dict, steps: list[str], *, label: str, prefix: str,
                       files: dict[str, Path] | None = None, log: Path | None = None) -> None:
    """provision's `steps` of `plan` in the rootfs, apt reaching the repositories through
    the host's resolver (goldbox.chroot_provision.provision_in_chroot); then the kernels
    an update superseded are purged, and apt's downloads and lists removed (the guest
    needs them no more)."""
    with apt_from_the_host(root):
        provision_in_chroot(root, plan, steps, label=label, prefix=prefix, files=files,
                            log=log)
        superseded = superseded_kernels(root)
        if superseded:
            chroot_run(root, ["apt-get", "purge", "-y", "-q", *superseded], prefix=prefix,
                       log=log)
        chroot_run(root, ["apt-get", "clean"], prefix=prefix, log=log)
    for listed in (root / "var/lib/apt/lists").glob("*"):
        if listed.is_file() and listed.name != "lock":
            listed.unlink()


def superseded_kernels(root: Path) -> list[str]:
    """The installed kernel packages (linux-image-<abi>-<flavour>) that no kernel
    metapackage (linux-image-<flavour>) depends on: what an update to a new kernel ABI
    left behind. Read from dpkg's status in `root`."""
    status = (root / "var/lib/dpkg/status").read_text()
    installed = {}
    for block in status.split("\n\n"):
        fields = dict(re.findall(r"^([\w-]+): (.*)$", block, re.M))
        if fields.get("Status") == "install ok installed":
            installed[fields["Package"]] = fields.get("Depends", "")
    kernels = {name for name in installed if re.fullmatch(r"linux-image-\d\S*", name)}
    wanted = {dependency for name, depends in installed.items() if name not in kernels
              for dependency in re.findall(r"(linux-image-\d[^\s,(|]*)", depends)}
    return sorted(kernels - wanted) if wanted & kernels else []


def build_base_disk(cache: Cache | Path, platform: Any, *, log: Path | None = None,
                    size_gib: int = BOX_DISK_GIB, check: Check = "full",
                    refresh: bool = False, arch: Architecture = AMD64) -> Entry:
    """Return the cache entry of the base qcow2 of `platform` (a config.Platform whose
    source is debootstrap: suite, mirror, kernel_package), building it first if needed.
    `check="size"` trusts the recorded sha256 of a found entry (the no-change path).
    `refresh` builds it again even when cached, to take the updates published since.
    `arch` arm64 gives a GPT disk that boots by UEFI (goldbox.efidisk)."""
    cache = as_cache(cache)
    identity = base_disk_identity(platform, size_gib, arch)
    label = platform.name if arch == AMD64 else f"{platform.name}-{arch.name}"
    name = f"{label}-base.qcow2"

    def make(folder: Path) -> None:
        with cache.scratch("basedisk") as work:
            root = debootstrap_rootfs(cache, suite=identity["suite"],
                                      mirror=identity["mirror"],
                                      packages=identity["packages"], dest=work / "rootfs",
                                      arch=arch.name, log=log)
            install_runtime_packages(root, identity["runtime"], log=log)
            fs_uuid, esp_id = filesystem_ids(identity)
            configure_rootfs(root, fs_uuid=fs_uuid, authorized_key=identity["authorized_key"],
                             arch=arch, esp_id=esp_id, log=log)
            # The tree the disk is made of, for the system image to start from natively.
            proc.run(["tar", *_TAR_OPTIONS, "-cf", folder / ROOTFS_TAR, "-C", root, "."],
                     prefix="base disk", log=log)
            make_disk(root, work / "disk.raw", folder / name, identity, log=log)

    return cache.ensure("basedisk", identity, make, name=label, check=check,
                        rebuild="asked to take the repositories' updates now (--refresh)"
                        if refresh else None,
                        summary=f"{label} base disk ({identity['suite']}, "
                                f"{size_gib} GiB)")


def base_disk_file(base: Entry) -> str:
    """The name of the qcow2 in the base disk entry `base` (beside its ROOTFS_TAR)."""
    return f"{base.record['name']}-base.qcow2"


def filesystem_ids(identity: dict) -> tuple[str, str | None]:
    """The root file system's UUID and (EFI disks) the ESP's volume id of the base disk
    of `identity`: stable across rebuilds of the same identity, and the same on every
    disk made from it (the system image's): the guest mounts / by it, grub finds it."""
    key = identity_key("basedisk", identity)
    arch = architecture(identity["arch"]["name"])
    return str(uuid.UUID(bytes=bytes.fromhex(key[:32]), version=4)), (
        key[32:40] if arch.efi else None)


def make_disk(root: Path, raw: Path, qcow2: Path, identity: dict, *,
              log: Path | None = None) -> None:
    """The disk of the base disk of `identity` (its size, architecture and file system
    ids) holding the tree `root`, as `qcow2`; `raw` is the scratch file it is made in."""
    arch = architecture(identity["arch"]["name"])
    fs_uuid, esp_id = filesystem_ids(identity)
    run_update_units(root, log=log)
    if esp_id:
        make_efi_raw_disk(root, raw, fs_uuid=fs_uuid, esp_id=esp_id,
                          size_gib=identity["size_gib"], arch=arch, log=log)
    else:
        make_bootable_raw_disk(root, raw, fs_uuid=fs_uuid, size_gib=identity["size_gib"],
                               log=log)
    proc.run(["qemu-img", "convert", "-O", "qcow2", raw, qcow2], prefix="base disk", log=log)


# What systemd's ConditionNeedsUpdate units (ldconfig, sysusers, the journal's catalog)
# would do at the first boot after /usr changed, done once here for every VM: under TCG
# they were seconds of each golden build's boot. systemd-update-done then marks /etc and
# /var up to date with /usr, so none of them runs at boot. Debian 12's systemd (252) has
# no update units (nor systemd-update-done): there is nothing to do.
UPDATE_DONE = "/usr/lib/systemd/systemd-update-done"
UPDATE_COMMANDS = (["ldconfig"], ["systemd-sysusers"], ["journalctl", "--update-catalog"],
                   [UPDATE_DONE])


def run_update_units(root: Path, *, log: Path | None = None) -> None:
    """Run the work of the tree's update units in it now (UPDATE_COMMANDS), where its
    systemd has them."""
    if not (root / UPDATE_DONE.lstrip("/")).exists():
        return
    for command in UPDATE_COMMANDS:
        chroot_run(root, command, prefix="base disk", log=log)


def unpack_base_rootfs(base: Entry, dest: Path, *, log: Path | None = None) -> Path:
    """A fresh copy of the configured tree the disk of `base` was made of, in `dest`
    (new), owners, modes and file capabilities as they were."""
    dest.mkdir(mode=0o755)
    proc.run(["tar", *_TAR_OPTIONS, "-xpf", base.file(ROOTFS_TAR), "-C", dest],
             prefix="base disk", log=log)
    return dest


def boot_files(*, fs_uuid: str, kernel: str, arch: Architecture = AMD64,
               esp_id: str | None = None) -> dict[str, str]:
    """The files configure_rootfs writes (paths relative to the root): how the base
    boots (grub), gets its address, makes its SSH host keys and grows its disk."""
    args = kernel_args(arch)
    return {
        "etc/fstab": f"UUID={fs_uuid} / ext4 errors=remount-ro 0 1\n"
                     + (esp_fstab_line(esp_id) if esp_id else ""),
        "etc/hostname": f"{HOSTNAME}\n",
        "etc/hosts": f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n"
                     "::1 localhost ip6-localhost ip6-loopback\n",
        "etc/network/interfaces": textwrap.dedent("""\
            source /etc/network/interfaces.d/*

            auto lo
            iface lo inet loopback

            auto {nic}
            iface {nic} inet dhcp
            """).format(nic=NETWORK_INTERFACE),
        IFUPDOWN_PRE_DROPIN: textwrap.dedent(f"""\
            [Service]
            ExecStart=
            ExecStart=/usr/bin/udevadm wait --timeout=180 /sys/class/net/{NETWORK_INTERFACE}
            """),
        "boot/grub/grub.cfg": textwrap.dedent(f"""\
            set timeout={GRUB_TIMEOUT_S}
            menuentry "Debian GNU/Linux" {{
                search --no-floppy --fs-uuid --set=root {fs_uuid}
                linux /boot/vmlinuz-{kernel} root=UUID={fs_uuid} ro {args}
                initrd /boot/initrd.img-{kernel}
            }}
            """),
        # Debian does not regenerate deleted host keys; its `sshd -t` runs before any
        # appended ExecStartPre, so the list is reset and the keys are made first. No
        # `sshd -t` after them: the config is goldbox's, and sshd itself refuses a bad one.
        SSH_HOST_KEYS_DROPIN: textwrap.dedent("""\
            [Service]
            ExecStartPre=
            ExecStartPre=/usr/local/sbin/goldbox-ssh-host-keys
            """),
        SSHD_HOST_KEYS_CONF: "".join(f"HostKey /etc/ssh/ssh_host_{kind}_key\n"
                                     for kind in SSH_HOST_KEY_TYPES),
        "usr/local/sbin/goldbox-ssh-host-keys": SSH_HOST_KEYS_SCRIPT,
        f"etc/systemd/system/{GROW_ROOT_UNIT}": textwrap.dedent("""\
            [Unit]
            Description=Grow the root partition and filesystem to the disk's size
            DefaultDependencies=no
            After=systemd-remount-fs.service
            Before=local-fs.target shutdown.target
            Conflicts=shutdown.target

            [Service]
            Type=oneshot
            ExecStart=/usr/local/sbin/goldbox-grow-root

            [Install]
            WantedBy=local-fs.target
            """),
        "usr/local/sbin/goldbox-grow-root": GROW_ROOT_SCRIPT,
        f"etc/systemd/system/{SSH_KEY_UNIT}": textwrap.dedent(f"""\
            [Unit]
            Description=Authorize the SSH key this VM was given ({SSH_KEY_CREDENTIAL}) for vagrant
            ConditionCredential={SSH_KEY_CREDENTIAL}
            Before=ssh.service

            [Service]
            Type=oneshot
            User=vagrant
            LoadCredential={SSH_KEY_CREDENTIAL}
            # The key replaces the file: Vagrant's insecure key is authorized no more.
            ExecStart=/usr/bin/install -m 600 ${{CREDENTIALS_DIRECTORY}}/{SSH_KEY_CREDENTIAL} \\
                /home/vagrant/.ssh/authorized_keys
            # No namespaces (PrivateNetwork=, ProtectSystem=): each is a second of a TCG
            # boot on the way to sshd, for one `install` run as vagrant.
            NoNewPrivileges=yes

            [Install]
            WantedBy=ssh.service
            """),
        INITRAMFS_CONF: "MODULES=list\n",
        "etc/initramfs-tools/modules": "".join(f"{name}\n" for name in INITRAMFS_MODULES),
        MODPROBE_CONF: "".join(f"blacklist {name}\n" for name in BLACKLISTED_MODULES),
        "etc/sudoers.d/vagrant": "vagrant ALL=(ALL) NOPASSWD:ALL\n",
        # Refilled by systemd at first boot: every VM gets its own.
        "etc/machine-id": "",
    }


def ssh_unit_beside_the_network(unit: str, source: Path | str = PACKAGED_SSH_UNIT) -> str:
    """The package's ssh.service (`unit`, read from `source`) with network.target taken
    out of its After= lines, and nothing else changed."""
    lines, found = [], False
    for line in unit.splitlines():
        if line.startswith("After=") and "network.target" in line.split("=", 1)[1].split():
            found = True
            rest = [name for name in line.split("=", 1)[1].split() if name != "network.target"]
            if not rest:
                continue
            line = "After=" + " ".join(rest)
        lines.append(line)
    if not found:
        raise GoldboxError(f"{source}: no After=network.target to take out (the package's "
                           "ssh.service changed: read it again)")
    return "# goldbox: the package's ssh.service, not ordered after network.target\n" + \
        "\n".join(lines) + "\n"


def configure_rootfs(root: Path, *, fs_uuid: str, authorized_key: str,
                     arch: Architecture = AMD64, esp_id: str | None = None,
                     log: Path | None = None) -> None:
    """Make a debootstrapped rootfs a bootable, reachable, identity-free Vagrant base.
    `esp_id`: the vfat volume id of an EFI system partition, mounted at /boot/efi."""
    kernel = _only_kernel_version(root)
    files = boot_files(fs_uuid=fs_uuid, kernel=kernel, arch=arch, esp_id=esp_id)
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    (root / "etc/sudoers.d/vagrant").chmod(0o440)
    for script in ("goldbox-grow-root", "goldbox-ssh-host-keys"):
        (root / "usr/local/sbin" / script).chmod(0o755)
    packaged = root / PACKAGED_SSH_UNIT
    (root / SSH_UNIT).write_text(ssh_unit_beside_the_network(packaged.read_text(), packaged))
    for masked in MASKED:
        (root / masked).unlink(missing_ok=True)
        (root / masked).parent.mkdir(parents=True, exist_ok=True)
        (root / masked).symlink_to("/dev/null")
    _set_default_grub(root / "etc/default/grub", {"GRUB_CMDLINE_LINUX": f'"{kernel_args(arch)}"',
                                                  "GRUB_TIMEOUT": str(GRUB_TIMEOUT_S)})
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    (root / "etc/resolv.conf").unlink(missing_ok=True)  # the build host's; DHCP writes one
    for host_key in (root / "etc/ssh").glob("ssh_host_*"):
        host_key.unlink()

    # `*`, not useradd's locked `!`: key logins only, and sshd accepts the account.
    chroot_run(root, ["useradd", "--create-home", "--shell", "/bin/bash",
                      "--password", "*", "vagrant"], prefix="base disk", log=log)
    chroot_run(root, ["systemctl", "enable", "ssh.service", GROW_ROOT_UNIT, SSH_KEY_UNIT],
               prefix="base disk", log=log)
    chroot_run(root, ["visudo", "-c"], prefix="base disk", log=log)
    # The initrd the kernel's install made holds `most`; this one, INITRAMFS_MODULES.
    chroot_run(root, ["update-initramfs", "-u", "-k", kernel], prefix="base disk", log=log)
    ssh_dir = root / "home/vagrant/.ssh"
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "authorized_keys").write_text(authorized_key + "\n")
    (ssh_dir / "authorized_keys").chmod(0o600)
    owner = (root / "home/vagrant").stat()
    for path in (ssh_dir, ssh_dir / "authorized_keys"):
        shutil.chown(path, owner.st_uid, owner.st_gid)


def make_bootable_raw_disk(root: Path, raw: Path, *, fs_uuid: str, size_gib: int,
                           log: Path | None = None) -> None:
    """Write `root` into a raw disk image with one bootable ext4 partition and grub
    (i386-pc, from the rootfs's own grub modules) in its first MiB."""
    size = size_gib << 30
    with open(raw, "wb") as disk:
        disk.truncate(size)
    proc.capture(["sfdisk", "--quiet", raw], input="label: dos\nstart=2048, type=83, bootable\n")
    proc.run(["mkfs.ext4", "-q", "-F", "-U", fs_uuid, "-L", "rootfs", "-d", root,
              "-E", f"offset={_PARTITION_OFFSET}", raw,
              f"{(size - _PARTITION_OFFSET) // 1024}k"], prefix="base disk", log=log)
    grub_dir = root / "usr/lib/grub/i386-pc"
    core = raw.with_name("core.img")
    proc.run(["grub-mkimage", "-O", "i386-pc", "-d", grub_dir, "-o", core,
              "-p", "(hd0,msdos1)/boot/grub", "biosdisk", "part_msdos", "ext2", "normal",
              "linux", "configfile", "search", "search_fs_uuid", "echo", "test"],
             prefix="base disk", log=log)
    if core.stat().st_size > _PARTITION_OFFSET - 512:
        raise GoldboxError(f"grub core.img is {core.stat().st_size} bytes: it does not fit "
                           "before the partition")
    # boot.img's first 440 bytes only: the partition table after them stays.
    for image, block_size, seek in ((grub_dir / "boot.img", 440, 0), (core, 512, 1)):
        proc.capture(["dd", f"if={image}", f"of={raw}", f"bs={block_size}", f"seek={seek}",
                      *(["count=1"] if seek == 0 else []), "conv=notrunc", "status=none"])


def _set_default_grub(path: Path, settings: dict[str, str]) -> None:
    """Set keys of /etc/default/grub: update-grub, run in the guest later, must keep
    net.ifnames=0 or the NIC is renamed ens*, eth0 gets no DHCP and `vagrant up` waits
    for an IP forever."""
    if not path.is_file():
        raise GoldboxError(f"{path} is missing: is grub (grub-pc, grub-efi-arm64) installed "
                           "in the rootfs?")
    lines = [line for line in path.read_text().splitlines()
             if line.split("=", 1)[0] not in settings]
    lines += [f"{name}={value}" for name, value in settings.items()]
    path.write_text("\n".join(lines) + "\n")


def _only_kernel_version(root: Path) -> str:
    kernels = sorted(p.name.removeprefix("vmlinuz-") for p in (root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1 or not (root / f"boot/initrd.img-{kernels[0]}").is_file():
        raise GoldboxError(f"expected one kernel with its initrd in {root}/boot, found {kernels}")
    return kernels[0]

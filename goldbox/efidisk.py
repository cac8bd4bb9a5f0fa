"""The raw disk of a guest that boots by UEFI (arm64 on qemu's `virt` machine), made the
same way as the BIOS one (goldbox/basedisk.py): no loop device and no mount.

GPT with two partitions: an EFI system partition (vfat, made as a file with mkfs.vfat,
filled with mtools and copied in with dd) holding grub at the removable-media path
(EFI/BOOT/BOOTAA64.EFI, what `grub-install --removable` writes: the firmware finds it
with no NVRAM entry), and the root ext4 filled by `mkfs.ext4 -d`. grub's image embeds a
small config that finds the root filesystem by UUID and reads its /boot/grub/grub.cfg."""

from __future__ import annotations

from pathlib import Path

from goldbox import proc
from goldbox.arch import Architecture
from goldbox.errors import GoldboxError

_MIB = 1 << 20
ESP_OFFSET = _MIB            # sector 2048
ESP_SIZE = 63 * _MIB         # FAT32 needs at least ~33 MiB of clusters
ROOT_OFFSET = ESP_OFFSET + ESP_SIZE   # 64 MiB
_GPT_BACKUP = _MIB           # room for the backup GPT at the disk's end
# The file name UEFI boots from removable media, per architecture's EFI name.
REMOVABLE_PATH = {"arm64-efi": "EFI/BOOT/BOOTAA64.EFI", "x86_64-efi": "EFI/BOOT/BOOTX64.EFI"}
GRUB_MODULES = ["part_gpt", "ext2", "fat", "normal", "linux", "configfile", "search",
                "search_fs_uuid", "echo", "test", "gzio", "efi_gop"]


def esp_fstab_line(esp_id: str) -> str:
    """The ESP at /boot/efi, as grub-install expects it; `nofail`: a box whose ESP cannot
    be mounted still boots (grub is already on it). Mounted on first access
    (`x-systemd.automount`), as systemd's own gpt-auto generator mounts an ESP: the boot
    waits for no device. Mounted at boot, it waited for udev's /dev/disk/by-uuid link,
    which under TCG (arm64 on this host) came after systemd's 90 s device timeout, so the
    box booted with no /boot/efi (seen here)."""
    return f"UUID={esp_uuid(esp_id)} /boot/efi vfat umask=0077,nofail,x-systemd.automount 0 2\n"


def esp_uuid(esp_id: str) -> str:
    """A vfat volume id (8 hex digits) as blkid and fstab spell it: XXXX-XXXX."""
    return f"{esp_id[:4]}-{esp_id[4:]}".upper()


def make_efi_raw_disk(root: Path, raw: Path, *, fs_uuid: str, esp_id: str, size_gib: int,
                      arch: Architecture, log: Path | None = None) -> None:
    """Write `root` into a raw GPT disk image: an ESP with grub (from the rootfs's own
    `arch.grub_target` modules) at the removable path, then the root ext4."""
    size = size_gib << 30
    root_size = size - ROOT_OFFSET - _GPT_BACKUP
    with open(raw, "wb") as disk:
        disk.truncate(size)
    proc.capture(["sfdisk", "--quiet", raw], input=(
        "label: gpt\n"
        f"start={ESP_OFFSET // 512}, size={ESP_SIZE // 512}, type=U, name=EFI\n"
        f"start={ROOT_OFFSET // 512}, size={root_size // 512}, type=L, name=rootfs\n"))
    proc.run(["mkfs.ext4", "-q", "-F", "-U", fs_uuid, "-L", "rootfs", "-d", root,
              "-E", f"offset={ROOT_OFFSET}", raw, f"{root_size // 1024}k"],
             prefix="base disk", log=log)
    esp = raw.with_name("esp.img")
    grub = raw.with_name("grub.efi")
    make_grub_efi_image(root, grub, fs_uuid=fs_uuid, arch=arch, log=log)
    esp.unlink(missing_ok=True)
    proc.run(["mkfs.vfat", "-C", "-F", "32", "-i", esp_id, "-n", "EFI", esp,
              str(ESP_SIZE // 1024)], prefix="base disk", log=log)
    removable = REMOVABLE_PATH[arch.grub_target]
    folders = [removable.rsplit("/", 2)[0], removable.rsplit("/", 1)[0]]
    proc.run(["mmd", "-i", esp, *(f"::/{folder}" for folder in folders)],
             prefix="base disk", log=log)
    proc.run(["mcopy", "-i", esp, grub, f"::/{removable}"], prefix="base disk", log=log)
    proc.capture(["dd", f"if={esp}", f"of={raw}", "bs=1M", f"seek={ESP_OFFSET // _MIB}",
                  "conv=notrunc,sparse", "status=none"])
    esp.unlink()


def make_grub_efi_image(root: Path, output: Path, *, fs_uuid: str, arch: Architecture,
                        log: Path | None = None) -> None:
    """grub as one EFI executable, from the rootfs's modules, whose embedded config finds
    the root filesystem by UUID (no disk numbering to guess) and reads its grub.cfg."""
    modules = root / "usr/lib/grub" / arch.grub_target
    if not (modules / "linux.mod").is_file():
        raise GoldboxError(f"{modules} has no grub modules: is {arch.grub_package} "
                           "installed in the rootfs?")
    early = output.with_name("grub-early.cfg")
    early.write_text(f"search --no-floppy --fs-uuid --set=root {fs_uuid}\n"
                     "set prefix=($root)/boot/grub\n"
                     "configfile $prefix/grub.cfg\n")
    wanted = [name for name in GRUB_MODULES if (modules / f"{name}.mod").is_file()]
    proc.run(["grub-mkimage", "-O", arch.grub_target, "-d", modules, "-c", early,
              "-p", "/boot/grub", "-o", output, *wanted], prefix="base disk", log=log)

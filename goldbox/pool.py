"""vagrant-libvirt's storage pool: the box images it uploads and never deletes.

`vagrant box add` + `vagrant up` uploads each box version's disk into the libvirt pool
as `<box>_vagrant_box_image_<version>_<disk>.img`; `vagrant box remove` leaves it there
(vagrant-libvirt#85), so pools grow by a box per version. A volume is orphaned when no
installed box (`vagrant box list` of this VAGRANT_HOME) has its name and version; only
those are ever deleted. Another user's VAGRANT_HOME is not seen: run it as that user."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from goldbox import proc
from goldbox.errors import GoldboxError

VIRSH = ["virsh", "-c", "qemu:///system"]
_BOX_VOLUME = re.compile(r"^(?P<box>.+)_vagrant_box_image_(?P<version>[0-9][^_]*)_"
                         r"(?P<disk>.+)\.img$")
_BOX_LINE = re.compile(r"^(?P<box>\S+)\s+\((?P<provider>[^,]+),\s*(?P<version>[^,)]+)")


@dataclass(frozen=True)
class Volume:
    name: str
    path: Path
    box: str
    version: str
    size: int  # bytes allocated on the host's disk


def _virsh(*args: str) -> str:
    if shutil.which(VIRSH[0]) is None:
        raise GoldboxError("virsh not found: apt-get install libvirt-clients")
    result = proc.capture([*VIRSH, *args], check=False)
    if result.returncode != 0:
        raise GoldboxError(f"`virsh {' '.join(args)}` failed: "
                           f"{(result.stderr or result.stdout).strip()}")
    return result.stdout


def box_volumes(pool: str = "default") -> list[Volume]:
    """The pool's box images (other volumes, such as VM disks, are not listed)."""
    volumes = []
    for line in _virsh("vol-list", "--pool", pool).splitlines()[2:]:
        fields = line.split(None, 1)
        if len(fields) != 2 or not (match := _BOX_VOLUME.match(fields[0])):
            continue
        path = Path(fields[1].strip())
        try:
            size = path.stat().st_blocks * 512
        except OSError:
            size = 0
        box = match["box"].replace("-VAGRANTSLASH-", "/")
        volumes.append(Volume(fields[0], path, box, match["version"], size))
    return volumes


def installed_boxes(env: dict[str, str] | None = None) -> set[tuple[str, str]]:
    """(box, version) of every libvirt box in Vagrant's box list."""
    result = proc.capture(["vagrant", "box", "list"], check=False, env=env)
    if result.returncode != 0:
        raise GoldboxError(f"`vagrant box list` failed: {result.stderr.strip()}")
    installed = set()
    for line in result.stdout.splitlines():
        if (match := _BOX_LINE.match(line)) and match["provider"] == "libvirt":
            installed.add((match["box"], match["version"].strip()))
    return installed


def _paths_in_use(pool: str) -> set[str]:
    """Images a VM still needs: every domain's disks and the backing files of every
    volume in the pool (a VM's disk is an overlay on its box's image)."""
    used = set()
    for domain in _virsh("list", "--all", "--name").split():
        for line in _virsh("domblklist", domain, "--details").splitlines()[2:]:
            fields = line.split()
            if len(fields) == 4 and fields[0] == "file":
                used.add(fields[3])
    for line in _virsh("vol-list", "--pool", pool).splitlines()[2:]:
        fields = line.split(None, 1)
        if len(fields) == 2:
            xml = _virsh("vol-dumpxml", "--pool", pool, fields[0])
            used.update(re.findall(r"<backingStore>\s*<path>([^<]+)</path>", xml))
    return used


def orphaned(pool: str = "default", env: dict[str, str] | None = None) -> list[Volume]:
    """Box images of versions not installed and not under any VM."""
    installed = installed_boxes(env)
    candidates = [v for v in box_volumes(pool) if (v.box, v.version) not in installed]
    if not candidates:
        return []
    used = _paths_in_use(pool)
    return [v for v in candidates if str(v.path) not in used]


def purge(pool: str = "default", env: dict[str, str] | None = None,
          progress=print) -> list[Volume]:
    """Delete the pool's images of box versions no longer installed; return them."""
    doomed = orphaned(pool, env)
    for volume in doomed:
        _virsh("vol-delete", "--pool", pool, volume.name)
        progress(f"removed pool volume {volume.name} ({format_size(volume.size)}): "
                 f"{volume.box} {volume.version} is no longer installed")
    if not doomed:
        progress(f"pool {pool}: no orphaned box volume")
    return doomed


def format_size(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def remove_box(box: str, version: str) -> None:
    """`vagrant box remove` of one libvirt box version; nothing to do when absent."""
    if (box, version) not in installed_boxes():
        return
    result = proc.capture(["vagrant", "box", "remove", box, "--box-version", version,
                           "--provider", "libvirt", "--force"], check=False)
    if result.returncode != 0:
        raise GoldboxError(f"`vagrant box remove {box} --box-version {version}` failed: "
                           f"{(result.stderr or result.stdout).strip()}")
    print(f"removed box {box} {version} from Vagrant")


def pool_check(pool: str = "default", env: dict[str, str] | None = None):
    """`invoke doctor`'s line: orphaned box volumes and the space they hold."""
    from goldbox.doctor import Check

    name = f"libvirt pool {pool}"
    if not libvirt_reachable():
        return Check(name, False, "not checked: libvirt does not answer", required=False)
    try:
        doomed = orphaned(pool, env)
    except GoldboxError as exc:
        return Check(name, False, f"not checked: {exc}", required=False)
    if not doomed:
        return Check(name, True, "no orphaned box volume", required=False)
    listed = ", ".join(f"{v.box} {v.version}" for v in doomed)
    return Check(name, False, f"{len(doomed)} orphaned box volume(s), "
                              f"{format_size(sum(v.size for v in doomed))}: {listed}",
                 "invoke destroy --purge, or invoke prune", required=False)


def libvirt_reachable() -> bool:
    try:
        return proc.capture([*VIRSH, "version"], check=False).returncode == 0
    except GoldboxError:  # virsh not installed
        return False

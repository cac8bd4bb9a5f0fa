"""vagrant-libvirt's storage pool: the box images it uploads and never deletes.

`vagrant box add` + `vagrant up` uploads each box version's disk into the libvirt pool
as `<box>_vagrant_box_image_<version>_<disk>.img` (goldbox.virt knows those names);
`vagrant box remove` leaves it there
(vagrant-libvirt#85), so pools grow by a box per version. A volume is orphaned when no
installed box (`vagrant box list` of this VAGRANT_HOME) has its name and version; only
those are ever deleted. Another user's VAGRANT_HOME is not seen: run it as that user."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from goldbox import virt
from goldbox.errors import GoldboxError


@dataclass(frozen=True)
class Volume:
    name: str
    path: Path
    box: str
    version: str
    size: int  # bytes allocated on the host's disk


def box_volumes(pool: str = virt.DEFAULT_POOL) -> list[Volume]:
    """The pool's box images (other volumes, such as VM disks, are not listed)."""
    volumes = []
    for line in virt.virsh("vol-list", "--pool", pool).splitlines()[2:]:
        fields = line.split(None, 1)
        if len(fields) != 2 or not (owner := virt.parse_box_volume(fields[0])):
            continue
        path = Path(fields[1].strip())
        try:
            size = path.stat().st_blocks * 512
        except OSError:
            size = 0
        volumes.append(Volume(fields[0], path, *owner, size))
    return volumes


def _paths_in_use(pool: str) -> set[str]:
    """Images a VM still needs: every domain's disks and the backing files of every
    volume in the pool (a VM's disk is an overlay on its box's image)."""
    used = set()
    for domain in virt.virsh("list", "--all", "--name").split():
        for line in virt.virsh("domblklist", domain, "--details").splitlines()[2:]:
            fields = line.split()
            if len(fields) == 4 and fields[0] == "file":
                used.add(fields[3])
    for line in virt.virsh("vol-list", "--pool", pool).splitlines()[2:]:
        fields = line.split(None, 1)
        if len(fields) == 2:
            xml = virt.virsh("vol-dumpxml", "--pool", pool, fields[0])
            used.update(re.findall(r"<backingStore>\s*<path>([^<]+)</path>", xml))
    return used


def orphaned(pool: str = virt.DEFAULT_POOL,
             env: Mapping[str, str] | None = None) -> list[Volume]:
    """Box images of versions not installed and not under any VM."""
    installed = virt.installed_boxes(env)
    candidates = [v for v in box_volumes(pool) if (v.box, v.version) not in installed]
    if not candidates:
        return []
    used = _paths_in_use(pool)
    return [v for v in candidates if str(v.path) not in used]


def purge(pool: str = virt.DEFAULT_POOL, env: Mapping[str, str] | None = None,
          progress=print) -> list[Volume]:
    """Delete the pool's images of box versions no longer installed; return them. Where
    libvirt does not answer, or the pool is not there or not started (`vagrant up` makes
    and starts it), there is nothing to delete: one line says so."""
    if not virt.daemon_answers():
        progress(f"pool {pool}: not checked, no libvirt daemon answers at {virt.URI}")
        return []
    if not virt.pool_active(pool):
        progress(f"pool {pool}: does not exist or is not started (`vagrant up` makes and "
                 "starts it): no box volume to remove")
        return []
    doomed = orphaned(pool, env)
    for volume in doomed:
        virt.virsh("vol-delete", "--pool", pool, volume.name)
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


def pool_check(pool: str = virt.DEFAULT_POOL, env: Mapping[str, str] | None = None):
    """`invoke doctor`'s line: orphaned box volumes and the space they hold."""
    from goldbox.doctor import Check

    name = f"libvirt pool {pool}"
    if not virt.daemon_answers():
        return Check(name, False, "not checked: libvirt does not answer", required=False)
    if not virt.pool_active(pool):
        return Check(name, True, "does not exist or is not started (`vagrant up` does "
                                 "both)", required=False)
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

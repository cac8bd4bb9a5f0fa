"""The VirtualBox box (target virtualbox/amd64), made from the golden disk of the libvirt
box without VirtualBox, which cannot run here.

Vagrant's VirtualBox box format (docs/providers/virtualbox/boxes): a tar of `box.ovf`
(the appliance: OVF 1.0 with VirtualBox's `vbox:` extensions, as VirtualBox exports it),
the disk it names (a streamOptimized VMDK, the only VMDK flavour an OVF may carry), a
Vagrantfile whose `config.vm.base_mac` is the MAC in box.ovf, and metadata.json naming
the provider. The disk is `qemu-img convert` of the libvirt box's box.img, so both amd64
boxes carry the same golden disk, byte for byte once unpacked.

The OVF's UUIDs and MAC come from the build's input hash: the same inputs make the same
appliance."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from goldbox import proc
from goldbox.context import Context
from goldbox.errors import GoldboxError
from goldbox.files import fsync_path, remove_tree, sha256_file, write_atomically
from goldbox.manifest import Manifest, read_manifest, write_manifest
from goldbox.render import render_template
from goldbox.targets import Target

TARGET = Target("virtualbox", "amd64")
DISK_FILE = "box-disk001.vmdk"  # VirtualBox's name for an appliance "box"'s first disk
OVF_FILE = "box.ovf"  # the name Vagrant's importer opens
VIRTUALBOX_OUI = "080027"  # the MAC prefix VirtualBox gives its NICs
# The box's files in the order of the tar: metadata.json first, for readers that stop early.
BOX_FILES = ("metadata.json", "Vagrantfile", OVF_FILE, DISK_FILE)


@dataclass(frozen=True)
class Appliance:
    """What box.ovf and the box's Vagrantfile say of one build."""

    vm_name: str
    mac: str  # 12 hex digits, no separators: how VirtualBox and config.vm.base_mac write it
    machine_uuid: str
    disk_uuid: str

    @classmethod
    def of(cls, vm_name: str, digest: str) -> Appliance:
        seed = hashlib.sha256(f"goldbox-virtualbox {digest}".encode()).hexdigest()
        return cls(vm_name=vm_name, mac=(VIRTUALBOX_OUI + seed[:6]).upper(),
                   machine_uuid=str(uuid.UUID(seed[8:40], version=4)),
                   disk_uuid=str(uuid.UUID(seed[40:64] + seed[:8], version=4)))


def box_path(ctx: Context) -> Path:
    box = ctx.config.project.box
    return ctx.dist / TARGET.box_file(box.name, box.version)


def manifest_path(ctx: Context) -> Path:
    return ctx.dist / TARGET.manifest_name


def up_to_date(ctx: Context, digest: str) -> bool:
    """The VirtualBox box in dist/ was made from this very golden build."""
    path, box = manifest_path(ctx), box_path(ctx)
    if not path.is_file() or not box.is_file():
        return False
    try:
        manifest = read_manifest(path)
    except GoldboxError:
        return False
    return manifest.input_hash == digest and manifest.box_size == box.stat().st_size


def build_virtualbox_box(ctx: Context, golden: Manifest, phases: dict[str, float]) -> Manifest:
    """The VirtualBox box of the golden build whose libvirt box and manifest lie in
    dist/<p>/ (`golden`), and its manifest beside them. Assembled in build/<p>/work/,
    then renamed into dist/: box first, manifest second, so a manifest never names a
    box that is not complete."""
    work = ctx.work / "virtualbox"
    remove_tree(work)
    work.mkdir(parents=True)
    try:
        image = _golden_disk(ctx, golden, work)
        capacity = _convert(ctx, image, work / DISK_FILE)
        image.unlink()
        appliance = Appliance.of(f"{golden.box_name}-{golden.version}", golden.input_hash or "")
        _render_box_files(ctx, appliance, work, capacity)
        box = _pack(ctx, work)
    finally:
        remove_tree(work)
    manifest = golden.model_copy(update={
        "provider": TARGET.provider, "architecture": TARGET.arch, "box_file": box.name,
        "box_sha256": sha256_file(box), "box_size": box.stat().st_size, "phases": phases,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        .replace("+00:00", "Z")})
    write_manifest(manifest_path(ctx), manifest)
    return manifest


def _golden_disk(ctx: Context, golden: Manifest, work: Path) -> Path:
    """box.img of the libvirt box (a qcow2; the box is a plain tar, nothing to unzip)."""
    proc.run(["tar", "-xf", ctx.dist / golden.box_file, "-C", work, "--no-same-owner",
              "box.img"], prefix="virtualbox", log=ctx.log)
    image = work / "box.img"
    if not image.is_file() or image.is_symlink():
        raise GoldboxError(f"{ctx.dist / golden.box_file}: no box.img in it")
    return image


def _convert(ctx: Context, image: Path, vmdk: Path) -> int:
    """The streamOptimized VMDK of `image`; returns the disk's virtual size in bytes."""
    proc.run(["qemu-img", "convert", "-f", "qcow2", "-O", "vmdk", "-o",
              "subformat=streamOptimized", image, vmdk], prefix="virtualbox", log=ctx.log)
    info = json.loads(proc.capture(["qemu-img", "info", "--output=json", vmdk]).stdout)
    return int(info["virtual-size"])


def _render_box_files(ctx: Context, appliance: Appliance, work: Path, capacity: int) -> None:
    config = ctx.config.project
    context = {
        "box_name": config.box.name, "version": config.box.version,
        "vm_name": appliance.vm_name, "mac": appliance.mac,
        "machine_uuid": appliance.machine_uuid, "disk_uuid": appliance.disk_uuid,
        "cpus": config.vm.cpus, "memory": config.vm.memory,
        "disk_file": DISK_FILE, "disk_size": (work / DISK_FILE).stat().st_size,
        "disk_capacity": capacity,
    }
    root = ctx.root
    write_atomically(work / OVF_FILE,
                     render_template(root, "vagrant/virtualbox/box.ovf.j2", context))
    write_atomically(work / "Vagrantfile",
                     render_template(root, "vagrant/virtualbox/Vagrantfile.j2", context))
    write_atomically(work / "metadata.json", json.dumps(
        {"provider": TARGET.provider, "architecture": TARGET.arch}, indent=2) + "\n")


def _pack(ctx: Context, work: Path) -> Path:
    """The box tar, written under a hidden name in dist/<p>/ and renamed into place."""
    box = box_path(ctx)
    partial = box.with_name(f".{box.name}.partial")
    try:
        proc.run(["tar", "-cf", partial, "--owner=0", "--group=0", "--numeric-owner",
                  "-C", work, *BOX_FILES], prefix="virtualbox", log=ctx.log)
        fsync_path(partial)
        os.replace(partial, box)
    finally:
        partial.unlink(missing_ok=True)
    fsync_path(box.parent)
    return box

"""The VirtualBox box (target virtualbox/amd64), made from a golden disk by goldbox/vbox.py.

VirtualBox cannot run here, so:
- the fast tests make the box from a small real libvirt box (tests/boxes.py) with the
  real code (qemu-img, tar, the templates) and check what Vagrant's VirtualBox importer
  and VirtualBox's OVF reader take from it (tests/vbox_standin.py);
- the slow test builds the default platform's box through the real `invoke image
  --target virtualbox/amd64` and boots its VMDK under QEMU standing in for VirtualBox
  (AHCI disk, e1000 NIC with the OVF's MAC, NAT with a port forward to 22), logs in with
  Vagrant's insecure key and gets `Hello!` from the guest's nginx.

No DMTF OVF envelope schema (dsp8023) is packaged for Debian here, so the envelope is
checked by structure (the order OVF 1.0 prescribes) rather than by xmllint against it."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from goldbox import PROJECT_ROOT
from goldbox.config import load_config
from goldbox.context import Context
from goldbox.errors import GoldboxError
from goldbox.files import sha256_file
from goldbox.manifest import read_manifest
from goldbox.vbox import DISK_FILE, build_virtualbox_box
from tests.boxes import make_box
from tests.conftest import run_invoke
from tests.vbox_standin import (
    base_mac,
    booted_as_virtualbox,
    check_ovf,
    private_key_copy,
    ssh,
    unpack_box,
    wait_for_ssh,
)


def _golden_in_dist(project: Path) -> Context:
    """A project copy whose dist/<default platform>/ holds a small real libvirt box and
    its manifest, as `invoke image` leaves them."""
    config = load_config(project)
    ctx = Context(config, config.platform(None))
    manifest = make_box(ctx.dist, config.project.box.version,
                        box_name=config.project.box.name)
    data = json.loads(manifest.read_text())
    data.update(platform=ctx.platform.name, input_hash="ab" * 32)
    manifest.write_text(json.dumps(data))
    return ctx


def test_virtualbox_box_is_vagrants_format_with_the_golden_disk(project_copy, tmp_path):
    ctx = _golden_in_dist(project_copy)
    golden = read_manifest(ctx.manifest)
    made = build_virtualbox_box(ctx, golden, {"packer": 1.0})
    box = ctx.dist / made.box_file
    assert made.box_file == "goldbox-flask-0.1.0-virtualbox.box"
    assert (made.provider, made.architecture) == ("virtualbox", "amd64")
    assert made.box_sha256 == sha256_file(box) and made.box_size == box.stat().st_size
    assert read_manifest(ctx.dist / "manifest.virtualbox-amd64.json") == made
    assert not list(ctx.dist.glob(".*")) and not (ctx.work / "virtualbox").exists()

    folder = unpack_box(box, tmp_path / "unpacked")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["metadata.json", "Vagrantfile", "box.ovf", DISK_FILE])
    assert json.loads((folder / "metadata.json").read_text()) == {
        "provider": "virtualbox", "architecture": "amd64"}
    unpacked = check_ovf(folder)
    assert base_mac(folder / "Vagrantfile") == unpacked.mac
    vagrantfile = (folder / "Vagrantfile").read_text()
    assert 'config.vm.synced_folder ".", "/vagrant", disabled: true' in vagrantfile
    # The same golden disk: the VMDK holds what the libvirt box's box.img holds.
    unpack_box(ctx.dist / golden.box_file, tmp_path / "libvirt")
    compared = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "vmdk",
                               str(tmp_path / "libvirt" / "box.img"), str(unpacked.disk)],
                              capture_output=True, text=True, check=False)
    assert compared.returncode == 0, compared.stdout + compared.stderr


def test_the_same_golden_build_makes_the_same_appliance(project_copy, tmp_path):
    """UUIDs and the MAC come from the build's input hash, not from chance."""
    ctx = _golden_in_dist(project_copy)
    golden = read_manifest(ctx.manifest)
    ovfs = []
    for attempt in ("first", "second"):
        made = build_virtualbox_box(ctx, golden, {})
        ovfs.append((unpack_box(ctx.dist / made.box_file, tmp_path / attempt) / "box.ovf")
                    .read_text())
    assert ovfs[0] == ovfs[1]
    other = golden.model_copy(update={"input_hash": "cd" * 32})
    made = build_virtualbox_box(ctx, other, {})
    third = (unpack_box(ctx.dist / made.box_file, tmp_path / "third") / "box.ovf").read_text()
    assert check_ovf(tmp_path / "third").mac != check_ovf(tmp_path / "first").mac
    assert third != ovfs[0]


def test_a_failed_conversion_leaves_dist_as_it_was(project_copy):
    """A golden box without box.img: one error naming the box, nothing half-made in
    dist/ (no box, no manifest of the VirtualBox target)."""
    ctx = _golden_in_dist(project_copy)
    golden = read_manifest(ctx.manifest)
    empty = ctx.dist / golden.box_file
    subprocess.run(["tar", "-cf", str(empty), "-C", str(ctx.dist), "plan.json"], check=True)
    before = sorted(p.name for p in ctx.dist.iterdir())
    with pytest.raises(GoldboxError, match=r"tar -xf .*goldbox-flask-0.1.0-libvirt.box"):
        build_virtualbox_box(ctx, golden, {})
    assert sorted(p.name for p in ctx.dist.iterdir()) == before


def _seed_dist(project: Path) -> None:
    """The checkout's own golden build of the default platform, if it has one: `invoke
    image` itself decides (by its input hash) whether it is up to date, and builds it
    again if not."""
    config = load_config(PROJECT_ROOT)
    dist = config.dist_dir / config.project.box.default_platform
    if (dist / "manifest.json").is_file():
        manifest = read_manifest(dist / "manifest.json")
        target = project / "dist" / dist.name
        target.mkdir(parents=True)
        for name in (manifest.box_file, "manifest.json", "plan.json"):
            shutil.copy2(dist / name, target / name)


@pytest.mark.slow
def test_virtualbox_box_boots_in_qemu_standing_in_for_virtualbox(project_copy, tmp_path):
    """The real pipeline (`invoke image --target virtualbox/amd64` on the shared cache),
    then the box's VMDK booted as VirtualBox's hardware: SSH as vagrant with the
    insecure key, and the app's `Hello!` from the guest."""
    _seed_dist(project_copy)
    image = run_invoke(project_copy, "image", "--target", "virtualbox/amd64")
    print(image.stdout[-4000:], image.stderr[-2000:])
    assert image.returncode == 0, "invoke image --target virtualbox/amd64 failed"
    assert "==> virtualbox" in image.stdout
    dist = project_copy / "dist" / "debian-13"
    made = read_manifest(dist / "manifest.virtualbox-amd64.json")
    box = dist / made.box_file
    assert made.box_sha256 == sha256_file(box)
    phase = [line for line in image.stdout.splitlines() if line.startswith("virtualbox ")]
    print(f"phase table row: {phase}; box {made.box_size / 2**20:.0f} MiB")

    folder = unpack_box(box, tmp_path / "box")
    box.unlink()  # the VMDK is all the boot needs: keep the disk use down
    unpacked = check_ovf(folder)
    assert base_mac(folder / "Vagrantfile") == unpacked.mac
    print(f"VMDK {unpacked.disk.stat().st_size / 2**20:.0f} MiB")
    key = private_key_copy(tmp_path)
    with booted_as_virtualbox(unpacked, tmp_path) as (port, http, console):
        started = time.monotonic()
        took = wait_for_ssh(port, key, deadline_s=900)
        log = console.read_text(errors="replace")
        assert took is not None, f"no SSH within 900 s; console:\n{log[-4000:]}"
        print(f"qemu boot to SSH: {time.monotonic() - started:.0f} s")
        # In the guest (it has no curl: its own python3 asks nginx), and from the host
        # through the NAT port forward.
        hello = ssh(port, key, "python3 -c \"import urllib.request; print(urllib.request"
                               ".urlopen('http://127.0.0.1/').read().decode())\"")
        assert hello.returncode == 0, hello.stderr
        assert hello.stdout.strip() == "Hello!"
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/", timeout=60) as answer:
            assert answer.read().decode().strip() == "Hello!"
        nic = ssh(port, key, "cat /sys/class/net/eth0/address; "
                             "readlink /sys/class/net/eth0/device/driver").stdout.split()
        assert nic[0].replace(":", "").upper() == unpacked.mac
        assert nic[1].endswith("/e1000")
        disk = ssh(port, key, "readlink -f /sys/block/sda/device").stdout
        assert "ata" in disk  # the root disk hangs off the AHCI (SATA) controller
    shutil.rmtree(folder)

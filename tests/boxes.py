"""Small but real Vagrant boxes for the catalog tests: a libvirt .box (tar.gz with
metadata.json, a Vagrantfile and a qcow2 box.img; it does not boot), the manifest.json
`invoke image` would write beside it (docs/contracts.md) and a plan.json there (the build's
plan, which publish copies into the catalog; its content is a stand-in)."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

from goldbox.files import sha256_file

BOX_NAME = "goldbox-test"

VAGRANTFILE = """\
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.driver = "qemu"
  end
end
"""


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def make_box(dest_dir: Path, version: str, *, box_name: str = BOX_NAME,
             padding_mib: int = 0) -> Path:
    """Build `<box>-<version>-libvirt.box` and its manifest.json in `dest_dir` (as
    `invoke image` lays out dist/<platform>/); return the manifest's path.

    `padding_mib` adds incompressible bytes, for tests that need a copy to take a while."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    image = dest_dir / "box.img"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1G"], check=True)
    box = dest_dir / f"{box_name}-{version}-libvirt.box"
    with tarfile.open(box, "w:gz", compresslevel=1) as tar:
        _add_bytes(tar, "metadata.json", json.dumps(
            {"provider": "libvirt", "format": "qcow2", "virtual_size": 1}).encode())
        _add_bytes(tar, "Vagrantfile", VAGRANTFILE.encode())
        tar.add(image, "box.img")
        _add_bytes(tar, "goldbox-version", f"{version}\n".encode())
        if padding_mib:
            with open("/dev/urandom", "rb") as noise:
                _add_bytes(tar, "padding", noise.read(padding_mib << 20))
    image.unlink()
    manifest = {
        "format": 1, "box_name": box_name, "version": version, "platform": "debian-12",
        "provider": "libvirt", "architecture": "amd64", "box_file": box.name,
        "box_sha256": sha256_file(box), "box_size": box.stat().st_size,
        "created": "2026-11-25T02:00:00Z",
        "components": {"cpython": "3.13.5", "nginx": "1.22.1", "uwsgi": "2.0.28",
                       "flask": "3.1.1", "packer": "1.6.6", "os-updates": "2026-11-24"},
        "git_commit": "0" * 40, "phases": {},
    }
    path = dest_dir / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (dest_dir / "plan.json").write_text(json.dumps({"box": box_name, "version": version}) + "\n")
    return path

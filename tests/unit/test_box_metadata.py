"""What goldbox adds to a golden box's own metadata.json: its architecture (issue 23: "each
box's own metadata.json names its provider and architecture") and, for a box of goldbox's
base disk, the SSH key credential its guest takes (issue 22), on a tar laid out as
packer's vagrant post-processor writes it."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile

import pytest

from goldbox.config import load_config
from goldbox.context import Context
from goldbox.errors import GoldboxError
from goldbox.golden_cache import add_metadata, box_metadata

DISK = bytes(range(256)) * 4096  # 1 MiB that must come through unchanged


def _packer_box(path, metadata: bytes) -> None:
    """Members in packer's order (Vagrantfile, box.img, metadata.json) and with its GNU
    headers: access and change times (octal) where a ustar header has its name prefix."""
    with tarfile.open(path, "w:", format=tarfile.GNU_FORMAT) as tar:
        for name, data in (("Vagrantfile", b"Vagrant.configure('2') do |c| end\n"),
                           ("box.img", DISK), ("metadata.json", metadata)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    raw = bytearray(path.read_bytes())
    offset = 0
    while raw[offset:offset + 512].strip(b"\0"):
        header = raw[offset:offset + 512]
        header[345:369] = b"15303051106\0" + b"15303051105\0"  # atime, ctime
        header[148:156] = b" " * 8
        header[148:155] = b"%06o\0" % sum(header)
        raw[offset:offset + 512] = header
        size = int(header[124:136].strip(b"\0 ") or b"0", 8)
        offset += 512 + (size + 511) // 512 * 512
    path.write_bytes(bytes(raw))
    assert subprocess.run(["tar", "-tf", path], capture_output=True, text=True,
                          check=True).stdout.split() == ["Vagrantfile", "box.img",
                                                         "metadata.json"]


def _members(path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_the_architecture_joins_packer_s_metadata_and_the_rest_is_unchanged(tmp_path):
    box = tmp_path / "golden.box"
    _packer_box(box, b'{"provider":"libvirt","format":"qcow2","virtual_size":4}')
    add_metadata(box, {"architecture": "arm64"})
    members = _members(box)
    # GNU tar's reading, as Vagrant's bsdtar reads it: each file at the root, once.
    assert subprocess.run(["tar", "-tf", box], capture_output=True, text=True,
                          check=True).stdout.split() == ["metadata.json", "Vagrantfile",
                                                         "box.img"]
    assert json.loads(members["metadata.json"]) == {
        "provider": "libvirt", "format": "qcow2", "virtual_size": 4, "architecture": "arm64"}
    assert members["box.img"] == DISK
    assert members["Vagrantfile"].startswith(b"Vagrant.configure")
    assert [p.name for p in tmp_path.iterdir()] == ["golden.box"]  # no partial left


@pytest.mark.parametrize("metadata, expected", [
    (b"not json", "metadata.json is not JSON"),
    (b'{"format": "qcow2"}', "expected an object with a provider"),
    (None, "no metadata.json in the box"),
])
def test_a_box_without_usable_metadata_is_named_and_left_as_it_was(tmp_path, metadata,
                                                                   expected):
    box = tmp_path / "golden.box"
    if metadata is None:
        with tarfile.open(box, "w:") as tar:
            tar.addfile(tarfile.TarInfo("box.img"), io.BytesIO(b""))
    else:
        _packer_box(box, metadata)
    before = box.read_bytes()
    with pytest.raises(GoldboxError, match=expected) as error:
        add_metadata(box, {"architecture": "amd64"})
    assert str(box) in str(error.value)
    assert box.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["golden.box"]


def test_what_is_not_a_tar_is_named(tmp_path):
    box = tmp_path / "golden.box"
    box.write_bytes(b"a golden box\n" * 100)
    with pytest.raises(GoldboxError, match="cannot read it as a box"):
        add_metadata(box, {"architecture": "amd64"})


def test_a_base_disk_box_names_its_architecture_and_the_key_credential_an_installer_box_not():
    from goldbox.arch import ARM64
    config = load_config()
    debian = Context(config, config.platform("debian-13"))
    assert box_metadata(debian) == {"architecture": "amd64",
                                    "ssh_key_credential": "goldbox.ssh_key"}
    assert box_metadata(debian.for_arch(ARM64))["architecture"] == "arm64"
    assert box_metadata(Context(config, config.platform("centos-6.4"))) == {
        "architecture": "amd64"}

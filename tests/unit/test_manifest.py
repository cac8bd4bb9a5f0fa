"""manifest.json's one reader (goldbox/manifest.py): a good manifest round-trips, a bad
one is one line naming the file, the key, the value and what was expected."""

from __future__ import annotations

import json

import pytest

from goldbox.errors import GoldboxError
from goldbox.manifest import Manifest, parse_manifest, read_manifest, write_manifest

GOOD = {"box_name": "goldbox-debian-12", "version": "0.1.0", "platform": "debian-12",
        "provider": "libvirt", "box_file": "goldbox-debian-12.box", "box_sha256": "a" * 64,
        "box_size": 1024, "created": "2026-11-28T12:00:00Z"}


def test_a_written_manifest_reads_back_the_same(tmp_path):
    manifest = Manifest(**GOOD, components={"python": "3.13.1"})
    write_manifest(tmp_path / "manifest.json", manifest)
    assert read_manifest(tmp_path / "manifest.json") == manifest
    assert not list(tmp_path.glob(".*")), "no temporary file left beside it"


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("version", "1.2", "expected a semantic version MAJOR.MINOR.PATCH"),
    ("version", "1.2.0\n", "expected a semantic version MAJOR.MINOR.PATCH"),
    ("box_name", "Gold Box", "expected lowercase letters, digits"),
    ("box_file", "../escape.box", "expected a .box file name beside the manifest"),
    ("box_sha256", "A" * 64, "expected 64 lowercase hex characters"),
    ("box_size", -1, "greater than or equal to 0"),
])
def test_a_bad_value_is_one_line_naming_the_key(key, value, expected):
    with pytest.raises(GoldboxError) as caught:
        parse_manifest(json.dumps({**GOOD, key: value}), "dist/manifest.json")
    message = str(caught.value)
    assert message.startswith(f"dist/manifest.json: {key} = {value!r}: ")
    assert expected in message and "\n" not in message


@pytest.mark.parametrize(("text", "expected"), [
    ("{", "dist/manifest.json: not valid JSON"),
    ("[]", "dist/manifest.json: expected a JSON object, found list"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "box_sha256"}),
     "dist/manifest.json: missing key 'box_sha256'"),
    (json.dumps({**GOOD, "signed_by": "me"}), "dist/manifest.json: unknown key 'signed_by'"),
])
def test_a_malformed_manifest_is_one_line(text, expected):
    with pytest.raises(GoldboxError, match="^" + expected.replace("(", r"\(")):
        parse_manifest(text, "dist/manifest.json")


def test_a_missing_manifest_says_how_to_make_one(tmp_path):
    with pytest.raises(GoldboxError, match="no such manifest .*invoke image"):
        read_manifest(tmp_path / "manifest.json")

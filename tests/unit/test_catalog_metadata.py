"""A catalog's metadata.json through its typed model (goldbox/catalog/metadata.py):
allow-listed values, one line per problem naming the file and the key."""

from __future__ import annotations

import json

import pytest

from goldbox.catalog.metadata import parse_metadata
from goldbox.errors import GoldboxError

PROVIDER = {"name": "libvirt", "url": "https://boxes.example/goldbox-0.1.0.box",
            "checksum_type": "sha256", "checksum": "b" * 64, "architecture": "amd64"}
GOOD = {"name": "acme/goldbox", "description": "golden",
        "versions": [{"version": "0.1.0", "providers": [PROVIDER]}]}


def with_provider(**change) -> str:
    return json.dumps({**GOOD, "versions": [{"version": "0.1.0",
                                              "providers": [{**PROVIDER, **change}]}]})


def test_good_metadata_parses_and_other_servers_keys_are_dropped():
    metadata = parse_metadata(json.dumps({**GOOD, "owner": "me"}), "metadata.json")
    assert metadata.name == "acme/goldbox"
    assert metadata.versions[0].providers[0].checksum == "b" * 64
    assert "owner" not in metadata.model_dump()


@pytest.mark.parametrize(("text", "expected"), [
    (json.dumps({**GOOD, "name": "acme/goldbox\n"}), "name = 'acme/goldbox\\n'"),
    (json.dumps({**GOOD, "versions": [{"version": "0.1", "providers": [PROVIDER]}]}),
     "versions[0].version = '0.1'"),
    (with_provider(url="https://boxes.example/a box.box"), "versions[0].providers[0].url"),
    (with_provider(checksum="B" * 64), "expected a sha256"),
    (with_provider(name="libvirt;rm"), "versions[0].providers[0].name = 'libvirt;rm'"),
    (json.dumps({"name": "acme/goldbox"}), "missing key 'versions'"),
    ("[]", "expected a JSON object, found list"),
    ("{", "not valid JSON"),
])
def test_bad_metadata_is_one_line_naming_the_file_and_key(text, expected):
    with pytest.raises(GoldboxError) as caught:
        parse_metadata(text, "remote/metadata.json")
    message = str(caught.value)
    assert "remote/metadata.json" in message and expected in message, message
    assert "\n" not in message

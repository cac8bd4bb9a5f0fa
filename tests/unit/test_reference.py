"""The docs' reference tables are generated from the models (goldbox/reference.py,
`invoke contracts`): the checked-in docs must be what the generator makes."""

from __future__ import annotations

import shutil

import pytest

from goldbox import PROJECT_ROOT, reference
from goldbox.errors import GoldboxError


@pytest.fixture
def docs(tmp_path):
    """A copy of the generated docs, to break."""
    for relative in reference.TABLES:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_ROOT / relative, tmp_path / relative)
    return tmp_path


def test_the_checked_in_docs_are_what_the_models_make():
    assert reference.stale() == [], "run `invoke contracts` and commit the docs"


@pytest.mark.parametrize("row", ["| `packages.update` | bool | `false` |",
                                 "| `uwsgi.socket.directory_mode` | str or null | unset |",
                                 "- `app-env`"])
def test_a_row_missing_from_the_docs_is_found_and_written_back(docs, row):
    contracts = docs / "docs/contracts.md"
    text = contracts.read_text()
    assert row in text
    contracts.write_text(text.replace(row + "\n", "", 1))
    assert reference.stale(docs) == ["docs/contracts.md"]
    assert reference.write_docs(docs) == ["docs/contracts.md"]
    assert contracts.read_text() == text


def test_a_keys_meaning_is_the_docs_own(docs):
    config = docs / "docs/config.md"
    old = "| `vm.cpus` | int, ≥ 1, ≤ 64 | `2` | for the packer build and the Vagrant VM |"
    assert old in config.read_text()
    config.write_text(config.read_text().replace(old, old.replace(
        "for the packer build and the Vagrant VM", "virtual CPUs of the VM")))
    assert reference.stale(docs) == []


def test_a_doc_without_its_markers_is_one_line(docs):
    contracts = docs / "docs/contracts.md"
    contracts.write_text(contracts.read_text().replace("<!-- generated:manifest -->", ""))
    with pytest.raises(GoldboxError, match=r"contracts.md: no <!-- generated:NAME --> "
                                           r"markers for manifest$"):
        reference.stale(docs)

"""The shared host I/O helpers, fast and without root: the one lock (goldbox.locks), the
one atomic write and copy-and-hash (goldbox.files), the one pydantic error line
(goldbox.validation). Two holders of a lock are two real processes; nothing is timed."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from goldbox.catalog.layout import LOCK_FILE
from goldbox.catalog.store import catalog_lock
from goldbox.errors import GoldboxError
from goldbox.files import PARTIAL_PREFIX, copy_hashing, partial_file, write_atomically
from goldbox.locks import exclusive
from goldbox.validation import validated

HOLDER = """
import sys
from pathlib import Path
from goldbox.locks import exclusive
with exclusive(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.readline()
"""


@pytest.fixture
def holder(tmp_path):
    """Start a process that holds the lock at a path until told to let go; yields a
    function (path -> the process) and lets every one go at the end."""
    started = []

    def hold(path: Path) -> subprocess.Popen:
        child = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 cwd=Path(__file__).parent.parent)
        started.append(child)
        assert child.stdout.readline() == "held\n"
        return child
    yield hold
    for child in started:
        child.stdin.close()
        child.wait(timeout=30)


def let_go(child: subprocess.Popen) -> None:
    child.stdin.close()
    assert child.wait(timeout=30) == 0


# ---- the lock --------------------------------------------------------------------------


def test_a_lock_file_that_is_a_link_is_refused_and_nothing_is_created(tmp_path):
    target = tmp_path / "elsewhere" / "victim"
    target.parent.mkdir()
    (tmp_path / "image.lock").symlink_to(target)
    with pytest.raises(GoldboxError, match=rf"^{tmp_path / 'image.lock'}: the lock file is a "
                                           r"symbolic link; refused"):
        with exclusive(tmp_path / "image.lock"):
            pass
    assert not target.exists()


def test_two_holders_exclude_each_other_and_the_second_learns_the_first_pid(tmp_path, holder):
    lock = tmp_path / "entry.lock"
    child = holder(lock)
    with exclusive(lock, wait=False) as busy:
        assert busy == str(child.pid)
    let_go(child)
    with exclusive(lock, wait=False) as busy:
        assert busy is None
    assert lock.read_bytes() == b""  # the kernel knows the holder: nothing is written


def test_a_waiter_is_told_who_holds_the_lock_then_gets_it(tmp_path, holder):
    lock = tmp_path / "entry.lock"
    child = holder(lock)
    told = []

    def waiting(who: str) -> None:
        told.append(who)
        let_go(child)  # the holder lets go only once we wait: no timing involved
    with exclusive(lock, waiting=waiting) as busy:
        assert busy is None
    assert told == [str(child.pid)]


def test_the_catalog_lock_says_who_holds_it(tmp_path, holder):
    child = holder(tmp_path / LOCK_FILE)
    said = []

    def progress(line: str) -> None:
        said.append(line)
        let_go(child)
    with catalog_lock(tmp_path, progress):
        pass
    assert said == [f"waiting for the catalog lock ({tmp_path / LOCK_FILE}), held by another "
                    f"publish or prune (pid {child.pid})"]


def test_a_lock_file_that_cannot_be_opened_is_one_line_with_the_hint(tmp_path):
    lock = tmp_path / "no-such-folder-allowed" / "x.lock"
    lock.parent.mkdir()
    lock.parent.chmod(0o500)
    if os.access(lock.parent, os.W_OK):
        lock.parent.chmod(0o700)
        lock.mkdir(parents=True)  # root may write anywhere: a folder cannot be opened
    try:
        with pytest.raises(GoldboxError) as caught:
            with exclusive(lock, what="the catalog's lock file", hint="ask its owner"):
                pass
    finally:
        lock.parent.chmod(0o700)
    assert str(caught.value).startswith(f"{lock}: cannot open the catalog's lock file: ")
    assert str(caught.value).endswith(" (ask its owner)")


# ---- the atomic write and copy-and-hash ------------------------------------------------


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text("old\n")
    with pytest.raises(RuntimeError), partial_file(path) as out:
        out.write(b"half of the new")
        raise RuntimeError("killed in the middle")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def test_an_atomic_write_replaces_a_link_instead_of_writing_through_it(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "out.json").symlink_to(victim)
    write_atomically(tmp_path / "out.json", "{}\n", mode=0o600)
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "out.json").is_symlink()
    assert (tmp_path / "out.json").read_text() == "{}\n"
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob(f"{PARTIAL_PREFIX}*"))


def test_an_atomic_write_into_a_missing_folder_it_cannot_make_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(GoldboxError, match=rf"^{tmp_path / 'file' / 'x.json'}: cannot write: "):
        write_atomically(tmp_path / "file" / "x.json", b"{}")


def test_copy_and_hash_feeds_every_hasher_and_reports_each_quarter():
    data = [b"a" * 10, b"b" * 10, b"c" * 20]
    out, said = io.BytesIO(), []
    hashers = {"md5": hashlib.md5(), "sha256": hashlib.sha256()}
    received = copy_hashing(iter(data), out, hashers, total=40, label="box",
                            progress=said.append)
    assert received == 40 and out.getvalue() == b"".join(data)
    assert hashers["sha256"].hexdigest() == hashlib.sha256(b"".join(data)).hexdigest()
    assert hashers["md5"].hexdigest() == hashlib.md5(b"".join(data)).hexdigest()
    assert said == ["box: 25% (0.0 of 0.0 MiB)", "box: 50% (0.0 of 0.0 MiB)",
                    "box: 100% (0.0 of 0.0 MiB)"]


# ---- the one validation line -----------------------------------------------------------


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[_Item]


@pytest.mark.parametrize(("data", "expected"), [
    ({"items": [{"size": 1}, {"size": "big"}]},
     "doc.json: items[1].size = 'big': expected a valid integer, unable to parse string as "
     "an integer"),
    ({"items": [{"size": 1, "colour": "red"}]},
     "doc.json: unknown key 'items[0].colour' (allowed: size)"),
    ({}, "doc.json: missing key 'items'"),
])
def test_a_validation_error_is_one_line_naming_the_key_the_value_and_what_was_expected(
        data, expected):
    with pytest.raises(GoldboxError) as caught:
        validated(_Document, data, "doc.json")
    assert str(caught.value) == expected

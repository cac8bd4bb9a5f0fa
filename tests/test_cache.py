"""The one cache primitive every kind of entry goes through (goldbox/cache.py): built
once, fsynced and renamed; trusted for its recorded content, not its existence; a
corrupt entry rebuilt with a one-line note; leftovers of killed builders swept; old
entries pruned. Real processes and real SIGKILLs, no mocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from goldbox.cache import RECORD, Cache, identity_key
from goldbox.errors import GoldboxError
from goldbox.files import mounts_under
from tests.waiting import lock_waiters, wait_until


class Notes(list):
    def __call__(self, line: str) -> None:
        self.append(line)


def writer(content: bytes, calls: list | None = None):
    def make(folder: Path) -> None:
        if calls is not None:
            calls.append(folder)
        (folder / "payload.bin").write_bytes(content)
    return make


def test_built_once_then_reused_with_its_identity_and_hashes_recorded(tmp_path):
    notes, calls = Notes(), []
    cache = Cache(tmp_path, note=notes)
    first = cache.ensure("bundle", {"version": "1"}, writer(b"x" * 1000, calls),
                         name="p", summary="test bundle")
    again = cache.ensure("bundle", {"version": "1"}, writer(b"other", calls),
                         name="p", summary="test bundle")
    assert len(calls) == 1 and not first.cached and again.cached
    assert again.path == tmp_path / "bundle" / identity_key("bundle", {"version": "1"})
    record = json.loads((again.path / RECORD).read_text())
    assert record["identity"] == {"version": "1"} and record["summary"] == "test bundle"
    assert record["files"]["payload.bin"]["size"] == 1000
    assert again.sha256() == record["files"]["payload.bin"]["sha256"]
    assert notes == ["cache: building bundle for p: not in the cache yet"]
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == \
        sorted([again.key, f"{again.key}.lock", "last-p.json"])


def test_the_rebuild_note_names_the_input_that_changed(tmp_path):
    notes = Notes()
    cache = Cache(tmp_path, note=notes)
    cache.ensure("basedisk", {"suite": "bookworm", "packages": ["a"]}, writer(b"1"),
                 name="debian-12", summary="s")
    cache.ensure("basedisk", {"suite": "bookworm", "packages": ["a", "b"]}, writer(b"2"),
                 name="debian-12", summary="s")
    assert notes[-1] == ("cache: building basedisk for debian-12: packages changed since "
                         "the last build")


@pytest.mark.parametrize("damage, check, caught", [
    ("truncate", "size", True),
    ("truncate", "full", True),
    ("flip", "size", False),  # the no-change path trusts the recorded size only
    ("flip", "full", True),
    ("record", "size", True),
    ("missing", "size", True),
])
def test_a_damaged_entry_is_detected_and_rebuilt_with_one_note(tmp_path, damage, check, caught):
    notes, calls = Notes(), []
    cache = Cache(tmp_path, note=notes)
    entry = cache.ensure("system-image", {"k": 1}, writer(b"a" * 4096, calls), name="p",
                         summary="image")
    payload = entry.file()
    if damage == "truncate":  # a power loss before the data reached the disk
        os.truncate(payload, 1000)
    elif damage == "flip":
        data = bytearray(payload.read_bytes())
        data[100] ^= 0xFF
        payload.write_bytes(bytes(data))
    elif damage == "record":
        (entry.path / RECORD).write_text("{not json")
    else:
        payload.unlink()
    notes.clear()
    again = cache.ensure("system-image", {"k": 1}, writer(b"a" * 4096, calls), name="p",
                         summary="image", check=check)
    assert len(calls) == (2 if caught else 1)
    assert again.cached is not caught
    if caught:
        (note,) = notes
        assert note.startswith(f"cache: system-image {entry.key[:12]} (image) is corrupt: ")
        assert note.endswith("; rebuilding it") and "\n" not in note
        assert again.file().read_bytes() == b"a" * 4096
        assert cache.lookup("system-image", {"k": 1}) is not None


def test_a_failed_build_leaves_nothing(tmp_path):
    cache = Cache(tmp_path, note=Notes())

    def fail(folder: Path) -> None:
        (folder / "half.bin").write_bytes(b"half")
        raise GoldboxError("the build broke")

    with pytest.raises(GoldboxError, match="the build broke"):
        cache.ensure("bundle", {"v": 1}, fail, name="p", summary="s")
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == \
        [f"{identity_key('bundle', {'v': 1})}.lock"]


def test_a_rebuild_replaces_a_sound_entry_only_once_the_new_one_is_complete(tmp_path):
    """What `invoke image --refresh` asks of the base disk: built again though cached; a
    rebuild that fails keeps the old entry; one whose swap was cut short leaves a
    `.replaced` folder that the sweep removes."""
    notes = Notes()
    cache = Cache(tmp_path, note=notes)
    key = identity_key("basedisk", {"v": 1})
    cache.ensure("basedisk", {"v": 1}, writer(b"old"), name="p", summary="s")

    def fail(folder: Path) -> None:
        (folder / "payload.bin").write_bytes(b"half")
        raise GoldboxError("the mirror went away")

    with pytest.raises(GoldboxError, match="the mirror went away"):
        cache.ensure("basedisk", {"v": 1}, fail, name="p", summary="s", rebuild="asked to")
    assert cache.ensure("basedisk", {"v": 1}, writer(b"unused"), name="p",
                        summary="s").file().read_bytes() == b"old"
    entry = cache.ensure("basedisk", {"v": 1}, writer(b"new"), name="p", summary="s",
                         rebuild="asked to")
    assert not entry.cached and entry.file().read_bytes() == b"new"
    assert notes[-1] == "cache: rebuilding basedisk for p: asked to"
    assert sorted(p.name for p in (tmp_path / "basedisk").iterdir()
                  if not p.name.startswith("last-")) == [key, f"{key}.lock"]
    # A kill between the two renames of the swap: the old entry under `.replaced`.
    (tmp_path / "basedisk" / key).rename(tmp_path / "basedisk" / f"{key}.replaced")
    assert cache.sweep() == [str(tmp_path / "basedisk" / f"{key}.replaced")]


BUILDER = """
import sys, time
from pathlib import Path
from goldbox.cache import Cache
def make(folder):
    (folder / "payload.bin").write_bytes(b"half")
    print("payload written", flush=True)
    time.sleep(60)
Cache(Path(sys.argv[1])).ensure("bundle", {"v": 1}, make, name="p", summary="s")
"""


def _start_builder(cache_dir: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", BUILDER, str(cache_dir)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    while "payload written" not in child.stdout.readline():
        assert child.poll() is None, "the builder died"
    return child


def test_a_killed_builder_leaves_a_partial_that_the_next_build_and_sweep_remove(tmp_path):
    child = _start_builder(tmp_path)
    key = identity_key("bundle", {"v": 1})
    partial = tmp_path / "bundle" / f"{key}.partial"
    assert partial.is_dir()
    cache = Cache(tmp_path, note=Notes())
    assert cache.sweep() == [], "a live builder's partial must be left alone"
    assert partial.is_dir()
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert partial.is_dir() and not (tmp_path / "bundle" / key).exists()
    assert cache.sweep() == [str(partial)]
    assert not partial.exists()
    entry = cache.ensure("bundle", {"v": 1}, writer(b"whole"), name="p", summary="s")
    assert entry.file().read_bytes() == b"whole"


def test_a_second_builder_of_one_entry_waits_for_the_first(tmp_path):
    """The second builder blocks on the entry's lock (seen in /proc/locks) while the first
    lives, and builds only once the first is gone."""
    child = _start_builder(tmp_path)
    cache = Cache(tmp_path, note=Notes())
    first_alive_when_built: list[bool] = []

    def make(folder: Path) -> None:
        first_alive_when_built.append(child.poll() is None)
        writer(b"whole")(folder)

    built: list = []
    second = threading.Thread(target=lambda: built.append(
        cache.ensure("bundle", {"v": 1}, make, name="p", summary="s")))
    second.start()
    lock = tmp_path / "bundle" / f"{identity_key('bundle', {'v': 1})}.lock"
    try:
        wait_until(lambda: lock_waiters(lock), "the second builder to wait on the lock")
    finally:
        child.kill()
        child.wait()
    second.join()
    assert first_alive_when_built == [False]
    assert built[0].file().read_bytes() == b"whole" and not built[0].cached


def test_a_second_phase_needing_an_entry_being_built_says_it_waits(tmp_path):
    # Issue 22: two phases needing one entry printed "building ..." as if twice.
    release, first_notes, second_notes = threading.Event(), Notes(), Notes()
    builds = []

    def slow_make(folder: Path) -> None:
        builds.append(folder)
        release.wait(60)
        (folder / "payload.bin").write_bytes(b"once")

    first = threading.Thread(target=Cache(tmp_path, note=first_notes).ensure, args=(
        "artifact", {"v": 1}, slow_make), kwargs={"name": "Python.tar.xz", "summary": "s"})
    first.start()
    while not builds:  # the first phase holds the entry's lock and is building
        time.sleep(0.05)
    second = Cache(tmp_path, note=second_notes)
    waiter = threading.Thread(target=lambda: found.append(second.ensure(
        "artifact", {"v": 1}, writer(b"again", builds), name="Python.tar.xz", summary="s")))
    found: list = []
    waiter.start()
    for _ in range(600):  # until the second says something (before the fix: nothing)
        if second_notes:
            break
        time.sleep(0.05)
    release.set()
    first.join()
    waiter.join()
    assert first_notes == ["cache: building artifact for Python.tar.xz: not in the cache yet"]
    assert second_notes == ["cache: waiting for artifact for Python.tar.xz: another phase "
                            "or process is building it"]
    assert len(builds) == 1 and found[0].cached and found[0].file().read_bytes() == b"once"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_sweep_unmounts_what_an_older_version_left_before_deleting(tmp_path):
    """An older goldbox bind-mounted the host's /dev into its chroot and was killed. A
    harmless folder stands in for /dev here: the sweep must unmount it, never delete
    through it."""
    host = tmp_path / "host-dev"
    host.mkdir()
    (host / "null").write_text("a host device node\n")
    leftover = tmp_path / "cache" / "work" / "chroot-old"
    (leftover / "dev").mkdir(parents=True)
    subprocess.run(["mount", "--bind", host, leftover / "dev"], check=True)
    try:
        removed = Cache(tmp_path / "cache", note=Notes()).sweep()
    finally:
        if mounts_under(leftover):
            subprocess.run(["umount", "--lazy", leftover / "dev"], check=False)
    assert f"mount {leftover / 'dev'}" in removed and str(leftover) in removed
    assert not leftover.exists()
    assert (host / "null").read_text() == "a host device node\n"
    assert not mounts_under(tmp_path / "cache")


def test_prune_keeps_what_is_used_and_evicts_by_age_then_size(tmp_path):
    cache = Cache(tmp_path, note=Notes())
    entries = {name: cache.ensure("bundle", {"n": name}, writer(b"x" * size), name=name,
                                  summary=name)
               for name, size in (("kept", 100), ("old", 100), ("big", 5000), ("new", 100))}
    now = time.time()
    ages = {"kept": 90, "old": 40, "big": 5, "new": 0.01}  # days since last use
    for name, days in ages.items():
        record = entries[name].path / RECORD
        os.utime(record, (now - days * 86400, now - days * 86400))
    evicted = cache.prune(keep={entries["kept"].key}, older_than_days=30, now=now)
    assert [e.summary for e in evicted] == ["old"]
    evicted = cache.prune(keep={entries["kept"].key}, max_bytes=300, now=now)
    assert [e.summary for e in evicted] == ["big"], "'new' was used within the hour"
    assert sorted(e.summary for e in cache.entries()) == ["kept", "new"]


SCRATCH_USER = """
import sys, time
from pathlib import Path
from goldbox.cache import Cache
with Cache(Path(sys.argv[1])).scratch("chroot") as folder:
    (folder / "in-use").write_text("yes")
    print(folder, flush=True)
    time.sleep(60)
"""


def test_sweeps_never_take_a_scratch_folder_a_live_process_uses(tmp_path):
    """Found for real: a sweep that unlinked a busy folder's lock file let the next
    sweep lock a fresh file of that name and delete the folder under a running build."""
    child = subprocess.Popen([sys.executable, "-c", SCRATCH_USER, str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        folder = Path(child.stdout.readline().strip())
        cache = Cache(tmp_path, note=Notes())
        for _ in range(3):
            assert cache.sweep() == []
        assert (folder / "in-use").read_text() == "yes"
        assert folder.with_name(folder.name + ".lock").exists()
    finally:
        child.kill()
        child.wait()
    assert cache.sweep() == [str(folder)]
    assert not folder.exists() and not folder.with_name(folder.name + ".lock").exists()

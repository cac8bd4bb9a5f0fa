"""goldbox's build cache: one primitive for every kind of entry.

An entry is a folder `<cache>/<kind>/<key>/` holding what was built and an
`identity.json`: what it was made from (the *identity*, whose sha256 is the key), when,
and the size and sha256 of every file in it. Every kind (downloaded artifact,
wheelhouse, debootstrap rootfs, CPython bundle, native wheel, base disk, system image,
golden box)
goes through `Cache.ensure`:

1. lock `<kind>/<key>.lock` (concurrent builders of one entry wait for each other);
2. if the entry is there, check it: identity.json readable and naming this identity,
   every file present with its size, and (check="full") its recorded sha256. A corrupt
   entry is never reused: it is removed, rebuilt, and a one-line note says why;
3. otherwise build it under `<key>.partial/`, flush every file to disk, record the
   hashes, and rename the folder into place. With a team cache (goldbox/cache_remote.py)
   a missing entry is first pulled from it into `<key>.partial/`, used only if signed by
   a trusted key and sound by the check of step 2; one built here is pushed to it.

A miss also says what changed since the entry last used for the same name (a
platform, say): "rebuilding base disk for debian-12: packages changed". Leftovers of
killed builds (`*.partial`, scratch folders, old versions' mounts) are swept by
`sweep`, which skips anything a live process still holds the lock of.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from goldbox.errors import GoldboxError
from goldbox.files import (
    fsync_path,
    fsync_tree,
    remove_tree,
    sha256_file,
    unmount_all_under,
    write_atomically,
)
from goldbox.locks import exclusive

if TYPE_CHECKING:
    from goldbox.cache_remote import Remote

# Bumped when the layout of entries changes: every key changes with it.
FORMAT = 1
RECORD = "identity.json"
KINDS = ("artifact", "wheelhouse", "rootfs", "bundle", "native-wheel", "app-env", "basedisk",
         "system-image", "golden-box")
SCRATCH = "work"
# `prune` never evicts what was used more recently than this: a build may be using it.
IN_USE_SECONDS = 3600

Check = Literal["full", "size"]
Note = Callable[[str], None]


def identity_key(kind: str, identity: dict[str, Any]) -> str:
    """The key of an entry: sha256 over its kind, the cache format and its identity."""
    canonical = json.dumps({"format": FORMAT, "kind": kind, "identity": identity},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    kind: str
    key: str
    path: Path
    record: dict[str, Any]
    cached: bool = True  # found in the cache (False: built by this call)
    note: str = ""  # why it was (re)built, when it was

    def file(self, name: str | None = None) -> Path:
        """The entry's file `name`, or its only file."""
        if name is None:
            (name,) = self.record["files"]
        return self.path / name

    def sha256(self, name: str | None = None) -> str:
        if name is None:
            (name,) = self.record["files"]
        return self.record["files"][name]["sha256"]

    @property
    def size(self) -> int:
        return sum(item["size"] for item in self.record["files"].values())

    @property
    def summary(self) -> str:
        return self.record.get("summary", "")

    @property
    def last_used(self) -> float:
        return (self.path / RECORD).stat().st_mtime


@contextlib.contextmanager
def locked(lock_file: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold the entry lock `lock_file` for the block. With wait=False, yield False at once
    if another process holds it."""
    with exclusive(lock_file, wait=wait) as holder:
        yield holder is None


class Cache:
    def __init__(self, root: Path, note: Note = print, remote: Remote | None = None):
        self.root = Path(root)
        self.note = note
        self.remote = remote  # the team's cache (goldbox/cache_remote.py), if any
        self.used: set[str] = set()  # keys this process found or built

    # ---- one entry ---------------------------------------------------------------------

    def ensure(self, kind: str, identity: dict[str, Any], make: Callable[[Path], None], *,
               name: str, summary: str, check: Check = "full", rebuild: str | None = None
               ) -> Entry:
        """The entry of `kind` for `identity`, built by `make(folder)` if it is missing or
        corrupt. `name` groups entries for the "what changed" note (a platform, a
        requirements file); `summary` is what `invoke cache` shows it was made from.
        `rebuild` (why) builds it again even when a sound one is cached, for inputs an
        identity cannot see (a repository's updates); the cached one stays in place until
        the new one is complete."""
        if kind not in KINDS:
            raise ValueError(f"unknown cache kind {kind!r}")
        key = identity_key(kind, identity)
        store = self.root / kind
        final = store / key
        with self._locked_saying_so(store / f"{key}.lock", f"{kind} for {name}"):
            problem = self._problem(final, identity, check) if final.exists() else None
            if final.exists() and problem is None and not rebuild:
                os.utime(final / RECORD)
                self._remember(store, name, identity)
                self.used.add(key)
                return Entry(kind, key, final, json.loads((final / RECORD).read_text()))
            if problem:
                reason = f"the cached one was corrupt ({problem})"
                self.note(f"cache: {kind} {key[:12]} ({summary}) is corrupt: {problem}; "
                          "rebuilding it")
                self._discard(final)
            elif rebuild and final.exists():
                reason = rebuild
                self.note(f"cache: rebuilding {kind} for {name}: {reason}")
            else:
                reason = self._what_changed(store, name, identity)
                pulled = self._pull(store, kind, key, identity)
                if pulled is not None:
                    self._remember(store, name, identity)
                    self.used.add(key)
                    return pulled
                self.note(f"cache: building {kind} for {name}: {reason}")
            record = self._build(store, key, kind, identity, make, name=name, summary=summary)
            if self.remote is not None:
                self.remote.push(kind, key, final)
            self._remember(store, name, identity)
            self.used.add(key)
            return Entry(kind, key, final, record, cached=False, note=reason)

    @contextlib.contextmanager
    def _locked_saying_so(self, lock_file: Path, what: str) -> Iterator[None]:
        """`locked(lock_file)`, with a note first when another phase or process holds it,
        so a second phase that needs the entry says it waits for the first instead of
        looking like a second build (issue 22)."""
        with locked(lock_file, wait=False) as free:
            if free:
                yield
                return
        self.note(f"cache: waiting for {what}: another phase or process is building it")
        with locked(lock_file):
            yield

    def lookup(self, kind: str, identity: dict[str, Any], check: Check = "full") -> Entry | None:
        """The sound entry of `kind` for `identity`, or None; builds nothing."""
        key = identity_key(kind, identity)
        final = self.root / kind / key
        with locked(final.with_name(f"{key}.lock")):
            if not final.exists() or self._problem(final, identity, check):
                return None
            os.utime(final / RECORD)
            self.used.add(key)
            return Entry(kind, key, final, json.loads((final / RECORD).read_text()))

    def mark_used(self, kind: str, identity: dict[str, Any]) -> None:
        """Count the entry as used by this run without reading it (when only its key
        matters, as on the no-change path), if it is there."""
        key = identity_key(kind, identity)
        if (self.root / kind / key / RECORD).is_file():
            self.used.add(key)

    def _build(self, store: Path, key: str, kind: str, identity: dict[str, Any],
               make: Callable[[Path], None], *, name: str, summary: str) -> dict[str, Any]:
        partial = store / f"{key}.partial"
        remove_tree(partial)  # a killed builder's leftover: we hold the lock now
        partial.mkdir(parents=True)
        try:
            make(partial)
            files = {}
            for path in sorted(p for p in partial.rglob("*") if p.is_file()):
                files[str(path.relative_to(partial))] = {"size": path.stat().st_size,
                                                         "sha256": sha256_file(path)}
            if not files:
                raise GoldboxError(f"building {kind} {key[:12]} ({summary}) produced no file")
            record = {
                "format": FORMAT, "kind": kind, "name": name, "summary": summary,
                "identity": identity, "files": files,
                "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            }
            (partial / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
            self._publish(partial, store / key)
            return record
        finally:
            remove_tree(partial)

    @staticmethod
    def _publish(partial: Path, final: Path) -> None:
        """Flush the complete entry in `partial` and rename it to `final`."""
        fsync_tree(partial)
        replaced = final.with_name(f"{final.name}.replaced")
        if final.exists():  # a rebuild: the old entry goes only now
            remove_tree(replaced)
            os.rename(final, replaced)
        os.rename(partial, final)
        fsync_path(final.parent)
        remove_tree(replaced)

    def _pull(self, store: Path, kind: str, key: str, identity: dict[str, Any]
              ) -> Entry | None:
        """The entry from the team's remote cache, checked exactly as a local one, or
        None (the remote said in one line why, or has no such entry)."""
        if self.remote is None:
            return None
        partial = store / f"{key}.partial"
        remove_tree(partial)  # a killed builder's leftover: we hold the lock now
        partial.mkdir(parents=True)
        try:
            signer = self.remote.pull(kind, key, identity, partial, FORMAT)
            if signer is None:
                return None
            problem = self._problem(partial, identity, "full")
            if problem:
                self.note(f"cache: remote {self.remote.url} has {kind} {key[:12]} but it is "
                          f"not used: {problem} (changed in the registry); building it locally")
                return None
            self._publish(partial, store / key)
            record = json.loads((store / key / RECORD).read_text())
            self.note(f"cache: pulled {kind} {key[:12]} ({record['summary']}) from "
                      f"{self.remote.url}, signed by {signer}")
            return Entry(kind, key, store / key, record, note=f"pulled from {self.remote.url}")
        finally:
            remove_tree(partial)

    def _problem(self, final: Path, identity: dict[str, Any], check: Check) -> str | None:
        """What is wrong with the entry at `final`, or None when it is sound."""
        try:
            record = json.loads((final / RECORD).read_text())
            files = record["files"]
            if record.get("identity") != identity:
                return f"{RECORD} names another identity"
        except (OSError, ValueError, KeyError, TypeError):
            return f"{RECORD} is missing or unreadable"
        for name, item in files.items():
            path = final / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != item["size"]:
                return f"{name} has {path.stat().st_size} bytes, {item['size']} were recorded"
            if check == "full" and sha256_file(path) != item["sha256"]:
                return f"{name} does not match its recorded sha256"
        return None

    def _discard(self, final: Path) -> None:
        doomed = final.with_name(f"{final.name}.corrupt")
        remove_tree(doomed)
        os.rename(final, doomed)
        remove_tree(doomed)

    # ---- "what changed" ----------------------------------------------------------------

    @staticmethod
    def _last_file(store: Path, name: str) -> Path:
        return store / f"last-{name}.json"

    def _remember(self, store: Path, name: str, identity: dict[str, Any]) -> None:
        last = self._last_file(store, name)
        text = json.dumps(identity, indent=2, sort_keys=True) + "\n"
        with contextlib.suppress(OSError):
            if last.read_text() == text:
                return
        write_atomically(last, text)

    def _what_changed(self, store: Path, name: str, identity: dict[str, Any]) -> str:
        try:
            before = json.loads(self._last_file(store, name).read_text())
        except (OSError, ValueError):
            return "not in the cache yet"
        changed = sorted(k for k in {*before, *identity} if before.get(k) != identity.get(k))
        if not changed:
            return "not in the cache (evicted or never built here)"
        return f"{', '.join(changed)} changed since the last build"

    # ---- scratch folders ---------------------------------------------------------------

    @contextlib.contextmanager
    def scratch(self, prefix: str) -> Iterator[Path]:
        """A fresh folder under `<cache>/work/` for the block (a chroot, a raw disk),
        locked while in use so `sweep` leaves it alone, and removed afterwards."""
        work = self.root / SCRATCH
        work.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=work))
        lock = folder.with_name(folder.name + ".lock")
        try:
            with locked(lock):
                try:
                    yield folder
                finally:
                    remove_tree(folder)
        finally:
            lock.unlink(missing_ok=True)

    # ---- the whole cache ---------------------------------------------------------------

    def entries(self) -> list[Entry]:
        found = []
        for kind in KINDS:
            for record_file in sorted((self.root / kind).glob(f"*/{RECORD}")):
                with contextlib.suppress(OSError, ValueError):
                    record = json.loads(record_file.read_text())
                    found.append(Entry(kind, record_file.parent.name, record_file.parent,
                                       record))
        return found

    def sweep(self) -> list[str]:
        """Remove what killed builds left behind: `*.partial`, `*.corrupt` and `*.replaced`
        folders and scratch folders whose lock no live process holds, after unmounting
        whatever an older goldbox mounted below them in the host's namespace. Returns
        what was removed."""
        if not self.root.is_dir():
            return []
        removed: list[str] = []
        candidates = [(p, p.parent / f"{p.name.split('.')[0]}.lock")
                      for kind in KINDS for p in (self.root / kind).glob("*.partial")]
        candidates += [(p, p.parent / f"{p.name.split('.')[0]}.lock")
                       for kind in KINDS for suffix in ("corrupt", "replaced")
                       for p in (self.root / kind).glob(f"*.{suffix}")]
        work = self.root / SCRATCH
        if work.is_dir():
            candidates += [(p, p.with_name(p.name + ".lock")) for p in work.iterdir()
                           if p.is_dir()]
        for leftover, lock in candidates:
            with locked(lock, wait=False) as free:
                if not free:
                    continue  # a live process is building there
                removed += [f"mount {target}" for target in unmount_all_under(leftover)]
                remove_tree(leftover)
                removed.append(str(leftover))
                if lock.parent == work:
                    # Only now, and only its own: a scratch lock is never reused, and
                    # unlinking one a live process holds would let the next sweep take
                    # a fresh one and delete the folder under it.
                    lock.unlink(missing_ok=True)
        return removed

    def prune(self, *, keep: set[str], older_than_days: float | None = None,
              max_bytes: int | None = None, now: float | None = None) -> list[Entry]:
        """Evict entries not in `keep` (keys the current config uses) and not used in the
        last hour: those unused for more than `older_than_days`, then the least recently
        used until the cache holds at most `max_bytes`. Returns the evicted entries."""
        now = time.time() if now is None else now
        candidates = sorted((e for e in self.entries() if e.key not in keep
                             and now - e.last_used > IN_USE_SECONDS), key=lambda e: e.last_used)
        evicted = []
        if older_than_days is not None:
            evicted = [e for e in candidates if now - e.last_used > older_than_days * 86400]
        if max_bytes is not None:
            total = sum(e.size for e in self.entries()) - sum(e.size for e in evicted)
            for entry in candidates:
                if total <= max_bytes:
                    break
                if entry not in evicted:
                    evicted.append(entry)
                    total -= entry.size
        for entry in evicted:
            with locked(entry.path.with_name(f"{entry.key}.lock"), wait=False) as free:
                if free:
                    self._discard(entry.path)
        return evicted


def as_cache(cache: Cache | Path) -> Cache:
    """Callers may hand over the cache folder itself (tests, benchmarks)."""
    return cache if isinstance(cache, Cache) else Cache(cache)

"""`invoke cache`: what the build cache holds, and evicting what the project no longer
uses. Each `invoke image` records the entries it used in build/<p>/cache-used.json;
those are what "the current config uses" means to `--prune`."""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path

from goldbox.cache import Cache, Entry
from goldbox.cache_remote import origin_of
from goldbox.config import Config
from goldbox.files import write_atomically

USED_FILE = "cache-used.json"


def record_used(build_dir: Path, cache: Cache) -> None:
    write_atomically(build_dir / USED_FILE, json.dumps(sorted(cache.used), indent=2) + "\n")


def used_keys(config: Config) -> set[str]:
    keys: set[str] = set()
    for name in config.platforms:
        path = config.build_dir / name / USED_FILE
        try:
            keys.update(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return keys


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def format_entries(config: Config, now: float | None = None) -> str:
    now = time.time() if now is None else now
    cache = Cache(config.cache_dir)
    entries = cache.entries()
    used = used_keys(config)
    pulled: set[str] = set()  # where the entries pulled from a team cache came from
    lines = [f"cache: {cache.root} ({len(entries)} entries, "
             f"{sum(e.size for e in entries) / 2**30:.2f} GiB)"]
    if entries:
        lines.append(f"{'kind':<13} {'key':<12} {'size':>9} {'age':>7} {'used':>7} "
                     f"{'from':<6}  made from")
    for entry in sorted(entries, key=lambda e: (e.kind, -e.last_used)):
        created = datetime.datetime.fromisoformat(entry.record["created"]).timestamp()
        mark = " *" if entry.key in used else ""
        origin = origin_of(entry.path)
        lines.append(f"{entry.kind:<13} {entry.key[:12]} {entry.size / 2**20:7.1f}Mi "
                     f"{_age(now - created):>7} {_age(now - entry.last_used):>7} "
                     f"{'remote' if origin else 'here':<6}  {entry.summary}{mark}")
        if origin:
            pulled.add(f"remote: pulled from {origin.get('remote')}, signed by "
                       f"{origin.get('signer')}")
    if used & {e.key for e in entries}:
        lines.append("* used by the last `invoke image` of a platform here (kept by --prune)")
    lines += sorted(pulled)
    return "\n".join(lines)


def prune_cache(config: Config, *, older_than_days: float,
                max_gib: float | None) -> list[str]:
    evicted: list[Entry] = Cache(config.cache_dir).prune(
        keep=used_keys(config), older_than_days=older_than_days,
        max_bytes=int(max_gib * 2**30) if max_gib is not None else None)
    return [f"{e.kind} {e.key[:12]} {e.size / 2**20:.1f} MiB {e.summary}" for e in evicted]

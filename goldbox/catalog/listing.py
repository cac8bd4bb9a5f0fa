"""`invoke boxes`: what a catalog (a directory or an HTTP base URL) holds, one row per
released version and provider, read from metadata.json and the published manifests."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from goldbox.catalog.layout import MANIFEST, METADATA, invalid, require_catalog_dir, semver_key
from goldbox.catalog.metadata import parse_metadata
from goldbox.errors import GoldboxError


@dataclass(frozen=True)
class BoxRow:
    box: str
    version: str
    provider: str
    size: int | None
    created: str
    platform: str
    cpython: str
    updates: str  # the day of the OS updates the box carries (its base disk's)


def where(location: Path | str, relative: str) -> str:
    return str(location / relative) if isinstance(location, Path) else location + relative


def reader(location: Path | str,
           headers: dict[str, str] | None = None) -> Callable[[str], str | None]:
    """Read a catalog-relative path from a directory or a base URL; None if absent."""
    if isinstance(location, Path):
        def read_file(relative: str) -> str | None:
            path = location / relative
            try:
                return path.read_text() if path.is_file() else None
            except (OSError, UnicodeDecodeError) as exc:
                raise invalid(str(path), f"cannot read: {exc}") from None
        return read_file

    def read_url(relative: str) -> str | None:
        url = where(location, relative)
        try:
            response = requests.get(url, timeout=30, headers=headers)
        except requests.RequestException as exc:
            raise GoldboxError(f"cannot read {url}: {exc}") from None
        if response.status_code == 404:
            return None
        if not response.ok:
            raise GoldboxError(f"cannot read {url}: HTTP {response.status_code}")
        return response.text
    return read_url


def _read_json(read: Callable[[str], str | None], relative: str,
               location: Path | str) -> dict:
    """A published manifest, or {} when it is missing (the table then shows '?')."""
    text = read(relative)
    try:
        manifest = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise invalid(where(location, relative), f"not valid JSON: {exc}") from None
    return manifest if isinstance(manifest, dict) else {}


def list_boxes(location: Path | str, box: str | None = None) -> list[BoxRow]:
    """One row per version and provider, newest version first. A directory catalog lists
    every box in it (or only `box`); an HTTP catalog cannot be listed, so it needs `box`."""
    if isinstance(location, Path):
        require_catalog_dir(location, create=False)
        names = [box] if box else sorted(p.parent.name for p in location.glob(f"*/{METADATA}"))
    elif box is None:
        raise GoldboxError(f"catalog {location}: an HTTP catalog needs a box name")
    else:
        names = [box]
    read = reader(location)
    rows = []
    for name in names:
        label = where(location, f"{name}/{METADATA}")
        text = read(f"{name}/{METADATA}")
        if text is None:
            raise GoldboxError(f"{label}: not found (box {name!r} is not in this catalog)")
        metadata = parse_metadata(text, label)
        for entry in sorted(metadata["versions"], key=lambda v: semver_key(v["version"]),
                            reverse=True):
            for provider in entry["providers"]:
                manifest = _read_json(read, f"{name}/{entry['version']}/"
                                            f"{provider['name']}/{MANIFEST}", location)
                components = manifest.get("components", {})
                rows.append(BoxRow(
                    box=name, version=entry["version"], provider=provider["name"],
                    size=manifest.get("box_size"), created=manifest.get("created", "?"),
                    platform=manifest.get("platform", "?"),
                    cpython=components.get("cpython", "?"),
                    updates=components.get("os-updates", "?")))
    return rows


def _size(size: int | None) -> str:
    if size is None:
        return "?"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def format_table(rows: list[BoxRow]) -> str:
    if not rows:
        return "no boxes in this catalog"
    header = ("BOX", "VERSION", "PROVIDER", "SIZE", "CREATED", "PLATFORM", "CPYTHON",
              "OS-UPDATES")
    table = [header] + [(r.box, r.version, r.provider, _size(r.size), r.created, r.platform,
                         r.cpython, r.updates) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                     .rstrip() for row in table)

"""`invoke boxes`: what a catalog (a directory or an HTTP base URL) holds, one row per
released version and provider, read from metadata.json and the published manifests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from goldbox.catalog.client import Client, catalog_client
from goldbox.catalog.layout import (
    MANIFEST,
    METADATA,
    require_catalog_dir,
    require_safe_box_dir,
    semver_key,
)
from goldbox.catalog.metadata import Provider, parse_metadata, per_architecture
from goldbox.catalog.store import read_file_no_follow
from goldbox.errors import GoldboxError
from goldbox.manifest import Manifest, parse_manifest


@dataclass(frozen=True)
class BoxRow:
    box: str
    version: str
    provider: str
    architecture: str | None  # None: an entry that names none (Vagrant < 2.4's boxes)
    size: int | None
    created: str
    platform: str
    cpython: str
    updates: str  # the day of the OS updates the box carries (its base disk's)


def where(location: Path | str, relative: str) -> str:
    return str(location / relative) if isinstance(location, Path) else location + relative


def reader(location: Path | str, client: Client) -> Callable[[str], str | None]:
    """Read a catalog-relative path from a directory (never through a link) or a base
    URL (through `client`); None if absent."""
    if isinstance(location, Path):
        return lambda relative: read_file_no_follow(location / relative)

    def read_url(relative: str) -> str | None:
        url = where(location, relative)
        data = client.read(url)
        try:
            return None if data is None else data.decode()
        except UnicodeDecodeError as exc:
            raise GoldboxError(f"cannot read {url}: {exc}") from None
    return read_url


def _published_manifest(read: Callable[[str], str | None], relative: str,
                        location: Path | str) -> Manifest | None:
    """A published manifest, or None when it is missing (the table then shows '?')."""
    text = read(relative)
    return parse_manifest(text, where(location, relative)) if text is not None else None


def list_boxes(location: Path | str, box: str | None = None,
               client: Client | None = None) -> list[BoxRow]:
    """One row per version and provider, newest version first. A directory catalog lists
    every box in it (or only `box`); an HTTP catalog cannot be listed, so it needs `box`,
    and is read through `client` (default: the token rule's for VAGRANT_SERVER_URL)."""
    if isinstance(location, Path):
        require_catalog_dir(location, create=False)
        names = [box] if box else sorted(p.parent.name for p in location.glob(f"*/{METADATA}"))
        for name in names:
            require_safe_box_dir(location / name)
    elif box is None:
        raise GoldboxError(f"catalog {location}: an HTTP catalog needs a box name")
    else:
        names = [box]
    read = reader(location, client or catalog_client(None))
    rows = []
    for name in names:
        label = where(location, f"{name}/{METADATA}")
        text = read(f"{name}/{METADATA}")
        if text is None:
            raise GoldboxError(f"{label}: not found (box {name!r} is not in this catalog)")
        metadata = parse_metadata(text, label)
        for entry in sorted(metadata.versions, key=lambda v: semver_key(v.version),
                            reverse=True):
            for provider in entry.providers:
                # Each architecture's build has its own manifest in the provider's folder.
                manifest = _published_manifest(
                    read, f"{name}/{entry.version}/{provider.name}/"
                          f"{per_architecture(MANIFEST, provider.architecture)}", location)
                rows.append(_row(name, entry.version, provider, manifest))
    return rows


def _row(box: str, version: str, provider: Provider, manifest: Manifest | None) -> BoxRow:
    components = manifest.components if manifest else {}
    return BoxRow(box=box, version=version, provider=provider.name,
                  architecture=provider.architecture,
                  size=manifest.box_size if manifest else None,
                  created=manifest.created if manifest else "?",
                  platform=manifest.platform if manifest else "?",
                  cpython=components.get("cpython", "?"),
                  updates=components.get("os-updates", "?"))


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
    header = ("BOX", "VERSION", "PROVIDER", "ARCH", "SIZE", "CREATED", "PLATFORM", "CPYTHON",
              "OS-UPDATES")
    table = [header] + [(r.box, r.version, r.provider, r.architecture or "-", _size(r.size),
                         r.created, r.platform, r.cpython, r.updates) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                     .rstrip() for row in table)

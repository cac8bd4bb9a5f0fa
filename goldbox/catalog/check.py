"""`invoke catalog-check`: everything stock Vagrant and teammates rely on, checked on a
catalog directory or over HTTP, one line per problem.

Per box and channel: metadata that parses, the box name matching its folder, versions
that are semver, unique and in the order Vagrant sorts them (numerically, part by part),
a lowercase checksum type, one provider entry per (provider, architecture), every box
there with the sha256 the metadata claims (downloaded again over HTTP) and the build's
plan.json beside it, metadata.json served as application/json. In a directory also: no
symbolic link in a box's tree (nothing is followed), no box file or version folder that
no entry names (dangling), none named that is missing."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

import requests

from goldbox.catalog.client import catalog_client
from goldbox.catalog.layout import (
    CHANNELS_DIR,
    MANIFEST,
    METADATA,
    ORIGIN,
    PLAN,
    require_safe_box_dir,
    semver_key,
)
from goldbox.catalog.metadata import (
    CHANNELS,
    SEMVER,
    Version,
    folder_of,
    load_state,
    parse_metadata,
    per_architecture,
)
from goldbox.catalog.store import open_existing
from goldbox.errors import GoldboxError
from goldbox.plan_model import parse_plan
from goldbox.signing import SUFFIX, verify

_CHUNK = 1 << 20


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    checked_boxes: int = 0

    def add(self, where: str, problem: str) -> None:
        self.problems.append(f"{where}: {problem}")


class _Directory:
    def __init__(self, root: Path):
        self.root = root

    def where(self, relative: str) -> str:
        return str(self.root / relative)

    def read(self, relative: str) -> bytes | None:
        handle = open_existing(self.root / relative)
        if handle is None:
            return None
        with handle:
            try:
                return handle.read()
            except OSError as exc:
                raise GoldboxError(f"{self.root / relative}: cannot read: {exc.strerror}"
                                   ) from None

    def content_type(self, relative: str) -> str | None:
        return None  # a directory has no headers; served, check its URL

    def box_chunks(self, relative: str, url: str) -> Iterator[bytes] | None:
        handle = open_existing(self.root / relative)
        return None if handle is None else _chunks_of(handle)


def _chunks_of(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(_CHUNK):
            yield chunk


class _Http:
    def __init__(self, base: str, token: str | None, cacert: Path | None):
        self.base = base
        self.client = catalog_client(base, token=token, cacert=cacert, token_option=True)

    def where(self, relative: str) -> str:
        return self.base + relative

    def read(self, relative: str) -> bytes | None:
        response = self.client.request("GET", self.where(relative))
        return response.content if response.ok else None

    def content_type(self, relative: str) -> str | None:
        return self.client.request("HEAD", self.where(relative)).headers.get("Content-Type")

    def box_chunks(self, relative: str, url: str) -> Iterator[bytes] | None:
        response = self.client.request("GET", url, stream=True)
        if not response.ok:
            return None
        return response.iter_content(_CHUNK)


def _relative_box(url: str, box: str) -> str | None:
    """`<box>/<version>/<provider>/<file>` of a box URL, wherever it is hosted."""
    parts = urlsplit(url).path.split("/")
    if len(parts) < 4 or parts[-4] != box:
        return None
    return "/".join(parts[-4:])


def _check_channel(source, box: str, relative: str, report: Report,
                   digests: dict[str, str | GoldboxError | None]) -> set[str]:
    """Check one channel's metadata.json; return the box files it names."""
    where = source.where(relative)
    data = source.read(relative)
    if data is None:
        report.add(where, "missing")
        return set()
    content_type = source.content_type(relative)
    if content_type is not None and content_type.split(";")[0].strip() != "application/json":
        report.add(where, f"served as {content_type!r}, not application/json: Vagrant "
                          f"would take it for a box file")
    try:
        metadata = parse_metadata(data.decode(), where)
    except UnicodeDecodeError as exc:
        report.add(where, f"not valid JSON: {exc}")
        return set()
    except GoldboxError as exc:
        report.problems.append(str(exc))
        return set()
    if folder_of(metadata.name) != box:
        report.add(where, f"name = {metadata.name!r}, but it lies in the folder of "
                          f"box {box!r}")
    versions = [v.version for v in metadata.versions]
    if len(set(versions)) != len(versions):
        report.add(where, f"versions listed twice: "
                          f"{', '.join(sorted({v for v in versions if versions.count(v) > 1}))}")
    if versions != sorted(versions, key=semver_key):
        report.add(where, f"versions out of Vagrant's order: {', '.join(versions)} (expected "
                          f"{', '.join(sorted(versions, key=semver_key))})")
    named: set[str] = set()
    for entry in metadata.versions:
        named |= _check_providers(source, box, where, entry, report, digests)
    return named


def _check_providers(source, box: str, where: str, entry: Version, report: Report,
                     digests: dict[str, str | GoldboxError | None]) -> set[str]:
    named, seen = set(), set()
    for provider in entry.providers:
        label = f"version {entry.version} provider {provider.name}"
        key = (provider.name, provider.architecture)
        if key in seen:
            report.add(where, f"{label}: more than one entry for architecture "
                              f"{key[1] or '(none)'}")
        seen.add(key)
        if provider.checksum_type != "sha256":
            report.add(where, f"{label}: checksum_type = {provider.checksum_type!r}: "
                              f"expected 'sha256' (lowercase)")
        relative = _relative_box(provider.url, box)
        if relative is None:
            report.add(where, f"{label}: url {provider.url} is not "
                              f"{box}/<version>/<provider>/<file> of this catalog")
            continue
        named.add(relative)
        beside = _beside(relative, provider.architecture)
        named.update(beside)
        if relative not in digests:
            digests[relative] = _digest(source, relative, provider.url)
        if isinstance(digests[relative], GoldboxError):
            report.add(where, f"{label}: {digests[relative]}")
        elif digests[relative] is None:
            report.add(where, f"{label}: {provider.url}: no such box (a dangling entry)")
        elif digests[relative] != provider.checksum:
            report.add(where, f"{label}: {provider.url} has sha256 {digests[relative]}, "
                              f"the metadata says {provider.checksum}")
        plan_problem = _plan_problem(source, beside[1])
        if plan_problem:
            report.add(where, f"{label}: {plan_problem}")
    return named


def _beside(relative: str, architecture: str | None) -> list[str]:
    """The build's manifest and plan published beside the box at `relative` (each
    architecture's build has its own in the provider's folder)."""
    folder = relative.rsplit("/", 1)[0]
    return [f"{folder}/{per_architecture(name, architecture)}" for name in (MANIFEST, PLAN)]


def _plan_problem(source, relative: str) -> str | None:
    """What is wrong with the build's plan.json beside a box (`verify --from-catalog`
    checks the box against it), or None."""
    try:
        data = source.read(relative)
    except GoldboxError as exc:
        return str(exc)
    if data is None:
        if source.read(relative.rsplit("/", 1)[0] + f"/{ORIGIN}") is not None:
            return None  # an imported box: no goldbox build, so no plan
        return f"{source.where(relative)}: missing (publish copies the build's plan.json)"
    try:
        parse_plan(data.decode(), source.where(relative))
    except UnicodeDecodeError as exc:
        return f"{source.where(relative)}: not a readable plan: {exc}"
    except GoldboxError as exc:
        return str(exc)
    return None


def _digest(source, relative: str, url: str) -> str | GoldboxError | None:
    """The box's sha256; None when it is missing, the error when it cannot be read."""
    try:
        chunks = source.box_chunks(relative, url)
        if chunks is None:
            return None
        hashed = hashlib.sha256()
        for chunk in chunks:
            hashed.update(chunk)
    except GoldboxError as exc:
        return exc
    except (OSError, requests.RequestException) as exc:
        return GoldboxError(f"cannot read {url}: {exc}")
    return hashed.hexdigest()


def _dangling(root: Path, box: str, named: set[str], report: Report) -> None:
    """Box files and version folders in a directory that no entry names."""
    box_dir = root / box
    for path in sorted(box_dir.glob("*/*/*")):
        relative = str(path.relative_to(root))
        version, provider, name = path.relative_to(box_dir).parts
        if not re.fullmatch(SEMVER, version) or name.startswith("."):
            continue
        if name.endswith(".box") and relative not in named:
            report.add(str(path), "dangling: no metadata entry names this box file")
    for path in sorted(box_dir.glob("*/*")):
        if path.is_dir() and re.fullmatch(SEMVER, path.parent.name) and not any(
                n.startswith(f"{box}/{path.parent.name}/{path.name}/") for n in named):
            if not any(path.glob("*.box")):
                report.add(str(path), "dangling: a version folder without a box")


def _check_signatures(source, relatives: list[str], signers: Path, report: Report) -> None:
    """Each file's signature beside it (`<file>.sig`) by a key `signers` lists; one line
    per file that has none, a foreign one or one that does not match."""
    for relative in relatives:
        data = source.read(relative)
        if data is None:
            continue  # reported missing where it is named
        signature = source.read(relative + SUFFIX)
        try:
            verify(data.decode("utf-8", "replace"),
                   None if signature is None else signature.decode("utf-8", "replace"),
                   signers, source.where(relative))
        except GoldboxError as exc:
            report.problems.append(str(exc))


def _signed_files(channels: list[str], named: set[str]) -> list[str]:
    """What publish and release sign: the channels, and each box's manifest and plan."""
    return [*channels, *sorted(relative for relative in named
                               if relative and not relative.endswith(".box"))]


def check_catalog(location: Path | str, box: str | None = None,
                  token: str | None = None, signers: Path | None = None,
                  cacert: Path | None = None) -> Report:
    """Check every box of a directory catalog (or `box` only), or `box` of an HTTP one
    (read under the token rule of goldbox.catalog.client: `token` is for `location`);
    with `signers` (an allowed_signers file) every signature too."""
    if signers is not None and not signers.is_file():
        raise GoldboxError(f"--signers {signers}: no such file (an OpenSSH allowed_signers "
                           f"file)")
    report = Report()
    source: _Directory | _Http
    if isinstance(location, Path):
        if not location.is_dir():
            raise GoldboxError(f"catalog {location}: no such directory")
        source = _Directory(location)
        boxes = [box] if box else sorted(p.parent.name for p in location.glob(f"*/{METADATA}"))
    else:
        if box is None:
            raise GoldboxError(f"catalog {location}: an HTTP catalog needs a box name (--box)")
        source, boxes = _Http(location, token, cacert), [box]
    for name in boxes:
        report.checked_boxes += 1
        digests: dict[str, str | GoldboxError | None] = {}
        channels = [f"{name}/{METADATA}"]
        if isinstance(location, Path):
            try:
                require_safe_box_dir(location / name)
            except GoldboxError as exc:  # nothing in it is read through a link
                report.problems.append(str(exc))
                continue
            channels += sorted(str(p.relative_to(location)) for p in
                               (location / name / CHANNELS_DIR).glob(f"*/{METADATA}"))
        else:
            channels += [f"{name}/{CHANNELS_DIR}/{c}/{METADATA}" for c in CHANNELS
                         if c != "stable" and source.read(f"{name}/{CHANNELS_DIR}/{c}/"
                                                          f"{METADATA}") is not None]
        named: set[str] = set()
        for channel in channels:
            named |= _check_channel(source, name, channel, report, digests)
        if isinstance(location, Path):
            named |= _kept_unlisted(location / name, report)
            _dangling(location, name, named, report)
        if signers is not None:
            _check_signatures(source, _signed_files(channels, named), signers, report)
    return report


def _kept_unlisted(box_dir: Path, report: Report) -> set[str]:
    """Files the state keeps on purpose though no channel lists them: revoked versions
    in their grace period."""
    try:
        state = load_state(box_dir)
    except GoldboxError as exc:
        report.problems.append(str(exc))
        return set()
    kept = set()
    for version in state.versions:
        for provider in version.providers:
            relative = _relative_box(provider.url, box_dir.name)
            if relative:
                kept.update([relative, *_beside(relative, provider.architecture)])
    return kept

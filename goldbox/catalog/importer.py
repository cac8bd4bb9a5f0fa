"""`invoke catalog-import URL`: bring a box's versions from another Vagrant server (an
HCP Vagrant box, any static catalog's metadata.json) into a goldbox catalog, so a team
that leaves that server keeps the boxes its Vagrantfiles name.

Every provider and architecture comes along as the source lists it. Each file is
downloaded into `<catalog>/.goldbox-import/` (a dot folder: never served), checked
against the checksum the source publishes (md5, sha1, sha256, sha384 or sha512, as
Vagrant accepts), renamed into the box's tree and only then listed, with its sha256
(the one checksum a goldbox catalog lists). A download cut off stays there and the
next run continues it (an HTTP Range request); a file already in place with the right
checksum is never fetched again, and an entry already listed is never touched: a re-run
copies only what is new.

The source is untrusted input: its metadata goes through the typed models with their
allow-lists, goldbox names every file it writes (never from the source's URLs), a
source served over HTTP may not name local (file://) boxes, and a token is sent only to
the origin VAGRANT_SERVER_URL names (goldbox.catalog.client)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
from pydantic import TypeAdapter, ValidationError, model_validator

from goldbox.catalog.client import Client, catalog_client
from goldbox.catalog.layout import (
    METADATA,
    ORIGIN,
    box_file_name,
    invalid,
    is_url,
    link_refused,
    relative_box_path,
    require_catalog_dir,
    require_only_owner_writes,
    require_safe_box_dir,
    semver_key,
)
from goldbox.catalog.layout import base_url as resolve_base_url
from goldbox.catalog.metadata import (
    CANDIDATE,
    RELEASED,
    REVOKED,
    BoxMetadata,
    BoxState,
    BoxUrl,
    CatalogModel,
    Provider,
    Status,
    Version,
    VersionState,
    checked,
    load_state,
    render_channels,
    write_state,
)
from goldbox.catalog.store import (
    Progress,
    catalog_lock,
    open_existing,
    open_no_follow,
    os_failure,
    write_file_atomically,
)
from goldbox.catalog.versions import require_same_base
from goldbox.errors import GoldboxError
from goldbox.files import copy_hashing, file_chunks, fsync_path
from goldbox.validation import allowed, validated_json

STAGING_DIR = ".goldbox-import"
# The checksum types Vagrant checks a box against, and their length in hex characters.
DIGEST_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64, "sha384": 96, "sha512": 128}
# HCP's release states -> goldbox's; a revoked version is not imported.
STATES: dict[str | None, Status] = {None: RELEASED, "active": RELEASED,
                                    "unreleased": CANDIDATE}
_CHUNK = 1 << 20
_MAX_METADATA = 16 << 20

RemoteName = Annotated[str, allowed(r"([A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*",
                                     "a box name, optionally ORG/NAME")]


class RemoteProvider(Provider):
    """A provider entry as another server lists it: any checksum type Vagrant checks."""

    @model_validator(mode="after")
    def _checksum_is_one_vagrant_checks(self) -> RemoteProvider:
        if (self.checksum_type is None) != (self.checksum is None):
            raise ValueError("checksum and checksum_type: expected both or neither")
        if self.checksum_type is None or self.checksum is None:
            return self
        length = DIGEST_LENGTHS.get(self.checksum_type.lower())
        if length is None:
            raise ValueError(f"checksum_type = {self.checksum_type!r}: expected one of "
                             f"{', '.join(DIGEST_LENGTHS)}")
        if len(self.checksum) != length:
            raise ValueError(f"checksum = {self.checksum!r}: expected {length} hex "
                             f"characters for {self.checksum_type}")
        return self


class RemoteVersion(Version):
    # pydantic narrows the field to the wider checksum rule; mypy's lists are invariant.
    providers: list[RemoteProvider]  # type: ignore[assignment]
    status: Literal["active", "unreleased", "revoked"] | None = None


class RemoteBox(CatalogModel):
    """A box's metadata as HCP Vagrant (API v2) or any static catalog serves it."""
    name: RemoteName
    description: str | None = None
    versions: list[RemoteVersion]


@dataclass
class Imported:
    """What one import did, one label (`box version provider/architecture`) per file."""
    copied: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Source:
    """Where the metadata came from, what may be fetched because of it, and how."""
    url: str
    client: Client

    @property
    def local(self) -> bool:
        return self.url.startswith("file:")

    def allows(self, box_url: str) -> bool:
        """Metadata served over HTTP names boxes over HTTP only: never a local file, which
        the catalog would then serve to anyone."""
        return self.local or is_url(box_url)


def import_box(url: str, catalog_dir: Path, *, box: str | None = None,
               base_url: str | None = None, allow_unchecked: bool = False,
               now: float | None = None, progress: Progress = print) -> Imported:
    """Copy every version of the box whose metadata is at `url` into `catalog_dir` (as
    `box`, default the source's name without its organisation). Files the source lists
    without a checksum are refused unless `allow_unchecked`. Raises one GoldboxError
    naming what failed when a file could not be imported; the rest is listed."""
    source = _Source(_checked_url(url), catalog_client(None))
    remote = read_remote(source.url, source.client)
    name = box or remote.name.rsplit("/", 1)[-1]
    checked(BoxMetadata, {"name": name, "versions": []}, f"--box {name}")
    base = resolve_base_url(catalog_dir, base_url)
    require_catalog_dir(catalog_dir, create=True)
    done = Imported()
    now = time.time() if now is None else now
    with catalog_lock(catalog_dir, progress):
        box_dir = catalog_dir / name
        require_safe_box_dir(box_dir)
        state = load_state(box_dir)
        require_same_base(state, str(box_dir / METADATA), base)
        if state.description == "" and remote.description:
            state.description = remote.description
        staging = _staging_dir(catalog_dir)
        for version in sorted(remote.versions, key=lambda v: semver_key(v.version)):
            _import_version(source, version, state, box_dir, base, staging,
                            allow_unchecked, now, done, progress)
    progress(f"{name}: {len(done.copied)} file(s) imported, {len(done.present)} already "
             f"in the catalog, {len(done.skipped)} skipped, {len(done.failed)} failed")
    if done.failed:
        raise GoldboxError(f"catalog-import {url}: not imported: {'; '.join(done.failed)}")
    return done


def _checked_url(url: str) -> str:
    try:
        return TypeAdapter(BoxUrl).validate_python(url)
    except ValidationError:
        raise GoldboxError(f"catalog-import {url!r}: expected an http://, https:// or "
                           f"file:// URL of a box's metadata") from None


def read_remote(url: str, client: Client) -> RemoteBox:
    """The source's box metadata (at most 16 MiB), checked."""
    data: bytes | None
    if url.startswith("file:"):
        path = _local_path(url)
        try:
            with os.fdopen(os.open(path, os.O_RDONLY | os.O_CLOEXEC), "rb") as handle:
                data = handle.read(_MAX_METADATA + 1)
        except OSError as exc:
            raise os_failure(path, "read", exc) from None
    else:
        data = client.read(url, _MAX_METADATA, {"Accept": "application/json"})
    if data is None:
        raise GoldboxError(f"{url}: HTTP 404")
    if len(data) > _MAX_METADATA:
        raise invalid(url, f"larger than {_MAX_METADATA >> 20} MiB: not box metadata")
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise invalid(url, f"not valid JSON: {exc}") from None
    return validated_json(RemoteBox, text, url)


def _recorded(url: str) -> str:
    """A URL as the catalog keeps it (state, imported.json): without user, password,
    query or fragment, where a token or a signature could hide."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _local_path(url: str) -> Path:
    return Path(unquote(urlsplit(url).path))


def _staging_dir(catalog_dir: Path) -> Path:
    """The catalog's download folder (never a link; as root, nobody else's)."""
    path = catalog_dir / STAGING_DIR
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        status = os.lstat(path)
    except OSError as exc:
        raise os_failure(path, "create", exc) from None
    if stat.S_ISLNK(status.st_mode):
        raise link_refused(path)
    require_only_owner_writes(path, status)
    return path


def _import_version(source: _Source, version: RemoteVersion, state: BoxState, box_dir: Path,
                    base: str, staging: Path, allow_unchecked: bool, now: float,
                    done: Imported, progress: Progress) -> None:
    label = f"{state.name} {version.version}"
    entry = next((v for v in state.versions if v.version == version.version), None)
    if version.status == REVOKED or (entry is not None and entry.status == REVOKED):
        done.skipped.append(f"{label} (revoked)")
        progress(f"{label}: revoked {'there' if version.status == REVOKED else 'here'}; "
                 f"not imported")
        return
    for provider in version.providers:
        what = f"{label} {provider.name}/{provider.architecture or 'any'}"
        if entry and any((p.name, p.architecture) == (provider.name, provider.architecture)
                         for p in entry.providers):
            done.present.append(what)
            continue
        problem = _refusal(source, provider, allow_unchecked)
        if problem:
            done.failed.append(f"{what}: {problem}")
            progress(f"{what}: {problem}; not imported")
            continue
        listed = _copy_provider(source, state.name, version.version, provider, box_dir,
                                base, staging, what, progress)
        if listed is None:
            done.failed.append(f"{what}: checksum mismatch")
            continue
        if entry is None:
            entry = VersionState(version=version.version, providers=[],
                                 status=STATES[version.status],
                                 imported_from=_recorded(source.url),
                                 imported_at=now)
            state.versions.append(entry)
        entry.providers = [*entry.providers, listed]
        write_state(box_dir, state)
        render_channels(box_dir, state)
        done.copied.append(what)
        progress(f"{what}: imported as {entry.status}")


def _refusal(source: _Source, provider: RemoteProvider, allow_unchecked: bool) -> str | None:
    if not source.allows(provider.url):
        return (f"url {provider.url}: a local file named by metadata served over HTTP "
                f"(refused)")
    if provider.checksum is None and not allow_unchecked:
        return ("no published checksum (pass --allow-unchecked to import it with the "
                "sha256 of what is downloaded)")
    return None


def _file_name(box: str, version: str, provider: Provider) -> str:
    """goldbox's name for the file, never the source's: one per provider and
    architecture."""
    canonical = box_file_name(box, version, provider.name)
    if provider.architecture is None:
        return canonical
    return canonical.removesuffix(".box") + f"-{provider.architecture}.box"


def _copy_provider(source: _Source, box: str, version: str, provider: RemoteProvider,
                   box_dir: Path, base: str, staging: Path, what: str,
                   progress: Progress) -> Provider | None:
    """Download (or resume), check and place one provider's file; return its catalog
    entry, or None when its checksum does not match (nothing kept)."""
    file_name = _file_name(box, version, provider)
    relative = relative_box_path(box, version, provider.name, file_name)
    dest = box_dir.parent / relative
    kind = (provider.checksum_type or "sha256").lower()
    expected = (provider.checksum or "").lower()
    digests = _digests_of(dest, kind)
    if digests is not None and expected and digests[kind] == expected:
        progress(f"{what}: {dest.name} already in place and checked")
    else:
        partial = staging / f"{file_name}.{expected[:16] or 'unchecked'}.part"
        digests = _download(source.client, provider.url, partial, kind, what, progress)
        if expected and digests[kind] != expected:
            _remove(partial)
            progress(f"{what}: {provider.url}: {kind} is {digests[kind]}, the metadata "
                     f"says {expected}; deleted, not listed")
            return None
        _place(partial, dest)
    # The same for every architecture in the folder: which metadata the version came from.
    origin = {"imported_from": _recorded(source.url)}
    write_file_atomically(dest.parent / ORIGIN, (json.dumps(origin) + "\n").encode())
    return checked(Provider, {"name": provider.name, "url": base + relative,
                              "checksum_type": "sha256", "checksum": digests["sha256"],
                              "architecture": provider.architecture,
                              "default_architecture": provider.default_architecture},
                   str(box_dir / METADATA))


def _hashers(kind: str) -> dict:
    return {name: hashlib.new(name) for name in {kind, "sha256"}}


def _digests_of(path: Path, kind: str) -> dict[str, str] | None:
    """The digests of a file already at `path` (never through a link), None if absent."""
    handle = open_existing(path)
    if handle is None:
        return None
    hashers = _hashers(kind)
    with handle:
        while chunk := handle.read(_CHUNK):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def _download(client: Client, url: str, partial: Path, kind: str, what: str,
              progress: Progress) -> dict[str, str]:
    """Fill `partial` with the file at `url`, continuing what an earlier run left there;
    return its digests. A broken connection is one line; the bytes received stay for
    the next run."""
    hashers = _hashers(kind)
    try:
        fd = open_no_follow(partial, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise os_failure(partial, "create", exc) from None
    with os.fdopen(fd, "r+b") as out:
        while chunk := out.read(_CHUNK):
            for hasher in hashers.values():
                hasher.update(chunk)
        chunks, total, start = _open_source(client, url, out.tell(), what, progress)
        if start == 0:  # from the first byte: whatever an earlier run left goes
            out.seek(0)
            out.truncate()
            hashers = _hashers(kind)
        received = start
        try:
            received = copy_hashing(chunks, out, hashers, start=start, total=total,
                                    label=what, progress=progress)
        except (requests.RequestException, OSError) as exc:
            out.flush()
            raise _broken_off(url, received, total, type(exc).__name__, partial) from None
        out.flush()
        if total and received < total:
            raise _broken_off(url, received, total, "the server closed the connection",
                              partial)
        os.fsync(out.fileno())
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def _broken_off(url: str, received: int, total: int, why: str,
                partial: Path) -> GoldboxError:
    return GoldboxError(f"{url}: the download broke off after {received} of "
                        f"{total or 'unknown'} bytes ({why}); {partial.name} keeps them: "
                        f"run the import again to continue")


def _open_source(client: Client, url: str, have: int, what: str,
                 progress: Progress) -> tuple[Iterator[bytes], int, int]:
    """The rest of the file from byte `have` on: (chunks, its full size or 0 if unknown,
    where the chunks start: `have`, or 0 when the source sends it whole again)."""
    if url.startswith("file:"):
        path = _local_path(url)
        try:
            size = os.stat(path).st_size
        except OSError as exc:
            raise os_failure(path, "read", exc) from None
        start = have if have <= size else 0
        progress(f"{what}: copying {path}" + (f" from byte {start}" if start else ""))
        return _file_chunks(path, start), size, start
    headers = {"Range": f"bytes={have}-"} if have else {}
    response, chunks = client.chunks(url, headers, also=(416,))
    if response.status_code == 416:  # nothing after `have`: the partial file is whole
        response.close()
        return iter(()), have, have
    if response.status_code == 206:
        total = int(response.headers.get("Content-Range", "").rpartition("/")[2] or 0)
        start = have if response.headers.get("Content-Range", "").startswith(
            f"bytes {have}-") else 0
    else:
        total, start = int(response.headers.get("Content-Length") or 0), 0
    progress(f"{what}: downloading {url}" + (f", continuing at byte {start}" if start else ""))
    # A connection closed early then ends the chunks instead of losing the last one's
    # bytes: `_download` compares what came with the announced size.
    response.raw.enforce_content_length = False
    return chunks, total, start


def _file_chunks(path: Path, start: int) -> Iterator[bytes]:
    try:
        yield from file_chunks(path, start)
    except OSError as exc:
        raise os_failure(path, "read", exc) from None


def _place(partial: Path, dest: Path) -> None:
    """Move a checked download into the box's tree (folders made, none followed)."""
    try:
        for folder in (dest.parent.parent.parent, dest.parent.parent, dest.parent):
            folder.mkdir(mode=0o755, exist_ok=True)
            if stat.S_ISLNK(os.lstat(folder).st_mode):
                raise link_refused(folder)
        os.chmod(partial, 0o644)
        os.replace(partial, dest)
        fsync_path(dest.parent)
    except OSError as exc:
        raise os_failure(dest, "place", exc) from None


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise os_failure(path, "remove", exc) from None

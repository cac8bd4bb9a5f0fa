"""A versioned Vagrant box catalog that stock Vagrant reads: `vagrant box add
<catalog>/<box>/metadata.json`, `vagrant box outdated`, `vagrant box update`.

Layout (the same on a local disk, a team share or a static web host):

    <catalog>/<box>/metadata.json                        Vagrant's box metadata
    <catalog>/<box>/<version>/<provider>/<box>-<version>-<provider>.box
    <catalog>/<box>/<version>/<provider>/manifest.json   what `invoke image` wrote

The URLs in metadata.json are `file://` URLs of the directory, or, when the tree is
served over HTTP, the same relative paths under a base URL.

Every change happens under an exclusive lock on the catalog (`.goldbox.lock`), so two
publishes or prunes run one after the other and each sees the other's result. A box is
copied under a temporary name, flushed and renamed; metadata.json is replaced by a
rename. A publish killed half way therefore leaves metadata.json valid and without the
unfinished version; the leftovers (temporary files, version folders metadata.json does
not list) are swept by the next publish or prune, under the same lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.server
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import requests

from goldbox.config import NAME, SEMVER, SHA256, Config
from goldbox.errors import GoldboxError

Progress = Callable[[str], None]

LOCK_FILE = ".goldbox.lock"
METADATA = "metadata.json"
MANIFEST = "manifest.json"
PARTIAL_PREFIX = ".goldbox-partial-"
_CHUNK = 1 << 20
_URL = re.compile(r"^https?://", re.IGNORECASE)


def box_file_name(box: str, version: str, provider: str) -> str:
    return f"{box}-{version}-{provider}.box"


def _relative_box_path(box: str, version: str, provider: str) -> str:
    return f"{box}/{version}/{provider}/{box_file_name(box, version, provider)}"


def _semver_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


# ---- where the catalog is ------------------------------------------------------------


def is_url(location: str | Path) -> bool:
    return bool(_URL.match(str(location)))


def catalog_location(option: str | None, config: Config) -> Path | str:
    """The catalog: `option` (a --catalog value, relative to the current directory) or
    else goldbox.toml's catalog.location (relative to the project). A directory, or an
    http(s) base URL ending in '/'."""
    value = option or config.project.catalog.location
    if is_url(value):
        return value.rstrip("/") + "/"
    return (Path.cwd() if option else config.root) / value


def catalog_directory(option: str | None, config: Config) -> Path:
    """Like `catalog_location`, but publish and prune write files, so a URL is refused."""
    location = catalog_location(option, config)
    if isinstance(location, str):
        raise GoldboxError(
            f"catalog {location}: an HTTP catalog cannot be written to; write the tree into "
            f"a directory and serve or upload it: --catalog DIR --base-url {location}"
        )
    return location


def _base_url(catalog_dir: Path, base_url: str | None) -> str:
    if base_url is None:
        return catalog_dir.resolve().as_uri() + "/"
    if not is_url(base_url):
        raise GoldboxError(f"--base-url {base_url}: expected an http:// or https:// URL")
    return base_url.rstrip("/") + "/"


# ---- reading and checking --------------------------------------------------------------


def _invalid(label: str, problem: str) -> GoldboxError:
    return GoldboxError(f"{label}: {problem}")


def read_manifest(path: Path) -> dict:
    """The manifest `invoke image` wrote, checked for what publishing needs."""
    if not path.is_file():
        raise GoldboxError(f"{path}: no such manifest (build the box with `invoke image`, "
                           f"or pass --manifest PATH)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _invalid(str(path), f"not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise _invalid(str(path), "expected a JSON object")
    checks = {
        "box_name": (NAME, "lowercase letters, digits, '.', '_' or '-'"),
        "version": (SEMVER, "a semantic version MAJOR.MINOR.PATCH, e.g. 1.2.0"),
        "provider": (NAME, "a Vagrant provider name such as libvirt"),
        "box_file": (re.compile(r"^[^/]+\.box$"), "a .box file name beside the manifest"),
        "box_sha256": (SHA256, "64 lowercase hex characters"),
    }
    for key, (pattern, expected) in checks.items():
        value = manifest.get(key)
        if not isinstance(value, str) or not pattern.match(value):
            raise _invalid(str(path), f"{key} = {value!r}: expected {expected}")
    if not (path.parent / manifest["box_file"]).is_file():
        raise _invalid(str(path), f"box_file = {manifest['box_file']!r}: no such file "
                                  f"beside the manifest")
    return manifest


def parse_metadata(text: str, label: str) -> dict:
    """Vagrant box metadata, checked as far as this catalog relies on it."""
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _invalid(label, f"not valid JSON: {exc}") from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        raise _invalid(label, "not Vagrant box metadata: expected an object with a 'name'")
    versions = metadata.get("versions")
    if not isinstance(versions, list):
        raise _invalid(label, "versions: expected a list")
    for index, entry in enumerate(versions):
        key = f"versions[{index}]"
        if not isinstance(entry, dict):
            raise _invalid(label, f"{key}: expected an object")
        version = entry.get("version")
        if not isinstance(version, str) or not SEMVER.match(version):
            raise _invalid(label, f"{key}.version = {version!r}: expected MAJOR.MINOR.PATCH")
        providers = entry.get("providers")
        if not isinstance(providers, list) or not all(
                isinstance(p, dict) and isinstance(p.get("name"), str)
                and isinstance(p.get("url"), str) for p in providers):
            raise _invalid(label, f"{key}.providers: expected a list of objects with "
                                  f"'name' and 'url'")
    return metadata


def _load_metadata(path: Path, box: str) -> dict:
    if not path.exists():
        return {"name": box, "versions": []}
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise _invalid(str(path), f"cannot read: {exc}") from None
    metadata = parse_metadata(text, str(path))
    if metadata["name"] != box:
        raise _invalid(str(path), f"name = {metadata['name']!r}, but it lies in the "
                                  f"folder of box {box!r}")
    return metadata


def _require_catalog_dir(catalog_dir: Path, create: bool) -> None:
    if catalog_dir.is_dir():
        return
    if catalog_dir.exists():
        raise GoldboxError(f"catalog {catalog_dir}: not a directory")
    if not create or not catalog_dir.parent.is_dir():
        raise GoldboxError(f"catalog {catalog_dir}: no such directory")
    catalog_dir.mkdir()


# ---- writing safely ----------------------------------------------------------------------


@contextlib.contextmanager
def catalog_lock(catalog_dir: Path, progress: Progress) -> Iterator[None]:
    """Hold the catalog's exclusive lock; say so when another process holds it."""
    with open(catalog_dir / LOCK_FILE, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for the catalog lock ({catalog_dir / LOCK_FILE}), "
                     f"held by another publish or prune")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=PARTIAL_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _write_metadata(path: Path, metadata: dict) -> None:
    _write_file_atomically(path, (json.dumps(metadata, indent=2) + "\n").encode())


def _copy_box(source: Path, dest: Path, expected_sha256: str, progress: Progress) -> None:
    """Copy `source` to `dest` via a temporary name, checking its sha256 on the way."""
    total = source.stat().st_size
    fd, tmp = tempfile.mkstemp(prefix=PARTIAL_PREFIX, dir=dest.parent)
    digest = hashlib.sha256()
    done, reported = 0, 0
    try:
        with open(source, "rb") as src, os.fdopen(fd, "wb") as out:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                quarter = 4 * done // total if total else 4
                if quarter > reported:
                    reported = quarter
                    progress(f"copying {source.name}: {25 * quarter}% "
                             f"({done / 2**20:.1f} of {total / 2**20:.1f} MiB)")
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != expected_sha256:
            raise GoldboxError(
                f"{source}: sha256 is {digest.hexdigest()}, but its manifest says "
                f"box_sha256 = {expected_sha256}; nothing was published"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)


def _sweep(box_dir: Path, progress: Progress) -> None:
    """Remove what an interrupted publish or prune of this box left behind: temporary
    files, and version folders that its metadata.json does not list. Call under the lock."""
    if not box_dir.is_dir():
        return
    for partial_file in sorted(box_dir.rglob(f"{PARTIAL_PREFIX}*")):
        partial_file.unlink()
        progress(f"removed unfinished file {partial_file}")
    metadata = _load_metadata(box_dir / METADATA, box_dir.name)
    listed = {(v["version"], p["name"]) for v in metadata["versions"] for p in v["providers"]}
    for version_dir in sorted(p for p in box_dir.iterdir() if p.is_dir()):
        if not SEMVER.match(version_dir.name):
            continue
        for provider_dir in sorted(p for p in version_dir.iterdir() if p.is_dir()):
            if (version_dir.name, provider_dir.name) not in listed:
                shutil.rmtree(provider_dir)
                progress(f"removed {provider_dir}: not listed in {box_dir / METADATA}")
        with contextlib.suppress(OSError):
            version_dir.rmdir()  # only when empty
    with contextlib.suppress(OSError):
        box_dir.rmdir()  # a box whose first publish never finished


# ---- publish ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    box: str
    version: str
    provider: str
    metadata: Path
    box_path: Path
    url: str

    @property
    def metadata_url(self) -> str:
        return self.url.rsplit("/", 3)[0] + "/" + METADATA


def _existing_base(entry_url: str, relative: str) -> str | None:
    return entry_url[: -len(relative)] if entry_url.endswith(relative) else None


def _check_base(metadata: dict, label: str, base: str) -> None:
    """All versions of a box must be reachable the same way (file:// or one base URL)."""
    for entry in metadata["versions"]:
        for provider in entry["providers"]:
            relative = _relative_box_path(metadata["name"], entry["version"], provider["name"])
            existing = _existing_base(provider["url"], relative)
            if existing is not None and existing != base:
                how = ("without --base-url" if existing.startswith("file:")
                       else f"with --base-url {existing}")
                raise _invalid(label, f"version {entry['version']} is published under "
                                      f"{existing}, not {base}; publish {how}")


def _check_publishable(metadata_path: Path, box: str, version: str, provider: str,
                       base: str, force: bool) -> dict:
    metadata = _load_metadata(metadata_path, box)
    _check_base(metadata, str(metadata_path), base)
    for entry in metadata["versions"]:
        if entry["version"] == version and not force and any(
                p["name"] == provider for p in entry["providers"]):
            raise _invalid(str(metadata_path), f"version {version} already has a {provider} "
                                               f"box; pass --force to replace it")
    return metadata


def _add_version(metadata: dict, version: str, provider_entry: dict,
                 description: str | None) -> dict:
    entry = next((v for v in metadata["versions"] if v["version"] == version), None)
    if entry is None:
        entry = {"version": version, "providers": []}
        metadata["versions"].append(entry)
    others = [p for p in entry["providers"] if p["name"] != provider_entry["name"]]
    entry["providers"] = sorted(others + [provider_entry], key=lambda p: p["name"])
    metadata["versions"].sort(key=lambda v: _semver_key(v["version"]))
    if description is not None:
        metadata["description"] = description
    return {"name": metadata["name"], "description": metadata.get("description", ""),
            **metadata}


def publish(manifest_path: Path, catalog_dir: Path, *, base_url: str | None = None,
            description: str | None = None, force: bool = False,
            progress: Progress = print) -> Published:
    """Publish the box beside `manifest_path` to the catalog directory `catalog_dir`.

    The URLs in metadata.json are file:// URLs of `catalog_dir`, or lie under
    `base_url` when the tree is served over HTTP. An existing version + provider is
    refused unless `force`. `description` (if given) becomes the box's description.
    Every check runs before anything is written; a refusal changes nothing."""
    manifest = read_manifest(manifest_path)
    box, version, provider = manifest["box_name"], manifest["version"], manifest["provider"]
    base = _base_url(catalog_dir, base_url)
    metadata_path = catalog_dir / box / METADATA
    if catalog_dir.is_dir():
        _check_publishable(metadata_path, box, version, provider, base, force)
    _require_catalog_dir(catalog_dir, create=True)
    relative = _relative_box_path(box, version, provider)
    box_path = catalog_dir / relative
    with catalog_lock(catalog_dir, progress):
        # Again under the lock: another publish may have finished meanwhile.
        metadata = _check_publishable(metadata_path, box, version, provider, base, force)
        _sweep(metadata_path.parent, progress)
        box_path.parent.mkdir(parents=True, exist_ok=True)
        _copy_box(manifest_path.parent / manifest["box_file"], box_path,
                  manifest["box_sha256"], progress)
        published_manifest = json.dumps({**manifest, "box_file": box_path.name}, indent=2,
                                        sort_keys=True) + "\n"
        _write_file_atomically(box_path.parent / MANIFEST, published_manifest.encode())
        provider_entry = {"name": provider, "url": base + relative,
                          "checksum_type": "sha256", "checksum": manifest["box_sha256"]}
        if manifest.get("architecture"):
            # Vagrant >= 2.4 picks a box by architecture; 2.3 ignores the key.
            provider_entry["architecture"] = manifest["architecture"]
        _write_metadata(metadata_path, _add_version(metadata, version, provider_entry,
                                                    description))
    published = Published(box, version, provider, metadata_path, box_path, base + relative)
    progress(f"published {box} {version} ({provider}): {published.url}")
    progress(f"teammates: vagrant box add {published.metadata_url}")
    return published


# ---- prune -------------------------------------------------------------------------------


def prune(catalog_dir: Path, box: str, keep: int, progress: Progress = print) -> list[str]:
    """Keep the `keep` newest versions of `box`; remove the older ones' metadata entries,
    then their files. Returns the removed versions, oldest first."""
    if keep < 1:
        raise GoldboxError(f"--keep {keep}: say how many of the newest versions to keep "
                           f"(at least 1)")
    _require_catalog_dir(catalog_dir, create=False)
    metadata_path = catalog_dir / box / METADATA
    if not metadata_path.is_file():
        raise GoldboxError(f"{metadata_path}: no such file (box {box!r} was never published "
                           f"to this catalog)")
    _load_metadata(metadata_path, box)  # refuse a broken one before taking the lock
    with catalog_lock(catalog_dir, progress):
        metadata = _load_metadata(metadata_path, box)
        ordered = sorted(metadata["versions"], key=lambda v: _semver_key(v["version"]))
        doomed = [v["version"] for v in ordered[:-keep]]
        if doomed:
            metadata["versions"] = ordered[-keep:]
            _write_metadata(metadata_path, metadata)
        # Entries first, files second: a prune killed in between leaves folders that
        # metadata.json no longer lists, which this sweep (or the next one) removes.
        _sweep(metadata_path.parent, progress)
    kept = [v["version"] for v in ordered[-keep:]]
    progress(f"{box}: removed {', '.join(doomed) or 'no version'}; kept {', '.join(kept)}")
    return doomed


# ---- list ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoxRow:
    box: str
    version: str
    provider: str
    size: int | None
    created: str
    platform: str
    cpython: str


def _where(location: Path | str, relative: str) -> str:
    return str(location / relative) if isinstance(location, Path) else location + relative


def _reader(location: Path | str) -> Callable[[str], str | None]:
    """Read a catalog-relative path from a directory or a base URL; None if absent."""
    if isinstance(location, Path):
        def read_file(relative: str) -> str | None:
            path = location / relative
            return path.read_text() if path.is_file() else None
        return read_file

    def read_url(relative: str) -> str | None:
        url = _where(location, relative)
        try:
            response = requests.get(url, timeout=30)
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
        raise _invalid(_where(location, relative), f"not valid JSON: {exc}") from None
    return manifest if isinstance(manifest, dict) else {}


def list_boxes(location: Path | str, box: str | None = None) -> list[BoxRow]:
    """One row per version and provider, newest version first. A directory catalog lists
    every box in it (or only `box`); an HTTP catalog cannot be listed, so it needs `box`."""
    if isinstance(location, Path):
        _require_catalog_dir(location, create=False)
        names = [box] if box else sorted(p.parent.name for p in location.glob(f"*/{METADATA}"))
    elif box is None:
        raise GoldboxError(f"catalog {location}: an HTTP catalog needs a box name")
    else:
        names = [box]
    read = _reader(location)
    rows = []
    for name in names:
        label = _where(location, f"{name}/{METADATA}")
        text = read(f"{name}/{METADATA}")
        if text is None:
            raise GoldboxError(f"{label}: not found (box {name!r} is not in this catalog)")
        metadata = parse_metadata(text, label)
        for entry in sorted(metadata["versions"], key=lambda v: _semver_key(v["version"]),
                            reverse=True):
            for provider in entry["providers"]:
                manifest = _read_json(read, f"{name}/{entry['version']}/"
                                            f"{provider['name']}/{MANIFEST}", location)
                rows.append(BoxRow(
                    box=name, version=entry["version"], provider=provider["name"],
                    size=manifest.get("box_size"), created=manifest.get("created", "?"),
                    platform=manifest.get("platform", "?"),
                    cpython=manifest.get("components", {}).get("cpython", "?")))
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
    header = ("BOX", "VERSION", "PROVIDER", "SIZE", "CREATED", "PLATFORM", "CPYTHON")
    table = [header] + [(r.box, r.version, r.provider, _size(r.size), r.created, r.platform,
                         r.cpython) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                     .rstrip() for row in table)


# ---- serve ---------------------------------------------------------------------------------


class _CatalogHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the tree, except dot files (the lock, unfinished copies)."""

    def send_head(self):
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        if any(part.startswith(".") for part in path.split("/") if part):
            self.send_error(404, "File not found")
            return None
        return super().send_head()


def make_server(directory: Path, port: int = 0,
                host: str = "127.0.0.1") -> http.server.ThreadingHTTPServer:
    """An HTTP server for the catalog tree in `directory` (port 0: any free port)."""
    _require_catalog_dir(directory, create=False)
    handler = partial(_CatalogHandler, directory=str(directory))
    try:
        return http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise GoldboxError(f"cannot serve on {host}:{port}: {exc.strerror}") from None


def serve(directory: Path, port: int = 8099, host: str = "127.0.0.1",
          progress: Progress = print) -> None:
    """Serve the catalog in `directory` over HTTP until interrupted."""
    with make_server(directory, port, host) as server:
        url = f"http://{host}:{server.server_address[1]}/"
        progress(f"serving {directory} at {url} (Ctrl-C stops)")
        progress(f"publish for it with: invoke publish --catalog {directory} --base-url {url}")
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()

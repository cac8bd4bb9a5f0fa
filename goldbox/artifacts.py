"""goldbox's sha256-verified artifact cache, and the wheelhouse a guest installs from.

A file becomes a cache entry (kind "artifact", see goldbox/cache.py) only after its
content has been hashed and matched the sha256 the platform declares, whether it was
downloaded (`ensure`) or handed over by the user (`import_file`); its recorded sha256
is checked again each time it is used. The guest checks the sha256
again; the host never uses an unverified byte."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import requests

from goldbox import proc
from goldbox.cache import Cache, as_cache
from goldbox.errors import GoldboxError
from goldbox.files import sha256_file

DEBIAN_MIRROR = "http://deb.debian.org/debian"
_CHUNK = 1 << 20


class ArtifactCache:
    """Verified files, each a cache entry of kind "artifact" identified by its sha256 and
    the name it is staged under."""

    def __init__(self, cache: Cache | Path):
        self.cache = as_cache(cache)

    @staticmethod
    def _identity(sha256: str, filename: str) -> dict:
        return {"sha256": sha256.lower(), "filename": filename}

    def cached(self, sha256: str, filename: str) -> Path | None:
        """The cached file if present and still intact, else None."""
        entry = self.cache.lookup("artifact", self._identity(sha256, filename))
        return entry.file(filename) if entry else None

    def _ensure(self, sha256: str, filename: str, fill, origin: str) -> Path:
        def make(folder: Path) -> None:
            actual = fill(folder / filename)
            if actual != sha256.lower():
                raise GoldboxError(f"{origin}: sha256 mismatch, expected {sha256.lower()}, "
                                   f"got {actual}; the file was discarded")
        entry = self.cache.ensure("artifact", self._identity(sha256, filename), make,
                                  name=filename, summary=f"{filename} from {origin}")
        return entry.file(filename)

    def ensure(self, url: str, sha256: str, filename: str) -> Path:
        """Return the cached artifact, downloading `url` first if needed.

        The download lands in the entry's partial folder and is kept only when its
        sha256 matches; on a mismatch nothing is kept and GoldboxError names the URL
        with the expected and actual sha256."""
        return self._ensure(sha256, filename, lambda dest: _download(url, dest), url)

    def import_file(self, path: Path, known: Mapping[str, str]) -> Path:
        """Copy a local file into the cache if its sha256 is one of `known`
        ({sha256: filename}, the platform's artifacts); return its cached path.

        This is `invoke artifacts --import PATH`: the file's own name does not matter
        (Debian's python3.13_3.13.5.orig.tar.xz is Python-3.13.5.tar.xz), its content
        does. A file matching none of them is a GoldboxError and nothing is kept."""
        path = Path(path)
        if not path.is_file():
            raise GoldboxError(f"cannot import {path}: no such file")
        actual = sha256_file(path)
        wanted = {sha.lower(): name for sha, name in known.items()}
        if actual not in wanted:
            listed = ", ".join(f"{name} ({sha})" for sha, name in sorted(wanted.items()))
            raise GoldboxError(
                f"{path} has sha256 {actual}, which matches none of the platform's "
                f"artifacts: {listed or 'none declared'}"
            )

        def copy(dest: Path) -> str:
            shutil.copyfile(path, dest)
            return sha256_file(dest)  # it may have changed while we copied it

        return self._ensure(actual, wanted[actual], copy, str(path))

    def ensure_from_debian_source(self, *, package: str, suite: str, orig_name: str,
                                  sha256: str, filename: str,
                                  mirror: str = DEBIAN_MIRROR) -> Path:
        """Return the cached artifact, importing it first from Debian's upstream
        tarball of `package` in `suite` (for tests: python.org is not reachable, and
        Debian's orig tarballs of CPython are byte-identical to python.org's)."""
        if found := self.cached(sha256, filename):
            return found
        with tempfile.TemporaryDirectory(prefix="goldbox-debsrc-") as scratch:
            orig = fetch_debian_source_tarball(Path(scratch), package=package, suite=suite,
                                               orig_name=orig_name, mirror=mirror)
            return self.import_file(orig, {sha256: filename})


def _download(url: str, dest: Path) -> str:
    """Stream `url` into `dest`; return the sha256 of what was written."""
    digest = hashlib.sha256()
    try:
        with requests.get(url, stream=True, timeout=(15, 120)) as response, \
                open(dest, "wb") as out:
            response.raise_for_status()
            for chunk in response.iter_content(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except requests.RequestException as exc:
        raise GoldboxError(f"cannot download {url}: {exc}") from exc
    return digest.hexdigest()


@contextlib.contextmanager
def private_apt(source_line: str, prefix: str) -> Iterator[tuple[Path, list[str]]]:
    """An apt configuration of its own (sources list, lists and cache in a temporary
    folder, updated from `source_line`), so the host's apt state is neither read nor
    changed. Yields the folder (with an empty `download/` in it) and apt-get's options."""
    with tempfile.TemporaryDirectory(prefix="goldbox-apt-") as private:
        apt = Path(private)
        (apt / "sources.list").write_text(source_line + "\n")
        for folder in ("sources.list.d", "lists/partial", "cache/archives/partial", "download"):
            (apt / folder).mkdir(parents=True)
        options = [
            "-o", f"Dir::Etc::SourceList={apt / 'sources.list'}",
            "-o", f"Dir::Etc::SourceParts={apt / 'sources.list.d'}",
            "-o", f"Dir::State::Lists={apt / 'lists'}",
            "-o", f"Dir::Cache={apt / 'cache'}",
            # The private folders belong to root; apt's _apt sandbox user could not
            # write there.
            "-o", "APT::Sandbox::User=root",
        ]
        proc.run(["apt-get", *options, "update"], prefix=prefix)
        yield apt, options


def fetch_debian_source_tarball(dest_dir: Path, *, package: str, suite: str, orig_name: str,
                                mirror: str = DEBIAN_MIRROR) -> Path:
    """Download `orig_name` of source package `package` from `suite` into `dest_dir`
    with `apt-get source --download-only`, and return its path.

    apt runs with a private configuration (sources list, lists and cache in a
    temporary folder), so the host's own apt state is neither read nor changed."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    prefix = f"apt-get source {package}"
    with private_apt(f"deb-src {mirror} {suite} main", prefix) as (apt, options):
        proc.run(["apt-get", *options, "source", "--download-only", package],
                 prefix=prefix, cwd=apt / "download")
        downloaded = apt / "download" / orig_name
        if not downloaded.is_file():
            found = sorted(p.name for p in (apt / "download").iterdir())
            raise GoldboxError(
                f"apt-get source {package} ({suite}) did not yield {orig_name}; got {found}"
            )
        return Path(shutil.move(downloaded, dest_dir / orig_name))


def build_wheelhouse(cache: Cache | Path, requirements_file: Path, dest: Path, *,
                     python_version: str, platform_tags: Sequence[str],
                     source_only: Sequence[str] = ("uwsgi",),
                     log: Path | None = None) -> list[Path]:
    """Fill `dest` with every file the hash-pinned `requirements_file` names, for a
    guest CPython `python_version` on `platform_tags` (e.g. manylinux_2_17_x86_64);
    return the files placed in `dest`, sorted.

    Wheels only, except for the packages in `source_only` (uWSGI publishes no
    wheels: its sdist is compiled natively on the host, see goldbox.bundle). Every
    file is checked by pip against the requirement's hashes. The downloaded set is a
    cache entry of kind "wheelhouse" (requirements file, python version, tags)."""
    requirements_file = Path(requirements_file)
    identity = {"requirements_sha256": sha256_file(requirements_file),
                "python_version": python_version, "platform_tags": list(platform_tags),
                "source_only": list(source_only)}

    def make(folder: Path) -> None:
        command: list[str | Path] = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
            "--disable-pip-version-check", "--only-binary=:all:",
            *(f"--no-binary={name}" for name in source_only),
            "--python-version", python_version,
            *(f"--platform={tag}" for tag in platform_tags),
            "--requirement", requirements_file.resolve(), "--dest", folder,
        ]
        proc.run(command, prefix="wheelhouse", log=log)

    entry = as_cache(cache).ensure(
        "wheelhouse", identity, make, name=requirements_file.name,
        summary=f"{requirements_file.name} for CPython {python_version}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    placed = []
    for name in sorted(entry.record["files"]):
        target = dest / name
        shutil.copyfile(entry.path / name, target)
        placed.append(target)
    return placed

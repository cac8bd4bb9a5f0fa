"""goldbox's sha256-verified artifact cache, and the wheelhouse a guest installs from.

A file enters `<cache>/artifacts/<sha256>/<filename>` only after its content has been
hashed and matched the sha256 the platform declares, whether it was downloaded
(`ensure`) or handed over by the user (`import_file`). The guest checks the sha256
again; the host never uses an unverified byte."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import requests

from goldbox import proc
from goldbox.errors import GoldboxError

DEBIAN_MIRROR = "http://deb.debian.org/debian"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tree_sha256(root: Path) -> str:
    """sha256 over every file below `root` (relative path and content), skipping Python
    bytecode caches, which come and go with every run."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        if "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        digest.update(f"{path.relative_to(root)}\0{sha256_file(path)}\0".encode())
    return digest.hexdigest()


@contextlib.contextmanager
def cache_lock(lock_file: Path) -> Iterator[None]:
    """Serialise builders of one cache entry (several test runs may share a cache)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class ArtifactCache:
    """Verified files under `<cache_dir>/artifacts/<sha256>/<filename>`."""

    def __init__(self, cache_dir: Path):
        self.root = Path(cache_dir) / "artifacts"

    def path(self, sha256: str, filename: str) -> Path:
        """Where the artifact lives once cached (whether or not it is there yet)."""
        return self.root / sha256.lower() / filename

    def cached(self, sha256: str, filename: str) -> Path | None:
        """The cached file if present and still intact, else None."""
        path = self.path(sha256, filename)
        if path.is_file() and sha256_file(path) == sha256.lower():
            return path
        return None

    def ensure(self, url: str, sha256: str, filename: str) -> Path:
        """Return the cached artifact, downloading `url` first if needed.

        The download streams to a temporary name and is renamed into place only when
        its sha256 matches; on a mismatch nothing is kept and GoldboxError names the
        URL with the expected and actual sha256."""
        if found := self.cached(sha256, filename):
            return found
        final = self.path(sha256, filename)
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = final.with_name(f".{filename}.{os.getpid()}.partial")
        try:
            actual = _download(url, partial)
            if actual != sha256.lower():
                raise GoldboxError(
                    f"{url}: sha256 mismatch, expected {sha256.lower()}, got {actual}; "
                    "the download was discarded"
                )
            partial.rename(final)
        finally:
            partial.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                final.parent.rmdir()  # only succeeds if nothing was kept
        return final

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
        final = self.path(actual, wanted[actual])
        if self.cached(actual, final.name):
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = final.with_name(f".{final.name}.importing")
        shutil.copyfile(path, partial)
        if sha256_file(partial) != actual:  # changed while we copied it
            partial.unlink()
            raise GoldboxError(f"{path} changed while it was being imported; try again")
        partial.rename(final)
        return final

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


def wheelhouse_key(requirements_file: Path, python_version: str,
                   platform_tags: Sequence[str]) -> str:
    identity = {
        "format": 1,
        "requirements_sha256": sha256_file(requirements_file),
        "python_version": python_version,
        "platform_tags": list(platform_tags),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def build_wheelhouse(cache_dir: Path, requirements_file: Path, dest: Path, *,
                     python_version: str, platform_tags: Sequence[str],
                     source_only: Sequence[str] = ("uwsgi",),
                     log: Path | None = None) -> list[Path]:
    """Fill `dest` with every file the hash-pinned `requirements_file` names, for a
    guest CPython `python_version` on `platform_tags` (e.g. manylinux_2_17_x86_64);
    return the files placed in `dest`, sorted.

    Wheels only, except for the packages in `source_only` (uWSGI publishes no
    wheels: its sdist is compiled natively on the host, see goldbox.bundle). Every
    file is checked by pip against the requirement's hashes. The downloaded set is
    cached under `<cache>/wheelhouse/<key>/`, key = sha256 of the requirements file,
    python version and platform tags."""
    requirements_file = Path(requirements_file)
    key = wheelhouse_key(requirements_file, python_version, platform_tags)
    store = Path(cache_dir) / "wheelhouse"
    cached = store / key
    with cache_lock(store / f"{key}.lock"):
        if not cached.is_dir():
            partial = Path(tempfile.mkdtemp(prefix=f"{key}.partial-", dir=store))
            try:
                command = [
                    sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
                    "--disable-pip-version-check", "--only-binary=:all:",
                    *(f"--no-binary={name}" for name in source_only),
                    "--python-version", python_version,
                    *(f"--platform={tag}" for tag in platform_tags),
                    "--requirement", requirements_file.resolve(), "--dest", partial,
                ]
                proc.run(command, prefix="wheelhouse", log=log or store / f"{key}.log")
                partial.rename(cached)
            finally:
                if partial.exists():
                    shutil.rmtree(partial)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    placed = []
    for source in sorted(cached.iterdir()):
        target = dest / source.name
        shutil.copyfile(source, target)
        placed.append(target)
    return placed


"""Writing a catalog safely: one exclusive lock per catalog, files written under a
temporary dot name, flushed and renamed, and every OS failure (a full disk, a lock file
someone else owns) turned into one line naming the file."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from goldbox.catalog.layout import LOCK_FILE, PARTIAL_PREFIX
from goldbox.errors import GoldboxError

Progress = Callable[[str], None]
_CHUNK = 1 << 20


def os_failure(path: Path, doing: str, exc: OSError) -> GoldboxError:
    return GoldboxError(f"{path}: cannot {doing}: {exc.strerror or exc}")


@contextlib.contextmanager
def catalog_lock(catalog_dir: Path, progress: Progress) -> Iterator[None]:
    """Hold the catalog's exclusive lock; say so when another process holds it."""
    path = catalog_dir / LOCK_FILE
    try:
        lock = open(path, "a")  # noqa: SIM115 (held for the whole block)
    except OSError as exc:
        raise GoldboxError(f"{path}: cannot open the catalog's lock file: {exc.strerror} "
                           f"(every publisher needs write access to it)") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for the catalog lock ({path}), held by another publish or prune")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _partial_file(dest: Path, doing: str, mode: int = 0o644) -> Iterator[tuple[int, Path]]:
    """A temporary file beside `dest` that becomes `dest` by a rename when the block
    ends normally, and is removed otherwise; OSError becomes one line naming `dest`."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=PARTIAL_PREFIX, dir=dest.parent)
    except OSError as exc:
        raise os_failure(dest, doing, exc) from None
    try:
        yield fd, Path(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise os_failure(dest, doing, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_file_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    with _partial_file(path, "write", mode) as (fd, _), os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def copy_box(source: Path, dest: Path, expected_sha256: str, progress: Progress) -> None:
    """Copy `source` to `dest` via a temporary name, checking its sha256 on the way."""
    total = source.stat().st_size
    digest = hashlib.sha256()
    done, reported = 0, 0
    with _partial_file(dest, "copy the box") as (fd, _):
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


def remove_file(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise os_failure(path, "remove", exc) from None

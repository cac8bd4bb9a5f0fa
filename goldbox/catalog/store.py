"""Writing a catalog safely: one exclusive lock per catalog, files written under a
temporary dot name, flushed and renamed, and every OS failure (a full disk, a lock file
someone else owns) turned into one line naming the file."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from goldbox.catalog.layout import LOCK_FILE, PARTIAL_PREFIX, link_refused
from goldbox.errors import GoldboxError

Progress = Callable[[str], None]
_CHUNK = 1 << 20


def os_failure(path: Path, doing: str, exc: OSError) -> GoldboxError:
    return GoldboxError(f"{path}: cannot {doing}: {exc.strerror or exc}")


def open_no_follow(path: Path, flags: int, mode: int = 0o644) -> int:
    """os.open that refuses a link at `path` itself (O_NOFOLLOW) in one line."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise link_refused(path) from None
        raise


def read_file_no_follow(path: Path) -> str | None:
    """A catalog file's text, None when it does not exist; a link is refused."""
    try:
        fd = open_no_follow(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise os_failure(path, "read", exc) from None
    try:
        with os.fdopen(fd, "rb") as handle:
            return handle.read().decode()
    except (OSError, UnicodeDecodeError) as exc:
        raise GoldboxError(f"{path}: cannot read: {exc}") from None


@contextlib.contextmanager
def catalog_lock(catalog_dir: Path, progress: Progress) -> Iterator[None]:
    """Hold the catalog's exclusive lock; say so when another process holds it. A link
    as the lock file is refused: opened for writing, it would create or lock whatever
    file it names."""
    path = catalog_dir / LOCK_FILE
    try:
        fd = open_no_follow(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    except OSError as exc:
        raise GoldboxError(f"{path}: cannot open the catalog's lock file: {exc.strerror} "
                           f"(every publisher needs write access to it)") from None
    with os.fdopen(fd, "a") as lock:
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
    ends normally, and is removed otherwise; OSError becomes one line naming `dest`.
    A link as `dest`'s folder is refused (the rename would land wherever it points)."""
    try:
        if stat.S_ISLNK(os.lstat(dest.parent).st_mode):
            raise link_refused(dest.parent)
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

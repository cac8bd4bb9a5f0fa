"""Writing a catalog safely: one exclusive lock per catalog, files written under a
temporary dot name, flushed and renamed, and every OS failure (a full disk, a lock file
someone else owns) turned into one line naming the file."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from goldbox.catalog.layout import LOCK_FILE, link_refused
from goldbox.errors import GoldboxError
from goldbox.files import (
    copy_hashing,
    file_chunks,
    os_failure,
    partial_file,
    write_atomically,
)
from goldbox.locks import exclusive

Progress = Callable[[str], None]


def open_no_follow(path: Path, flags: int, mode: int = 0o644) -> int:
    """os.open that refuses a link at `path` itself (O_NOFOLLOW) in one line."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise link_refused(path) from None
        raise


def open_existing(path: Path, what: str = "a catalog file",
                  where: str = "in the catalog") -> BinaryIO | None:
    """A catalog file (`what` it holds, for messages) open for reading, None when it does
    not exist. A link is refused (it lies `where`), and so is anything but a regular file:
    a FIFO planted in a catalog must not hang the reader. Any other failure is one line
    naming it. goldbox's one no-follow reader of the files others can write."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise link_refused(path, where) from None
        raise os_failure(path, "read", exc) from None
    handle = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        handle.close()
        raise GoldboxError(f"{path}: not a regular file; expected {what}")
    return handle


def read_file_no_follow(path: Path) -> str | None:
    """A catalog file's text, None when it does not exist; a link is refused."""
    handle = open_existing(path)
    if handle is None:
        return None
    try:
        with handle:
            return handle.read().decode()
    except (OSError, UnicodeDecodeError) as exc:
        raise GoldboxError(f"{path}: cannot read: {exc}") from None


@contextlib.contextmanager
def catalog_lock(catalog_dir: Path, progress: Progress) -> Iterator[None]:
    """Hold the catalog's exclusive lock; say so when another process holds it."""
    path = catalog_dir / LOCK_FILE

    def waiting(holder: str) -> None:
        progress(f"waiting for the catalog lock ({path}), held by another publish or prune "
                 f"(pid {holder})")
    with exclusive(path, waiting=waiting, what="the catalog's lock file",
                   hint="every publisher needs write access to it", refuse_link=link_refused):
        yield


def write_file_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """files.write_atomically with the catalog's rule: a link as the folder is refused."""
    write_atomically(path, data, mode, refuse_link=link_refused)


def copy_box(source: Path, dest: Path, expected_sha256: str, progress: Progress) -> None:
    """Copy `source` to `dest` via a temporary name, checking its sha256 on the way."""
    digest = hashlib.sha256()
    with partial_file(dest, "copy the box", refuse_link=link_refused) as out:
        copy_hashing(file_chunks(source), out, {"sha256": digest},
                     total=source.stat().st_size, label=f"copying {source.name}",
                     progress=progress)
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

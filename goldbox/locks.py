"""The one lock goldbox takes: an exclusive flock(2) on a lock file.

Used for a cache entry (`<kind>/<key>.lock`), one `invoke image` per platform
(`build/<p>/image.lock`) and a catalog (`<catalog>/.goldbox.lock`). The lock file is
opened with O_NOFOLLOW: a link in its place, in a folder others can write, would make us
create or lock whatever file it names, so it is refused. Whoever finds it locked learns
the holder's pid from the kernel (/proc/locks): nothing is written into the lock file,
which takes no disk space (a catalog on a nearly full disk) and is never stale."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from goldbox.errors import GoldboxError


@contextlib.contextmanager
def exclusive(path: Path, *, wait: bool = True, waiting: Callable[[str], None] | None = None,
              what: str = "the lock file", hint: str = "",
              refuse_link: Callable[[Path], GoldboxError] | None = None
              ) -> Iterator[str | None]:
    """Hold an exclusive flock on `path` for the block and yield None. When another
    process holds it: with `wait`, call `waiting(holder)` (if given) and wait for it;
    without, yield the holder (its pid, or "unknown") at once and hold nothing.
    A lock file that cannot be opened is one GoldboxError naming it and `what` it is,
    followed by `hint`; a link is refused by `refuse_link(path)` (default: one line)."""
    fd = open_lock_file(path, what=what, hint=hint, refuse_link=refuse_link)
    with os.fdopen(fd, "ab") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = holder_of(lock.fileno())
            if not wait:
                yield holder
                return
            if waiting is not None:
                waiting(holder)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield None


def open_lock_file(path: Path, *, what: str = "the lock file", hint: str = "",
                   refuse_link: Callable[[Path], GoldboxError] | None = None) -> int:
    """The lock file's descriptor, made (with its folder) if missing; never through a
    link."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise (refuse_link or _link_refused)(path) from None
        raise GoldboxError(f"{path}: cannot open {what}: {exc.strerror}"
                           f"{f' ({hint})' if hint else ''}") from None


def _link_refused(path: Path) -> GoldboxError:
    return GoldboxError(f"{path}: the lock file is a symbolic link; refused (a lock is never "
                        "taken through a link): remove the link")


def holder_of(fd: int) -> str:
    """The pid of the process holding a flock on the file open at `fd` (from
    /proc/locks: `1: FLOCK ADVISORY WRITE <pid> <major>:<minor>:<inode> 0 EOF`), or
    "unknown"."""
    status = os.fstat(fd)
    device = (os.major(status.st_dev), os.minor(status.st_dev))
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            for line in locks:
                fields = line.split()
                if len(fields) < 6 or fields[1] != "FLOCK":  # "->": a waiter
                    continue
                major, minor, inode = fields[5].split(":")
                if int(inode) == status.st_ino and (int(major, 16), int(minor, 16)) == device:
                    return fields[4]
    except (OSError, ValueError):
        pass
    return "unknown"

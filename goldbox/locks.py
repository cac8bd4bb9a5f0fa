"""The one lock goldbox takes: an exclusive flock(2) on a lock file.

Used for a cache entry (`<kind>/<key>.lock`), one `invoke image` per platform
(`build/<p>/image.lock`) and a catalog (`<catalog>/.goldbox.lock`). The lock file is
opened with O_NOFOLLOW: a link in its place, in a folder others can write, would make us
create or lock whatever file it names, so it is refused. The holder writes its pid into
the file, so whoever finds it locked can say who holds it; the pid is cleared before the
lock is let go."""

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
    with os.fdopen(fd, "r+", encoding="utf-8", errors="replace") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(lock)
            if not wait:
                yield holder
                return
            if waiting is not None:
                waiting(holder)
            fcntl.flock(lock, fcntl.LOCK_EX)
        _record(lock, f"{os.getpid()}\n")
        try:
            yield None
        finally:
            _record(lock, "")


def open_lock_file(path: Path, *, what: str = "the lock file", hint: str = "",
                   refuse_link: Callable[[Path], GoldboxError] | None = None) -> int:
    """The lock file's descriptor, made (with its folder) if missing; never through a
    link."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise (refuse_link or _link_refused)(path) from None
        raise GoldboxError(f"{path}: cannot open {what}: {exc.strerror}"
                           f"{f' ({hint})' if hint else ''}") from None


def _link_refused(path: Path) -> GoldboxError:
    return GoldboxError(f"{path}: the lock file is a symbolic link; refused (a lock is never "
                        "taken through a link): remove the link")


def _holder(lock) -> str:
    lock.seek(0)
    return lock.read(64).strip() or "unknown"


def _record(lock, text: str) -> None:
    """Write `text` as the lock file's whole content (best effort: a lock file one may
    lock but not write, say a teammate's, is still a lock)."""
    with contextlib.suppress(OSError):
        lock.seek(0)
        lock.truncate()
        lock.write(text)
        lock.flush()

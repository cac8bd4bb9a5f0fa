"""Crash-safe file operations shared by every part of goldbox.

Nothing goldbox writes is ever seen half-written: files are written under a temporary
name (`partial_file`: the one atomic write, used by the build, the cache and the catalog),
flushed to disk and renamed; a folder that replaces another is swapped in with one
atomic rename(2) (RENAME_EXCHANGE), so the old one stays until the new one is in place.
Trees are deleted only after everything mounted below them is unmounted, so a leftover
bind mount of the host's /dev can never make goldbox delete device nodes."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from goldbox import proc
from goldbox.errors import GoldboxError

_CHUNK = 1 << 20
# What a file being written is named until it is complete (a dot name: never served,
# and swept by whoever owns the folder).
PARTIAL_PREFIX = ".goldbox-partial-"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(None, use_errno=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    for chunk in file_chunks(path):
        digest.update(chunk)
    return digest.hexdigest()


def tree_sha256(root: Path) -> str:
    """sha256 over every file and symbolic link below `root` (relative path and content,
    or link target), skipping Python bytecode caches, which come and go with every run.
    Links are never followed."""
    digest = hashlib.sha256()
    for path in sorted(Path(root).rglob("*")):
        if "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        relative = path.relative_to(root)
        if path.is_symlink():
            digest.update(f"{relative}\0->{os.readlink(path)}\0".encode())
        elif path.is_file():
            digest.update(f"{relative}\0{sha256_file(path)}\0".encode())
    return digest.hexdigest()


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's entries to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file and folder below `root` (and `root` itself) to disk."""
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if not path.is_symlink():
                fsync_path(path)
        fsync_path(Path(folder))


def os_failure(path: Path, doing: str, exc: OSError) -> GoldboxError:
    """An OSError as one line naming the file and what could not be done to it."""
    return GoldboxError(f"{path}: cannot {doing}: {exc.strerror or exc}")


@contextlib.contextmanager
def partial_file(dest: Path, doing: str = "write", mode: int = 0o644, *,
                 refuse_link: Callable[[Path], GoldboxError] | None = None
                 ) -> Iterator[BinaryIO]:
    """A new file beside `dest` (PARTIAL_PREFIX*, made with O_EXCL: never through a
    link), open for writing, that becomes `dest` when the block ends normally: flushed
    to disk, given `mode` and renamed over `dest` (which replaces a link at `dest`
    instead of following it). Otherwise it is removed, so nothing is ever half-written.
    An OSError becomes one line naming `dest`. With `refuse_link`, a link as `dest`'s
    folder is refused with that error (for trees others can write: the rename would
    land wherever the link points)."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if refuse_link is not None and stat.S_ISLNK(os.lstat(dest.parent).st_mode):
            raise refuse_link(dest.parent)
        fd, tmp = tempfile.mkstemp(prefix=PARTIAL_PREFIX, dir=dest.parent)
    except OSError as exc:
        raise os_failure(dest, doing, exc) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
        fsync_path(dest.parent)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise os_failure(dest, doing, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomically(path: Path, data: str | bytes, mode: int = 0o644, *,
                     refuse_link: Callable[[Path], GoldboxError] | None = None) -> None:
    """Write `data` (text is UTF-8) to `path` through `partial_file`: readers see the old
    file or the whole new one, never part of it."""
    with partial_file(path, "write", mode, refuse_link=refuse_link) as handle:
        handle.write(data.encode() if isinstance(data, str) else data)


def copy_hashing(chunks: Iterable[bytes], out: BinaryIO, hashers: dict[str, Any], *,
                 start: int = 0, total: int = 0, label: str = "",
                 progress: Callable[[str], None] | None = None) -> int:
    """Write `chunks` to `out`, feeding each to every hasher (hashlib objects by name);
    `start` bytes came before them. Says `label: 50% (x of y MiB)` through `progress` at
    every quarter of `total` (when known). Returns the bytes received in all."""
    received = start
    reported = 4 * start // total if total else 0
    for chunk in chunks:
        out.write(chunk)
        for hasher in hashers.values():
            hasher.update(chunk)
        received += len(chunk)
        quarter = 4 * received // total if total else 0
        if progress is not None and quarter > reported:
            reported = quarter
            progress(f"{label}: {25 * quarter}% ({received / 2**20:.1f} of "
                     f"{total / 2**20:.1f} MiB)")
    return received


def file_chunks(path: Path, start: int = 0) -> Iterator[bytes]:
    """The bytes of the file at `path` from `start` on, a MiB at a time."""
    with open(path, "rb") as handle:
        handle.seek(start)
        while chunk := handle.read(_CHUNK):
            yield chunk


def swap_in(new: Path, target: Path) -> Path | None:
    """Put the folder `new` in place of `target` in one atomic step and return where the
    old `target` now is (`new`'s former name), or None if there was none. The caller
    deletes the old one afterwards: a crash in between leaves the new folder in place and
    the old one under `new`'s name, never neither."""
    if not target.exists():
        os.rename(new, target)
        fsync_path(target.parent)
        return None
    if _libc.renameat2(_AT_FDCWD, os.fsencode(new), _AT_FDCWD, os.fsencode(target),
                       _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"cannot swap {new} into {target}: {os.strerror(code)}", str(target))
    fsync_path(target.parent)
    return new


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` in this process's mount namespace, deepest first."""
    path = Path(path).resolve()
    targets = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            # Field 5 is the mount point, with spaces and the like octal-escaped.
            target = line.split()[4].encode().decode("unicode_escape")
            if target == str(path) or target.startswith(f"{path}/"):
                targets.append(target)
    return sorted(targets, key=len, reverse=True)


def unmount_all_under(path: Path) -> list[str]:
    """Unmount (lazily, deepest first) whatever is mounted at or below `path`; return the
    mount points. Only older goldbox versions mounted in the host's namespace."""
    targets = mounts_under(path)
    for target in targets:
        proc.capture(["umount", "--lazy", target], check=False)
    return targets


def remove_tree(path: Path) -> None:
    """Delete a folder (or file), first unmounting anything still mounted below it."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink()
        return
    if not path.exists():
        return
    unmount_all_under(path)
    if mounts_under(path):
        raise OSError(errno.EBUSY, f"{path} still has mounts below it; not deleting it",
                      str(path))
    try:
        shutil.rmtree(path)
    except OSError as exc:  # rmtree names only the entry, relative to its folder
        raise OSError(exc.errno, f"cannot delete {path}: {exc.strerror} ({exc.filename})"
                      ) from None

"""Crash-safe file operations shared by every part of goldbox.

Nothing goldbox writes is ever seen half-written: files are written under a temporary
name, flushed to disk and renamed; a folder that replaces another is swapped in with one
atomic rename(2) (RENAME_EXCHANGE), so the old one stays until the new one is in place.
Trees are deleted only after everything mounted below them is unmounted, so a leftover
bind mount of the host's /dev can never make goldbox delete device nodes."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from goldbox import proc

_CHUNK = 1 << 20
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(None, use_errno=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
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


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Write `text` to a temporary name beside `path`, flush it, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


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

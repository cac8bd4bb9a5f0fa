"""Debian root filesystems from debootstrap, cached as tarballs, and the mounts a chroot
into one needs.

debootstrap takes a minute or more, so each distinct (suite, mirror, variant, packages)
is bootstrapped once and kept as `<cache>/rootfs/<key>.tar`; every caller then gets its
own fresh copy extracted from that tarball in seconds."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from goldbox import proc
from goldbox.artifacts import cache_lock
from goldbox.errors import GoldboxError

# Bumped when the way a cached tarball is made changes, so old ones are not reused.
_CACHE_FORMAT = 2  # 2: the rootfs' own "/" is 0755, not mkdtemp's 0700
# Keep owners as numbers (the host's names mean nothing inside the rootfs) and keep
# file capabilities (ping, for one, relies on them).
_TAR_OPTIONS = ["--numeric-owner", "--xattrs", "--xattrs-include=*"]
ARCHIVE_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def rootfs_key(*, suite: str, mirror: str, packages: list[str], variant: str) -> str:
    """The cache key of a debootstrap: sha256 over everything that goes into it."""
    identity = {
        "format": _CACHE_FORMAT,
        "suite": suite,
        "mirror": mirror,
        "variant": variant,
        "packages": sorted(set(packages)),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def debootstrap_rootfs(
    cache_dir: Path,
    *,
    suite: str,
    mirror: str,
    packages: list[str],
    dest: Path,
    variant: str = "minbase",
    log: Path | None = None,
) -> Path:
    """Fill `dest` (absent or empty) with a fresh Debian rootfs and return `dest`.

    The first call for a given (suite, mirror, variant, packages) runs debootstrap and
    caches its result as a tarball; later calls only extract that tarball."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise GoldboxError(f"rootfs destination {dest} is not empty; give an empty or new folder")
    tarball = cached_rootfs_tarball(
        cache_dir, suite=suite, mirror=mirror, packages=packages, variant=variant, log=log
    )
    dest.mkdir(parents=True, exist_ok=True)
    proc.run(["tar", *_TAR_OPTIONS, "-xpf", tarball, "-C", dest], prefix="rootfs", log=log)
    return dest


def cached_rootfs_tarball(
    cache_dir: Path,
    *,
    suite: str,
    mirror: str,
    packages: list[str],
    variant: str = "minbase",
    log: Path | None = None,
) -> Path:
    """Return `<cache>/rootfs/<key>.tar`, running debootstrap first if it is missing.

    A lock file serialises concurrent builders of the same key; the tarball is written
    under a temporary name and renamed, so a half-written one is never used."""
    key = rootfs_key(suite=suite, mirror=mirror, packages=packages, variant=variant)
    store = Path(cache_dir) / "rootfs"
    store.mkdir(parents=True, exist_ok=True)
    tarball = store / f"{key}.tar"
    with cache_lock(store / f"{key}.lock"):
        if tarball.exists():
            return tarball
        build_root = Path(tempfile.mkdtemp(prefix=f"{key}.build-", dir=store))
        # mkdtemp makes a 0700 folder, and that folder becomes the rootfs' "/": a guest
        # whose "/" only root can enter breaks every unprivileged service.
        build_root.chmod(0o755)
        partial = store / f"{key}.tar.partial"
        try:
            # An explicit keyring: debootstrap then refuses a Release that is unsigned or
            # signed by another key, and stops if the keyring is missing (without one it
            # warns and installs unverified packages).
            command = ["debootstrap", f"--variant={variant}", f"--keyring={ARCHIVE_KEYRING}"]
            if packages:
                command.append("--include=" + ",".join(sorted(set(packages))))
            command += [suite, build_root, mirror]
            log = log or store / f"{key}.log"
            proc.run(command, prefix=f"debootstrap {suite}", log=log)
            # Leave no apt downloads in the cache: they are a third of a minbase.
            for deb in (build_root / "var/cache/apt/archives").glob("*.deb"):
                deb.unlink()
            proc.run(["tar", *_TAR_OPTIONS, "-cf", partial, "-C", build_root, "."],
                     prefix="rootfs", log=log)
            partial.rename(tarball)
        finally:
            remove_tree(build_root)
            partial.unlink(missing_ok=True)
    return tarball


def remove_tree(path: Path) -> None:
    """Delete a rootfs folder, first unmounting anything still mounted below it, so a
    leftover bind mount of /dev can never make us delete the host's device nodes."""
    path = Path(path).resolve()
    if not path.exists():
        return
    for target in sorted(_mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", target], check=False)
    shutil.rmtree(path)


def _mounts_under(path: Path) -> list[str]:
    targets = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            # Field 5 is the mount point, with spaces and the like octal-escaped.
            target = line.split()[4].encode().decode("unicode_escape")
            if target == str(path) or target.startswith(f"{path}/"):
                targets.append(target)
    return targets


@contextlib.contextmanager
def chroot_mounts(root: Path) -> Iterator[Path]:
    """Mount proc, sysfs, /dev (bind), devpts and a /dev/shm tmpfs inside `root` for
    the duration of the block; they are unmounted again, in reverse order, even when
    the block raises. Yields `root`."""
    root = Path(root).resolve()
    mounts = [
        (["-t", "proc", "proc"], "proc"),
        (["-t", "sysfs", "sysfs"], "sys"),
        # A private bind: if / were a shared mount, the devpts mounted below would
        # otherwise propagate onto the host's own /dev/pts.
        (["--bind", "--make-private", "/dev"], "dev"),
        (["-t", "devpts", "-o", "newinstance,gid=5,mode=620,ptmxmode=666", "devpts"], "dev/pts"),
        (["-t", "tmpfs", "-o", "mode=1777", "tmpfs"], "dev/shm"),
    ]
    mounted: list[Path] = []
    try:
        for options, relative in mounts:
            target = root / relative
            target.mkdir(parents=True, exist_ok=True)
            result = subprocess.run(["mount", *options, target], capture_output=True, text=True)
            if result.returncode != 0:
                raise GoldboxError(f"cannot mount {target}: {result.stderr.strip()}")
            mounted.append(target)
        yield root
    finally:
        for target in reversed(mounted):
            if subprocess.run(["umount", target], capture_output=True).returncode != 0:
                # Something in the chroot still holds it (a leftover daemon, say).
                subprocess.run(["umount", "--lazy", target], check=False)


# A chroot sees none of the host's environment (PATH into a pyenv, PIP_* settings...).
CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}


def chroot_run(root: Path, command: list[str], *, prefix: str, log: Path | None = None,
               cwd: str = "/") -> None:
    """Run `command` inside `root` (whose mounts the caller set up with chroot_mounts),
    from the chroot's folder `cwd`, with a clean environment; output as proc.run."""
    env_args = [f"{name}={value}" for name, value in CHROOT_ENV.items()]
    proc.run(["chroot", root, "/usr/bin/env", "-i", *env_args,
              "/bin/sh", "-c", 'cd "$0" && exec "$@"', cwd, *command],
             prefix=prefix, log=log)

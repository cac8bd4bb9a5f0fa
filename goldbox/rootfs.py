"""Debian root filesystems from debootstrap, cached as tarballs, and the mounts a chroot
into one needs.

debootstrap takes a minute or more, so each distinct (suite, mirror, variant, packages)
is bootstrapped once and kept as `<cache>/rootfs/<key>.tar`; every caller then gets its
own fresh copy extracted from that tarball in seconds."""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator
from pathlib import Path

from goldbox import proc
from goldbox.arch import architecture, check_foreign_binaries
from goldbox.cache import Cache, Entry, as_cache
from goldbox.errors import GoldboxError

# Bumped when the way a cached tarball is made changes, so old ones are not reused.
_RECIPE = 2  # 2: the rootfs' own "/" is 0755, not mkdtemp's 0700
# Keep owners as numbers (the host's names mean nothing inside the rootfs) and keep
# file capabilities (ping, for one, relies on them).
_TAR_OPTIONS = ["--numeric-owner", "--xattrs", "--xattrs-include=*"]
TARBALL = "rootfs.tar"
ARCHIVE_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

# Mounts for a chroot: made inside a private mount and PID namespace of its own (see
# proc.ISOLATE), so they exist only for the command that needs them and vanish with it.
_CHROOT_MOUNTS = r"""
root=$1; shift
mkdir -p "$root/proc" "$root/sys" "$root/dev"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --bind /dev "$root/dev"
mount -t devpts -o newinstance,gid=5,mode=620,ptmxmode=666 devpts "$root/dev/pts"
mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
chroot "$root" /usr/bin/env -i "$@"
"""


def rootfs_identity(*, suite: str, mirror: str, packages: list[str], variant: str,
                    arch: str = "amd64") -> dict:
    """What goes into a debootstrap (its cache identity). amd64's identity names no
    architecture, so the entries made before there were others stay valid."""
    return {"recipe": _RECIPE, "suite": suite, "mirror": mirror, "variant": variant,
            "packages": sorted(set(packages)), **({} if arch == "amd64" else {"arch": arch})}


def debootstrap_rootfs(
    cache: Cache | Path,
    *,
    suite: str,
    mirror: str,
    packages: list[str],
    dest: Path,
    variant: str = "minbase",
    arch: str = "amd64",
    log: Path | None = None,
) -> Path:
    """Fill `dest` (absent or empty) with a fresh Debian rootfs and return `dest`.

    The first call for a given (suite, mirror, variant, packages) runs debootstrap and
    caches its result as a tarball; later calls only extract that tarball."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise GoldboxError(f"rootfs destination {dest} is not empty; give an empty or new folder")
    entry = cached_rootfs(cache, suite=suite, mirror=mirror, packages=packages,
                          variant=variant, arch=arch, log=log)
    dest.mkdir(parents=True, exist_ok=True)
    proc.run(["tar", *_TAR_OPTIONS, "-xpf", entry.file(TARBALL), "-C", dest], prefix="rootfs",
             log=log)
    return dest


def cached_rootfs(
    cache: Cache | Path,
    *,
    suite: str,
    mirror: str,
    packages: list[str],
    variant: str = "minbase",
    arch: str = "amd64",
    log: Path | None = None,
) -> Entry:
    """The cache entry holding `rootfs.tar` of this debootstrap, run first if needed. A
    foreign `arch` (arm64) runs its binaries through qemu-user (see goldbox.arch)."""
    cache = as_cache(cache)
    identity = rootfs_identity(suite=suite, mirror=mirror, packages=packages, variant=variant,
                               arch=arch)
    check_foreign_binaries(architecture(arch))

    def make(folder: Path) -> None:
        with cache.scratch("debootstrap") as build_root:
            # mkdtemp makes a 0700 folder, and that folder becomes the rootfs' "/": a
            # guest whose "/" only root can enter breaks every unprivileged service.
            build_root.chmod(0o755)
            # An explicit keyring: debootstrap then refuses a Release that is unsigned or
            # signed by another key, and stops if the keyring is missing (without one it
            # warns and installs unverified packages).
            command: list[str | Path] = ["debootstrap", f"--arch={arch}", f"--variant={variant}",
                       f"--keyring={ARCHIVE_KEYRING}"]
            if packages:
                command.append("--include=" + ",".join(sorted(set(packages))))
            command += [suite, build_root, mirror]
            # debootstrap mounts proc and sys in the target: keep them in a namespace.
            proc.run(command, prefix=f"debootstrap {suite}", log=log, isolate=True)
            # Leave no apt downloads in the cache: they are a third of a minbase.
            for deb in (build_root / "var/cache/apt/archives").glob("*.deb"):
                deb.unlink()
            proc.run(["tar", *_TAR_OPTIONS, "-cf", folder / TARBALL, "-C", build_root, "."],
                     prefix="rootfs", log=log)

    named = f"{suite}-{variant}" + ("" if arch == "amd64" else f"-{arch}")
    return cache.ensure("rootfs", identity, make, name=named,
                        summary=f"debootstrap {suite} {variant} {arch} + "
                                f"{len(identity['packages'])} packages")


@contextlib.contextmanager
def chroot_mounts(root: Path) -> Iterator[Path]:
    """For tests that drive a rootfs by hand: proc, sysfs, /dev (bind), devpts and a
    /dev/shm tmpfs mounted inside `root` in the host's namespace for the block, undone in
    reverse order even when the block raises. goldbox itself uses `chroot_run`, whose
    mounts cannot outlive it. Yields `root`."""
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
            result = proc.capture(["mount", *options, target], check=False)
            if result.returncode != 0:
                raise GoldboxError(f"cannot mount {target}: {result.stderr.strip()}")
            mounted.append(target)
        yield root
    finally:
        for target in reversed(mounted):
            if proc.capture(["umount", target], check=False).returncode != 0:
                # Something in the chroot still holds it (a leftover daemon, say).
                proc.capture(["umount", "--lazy", target], check=False)


# A chroot sees none of the host's environment (PATH into a pyenv, PIP_* settings...).
CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}


def chroot_run(root: Path, command: list[str], *, prefix: str, log: Path | None = None,
               cwd: str = "/") -> None:
    """Run `command` inside `root`, from the chroot's folder `cwd`, with a clean
    environment and proc, sys and dev mounted for it alone (in namespaces of its own,
    see proc.ISOLATE); output as proc.run."""
    env_args = [f"{name}={value}" for name, value in CHROOT_ENV.items()]
    root = Path(root).resolve()
    proc.run(["/bin/sh", "-ec", _CHROOT_MOUNTS, "goldbox-chroot", root, *env_args,
              "/bin/sh", "-c", 'cd "$0" && exec "$@"', cwd, *command], prefix=prefix, log=log,
             isolate=True, show=f"chroot {root} {shlex.join(map(str, command))}")

"""debootstrap_rootfs: one real debootstrap, cached, then cheap fresh copies; chroot_mounts."""

import os
import shutil
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from goldbox.cache import identity_key
from goldbox.errors import GoldboxError
from goldbox.files import mounts_under
from goldbox.rootfs import chroot_mounts, chroot_run, debootstrap_rootfs, rootfs_identity
from tests.waiting import wait_until

CACHE = Path(os.environ.get("GOLDBOX_CACHE", "~/.cache/goldbox")).expanduser()
BOOKWORM = {"suite": "bookworm", "mirror": "http://deb.debian.org/debian", "variant": "minbase"}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap and chroot need root")


def rootfs_key(**inputs) -> str:
    return identity_key("rootfs", rootfs_identity(**inputs))


@pytest.mark.unit
def test_key_ignores_package_order_and_duplicates():
    one = rootfs_key(packages=["python3", "iproute2"], **BOOKWORM)
    two = rootfs_key(packages=["iproute2", "python3", "python3"], **BOOKWORM)
    assert one == two
    assert one != rootfs_key(packages=["python3"], **BOOKWORM)
    assert one != rootfs_key(packages=["python3", "iproute2"], **{**BOOKWORM, "suite": "trixie"})


@pytest.mark.slow
def test_debootstrap_once_then_fresh_copies(tmp_path):
    first = debootstrap_rootfs(CACHE, packages=["python3"], dest=tmp_path / "a", **BOOKWORM)
    (first / "etc/marker").write_text("changed in the first copy\n")

    # The second call must extract, not bootstrap: it succeeds with no debootstrap to run.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", "/usr/bin:/bin")
        assert shutil.which("debootstrap") is None
        second = debootstrap_rootfs(CACHE, packages=["python3"], dest=tmp_path / "b",
                                    **BOOKWORM)

    assert not (second / "etc/marker").exists()
    assert stat.S_IMODE(second.stat().st_mode) == 0o755, "the rootfs' / must be 0755"
    assert (second / "etc/debian_version").read_text().startswith("12.")
    assert not list((second / "var/cache/apt/archives").glob("*.deb"))
    version = subprocess.run(["chroot", second, "python3", "--version"],
                             capture_output=True, text=True, check=True)
    assert version.stdout.startswith("Python 3.11")

    with pytest.raises(GoldboxError, match="not empty"):
        debootstrap_rootfs(CACHE, packages=["python3"], dest=second, **BOOKWORM)


@pytest.mark.slow
def test_chroot_mounts_are_undone_even_on_error(tmp_path):
    root = debootstrap_rootfs(CACHE, packages=["python3"], dest=tmp_path / "root", **BOOKWORM)
    with pytest.raises(RuntimeError):
        with chroot_mounts(root):
            for path in ("proc", "sys", "dev", "dev/pts", "dev/shm"):
                assert os.path.ismount(root / path), path
            probe = subprocess.run(
                ["chroot", root, "python3", "-c",
                 "import os, pty; print(len(os.listdir('/proc/self/fd')) > 0); pty.openpty()"],
                capture_output=True, text=True, check=True)
            assert probe.stdout.strip() == "True"
            raise RuntimeError("boom")
    for path in ("proc", "sys", "dev", "dev/pts", "dev/shm"):
        assert not os.path.ismount(root / path), path


@pytest.mark.slow
def test_chroot_run_mounts_are_private_to_the_command(tmp_path):
    """goldbox's own chroot commands mount proc, sys and dev in a namespace of their own:
    the host never sees them, during the command or after it."""
    root = debootstrap_rootfs(CACHE, packages=["python3"], dest=tmp_path / "root", **BOOKWORM)
    # The command says when its mounts are up (/mounted) and holds them until told (/go).
    runner = threading.Thread(target=chroot_run, args=(root, [
        "sh", "-c", "test -c /dev/null && test -e /proc/self/status && test -d /sys/kernel "
                    "&& grep -q ' /dev/pts ' /proc/mounts && touch /mounted "
                    "&& while [ ! -e /go ]; do sleep 0.05; done"]),
        kwargs={"prefix": "test"})
    runner.start()
    try:
        wait_until(lambda: (root / "mounted").exists(), "the chroot command's mounts")
        seen_during = mounts_under(root)
    finally:
        (root / "go").touch()
        runner.join()
    assert seen_during == []
    assert mounts_under(root) == []


def _fake_mirror(root: Path, *, signed_by_a_stranger: bool) -> str:
    """A mirror whose bookworm Release is unsigned, or signed by a throwaway key."""
    dists = root / "mirror/dists/bookworm"
    dists.mkdir(parents=True)
    (dists / "Release").write_text("Suite: stable\nCodename: bookworm\nComponents: main\n"
                                   "Architectures: amd64\nSHA256:\n")
    if signed_by_a_stranger:
        home = root / "gnupg"
        home.mkdir(mode=0o700)
        gpg = ["gpg", "--batch", "--homedir", str(home), "--pinentry-mode", "loopback",
               "--passphrase", ""]
        subprocess.run([*gpg, "--quick-gen-key", "stranger@example.invalid", "ed25519",
                        "sign", "never"], check=True, capture_output=True)
        subprocess.run([*gpg, "--detach-sign", "--armor", "-o", str(dists / "Release.gpg"),
                        str(dists / "Release")], check=True, capture_output=True)
        # gpg started an agent for that home: it must not outlive the test.
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
                       check=False, capture_output=True)
    return f"file://{root / 'mirror'}"


@pytest.mark.parametrize(("signed_by_a_stranger", "why"), [
    (False, "Failed getting release signature file"),
    (True, "Release signed by unknown key"),
])
def test_debootstrap_refuses_an_unverified_release(tmp_path, signed_by_a_stranger, why):
    mirror = _fake_mirror(tmp_path, signed_by_a_stranger=signed_by_a_stranger)
    with pytest.raises(GoldboxError) as caught:
        debootstrap_rootfs(tmp_path / "cache", suite="bookworm", mirror=mirror, packages=[],
                           dest=tmp_path / "rootfs")
    assert "--keyring=/usr/share/keyrings/debian-archive-keyring.gpg" in str(caught.value)
    assert why in str(caught.value)
    assert not [p for p in (tmp_path / "cache/rootfs").iterdir() if p.is_dir()]

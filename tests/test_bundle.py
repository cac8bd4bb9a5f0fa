"""The CPython bundle and the uWSGI wheel, compiled natively in a bookworm chroot, then
used in a fresh chroot that has only the platform's runtime packages."""

import json
import os
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from goldbox import PROJECT_ROOT
from goldbox.artifacts import ArtifactCache
from goldbox.bundle import (
    ReleaseChroot,
    build_cpython_bundle,
    build_native_wheel,
    prefix_of,
)
from goldbox.config import load_config
from goldbox.rootfs import chroot_run, debootstrap_rootfs
from goldbox.sources import fetch_tarball

CACHE = Path(os.environ.get("GOLDBOX_CACHE", "~/.cache/goldbox")).expanduser()
PLATFORM = tomllib.loads((PROJECT_ROOT / "platforms/debian-12.toml").read_text())
CPYTHON_SHA256 = PLATFORM["python"]["sha256"]
UWSGI_URL = ("https://files.pythonhosted.org/packages/24/c2/"
             "d58480aadc9a1f420dd96fc43cf0dcd8cb5ededb95cab53743529c23b6cd/uwsgi-2.0.28.tar.gz")
UWSGI_SHA256 = "79ca1891ef2df14508ab0471ee8c0eb94bd2d51d03f32f90c4bbe557ab1e99d0"


def test_prefix_follows_the_configure_flags():
    assert prefix_of([]) == "/usr/local"
    assert prefix_of(["--prefix=/opt/py/", "--with-lto"]) == "/opt/py"


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap and chroot need root")
def test_bundle_and_uwsgi_wheel_work_in_a_fresh_runtime_chroot(tmp_path):
    source = PLATFORM["source"]
    release = ReleaseChroot(source["suite"], source["mirror"],
                            tuple(PLATFORM["packages"]["build"]))
    version = PLATFORM["python"]["version"]
    cache = ArtifactCache(CACHE)
    tarball, _ = fetch_tarball(cache, load_config().platform("debian-12"),
                               f"Python-{version}.tar.xz")

    started = time.monotonic()
    bundle = build_cpython_bundle(
        CACHE, platform="debian-12", release=release, python_version=version,
        tarball=tarball, tarball_sha256=CPYTHON_SHA256,
        configure_flags=PLATFORM["python"]["configure_flags"], log=tmp_path / "build.log")
    print(f"bundle: {time.monotonic() - started:.1f} s, "
          f"{bundle.path.stat().st_size / 1e6:.1f} MB, {bundle.path}")

    sdist = cache.ensure(UWSGI_URL, UWSGI_SHA256, "uwsgi-2.0.28.tar.gz")
    started = time.monotonic()
    wheel = build_native_wheel(CACHE, release=release, bundle=bundle, python_version=version,
                               sdist=sdist, sdist_sha256=UWSGI_SHA256,
                               log=tmp_path / "build.log")
    print(f"uwsgi wheel: {time.monotonic() - started:.1f} s, {wheel.path.name} {wheel.sha256}")
    assert wheel.path.name.startswith("uwsgi-2.0.28-cp313-cp313-linux_x86_64")

    runtime = [name for name in PLATFORM["packages"]["runtime"] if name != "nginx"]
    root = debootstrap_rootfs(CACHE, suite=release.suite, mirror=release.mirror,
                              packages=runtime, dest=tmp_path / "guest")
    subprocess.run(["tar", "-xzf", bundle.path, "-C", root], check=True)
    (root / "tmp/wheels").mkdir(parents=True)
    subprocess.run(["cp", wheel.path, root / "tmp/wheels"], check=True)
    provenance = json.loads(
        (root / "usr/local/share/goldbox/cpython-build.json").read_text())
    assert provenance["tarball_sha256"] == CPYTHON_SHA256
    assert provenance["configure_flags"] == PLATFORM["python"]["configure_flags"]
    assert "provision" in provenance["built_with"]
    assert not (root / "usr/local/src/goldbox-python").exists()
    assert not (root / "usr/local/lib/python3.13/test").exists()

    python = "/usr/local/bin/python3.13"
    probe = tmp_path / "probe.log"  # chroot_run mounts proc, sys and dev for each command
    chroot_run(root, [python, "-c",
                      "import ssl, sqlite3, bz2, lzma, ctypes, zlib, readline, _uuid, sys; "
                      "print(sys.version); print(ssl.OPENSSL_VERSION)"],
               prefix="probe", log=probe)
    chroot_run(root, [python, "-m", "venv", "/tmp/env"], prefix="venv", log=probe)
    chroot_run(root, ["/tmp/env/bin/pip", "install", "--no-index", "--find-links",
                      "/tmp/wheels", "uwsgi"], prefix="install", log=probe)
    chroot_run(root, ["/tmp/env/bin/uwsgi", "--version"], prefix="uwsgi", log=probe)
    output = probe.read_text()
    assert version in output and "OpenSSL 3." in output
    assert "\n2.0.28\n" in output

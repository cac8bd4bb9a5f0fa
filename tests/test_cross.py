"""arm64's CPython, uWSGI wheel and app virtualenv, cross-compiled on this amd64 host
(goldbox/cross.py), then run for real on arm64 userland: in a fresh copy of the rootfs the
arm64 base disk is made of, through qemu-user (binfmt_misc). uWSGI serves the app's
`Hello!` from there over loopback."""

import os
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest
import requests

from goldbox.arch import ARM64
from goldbox.basedisk import base_disk_identity
from goldbox.bundle import build_app_env, build_cpython_bundle, build_native_wheel
from goldbox.cache import Cache
from goldbox.catalog.serve import free_port
from goldbox.config import load_config
from goldbox.image_artifacts import ensure_tarball, prepare_wheelhouse
from goldbox.native import release_of
from goldbox.plan import Prebuilt, StagedFile, app_section, python_section
from goldbox.requirements import check_sdist
from goldbox.rootfs import chroot_run, debootstrap_rootfs

CACHE = Path(os.environ.get("GOLDBOX_CACHE", "~/.cache/goldbox")).expanduser()
EM_AARCH64 = 183  # ELF e_machine


def _elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return int.from_bytes(header[18:20], "little")


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap and chroot need root")
def test_cross_built_cpython_uwsgi_and_app_env_serve_hello_on_arm64(tmp_path):
    config = load_config()
    platform = config.platform("debian-13")
    cache = Cache(CACHE)
    log = tmp_path / "build.log"
    tarball, _ = ensure_tarball(config, platform, cache)
    python = platform.python
    inputs = dict(platform=platform.name, python_version=python.version, tarball=tarball,
                  tarball_sha256=python.sha256, configure_flags=list(python.configure_flags),
                  log=log)
    # The build Python: the platform's own amd64 bundle (the e2e's, when it ran first).
    build_python = build_cpython_bundle(cache, release=release_of(platform), **inputs)
    release = release_of(platform, "arm64")

    timings = {}
    started = time.monotonic()
    bundle = build_cpython_bundle(cache, release=release, build_python=build_python, **inputs)
    timings["cpython"] = time.monotonic() - started
    assert bundle.path.name == f"cpython-{python.version}-debian-13-arm64.tar.gz"

    wheelhouse = tmp_path / "wheelhouse"
    files = prepare_wheelhouse(config, platform, wheelhouse, log, cache, arch=ARM64)
    assert any(f.name.startswith("markupsafe-") and "aarch64" in f.name for f in files)
    assert not any("x86_64" in f.name for f in files)
    requirements = config.app_dir / python.requirements
    sdist = next(wheelhouse.glob("uwsgi-*.tar.gz"))
    started = time.monotonic()
    wheel = build_native_wheel(cache, release=release, bundle=bundle,
                               python_version=python.version, sdist=sdist,
                               sdist_sha256=check_sdist(requirements, sdist), log=log,
                               build_python=build_python)
    timings["uwsgi"] = time.monotonic() - started
    assert wheel.path.name.endswith("-cp313-cp313-linux_aarch64.whl"), wheel.path.name
    (wheelhouse / wheel.path.name).write_bytes(wheel.path.read_bytes())

    started = time.monotonic()
    staged = StagedFile(f"wheelhouse/{wheel.path.name}", wheel.sha256)
    env = build_app_env(cache, platform=platform.name, release=release, bundle=bundle,
                        python=python_section(platform, None),
                        app=app_section(config, platform, Prebuilt(wheels=[staged])),
                        app_dir=config.app_dir, wheelhouse=wheelhouse, log=log)
    timings["app env"] = time.monotonic() - started
    print("cross builds (s, 0 when cached):",
          ", ".join(f"{name} {seconds:.1f}" for name, seconds in timings.items()))

    # The guest's userland: the arm64 base disk's own rootfs (cached by its build), with
    # the bundle and the app's virtualenv unpacked as the golden build unpacks them.
    identity = base_disk_identity(platform, arch=ARM64)
    root = debootstrap_rootfs(cache, suite=identity["suite"], mirror=identity["mirror"],
                              packages=identity["packages"], dest=tmp_path / "guest",
                              arch="arm64")
    for archive in (bundle.path, env.path):
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="fully_trusted")
    app_root = config.project.app.root
    subprocess.run(["cp", "-a", f"{config.app_dir}/.", f"{root}{app_root}/"], check=True)
    interpreter = root / f"usr/local/bin/python{python.version.rsplit('.', 1)[0]}"
    assert _elf_machine(interpreter) == EM_AARCH64
    assert _elf_machine(root / app_root.lstrip("/") / "env/bin/uwsgi") == EM_AARCH64

    probe = tmp_path / "probe.log"
    chroot_run(root, [f"/{interpreter.relative_to(root)}", "-c",
                      "import platform, ssl, sqlite3, bz2, lzma, ctypes, zlib, readline, _uuid;"
                      " print(platform.machine(), platform.python_version());"
                      " print(ssl.OPENSSL_VERSION)"], prefix="probe", log=probe)
    # pip in the bundle, as in amd64's (ensurepip, by `make altinstall`).
    chroot_run(root, [f"/{interpreter.relative_to(root)}", "-m", "pip", "--version"],
               prefix="probe", log=probe)
    chroot_run(root, [f"{app_root}/env/bin/python", "-c",
                      "import flask, markupsafe._speedups; print('flask', flask.__version__)"],
               prefix="probe", log=probe)
    output = probe.read_text()
    assert f"aarch64 {python.version}" in output and "OpenSSL 3." in output
    assert "flask 3." in output
    assert f"(python {python.version.rsplit('.', 1)[0]})" in output  # pip's --version line

    # uWSGI (aarch64, through qemu-user) serves the app over loopback.
    port = free_port()
    served = threading.Thread(target=lambda: _serve(root, app_root, port, tmp_path),
                              daemon=True)
    served.start()
    deadline, answer = time.monotonic() + 120, None
    while time.monotonic() < deadline and answer is None:
        try:
            answer = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
        except requests.ConnectionError:
            time.sleep(1)
    try:
        assert answer is not None, (tmp_path / "uwsgi.log").read_text()[-2000:]
        assert answer.status_code == 200 and answer.text.strip() == "Hello!"
    finally:
        subprocess.run(["pkill", "-f", f"uwsgi --http-socket 127.0.0.1:{port}"], check=False)
        served.join(30)


def _serve(root: Path, app_root: str, port: int, tmp_path: Path) -> None:
    try:
        chroot_run(root, [f"{app_root}/env/bin/uwsgi", "--http-socket", f"127.0.0.1:{port}",
                          "--chdir", app_root, "--module", "WSGI:app", "--master",
                          "--processes", "1", "--die-on-term"],
                   prefix="uwsgi", log=tmp_path / "uwsgi.log")
    except Exception:  # killed at the end of the test: its log says the rest
        pass

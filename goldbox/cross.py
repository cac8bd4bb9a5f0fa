"""Compiling for a foreign architecture (arm64) on this amd64 host, with Debian's cross
toolchain: CPython, uWSGI's wheel, and the chroot the app's virtualenv is made in.

Measured here (docs/platforms.md, "Compiling for aarch64"): the cross compiler is ~10x
faster than the target's own gcc run through qemu-user, so goldbox cross-compiles.

The chroot is an amd64 one of the guest's release (the same cached debootstrap as the
native build's) with the architecture added: `dpkg --add-architecture arm64`, then
`crossbuild-essential-arm64` and the build packages' `-dev:arm64` (multiarch: the
target's headers and libraries beside the host's). In it:
- CPython is configured `--host=aarch64-linux-gnu --with-build-python=...`: a cross
  build needs a CPython of the same version that runs here, which is the platform's own
  amd64 bundle, unpacked under BUILD_PYTHON (CPython finds its library from where its
  binary is). It installs with DESTDIR, so nothing of the host's is in its tree.
- An extension module (uWSGI) is built by that build Python reading the target's
  sysconfig (`wheel_env`): the compiler, flags and headers of the aarch64 CPython, and
  the wheel tagged linux_aarch64.
- What has to run for the target (the app's virtualenv: `python -m venv`, pip) runs
  there as well, through qemu-user (binfmt_misc), on the target's shared libraries that
  the -dev packages brought in."""

from __future__ import annotations

import os
from pathlib import Path

from goldbox import proc
from goldbox.arch import AMD64, Architecture, check_foreign_binaries, host_architecture
from goldbox.errors import GoldboxError
from goldbox.rootfs import chroot_run

# Inside the chroot: the amd64 CPython that runs the cross build, the source tree, and
# the tree `make altinstall` installs into.
WORK = "/opt/goldbox-cross"
BUILD_PYTHON = f"{WORK}/build-python"
DESTDIR = f"{WORK}/dest"
# What ./configure cannot find out without running a target binary (CPython's own
# cross-build notes; Debian's cross builds answer the same).
CONFIG_SITE = """\
ac_cv_file__dev_ptmx=yes
ac_cv_file__dev_ptc=no
ac_cv_buggy_getaddrinfo=no
"""


def check_cross_host(arch: Architecture) -> None:
    """A cross build runs on an amd64 host for a foreign `arch` whose binaries this host
    can run (the app's virtualenv needs that): one error line otherwise."""
    host = host_architecture()
    if host is not AMD64:
        raise GoldboxError(f"cross-compiling for {arch.name} needs an amd64 host (Debian's "
                           f"crossbuild-essential-{arch.name}); this host is {host.name}")
    check_foreign_binaries(arch)


def add_toolchain(root: Path, arch: Architecture, build_packages: list[str],
                  log: Path | None) -> None:
    """The cross toolchain and the target's -dev packages, installed in the amd64 rootfs
    `root` from its release's mirror."""
    packages = arch.cross_packages(build_packages)
    print(f"[cross] adding the {arch.name} toolchain: {' '.join(packages)}", flush=True)
    chroot_run(root, ["dpkg", "--add-architecture", arch.name], prefix="cross", log=log)
    chroot_run(root, ["apt-get", "update", "-q"], prefix="cross", log=log)
    chroot_run(root, ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
               prefix="cross", log=log)


def _pkg_config_libdir(arch: Architecture) -> str:
    """pkg-config's search path for the target's libraries (there is no
    <triplet>-pkg-config wrapper in the toolchain)."""
    return f"/usr/lib/{arch.gnu_type}/pkgconfig:/usr/share/pkgconfig"


def compile_cpython(root: Path, arch: Architecture, *, build_python_bundle: Path,
                    tarball: Path, python_version: str, prefix: str,
                    configure_flags: list[str], log: Path | None) -> None:
    """CPython `python_version` from `tarball`, configured with `configure_flags` for
    `arch`, installed (`make altinstall`) at `prefix` in the chroot `root`, with its pip."""
    work = root / WORK.lstrip("/")
    (work / "src").mkdir(parents=True)
    (work / "build-python").mkdir()
    proc.run(["tar", "--numeric-owner", "-xzf", build_python_bundle, "-C",
              work / "build-python"], prefix="cross", log=log)
    xy = ".".join(python_version.split(".")[:2])
    build_python = f"{BUILD_PYTHON}{prefix}/bin/python{xy}"
    chroot_run(root, [build_python, "-c", "import sys; assert sys.version_info[:2] == "
                      f"{tuple(int(part) for part in xy.split('.'))}"],
               prefix="cross", log=log)
    proc.run(["tar", "-xf", tarball, "-C", work / "src"], prefix="cross", log=log)
    (work / "config.site").write_text(CONFIG_SITE)
    source = f"{WORK}/src/Python-{python_version}"
    if not (root / source.lstrip("/") / "configure").is_file():
        raise GoldboxError(f"{tarball.name}: no Python-{python_version}/configure in it")
    env = ["env", f"PKG_CONFIG_LIBDIR={_pkg_config_libdir(arch)}",
           f"CONFIG_SITE={WORK}/config.site"]
    host = AMD64.gnu_type
    chroot_run(root, [*env, "./configure", *configure_flags, f"--build={host}",
                      f"--host={arch.gnu_type}", f"--with-build-python={build_python}"],
               prefix="cpython", log=log, cwd=source)
    chroot_run(root, [*env, "make", f"-j{os.cpu_count() or 1}"], prefix="cpython", log=log,
               cwd=source)
    # Installed into DESTDIR without pip: the build Python's ensurepip would put pip in
    # its own prefix, with its own path in pip's script.
    chroot_run(root, [*env, "make", "altinstall", f"DESTDIR={DESTDIR}", "ENSUREPIP=no"],
               prefix="cpython", log=log, cwd=source)
    # The tree at its prefix in the chroot (empty there: the build Python is under WORK),
    # then pip installed by its own ensurepip, run through qemu-user, as `make altinstall`
    # does on a native build.
    proc.run(["cp", "-a", f"{root}{DESTDIR}{prefix}/.", f"{root}{prefix}/"], prefix="cpython",
             log=log)
    chroot_run(root, [f"{prefix}/bin/python{xy}", "-m", "ensurepip", "--altinstall"],
               prefix="cpython", log=log)


def strip_command(arch: Architecture) -> str:
    """The toolchain's strip for `arch`'s binaries."""
    return f"{arch.gnu_type}-strip"


def wheel_env(arch: Architecture, *, prefix: str, python_version: str) -> list[str]:
    """`env` arguments under which the build Python (BUILD_PYTHON) compiles an extension
    for the target CPython installed at `prefix` in the chroot: the target's sysconfig
    (its compiler, flags, headers and libpython) and its platform tag for the wheel."""
    xy = ".".join(python_version.split(".")[:2])
    return ["env", f"_PYTHON_SYSCONFIGDATA_NAME=_sysconfigdata__linux_{arch.gnu_type}",
            f"_PYTHON_HOST_PLATFORM=linux-{arch.uname_machine}",
            f"PYTHONPATH={prefix}/lib/python{xy}",
            f"PKG_CONFIG_LIBDIR={_pkg_config_libdir(arch)}"]

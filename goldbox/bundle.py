"""CPython (and uWSGI) compiled natively on the host, in a chroot of the guest's release.

Under TCG a compile inside the guest is ~11x slower, so for platforms with a
debootstrap path goldbox builds CPython from the verified source tarball in a chroot
of the same release, with the guest's own code (`python3 -m provision plan.json --only
python`), and ships the installed prefix as a bundle (plan key `python.bundle`); the
guest only unpacks it. The uWSGI sdist is compiled the same way into a wheel (plan key
`app.local_wheels`).

A bundle is a .tar.gz whose members are relative to `/` (`usr/local/bin/python3.13`,
...): the guest extracts it with `tar -xzf <bundle> -C /`. It carries its provenance
in `<prefix>/share/goldbox/cpython-build.json`."""

from __future__ import annotations

import contextlib
import datetime
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from goldbox import cross, proc
from goldbox.arch import architecture
from goldbox.artifacts import ArtifactCache
from goldbox.cache import Cache, as_cache
from goldbox.chroot_provision import STAGE, plan_head, provision_in_chroot
from goldbox.errors import GoldboxError
from goldbox.files import remove_tree, sha256_file
from goldbox.recipe import goldbox_code, provision_code
from goldbox.rootfs import chroot_run, debootstrap_rootfs

# The goldbox code that makes the native build's entries (the policy: goldbox/recipe.py).
_CODE = ("bundle", "chroot_provision", "rootfs")
# Where provision's python step unpacks and builds the source: not part of the bundle.
_PROVISION_SOURCE_DIR = "usr/local/src/goldbox-python"
PROVENANCE = "share/goldbox/cpython-build.json"
# What `make altinstall` installs that a deployed interpreter never uses: the test
# suite (140 MB of the 396 MB tree).
_PRUNED = ["lib/python{xy}/test"]
# The build backend for sdists such as uWSGI's: (url, sha256, filename).
SETUPTOOLS = (
    "https://files.pythonhosted.org/packages/a3/dc/"
    "17031897dae0efacfea57dfd3a82fdd2a2aeb58e0ff71b77b87e44edc772/setuptools-80.9.0-py3-none-any.whl",
    "062d34222ad13e0cc312a4c02d73f059e86a4acbfbdea8f8f76b28c99f306922",
    "setuptools-80.9.0-py3-none-any.whl",
)


@dataclass(frozen=True)
class BuiltFile:
    """A file goldbox built on the host, with the sha256 the plan carries for it."""

    path: Path
    sha256: str


@dataclass(frozen=True)
class ReleaseChroot:
    """The Debian release a platform's guest runs, as debootstrap needs it; `packages`
    are what the build needs on top of minbase (the platform's build packages). For a
    foreign `arch` (arm64) the chroot is still amd64, with the cross toolchain added
    (goldbox/cross.py)."""

    suite: str
    mirror: str
    packages: tuple[str, ...]
    arch: str = "amd64"

    @property
    def cross(self) -> bool:
        return self.arch != "amd64"

    def arch_identity(self) -> dict:
        """The architecture in a cache identity: nothing for amd64, so the entries made
        before there were others stay valid; for another, the cross build's code too."""
        return {} if not self.cross else {"arch": self.arch, "cross": goldbox_code("cross")}

    def label(self, platform: str) -> str:
        """`platform`, and the architecture unless amd64: names of entries and files."""
        return platform if self.arch == "amd64" else f"{platform}-{self.arch}"


def prefix_of(configure_flags: list[str]) -> str:
    """The install prefix `./configure` will use (its default is /usr/local)."""
    prefix = "/usr/local"
    for flag in configure_flags:
        if flag.startswith("--prefix="):
            prefix = flag.removeprefix("--prefix=").rstrip("/")
    return prefix


def bundle_identity(*, platform: str, release: ReleaseChroot, python_version: str,
                    tarball_sha256: str, configure_flags: list[str]) -> dict:
    """What goes into a CPython bundle (its cache identity)."""
    return {
        "code": goldbox_code(*_CODE),
        "platform": platform,
        "suite": release.suite,
        "mirror": release.mirror,
        **release.arch_identity(),
        "packages": sorted(set(release.packages)),
        "python_version": python_version,
        "tarball_sha256": tarball_sha256,
        "configure_flags": configure_flags,
        # provision's python step builds it: a change to that step rebuilds, one to
        # another step does not.
        "provision": provision_code(["python"]),
    }


def build_cpython_bundle(cache: Cache | Path, *, platform: str, release: ReleaseChroot,
                         python_version: str, tarball: Path, tarball_sha256: str,
                         configure_flags: list[str], log: Path | None = None,
                         build_python: BuiltFile | None = None) -> BuiltFile:
    """Return the cached bundle of CPython `python_version` for `platform`, building it
    first if needed: provision's python step (`./configure <flags>`, `make`, `make
    altinstall`) in a fresh chroot of `release`, from `tarball` (checked against
    `tarball_sha256` here and again by provision). For a foreign architecture it is
    cross-compiled instead (goldbox/cross.py), with `build_python`: the amd64 bundle of
    the same CPython."""
    cache = as_cache(cache)
    identity = bundle_identity(platform=platform, release=release,
                               python_version=python_version, tarball_sha256=tarball_sha256,
                               configure_flags=configure_flags)
    if release.cross:
        if build_python is None:
            raise GoldboxError(f"CPython {python_version} for {release.arch}: a cross build "
                               "needs the amd64 bundle of the same version to run it")
        identity["build_python"] = build_python.sha256
    name = f"cpython-{python_version}-{release.label(platform)}.tar.gz"
    prefix = prefix_of(configure_flags)

    def make(folder: Path) -> None:
        _verify(tarball, tarball_sha256)
        with _scratch_rootfs(cache, release, log) as root:
            if build_python is not None and release.cross:
                _verify(build_python.path, build_python.sha256)
                cross.compile_cpython(
                    root, architecture(release.arch), build_python_bundle=build_python.path,
                    tarball=tarball, python_version=python_version, prefix=prefix,
                    configure_flags=configure_flags, log=log)
                how = {"built_in": f"debootstrap {release.suite} amd64 chroot, "
                                   f"{release.arch} cross toolchain",
                       "built_with": "./configure --host=" +
                                     f"{architecture(release.arch).gnu_type} (goldbox/cross.py)"}
            else:
                _compile_cpython(root, platform=platform, tarball=tarball,
                                 tarball_sha256=tarball_sha256, python_version=python_version,
                                 configure_flags=configure_flags, log=log)
                how = {"built_in": f"debootstrap {release.suite} {release.arch} chroot",
                       "built_with": "python3 -m provision plan.json --only python"}
            _prune(root / prefix.lstrip("/"), python_version)
            _strip_debug(root, prefix, python_version, release, log)
            _write_provenance(root / prefix.lstrip("/") / PROVENANCE, {
                "python_version": python_version,
                "tarball": tarball.name,
                "tarball_sha256": tarball_sha256,
                "configure_flags": configure_flags,
                "platform": platform,
                "arch": release.arch,
                **how,
                "build_date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "pruned": [p.format(xy=_xy(python_version)) for p in _PRUNED],
                "stripped": "debug sections (strip --strip-debug)",
            })
            proc.run(["tar", "--numeric-owner", "-czf", folder / name, "-C", root,
                      prefix.lstrip("/")], prefix="bundle", log=log)

    entry = cache.ensure("bundle", identity, make, name=release.label(platform),
                         summary=f"CPython {python_version} for {release.label(platform)} "
                                 f"({release.suite})")
    return BuiltFile(entry.file(name), entry.sha256(name))


def build_native_wheel(cache: Cache | Path, *, release: ReleaseChroot, bundle: BuiltFile,
                       python_version: str, sdist: Path, sdist_sha256: str,
                       log: Path | None = None,
                       build_python: BuiltFile | None = None) -> BuiltFile:
    """Return a cached wheel compiled from `sdist` (e.g. uWSGI's) with the bundle's own
    CPython, in a chroot of `release` with the bundle unpacked: the guest then installs
    it without a compiler. The sdist is checked against `sdist_sha256` first. For a
    foreign architecture `build_python` (the amd64 bundle of the same CPython) runs the
    build, reading the bundle's sysconfig (goldbox/cross.py)."""
    cache = as_cache(cache)
    setuptools = ArtifactCache(cache).ensure(*SETUPTOOLS)
    identity = {"code": goldbox_code(*_CODE), "bundle": bundle.sha256, "sdist": sdist_sha256,
                "setuptools": setuptools.name,
                "packages": sorted(set(release.packages)), "suite": release.suite,
                **release.arch_identity()}
    if release.cross:
        if build_python is None:
            raise GoldboxError(f"{sdist.name} for {release.arch}: a cross build needs the "
                               "amd64 bundle of the same CPython to run it")
        identity["build_python"] = build_python.sha256

    def make(folder: Path) -> None:
        _verify(sdist, sdist_sha256)
        with _scratch_rootfs(cache, release, log) as root:
            proc.run(["tar", "--numeric-owner", "-xzf", bundle.path, "-C", root],
                     prefix="wheel", log=log)
            stage = root / STAGE.lstrip("/")
            (stage / "wheels").mkdir(parents=True)
            for source in (sdist, setuptools):
                shutil.copyfile(source, stage / source.name)
            # No network in the chroot: the build backend comes pinned from the host's
            # verified cache, into a throwaway venv.
            python, env = f"/usr/local/bin/python{_xy(python_version)}", []
            if build_python is not None and release.cross:
                _verify(build_python.path, build_python.sha256)
                proc.run(["tar", "--numeric-owner", "-xzf", build_python.path, "-C",
                          _make_dirs(root / cross.BUILD_PYTHON.lstrip("/"))],
                         prefix="wheel", log=log)
                python = f"{cross.BUILD_PYTHON}{python}"
                env = cross.wheel_env(architecture(release.arch), prefix="/usr/local",
                                      python_version=python_version)
            chroot_run(root, [python, "-m", "venv", "build-env"], prefix="wheel", log=log,
                       cwd=STAGE)
            chroot_run(root, ["build-env/bin/pip", "install", "--no-index", "--no-deps",
                              "--disable-pip-version-check", setuptools.name],
                       prefix="wheel", log=log, cwd=STAGE)
            chroot_run(root, [*env, "build-env/bin/pip", "wheel", "--no-deps", "--no-index",
                              "--no-build-isolation", "--disable-pip-version-check",
                              "--wheel-dir", "wheels", sdist.name],
                       prefix=f"wheel {sdist.name}", log=log, cwd=STAGE)
            built = sorted((stage / "wheels").glob("*.whl"))
            if len(built) != 1:
                raise GoldboxError(f"pip wheel {sdist.name} produced {len(built)} wheels, "
                                   "expected 1")
            shutil.copyfile(built[0], folder / built[0].name)

    entry = cache.ensure("native-wheel", identity, make, name=sdist.name,
                         summary=f"{sdist.name} for CPython {python_version} ({release.suite})")
    return BuiltFile(entry.file(), entry.sha256())


def build_app_env(cache: Cache | Path, *, platform: str, release: ReleaseChroot,
                  bundle: BuiltFile, python: dict, app: dict, app_dir: Path,
                  wheelhouse: Path, log: Path | None = None) -> BuiltFile:
    """Return a cached tarball of the app's virtualenv (`<app root>/env`), made by
    provision's own app step in a chroot of `release` with the bundle's CPython, from the
    hash-pinned wheelhouse: the guest then unpacks it instead of running pip under TCG.
    `python` and `app` are the plan's sections; the app's code is not in the tarball."""
    cache = as_cache(cache)
    app = {**app, "env_bundle": None}
    requirements = app_dir / Path(app["requirements"]).relative_to(app["source"])
    identity = {
        "code": goldbox_code(*_CODE), "platform": platform, "bundle": bundle.sha256,
        "suite": release.suite, "packages": sorted(set(release.packages)),
        **release.arch_identity(),
        "requirements": sha256_file(requirements),
        "wheelhouse": {path.name: sha256_file(path)
                       for path in sorted(wheelhouse.iterdir()) if path.is_file()},
        "app": {key: value for key, value in app.items() if key != "source"},
        # provision's app step makes it: a change to that step rebuilds.
        "provision": provision_code(["app"]),
    }
    name = f"app-env-{release.label(platform)}.tar.gz"

    def make(folder: Path) -> None:
        _verify(bundle.path, bundle.sha256)
        with _scratch_rootfs(cache, release, log) as root:
            proc.run(["tar", "--numeric-owner", "-xzf", bundle.path, "-C", root],
                     prefix="app env", log=log)
            provision_in_chroot(root, {**plan_head(platform), "python": python, "app": app},
                                ["app"], label="the native app env's plan", prefix="app env",
                                files={app["source"]: app_dir, app["wheelhouse"]: wheelhouse},
                                log=log)
            env = Path(app["root"].lstrip("/")) / "env"
            proc.run(["tar", "--numeric-owner", "-czf", folder / name, "-C", root, env],
                     prefix="app env", log=log)

    entry = cache.ensure("app-env", identity, make, name=release.label(platform),
                         summary=f"the app's virtualenv for {release.label(platform)} "
                                 f"({release.suite})")
    return BuiltFile(entry.file(name), entry.sha256(name))


def _make_dirs(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _xy(python_version: str) -> str:
    return ".".join(python_version.split(".")[:2])


def _verify(path: Path, sha256: str) -> None:
    actual = sha256_file(path)
    if actual != sha256.lower():
        raise GoldboxError(f"{path}: sha256 mismatch, expected {sha256.lower()}, got {actual}")


@contextlib.contextmanager
def _scratch_rootfs(cache: Cache, release: ReleaseChroot, log: Path | None) -> Iterator[Path]:
    """A fresh rootfs of `release` in a scratch folder, removed afterwards: for a foreign
    architecture, an amd64 one with its cross toolchain (goldbox/cross.py)."""
    if release.cross:
        cross.check_cross_host(architecture(release.arch))
    with cache.scratch("chroot") as scratch:
        root = debootstrap_rootfs(cache, suite=release.suite, mirror=release.mirror,
                                  # provision runs on the release's own python3
                                  packages=[*release.packages, "python3"],
                                  dest=scratch / "root", log=log)
        if release.cross:
            cross.add_toolchain(root, architecture(release.arch), list(release.packages), log)
        yield root


def _compile_cpython(root: Path, *, platform: str, tarball: Path, tarball_sha256: str,
                     python_version: str, configure_flags: list[str],
                     log: Path | None) -> None:
    """Build and install CPython in the chroot the way a guest does: provision's own
    python step (configure, make, make altinstall), from a plan that has only it."""
    prefix = prefix_of(configure_flags)
    plan = {
        **plan_head(platform),
        "python": {
            "version": python_version,
            "prefix": prefix,
            "binary": f"{prefix}/bin/python{_xy(python_version)}",
            "tarball": tarball.name,
            "sha256": tarball_sha256,
            "configure_flags": configure_flags,
            "bundle": None,
            "pip_bootstrap": None,
        },
    }
    provision_in_chroot(root, plan, ["python"], label="the native build's plan",
                        prefix="cpython", files={tarball.name: tarball}, log=log)
    remove_tree(root / _PROVISION_SOURCE_DIR)


def _prune(prefix_dir: Path, python_version: str) -> None:
    xy = _xy(python_version)
    for pattern in _PRUNED:
        for path in prefix_dir.glob(pattern.format(xy=xy)):
            shutil.rmtree(path)
    # The static libpython is installed twice (67 MB each); C extensions such as uWSGI
    # link the one in lib/, so the copy in config-X.Y-*/ becomes a link to it.
    for copy in prefix_dir.glob(f"lib/python{xy}/config-{xy}-*/libpython{xy}.a"):
        copy.unlink()
        copy.symlink_to(f"../../libpython{xy}.a")


def _strip_debug(root: Path, prefix: str, python_version: str, release: ReleaseChroot,
                 log: Path | None) -> None:
    """Drop the DWARF debug sections `make altinstall` leaves in the interpreter, the
    static libpython and the extension modules (~100 MB of the box's 600), keeping their
    symbols: uWSGI still links the static library. The chroot's own binutils do it (the
    cross toolchain's for a foreign architecture)."""
    xy = _xy(python_version)
    tree = root / prefix.lstrip("/")
    files = [tree / f"bin/python{xy}", tree / f"lib/libpython{xy}.a",
             *sorted((tree / f"lib/python{xy}/lib-dynload").glob("*.so"))]
    strip = cross.strip_command(architecture(release.arch)) if release.cross else "strip"
    chroot_run(root, [strip, "--strip-debug",
                      *(f"/{path.relative_to(root)}" for path in files if path.is_file())],
               prefix="cpython", log=log)


def _write_provenance(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")

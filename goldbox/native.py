"""The native build phase of `invoke image`: CPython, uWSGI's wheel and the app's
virtualenv compiled in a chroot of the release (goldbox/bundle.py), and the record of
what it made, so `invoke render` can render the plan `invoke image` builds with."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from goldbox.bundle import (
    BuiltFile,
    ReleaseChroot,
    build_app_env,
    build_cpython_bundle,
    build_native_wheel,
    bundle_identity,
)
from goldbox.config import DebootstrapSource, Platform
from goldbox.context import Context
from goldbox.files import sha256_file, write_atomically
from goldbox.plan import Prebuilt, StagedFile, app_section, python_section
from goldbox.requirements import check_sdist


@dataclass(frozen=True)
class NativeBuild:
    """What the native build made: the plan's prebuilt files, the ones the system steps
    install (CPython's bundle) and the ones only the golden build needs (the app's
    virtualenv)."""

    prebuilt: Prebuilt
    system_files: list[Path]
    golden_files: list[Path]


def release_of(platform: Platform, arch: str = "amd64") -> ReleaseChroot:
    """The chroot `platform`'s native builds run in, for the guest architecture `arch`."""
    source = platform.source
    assert isinstance(source, DebootstrapSource)
    return ReleaseChroot(suite=source.suite, mirror=source.mirror,
                         packages=tuple(platform.packages.build), arch=arch)


def native_build(ctx: Context, tarball: Path,
                 bundled: concurrent.futures.Future[BuiltFile]) -> NativeBuild:
    """CPython and uWSGI compiled natively in a chroot of the release, and the app's
    virtualenv made there; `bundled` gets CPython's bundle as soon as it is there (the
    system image needs only it). For another architecture than amd64 they are
    cross-compiled (goldbox/cross.py), run by amd64's bundle of the same CPython (built
    first if the cache does not have it)."""
    platform, release = ctx.platform, release_of(ctx.platform, ctx.arch.name)

    def cpython(release: ReleaseChroot, build_python: BuiltFile | None = None) -> BuiltFile:
        return build_cpython_bundle(
            ctx.cache, platform=platform.name, release=release,
            python_version=platform.python.version, tarball=tarball,
            tarball_sha256=platform.python.sha256,
            configure_flags=list(platform.python.configure_flags), log=ctx.log,
            build_python=build_python)

    build_python = cpython(release_of(platform)) if release.cross else None
    bundle = cpython(release, build_python)
    bundled.set_result(bundle)
    wheels = []
    requirements = ctx.config.app_dir / platform.python.requirements
    for sdist in sorted(ctx.wheelhouse.glob("*.tar.gz")):
        built = build_native_wheel(ctx.cache, release=release, bundle=bundle,
                                   python_version=platform.python.version, sdist=sdist,
                                   sdist_sha256=check_sdist(requirements, sdist), log=ctx.log,
                                   build_python=build_python)
        shutil.copy2(built.path, ctx.wheelhouse / built.path.name)
        wheels.append(StagedFile(f"wheelhouse/{built.path.name}", built.sha256))
    env = build_app_env(
        ctx.cache, platform=platform.name, release=release, bundle=bundle,
        python=python_section(platform, None),
        app=app_section(ctx.config, platform, Prebuilt(wheels=wheels)),
        app_dir=ctx.config.app_dir, wheelhouse=ctx.wheelhouse, log=ctx.log)
    prebuilt = Prebuilt(python_bundle=StagedFile(bundle.path.name, bundle.sha256), wheels=wheels,
                        app_env=StagedFile(env.path.name, env.sha256))
    return NativeBuild(prebuilt, [bundle.path], [env.path])


def native_inputs(ctx: Context) -> str:
    """A hash over what the native build's results depend on (the bundle's identity and
    the app's requirements), to tell whether a recorded result still holds."""
    platform = ctx.platform
    if not isinstance(platform.source, DebootstrapSource):
        return ""
    return hashlib.sha256(json.dumps({
        "bundle": bundle_identity(platform=platform.name,
                                  release=release_of(platform, ctx.arch.name),
                                  python_version=platform.python.version,
                                  tarball_sha256=platform.python.sha256,
                                  configure_flags=list(platform.python.configure_flags)),
        "requirements": sha256_file(ctx.config.app_dir / platform.python.requirements),
    }, sort_keys=True).encode()).hexdigest()


def record_prebuilt(ctx: Context, prebuilt: Prebuilt) -> None:
    write_atomically(ctx.prebuilt_record, json.dumps(
        {"inputs": native_inputs(ctx), "prebuilt": dataclasses.asdict(prebuilt)},
        indent=2, sort_keys=True) + "\n")


def recorded_prebuilt(ctx: Context) -> Prebuilt | None:
    """What the last native build recorded for these inputs, or None."""
    try:
        record = json.loads((ctx.prebuilt_record).read_text())
        if record["inputs"] != native_inputs(ctx):
            return None
        recorded = record["prebuilt"]
        return Prebuilt(python_bundle=StagedFile(**recorded["python_bundle"]),
                        wheels=[StagedFile(**wheel) for wheel in recorded["wheels"]],
                        app_env=StagedFile(**recorded["app_env"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None

"""`invoke image`: artifacts -> native build ∥ base disk (∥ system image, as soon as
both have what it needs) -> render + stage -> packer -> box.

For debootstrap platforms the packer work comes in two builds: the system image (the
base disk with provision's system steps: repositories, packages, CPython), cached by a
key over its inputs (goldbox/system_image.py), then the golden build from it (the app,
uWSGI, nginx, cleanup) that exports the box. A change to the app alone therefore redoes
only the golden build. The golden build is a cache entry too (goldbox/golden_cache.py),
keyed by the hash over its inputs: a machine that finds it, locally or in the team's
cache, skips packer.

This module only orchestrates: each phase is a function of the context and the results
it needs, returning a typed result (a dataclass); the phase report is
goldbox/phase_report.py. The phases share one Context (goldbox/context.py: paths,
cache, the platform's build lock). The box and its manifest.json land in
dist/<platform>/ only when everything succeeded (goldbox/dist.py). Running again with
no input changed finishes in seconds: the manifest keeps a hash over every input, and a
match means the box is up to date.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from goldbox import accel, cross, proc, vbox
from goldbox.arch import AMD64, ARM64, Architecture
from goldbox.basedisk import base_disk_file, build_base_disk
from goldbox.bundle import BuiltFile
from goldbox.cache import Check, Entry
from goldbox.cache_task import record_used
from goldbox.config import Config, DebootstrapSource, Platform
from goldbox.console import silence_limit
from goldbox.context import Context
from goldbox.dist import install_box, previous_manifest
from goldbox.errors import GoldboxError
from goldbox.files import remove_tree, sha256_file, tree_sha256
from goldbox.golden_cache import KIND as GOLDEN_KIND
from goldbox.golden_cache import GoldenBox, ensure_golden_box, golden_code, golden_identity
from goldbox.image_artifacts import ensure_tarball, prepare_wheelhouse
from goldbox.manifest import Manifest
from goldbox.native import NativeBuild, native_build, record_prebuilt, recorded_prebuilt
from goldbox.packer import console_log, packer_build, packer_version
from goldbox.phase_report import Phases
from goldbox.plan import Prebuilt, StagedFile
from goldbox.render import Rendered, RenderOptions, packer_source_name, render_platform
from goldbox.stage import check_app_tree, golden_stage
from goldbox.system_image import SystemPlan, ensure_system_image, render_system_plan
from goldbox.targets import Target, buildable_targets, check_kernel

# The Vagrantfile a libvirt box of each architecture carries (see box_vagrantfile).
BOX_VAGRANTFILE = "vagrant/libvirt/box-{arch}.Vagrantfile"


@dataclass(frozen=True)
class ImageResult:
    box: Path
    manifest: Path
    up_to_date: bool
    phases: Phases


@dataclass(frozen=True)
class Host:
    """What this host brings to the build: its accelerator and packer's version."""

    acceleration: accel.Acceleration
    packer: tuple[int, int, int]

    def options(self, prebuilt: Prebuilt | None) -> RenderOptions:
        return RenderOptions(packer_version=self.packer,
                             libvirt_driver=self.acceleration.libvirt_driver, prebuilt=prebuilt)


@dataclass(frozen=True)
class Artifacts:
    tarball: Path
    wheels: list[Path]


@dataclass(frozen=True)
class SystemImage:
    plan: SystemPlan
    entry: Entry
    files: list[Path]  # what its build staged (CPython's bundle or tarball)


@dataclass(frozen=True)
class Render:
    rendered: Rendered
    stage: Path
    digest: str  # over every input of the golden build


@dataclass(frozen=True)
class GoldenBuild:
    components: dict[str, str]  # what the guest printed: cpython, nginx, uwsgi, flask


def build_image(config: Config, platform: Platform, *, builder: str = "qemu",
                force: bool = False, refresh: bool = False,
                targets: list[str] | None = None) -> ImageResult:
    """Build (or confirm up to date) the golden box of `platform` and the boxes of the
    other `targets` made from it (default: box.targets); see the module doc.
    `refresh` rebuilds the base disk even when cached, to take the repositories'
    updates published since (and so everything built on it)."""
    if refresh and not isinstance(platform.source, DebootstrapSource):
        raise GoldboxError(f"--refresh: {platform.name} has no base disk to refresh (its "
                           f"source is {platform.source.kind}; only debootstrap platforms "
                           "have one)")
    chosen = (buildable_targets(targets, "--target") if targets else
              buildable_targets(config.project.box.targets, "goldbox.toml: box.targets"))
    _check_targets(platform, builder, chosen)
    ctx = Context(config, platform, builder)
    check_app_tree(config.app_dir, config.root)
    with ctx.exclusive(), proc.cancellation():
        return _build_image(ctx, force, refresh, chosen)


def _check_targets(platform: Platform, builder: str, targets: list[Target]) -> None:
    """A VirtualBox box is converted from the golden qcow2 of the qemu builder; an arm64
    box is built from the base disk by it, cross-compiled and emulated (checked here,
    before anything runs: the host, qemu-system-aarch64, its UEFI firmware)."""
    label = f"platforms/{platform.name}.toml"
    if vbox.TARGET in targets:
        if builder != "qemu" or not isinstance(platform.source, DebootstrapSource):
            raise GoldboxError(f"target virtualbox/amd64: made from the golden disk of a "
                               f"debootstrap platform's qemu build ({label} has source "
                               f"{platform.source.kind}, --builder is {builder})")
        check_kernel(targets, platform.source.kernel_package, label)
    for arch in _architectures(targets):
        if arch is AMD64:
            continue
        if builder != "qemu" or not isinstance(platform.source, DebootstrapSource):
            raise GoldboxError(f"target libvirt/{arch.name}: built from a debootstrap "
                               f"platform's base disk by the qemu builder ({label} has source "
                               f"{platform.source.kind}, --builder is {builder})")
        cross.check_cross_host(arch)
        if shutil.which(arch.qemu_binary) is None:
            raise GoldboxError(f"target libvirt/{arch.name}: {arch.qemu_binary} is not "
                               f"installed (Debian: qemu-system-arm)")
        if arch.firmware and not Path(arch.firmware).is_file():
            raise GoldboxError(f"target libvirt/{arch.name}: no UEFI firmware at "
                               f"{arch.firmware} (Debian: qemu-efi-aarch64)")


def _build_image(ctx: Context, force: bool, refresh: bool, targets: list[Target]
                 ) -> ImageResult:
    """Each architecture the targets ask for is one golden build (amd64's first: an
    arm64 cross build runs on amd64's CPython), with its phases named after it."""
    config, platform = ctx.config, ctx.platform
    ctx.log.parent.mkdir(parents=True, exist_ok=True)
    phases, started = Phases(log=ctx.log), time.monotonic()
    print(f"goldbox image: {platform.name}, box {config.project.box.name} "
          f"{config.project.box.version}, {', '.join(t.name for t in targets)}; "
          f"log: {ctx.log}")
    _sweep(ctx)
    host = Host(accel.detect(config.cache_dir), packer_version())
    built = [_build_arch(ctx.for_arch(arch), phases, host, force, refresh, targets)
             for arch in _architectures(targets)]
    record_used(ctx.build, ctx.cache)
    print(phases.table(time.monotonic() - started))
    for result in built:
        print(f"up to date: {result.box}" if result.up_to_date else
              f"box: {result.box}\nmanifest: {result.manifest}")
    first = built[0]
    return ImageResult(first.box, first.manifest, all(r.up_to_date for r in built), phases)


def _architectures(targets: list[Target]) -> list[Architecture]:
    """The architectures of `targets`, amd64 first."""
    names = {target.arch for target in targets}
    return [arch for arch in (AMD64, ARM64) if arch.name in names]


def phase_name(ctx: Context, name: str) -> str:
    """A phase of the build of ctx.arch: its name in the phase table."""
    return name if ctx.primary else f"{ctx.arch.name} {name}"


def _build_arch(ctx: Context, phases: Phases, host: Host, force: bool, refresh: bool,
                targets: list[Target]) -> ImageResult:
    """The golden build of ctx.arch (and the targets made from its disk)."""
    ctx.work.mkdir(parents=True, exist_ok=True)
    with phases.phase(phase_name(ctx, "artifacts")) as note:
        artifacts = artifacts_phase(ctx, note)
    native, base, system = _native_base_and_system(ctx, phases, artifacts, host, refresh)

    with phases.phase(phase_name(ctx, "render")) as note:
        render = render_phase(ctx, host, native, system, artifacts)
        note.append(f"accelerator {host.acceleration.accelerator}; inputs {render.digest[:12]}")

    previous = previous_manifest(ctx)
    if (not force and previous and previous.input_hash == render.digest
            and ctx.box.is_file() and ctx.box.stat().st_size == previous.box_size):
        phases.skipped(phase_name(ctx, "packer"),
                       "skipped: no input changed since the last build")
        ctx.cache.mark_used(GOLDEN_KIND, golden_identity(ctx, render.digest))
        _target_phases(ctx, phases, targets, previous, force)
        return ImageResult(ctx.box, ctx.manifest, True, phases)

    manifest = golden_phases(
        ctx, phases, host, render.digest,
        lambda: packer_phase(ctx, host, render, system, base).components, base, force)
    _target_phases(ctx, phases, targets, manifest, force)
    return ImageResult(ctx.box, ctx.manifest, False, phases)


def golden_phases(ctx: Context, phases: Phases, host: Host, digest: str,
                  build: Callable[[], dict[str, str]], base: Entry | None, force: bool
                  ) -> Manifest:
    """The packer phase (the golden box of `digest` from the cache, or `build()`: the
    golden build) and the box phase (dist/ with it and its manifest)."""
    try:
        with phases.phase(phase_name(ctx, "packer")) as note:
            golden = ensure_golden_box(ctx, digest, build, force=force)
            note.append(_packer_note(ctx, host, golden))
        with phases.phase(phase_name(ctx, "box")) as note:
            manifest = box_phase(ctx, host, digest, GoldenBuild(golden.components), base,
                                 _own_phases(ctx, phases))
            note.append(f"{ctx.box_file} {manifest.box_size / 2**20:.0f} MiB")
    finally:
        remove_tree(ctx.packer_box.parent)
    return manifest


def _own_phases(ctx: Context, phases: Phases) -> dict[str, float]:
    """The seconds of the phases so far that built ctx.arch's box (for its manifest)."""
    return {name: seconds for name, seconds in phases.seconds().items()
            if ctx.primary or name.startswith(f"{ctx.arch.name} ")}


def _packer_note(ctx: Context, host: Host, golden: GoldenBox) -> str:
    """What the packer row of the phase table says: the builder that ran, or where the
    golden box came from instead (a second machine of a team pulls it)."""
    if golden.source != "built":
        return f"skipped: golden box from cache {golden.entry.key[:12]} ({golden.source})"
    return f"{ctx.builder}" + (f", accelerator {host.acceleration.accelerator}"
                               if ctx.builder == "qemu" else "")


def _target_phases(ctx: Context, phases: Phases, targets: list[Target], golden: Manifest,
                   force: bool) -> None:
    """The boxes made from the golden build's disk (in dist/ already, with `golden`, its
    manifest): one phase each, skipped when made from this golden build already."""
    if vbox.TARGET in targets and ctx.primary:
        if not force and vbox.up_to_date(ctx, golden.input_hash or ""):
            phases.skipped("virtualbox", "skipped: made from this golden disk already")
        else:
            with phases.phase("virtualbox") as note:
                made = vbox.build_virtualbox_box(ctx, golden, phases.seconds())
                note.append(f"{made.box_file} {made.box_size / 2**20:.0f} MiB")


def _native_base_and_system(ctx: Context, phases: Phases, artifacts: Artifacts, host: Host,
                            refresh: bool
                            ) -> tuple[NativeBuild | None, Entry | None, SystemImage | None]:
    """The native build (CPU: compiling in a chroot) and the base disk (mostly network
    and disk: debootstrap, mkfs) need nothing of each other: they run side by side. The
    system image needs only the base disk and CPython's bundle, so it is built (or found)
    while the native build goes on with uWSGI and the app's virtualenv. When one fails,
    the others are stopped at once (proc.cancel)."""
    platform = ctx.platform
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        bundled: concurrent.futures.Future[BuiltFile] = concurrent.futures.Future()
        native = (pool.submit(_native_build_phase, ctx, phases, artifacts.tarball, bundled)
                  if platform.python.native_bundle else None)
        based = (pool.submit(_base_disk_phase, ctx, phases, refresh)
                 if isinstance(platform.source, DebootstrapSource) else None)
        system = (pool.submit(_system_image_phase, ctx, phases, host, based, bundled,
                              artifacts.tarball if native is None else None)
                  if based else None)
        running: list[concurrent.futures.Future[Any]] = [
            future for future in (native, based, system) if future]
        done, _ = concurrent.futures.wait(running,
                                          return_when=concurrent.futures.FIRST_EXCEPTION)
        if any(future.exception() for future in done):
            # The failed phase cancelled the build (Phases): the others end at their
            # running or next command. Report the failure, not a cancellation it caused.
            done, _ = concurrent.futures.wait(running)
            failed = [exc for future in done if (exc := future.exception()) is not None]
            raise next((exc for exc in failed if not isinstance(exc, proc.Cancelled)),
                       failed[0])
        return (native.result() if native else None, based.result() if based else None,
                system.result() if system else None)


def artifacts_phase(ctx: Context, note: list[str]) -> Artifacts:
    tarball, served_by = ensure_tarball(ctx.config, ctx.platform, ctx.cache)
    wheels = prepare_wheelhouse(ctx.config, ctx.platform, ctx.wheelhouse, ctx.log, ctx.cache,
                                arch=ctx.arch)
    note.append(f"{tarball.name} verified (from {served_by}); "
                f"{len(wheels)} files in wheelhouse")
    return Artifacts(tarball, wheels)


def _native_build_phase(ctx: Context, phases: Phases, tarball: Path,
                        bundled: concurrent.futures.Future[BuiltFile]) -> NativeBuild:
    try:
        with phases.phase(phase_name(ctx, "native build")) as note:
            built = native_build(ctx, tarball, bundled)
            note.append(f"{built.system_files[0].name} + {len(built.prebuilt.wheels)} "
                        f"wheel(s) + {built.golden_files[0].name}")
    except BaseException as exc:
        if not bundled.done():  # the system image's thread waits for it: let it go
            bundled.set_exception(exc)
        raise
    return built


def _base_disk_phase(ctx: Context, phases: Phases, refresh: bool) -> Entry:
    with phases.phase(phase_name(ctx, "base disk")) as note:
        base = _base_disk(ctx, "size", refresh)
        disk = base_disk_file(base)
        note.append(f"{'cached' if base.cached else 'built'} {disk} "
                    f"({base.record['files'][disk]['size'] / 2**20:.0f} MiB, "
                    f"updates as of {_updates_day(base)})")
    return base


def _system_image_phase(ctx: Context, phases: Phases, host: Host,
                        based: concurrent.futures.Future[Entry],
                        bundled: concurrent.futures.Future[BuiltFile],
                        tarball: Path | None) -> SystemImage:
    """As soon as the base disk and CPython's bundle (or, without a native build, its
    tarball) are there: the system plan rendered, and the image found or built."""
    base = based.result()
    bundle = bundled.result() if tarball is None else None
    with phases.phase(phase_name(ctx, "system image")) as note:
        prebuilt = Prebuilt(python_bundle=StagedFile(bundle.path.name, bundle.sha256)
                            if bundle else None)
        plan = render_system_plan(ctx, host.options(prebuilt), base)
        staged = bundle.path if bundle else tarball
        assert staged is not None
        files = [staged]
        entry = _ensure_system_image(ctx, SystemImage(plan, base, files), "size")
        note.append(f"{'cached' if entry.cached else 'built'} {entry.file().name} "
                    f"({entry.size / 2**20:.0f} MiB, key {entry.key[:12]})")
    return SystemImage(plan, entry, files)


def _ensure_system_image(ctx: Context, system: SystemImage, check: Check) -> Entry:
    return ensure_system_image(ctx, system.plan, system.files,
                               lambda: _base_disk(ctx, "full"), check)


def render_phase(ctx: Context, host: Host, native: NativeBuild | None,
                 system: SystemImage | None, artifacts: Artifacts) -> Render:
    """The golden build's template, plan and stage, and the hash over its inputs."""
    prebuilt, system_files, golden_files = ((native.prebuilt, native.system_files,
                                             native.golden_files) if native
                                            else (Prebuilt(), [artifacts.tarball], []))
    rendered = render_platform(ctx.config, ctx.platform, ctx.render_dir, host.options(prebuilt))
    record_prebuilt(ctx, prebuilt)
    # From a system image, the golden build finds CPython installed: no need to upload
    # its bundle again.
    stage = golden_stage(ctx.root, ctx.config.app_dir, ctx.stage, ctx.wheelhouse,
                         rendered.plan, golden_files + ([] if system else system_files))
    digest = hashlib.sha256(json.dumps({
        "template": sha256_file(rendered.packer_template),
        "stage": tree_sha256(stage),
        # A base disk comes with a system image, whose identity names it.
        "base": system.plan.identity if system else None,
        # How the box is made and packaged: a box of older code is not up to date.
        "code": golden_code(),
        "box": [ctx.config.project.box.name, ctx.config.project.box.version, ctx.builder,
                *([] if ctx.primary else [ctx.arch.name])],
        **({} if (vagrantfile := box_vagrantfile(ctx)) is None
           else {"box_vagrantfile": sha256_file(vagrantfile)}),
    }, sort_keys=True).encode()).hexdigest()
    return Render(rendered, stage, digest)


def packer_phase(ctx: Context, host: Host, render: Render, system: SystemImage | None,
                 base: Entry | None) -> GoldenBuild:
    """The golden build, from the system image (every byte of it checked first)."""
    image_vars: dict[str, str] = {}
    if system:
        image = _ensure_system_image(ctx, system, "full")
        image_vars = {"base_image": str(image.file()), "base_image_sha256": image.sha256()}
    # An installer (iso) writes nothing to the serial port: no silence limit for it.
    # Another architecture than the host's is emulated (TCG), whatever the host has.
    accelerator = host.acceleration.accelerator if ctx.primary else "tcg"
    silence = (silence_limit(accelerator)
               if isinstance(ctx.platform.source, DebootstrapSource) else None)
    vagrantfile = box_vagrantfile(ctx)
    printed = packer_build(render.rendered.packer_template, {
        **image_vars, **({} if ctx.primary else ctx.arch.packer_variables()),
        **({} if vagrantfile is None else {"box_vagrantfile": str(vagrantfile)}),
        "accelerator": accelerator, "stage_dir": str(render.stage),
        "output_dir": str(ctx.packer_output), "box_output": str(ctx.packer_box),
    }, f"{ctx.source_type}.{packer_source_name(ctx.platform)}", ctx.log,
        console_log(ctx.log, phase_name(ctx, "golden").replace(" ", "-")), silence)
    return GoldenBuild(printed)


def box_vagrantfile(ctx: Context) -> Path | None:
    """The Vagrantfile packaged in ctx.arch's libvirt box (vagrant/libvirt/box-<arch>.
    Vagrantfile): KVM where the teammate's host has it, and for a machine that is not a
    PC its settings. None for an installer (iso) build, whose box keeps packer's."""
    if not isinstance(ctx.platform.source, DebootstrapSource):
        return None
    return ctx.root / BOX_VAGRANTFILE.format(arch=ctx.arch.name)


def box_phase(ctx: Context, host: Host, digest: str, golden: GoldenBuild,
              base: Entry | None, phases: dict[str, float]) -> Manifest:
    """dist/<p>/ with the box and its manifest: the versions the golden build found,
    packer's, and the day of the base disk's OS updates."""
    components = {"cpython": ctx.platform.python.version, **golden.components,
                  "packer": ".".join(map(str, host.packer))}
    if base is not None:
        components["os-updates"] = _updates_day(base)
    return install_box(ctx, digest, phases, components)


def _sweep(ctx: Context) -> None:
    """Remove what killed runs left: cache leftovers and mounts of older versions, and
    this platform's half-assembled dist folder (we hold the platform's lock)."""
    removed = ctx.cache.sweep()
    if ctx.dist_partial.exists():
        remove_tree(ctx.dist_partial)
        removed.append(str(ctx.dist_partial))
    for item in removed:
        print(f"swept a leftover of an interrupted run: {item}")


def _base_disk(ctx: Context, check: Check, refresh: bool = False) -> Entry:
    """The platform's base disk (goldbox/basedisk.py), built if missing (or `refresh`).
    check="size" trusts the recorded sha256 (enough to key the build: the no-change path
    stays fast); "full" reads every byte, for when the disk feeds a packer build."""
    return build_base_disk(ctx.cache, ctx.platform, log=ctx.log, check=check,
                           refresh=refresh, arch=ctx.arch)


def _updates_day(base: Entry) -> str:
    """The day of the security and point updates a base disk's packages carry: the day
    it was made (--refresh makes it again)."""
    return base.record["created"][:10]


def render_as_image_would(config: Config, platform: Platform) -> tuple[Rendered, list[str]]:
    """`invoke render`: the same options `invoke image` renders with (this host's packer
    version and accelerator, and the natively built bundle and wheels its last run
    recorded for these inputs); returns what was rendered and, plainly, where it still
    differs from what `invoke image` would build."""
    ctx = Context(config, platform)
    prebuilt, differences = Prebuilt(), []
    if platform.python.native_bundle:
        prebuilt = recorded_prebuilt(ctx) or prebuilt
        if prebuilt.python_bundle is None:
            differences.append(
                "plan.json names no prebuilt CPython bundle, uWSGI wheel or app virtualenv: "
                "`invoke image` makes them natively first and puts their sha256 in the plan "
                "(run it, then render again for its exact plan)")
    host = Host(accel.detect(config.cache_dir), packer_version())
    return render_platform(config, platform, ctx.build, host.options(prebuilt)), differences

"""`invoke image`: artifacts -> native build ∥ base disk (∥ system image, as soon as
both have what it needs) -> render + stage -> packer -> box.

For debootstrap platforms the packer work comes in two builds: the system image (the
base disk with provision's system steps: repositories, packages, CPython), cached by a
key over its inputs, then the golden build from it (the app, uWSGI, nginx, cleanup) that
exports the box. A change to the app alone therefore redoes only the golden build.

Every phase is timed; a summary table ends the run. The phases share one Context
(goldbox/context.py: paths, cache, the platform's build lock). The box and its
manifest.json land in dist/<platform>/ only when everything succeeded (assembled in a
partial folder, then swapped in atomically, so the previous box stays until then).
Running again with no input changed finishes in seconds: the manifest keeps a hash over
every input, and a match means the box is up to date.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from goldbox import accel, faults, proc
from goldbox.artifacts import ArtifactCache, build_wheelhouse
from goldbox.cache import Cache, Entry, identity_key
from goldbox.cache_task import record_used
from goldbox.config import Config, DebootstrapSource, Platform
from goldbox.console import checked_path, run_watched, silence_limit
from goldbox.context import Context
from goldbox.errors import GoldboxError, describe_os_error
from goldbox.files import remove_tree, sha256_file, swap_in, tree_sha256, write_atomically
from goldbox.keys import insecure_private_key
from goldbox.manifest import Manifest, read_manifest, write_manifest
from goldbox.plan import (
    SYSTEM_STEPS,
    Prebuilt,
    StagedFile,
    app_section,
    python_section,
    tarball_name,
)
from goldbox.plan_model import read_plan
from goldbox.render import Rendered, RenderOptions, packer_source_name, render_platform
from goldbox.stage import check_app_tree, golden_stage, system_stage
from goldbox.validate import declared_variables

if TYPE_CHECKING:
    from goldbox.bundle import BuiltFile

# Bumped when the way a system image is made changes, so old ones are not reused.
_SYSTEM_RECIPE = 1
# What packer prints once the guest answers on SSH (its boot is over).
PACKER_REACHED = "Connected to SSH!"
VERSION_LINE = re.compile(r"goldbox-version (\w+)=(\S+)")


@dataclass
class Phases:
    """Times each phase (wall clock, and the CPU its commands used), remembers a note per
    phase and names the failing one. Phases may run in two threads at once."""

    rows: list[tuple[str, float, float, str]] = field(default_factory=list)
    log: Path | None = None

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[list[str]]:
        print(f"==> {name}", flush=True)
        note: list[str] = []
        start, cpu = time.monotonic(), proc.cpu_seconds() + time.thread_time()
        try:
            yield note
        except (GoldboxError, OSError) as exc:
            message = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
            where = f"; log: {self.log}" if self.log and str(self.log) not in message else ""
            raise GoldboxError(f"phase {name!r} failed{where}: {message}") from None
        wall = time.monotonic() - start
        used = proc.cpu_seconds() + time.thread_time() - cpu
        self.rows.append((name, wall, used, " ".join(note)))
        print(f"    {name}: {wall:.1f} s, {' '.join(note)}", flush=True)

    def skipped(self, name: str, note: str) -> None:
        self.rows.append((name, 0.0, 0.0, note))

    def seconds(self) -> dict[str, float]:
        return {name: round(wall, 1) for name, wall, _, _ in self.rows}

    def table(self, wall: float) -> str:
        width = max(len(name) for name, *_ in self.rows)
        lines = [f"{'phase':<{width}}  {'wall s':>7}  {'cpu s':>7}  result", "-" * (width + 40)]
        lines += [f"{name:<{width}}  {seconds:7.1f}  {cpu:7.1f}  {note}"
                  for name, seconds, cpu, note in self.rows]
        lines.append(f"{'total':<{width}}  {wall:7.1f}  "
                     f"{sum(cpu for _, _, cpu, _ in self.rows):7.1f}  "
                     "(wall: end to end; phases may overlap)")
        return "\n".join(lines)


@dataclass(frozen=True)
class ImageResult:
    box: Path
    manifest: Path
    up_to_date: bool
    phases: Phases


def packer_version() -> tuple[int, int, int]:
    out = proc.capture(["packer", "version"], timeout=60).stdout
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", out)
    if not match:
        raise GoldboxError(f"`packer version` printed no version: {out.strip()!r}")
    return tuple(int(part) for part in match.groups())  # type: ignore[return-value]


def git_commit(root: Path) -> str:
    commit = proc.capture(["git", "rev-parse", "HEAD"], cwd=root, check=False).stdout.strip()
    dirty = proc.capture(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                         check=False).stdout.strip()
    commit = commit or "unknown"
    return f"{commit}-dirty" if dirty and commit != "unknown" else commit


def ensure_tarball(config: Config, platform: Platform,
                   cache: Cache | None = None) -> tuple[Path, str]:
    """The platform's CPython tarball from the verified cache, else from the first of its
    sources that serves the pinned sha256 (goldbox.sources); and which one served it."""
    from goldbox.sources import fetch_tarball

    return fetch_tarball(ArtifactCache(cache or config.cache_dir), platform,
                         tarball_name(platform))


def import_artifact(config: Config, platform: Platform, path: Path) -> Path:
    """Add a local copy of the platform's CPython tarball to the cache, if it matches."""
    known = {platform.python.sha256: tarball_name(platform)}
    return ArtifactCache(config.cache_dir).import_file(path, known)


def wheel_python_version(platform: Platform) -> str:
    return ".".join(platform.python.version.split(".")[:2])


def prepare_wheelhouse(config: Config, platform: Platform, dest: Path,
                       log: Path | None, cache: Cache | None = None) -> list[Path]:
    """The app's pinned packages (and the Python's own tools, where it needs them) for
    the guest's Python version and platform, hash-checked, in `dest`."""
    remove_tree(dest)
    files = []
    for requirements in filter(None, [platform.python.requirements,
                                      platform.python.tools_requirements]):
        files += build_wheelhouse(
            cache or config.cache_dir, config.app_dir / requirements, dest,
            python_version=wheel_python_version(platform),
            platform_tags=platform.python.wheel_platforms, log=log)
    return sorted(files)


def _system_identity(ctx: Context, rendered: Rendered, base: Entry) -> dict:
    """What the system image is made from: its template, the base disk, provision/ and
    the plan's system sections (which carry the CPython bundle's or tarball's sha256)."""
    plan = read_plan(rendered.plan).model_dump(exclude_unset=True)
    assert rendered.system_template
    return {
        "recipe": _SYSTEM_RECIPE,
        "platform": ctx.platform.name,
        "template": sha256_file(rendered.system_template),
        "base": base.sha256(),
        "provision": tree_sha256(ctx.root / "provision"),
        "plan": {key: plan[key] for key in ("format", "family", "adapters", "stage_dir",
                                            *SYSTEM_STEPS)},
    }


def _system_image(ctx: Context, rendered: Rendered, identity: dict, base: Entry,
                  files: list[Path], accelerator: str) -> Entry:
    """The base disk with provision's system steps done, built by packer once and kept
    as a cache entry of kind "system-image"."""
    image = f"{ctx.platform.name}-system.qcow2"

    def make(folder: Path) -> None:
        stage = system_stage(ctx.root, ctx.system_stage, rendered.plan, files, ctx.wheelhouse)
        output = folder / "packer-output"
        assert rendered.system_template
        _packer_build(rendered.system_template, {
            "base_image": str(base.file()), "base_image_sha256": base.sha256(),
            "accelerator": accelerator, "stage_dir": str(stage), "output_dir": str(output),
        }, f"qemu.{packer_source_name(ctx.platform)}", ctx.log,
            _console(ctx, "system"), silence_limit(accelerator))
        (output / image).rename(folder / image)
        shutil.rmtree(output)

    return ctx.cache.ensure("system-image", identity, make, name=ctx.platform.name,
                            summary=f"{ctx.platform.name} system image (packages, CPython)")


def _console(ctx: Context, stage: str) -> Path:
    """The serial console log of one packer boot: beside the build's log, named after it."""
    return checked_path(ctx.log.with_name(f"{ctx.log.stem}.console.{stage}.log"))


def _packer_build(template: Path, variables: dict[str, str], only: str, log: Path,
                  console: Path, silence: int | None) -> None:
    """`packer build -only=<only>` of a rendered template, with those of `variables` it
    declares (plus Vagrant's insecure key and the console log) in a var file beside it.
    The guest's console is watched until packer reaches it on SSH (see goldbox.console:
    `silence` None for a guest that writes nothing there, an installer), for a panic or
    an emergency shell to the end."""
    print(f"packer: guest console: {console}", flush=True)
    variables = {**variables, "ssh_private_key_file": str(insecure_private_key()),
                 "console_log": str(console)}
    declared = declared_variables(template)
    var_file = template.with_name(template.name.removesuffix(".pkr.hcl") + "-vars.json")
    write_atomically(var_file, json.dumps({k: v for k, v in variables.items() if k in declared},
                                          indent=2, sort_keys=True) + "\n")
    # Isolated: qemu, packer's child, must not outlive a killed goldbox.
    run_watched(["packer", "build", "-color=false", f"-var-file={var_file.name}",
                 f"-only={only}", template.name], console=console, silence=silence,
                reached=PACKER_REACHED, prefix="packer", log=log, cwd=template.parent,
                isolate=True)


def _previous_manifest(ctx: Context) -> Manifest | None:
    """The manifest of the box in dist/, if there is a sound one (a corrupt one only
    means the box is rebuilt)."""
    if not ctx.manifest.exists():
        return None
    try:
        return read_manifest(ctx.manifest)
    except GoldboxError as exc:
        print(f"note: {exc}; the box will be rebuilt")
        return None


def _sweep(ctx: Context) -> None:
    """Remove what killed runs left: cache leftovers and mounts of older versions, and
    this platform's half-assembled dist folder (we hold the platform's lock)."""
    removed = ctx.cache.sweep()
    if ctx.dist_partial.exists():
        remove_tree(ctx.dist_partial)
        removed.append(str(ctx.dist_partial))
    for item in removed:
        print(f"swept a leftover of an interrupted run: {item}")


def build_image(config: Config, platform: Platform, *, builder: str = "qemu",
                force: bool = False, refresh: bool = False) -> ImageResult:
    """Build (or confirm up to date) the golden box of `platform`; see the module doc.
    `refresh` rebuilds the base disk even when cached, to take the repositories'
    updates published since (and so everything built on it)."""
    if refresh and not isinstance(platform.source, DebootstrapSource):
        raise GoldboxError(f"--refresh: {platform.name} has no base disk to refresh (its "
                           f"source is {platform.source.kind}; only debootstrap platforms "
                           "have one)")
    ctx = Context(config, platform, builder)
    check_app_tree(config.app_dir, config.root)
    with ctx.exclusive():
        return _build_image(ctx, force, refresh)


def _build_image(ctx: Context, force: bool, refresh: bool) -> ImageResult:
    config, platform = ctx.config, ctx.platform
    ctx.log.parent.mkdir(parents=True, exist_ok=True)
    phases, started = Phases(log=ctx.log), time.monotonic()
    print(f"goldbox image: {platform.name}, box {config.project.box.name} "
          f"{config.project.box.version}; log: {ctx.log}")
    _sweep(ctx)
    ctx.work.mkdir(parents=True, exist_ok=True)

    with phases.phase("artifacts") as note:
        tarball, served_by = ensure_tarball(config, platform, ctx.cache)
        wheels = prepare_wheelhouse(config, platform, ctx.wheelhouse, ctx.log, ctx.cache)
        note.append(f"{tarball.name} verified (from {served_by}); "
                    f"{len(wheels)} files in wheelhouse")

    acceleration = accel.detect(config.cache_dir)
    packer = packer_version()
    # The native build (CPU: compiling in a chroot) and the base disk (mostly network and
    # disk: debootstrap, mkfs) need nothing of each other: they run side by side. The
    # system image needs only the base disk and CPython's bundle, so a missing one is
    # built while the native build goes on with uWSGI and the app's virtualenv. When one
    # fails, the others are stopped at once.
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        bundled: concurrent.futures.Future[BuiltFile] = concurrent.futures.Future()
        native = (pool.submit(_native_build_phase, ctx, phases, tarball, bundled)
                  if platform.python.native_bundle else None)
        based = (pool.submit(_base_disk_phase, ctx, phases, refresh)
                 if isinstance(platform.source, DebootstrapSource) else None)
        early = (pool.submit(_early_system_image, ctx, phases, bundled, based, acceleration,
                             packer)
                 if native and based else None)
        running = [future for future in (native, based, early) if future]
        done, _ = concurrent.futures.wait(running,
                                          return_when=concurrent.futures.FIRST_EXCEPTION)
        failed = [future.exception() for future in done if future.exception()]
        if failed:
            proc.stop_all()
            raise failed[0]
        # What the system steps install (CPython's bundle or tarball) and what only the
        # golden build needs (the app's virtualenv).
        prebuilt, system_files, golden_files = (native.result() if native
                                                else (Prebuilt(), [tarball], []))
        base = based.result() if based else None

    with phases.phase("render") as note:
        options = RenderOptions(packer_version=packer,
                                libvirt_driver=acceleration.libvirt_driver, prebuilt=prebuilt)
        rendered = render_platform(config, platform, ctx.build, options)
        _record_prebuilt(ctx, prebuilt)
        system = (_system_identity(ctx, rendered, base)
                  if rendered.system_template and base else None)
        # From a system image, the golden build finds CPython installed: no need to
        # upload its bundle again.
        stage = golden_stage(ctx.root, config.app_dir, ctx.stage, ctx.wheelhouse,
                             rendered.plan, golden_files + ([] if system else system_files))
        if system:
            ctx.cache.mark_used("system-image", system)
        digest = hashlib.sha256(json.dumps({
            "template": sha256_file(rendered.packer_template),
            "stage": tree_sha256(stage),
            "base": system or (base.sha256() if base else None),
            "box": [config.project.box.name, config.project.box.version, ctx.builder],
        }, sort_keys=True).encode()).hexdigest()
        note.append(f"accelerator {acceleration.accelerator}; inputs {digest[:12]}")

    previous = _previous_manifest(ctx)
    if (not force and previous and previous.input_hash == digest
            and ctx.box.is_file() and ctx.box.stat().st_size == previous.box_size):
        phases.skipped("packer", "skipped: no input changed since the last build")
        record_used(ctx.build, ctx.cache)
        print(phases.table(time.monotonic() - started))
        print(f"up to date: {ctx.box}")
        return ImageResult(ctx.box, ctx.manifest, True, phases)

    image_vars: dict[str, str] = {}
    built_early = early.result() if early else None
    if system and base and built_early and built_early.key == identity_key("system-image",
                                                                            system):
        # Built by this run beside the native build (its row is in the table already).
        image_vars = {"base_image": str(built_early.file()),
                      "base_image_sha256": built_early.sha256()}
    elif system and base:
        with phases.phase("system image") as note:
            # Built from the base disk, so all of the base disk's bytes are checked first.
            image = (ctx.cache.lookup("system-image", system)
                     or _system_image(ctx, rendered, system, _base_disk(ctx, "full"),
                                      system_files,
                                      acceleration.accelerator))
            image_vars = {"base_image": str(image.file()), "base_image_sha256": image.sha256()}
            note.append(f"{'cached' if image.cached else 'built'} {image.file().name} "
                        f"({image.size / 2**20:.0f} MiB, key {image.key[:12]})")

    for leftover in (ctx.packer_output, ctx.packer_box.parent):
        remove_tree(leftover)
    # An installer (iso) writes nothing to the serial port: no silence limit for it.
    silence = (silence_limit(acceleration.accelerator)
               if isinstance(platform.source, DebootstrapSource) else None)
    try:
        with phases.phase("packer") as note:
            _packer_build(rendered.packer_template, {
                **image_vars,
                "accelerator": acceleration.accelerator, "stage_dir": str(stage),
                "output_dir": str(ctx.packer_output), "box_output": str(ctx.packer_box),
            }, f"{ctx.source_type}.{packer_source_name(platform)}", ctx.log,
                _console(ctx, "golden"), silence)
            note.append(f"{ctx.builder}" + (f", accelerator {acceleration.accelerator}"
                                            if ctx.builder == "qemu" else ""))
        with phases.phase("box") as note:
            components = {"packer": ".".join(map(str, packer))}
            if base is not None:
                components["os-updates"] = _updates_day(base)
            manifest = _install_box(ctx, digest, phases, components)
            note.append(f"{ctx.box_file} {manifest.box_size / 2**20:.0f} MiB")
    finally:
        remove_tree(ctx.packer_output)
        remove_tree(ctx.packer_box.parent)
    write_manifest(ctx.manifest, manifest.model_copy(update={"phases": phases.seconds()}))
    record_used(ctx.build, ctx.cache)
    print(phases.table(time.monotonic() - started))
    print(f"box: {ctx.box}\nmanifest: {ctx.manifest}")
    return ImageResult(ctx.box, ctx.manifest, False, phases)


def _base_disk(ctx: Context, check: str, refresh: bool = False) -> Entry:
    """The platform's base disk (goldbox/basedisk.py), built if missing (or `refresh`).
    check="size" trusts the recorded sha256 (enough to key the build: the no-change path
    stays fast); "full" reads every byte, for when the disk feeds a packer build."""
    from goldbox.basedisk import build_base_disk

    return build_base_disk(ctx.cache, ctx.platform, log=ctx.log, check=check,
                           refresh=refresh)


def _install_box(ctx: Context, digest: str, phases: Phases,
                 components: dict[str, str]) -> Manifest:
    """Assemble the new dist/<p>/ (box, manifest.json, the plan baked into the box) under
    a partial name, then swap it in with one atomic rename: the previous box stays in
    place until the new one is complete, and a kill at any point leaves one of them.
    `components` adds to the versions the build log names (packer, os-updates)."""
    if not ctx.packer_box.is_file():
        raise GoldboxError(f"packer finished but wrote no box at {ctx.packer_box}")
    partial = ctx.dist_partial
    remove_tree(partial)
    partial.mkdir(parents=True)
    try:
        box = partial / ctx.box_file
        try:
            os.rename(ctx.packer_box, box)
        except OSError:  # dist/ on another filesystem
            shutil.copyfile(ctx.packer_box, box)
        manifest = _manifest(ctx, box, digest, phases, components)
        # The plan baked into this box: `invoke verify` checks the VM against it.
        shutil.copy2(ctx.stage / "plan.json", partial / "plan.json")
        write_manifest(partial / "manifest.json", manifest)
        old = swap_in(partial, ctx.dist)
        faults.point("dist-swap")  # the new box is in place, the old one not yet deleted
        if old is not None:
            remove_tree(old)
    finally:
        remove_tree(partial)
    return manifest


PREBUILT_RECORD = "prebuilt.json"


def _native_inputs(ctx: Context) -> str:
    """A hash over what the native build's results depend on (the bundle's identity and
    the app's requirements), to tell whether a recorded result still holds."""
    from goldbox.bundle import ReleaseChroot, bundle_identity

    platform, source = ctx.platform, ctx.platform.source
    if not isinstance(source, DebootstrapSource):
        return ""
    release = ReleaseChroot(suite=source.suite, mirror=source.mirror,
                            packages=tuple(platform.packages.build))
    return hashlib.sha256(json.dumps({
        "bundle": bundle_identity(platform=platform.name, release=release,
                                  python_version=platform.python.version,
                                  tarball_sha256=platform.python.sha256,
                                  configure_flags=list(platform.python.configure_flags)),
        "requirements": sha256_file(ctx.config.app_dir / platform.python.requirements),
    }, sort_keys=True).encode()).hexdigest()


def _record_prebuilt(ctx: Context, prebuilt: Prebuilt) -> None:
    write_atomically(ctx.build / PREBUILT_RECORD, json.dumps(
        {"inputs": _native_inputs(ctx), "prebuilt": dataclasses.asdict(prebuilt)},
        indent=2, sort_keys=True) + "\n")


def render_as_image_would(config: Config, platform: Platform) -> tuple[Rendered, list[str]]:
    """`invoke render`: the same options `invoke image` renders with (this host's packer
    version and accelerator, and the natively built bundle and wheels its last run
    recorded for these inputs); returns what was rendered and, plainly, where it still
    differs from what `invoke image` would build."""
    ctx = Context(config, platform)
    prebuilt, differences = Prebuilt(), []
    if platform.python.native_bundle:
        try:
            record = json.loads((ctx.build / PREBUILT_RECORD).read_text())
            if record["inputs"] != _native_inputs(ctx):
                raise ValueError("stale")
            recorded = record["prebuilt"]
            prebuilt = Prebuilt(
                python_bundle=StagedFile(**recorded["python_bundle"]),
                wheels=[StagedFile(**wheel) for wheel in recorded["wheels"]],
                app_env=StagedFile(**recorded["app_env"]))
        except (OSError, ValueError, KeyError, TypeError):
            differences.append(
                "plan.json names no prebuilt CPython bundle, uWSGI wheel or app virtualenv: "
                "`invoke image` makes them natively first and puts their sha256 in the plan "
                "(run it, then render again for its exact plan)")
    options = RenderOptions(packer_version=packer_version(),
                            libvirt_driver=accel.detect(config.cache_dir).libvirt_driver,
                            prebuilt=prebuilt)
    return render_platform(config, platform, ctx.build, options), differences


def _base_disk_phase(ctx: Context, phases: Phases, refresh: bool) -> Entry:
    with phases.phase("base disk") as note:
        base = _base_disk(ctx, "size", refresh)
        note.append(f"{'cached' if base.cached else 'built'} {base.file().name} "
                    f"({base.size / 2**20:.0f} MiB, updates as of {_updates_day(base)})")
    return base


def _updates_day(base: Entry) -> str:
    """The day of the security and point updates a base disk's packages carry: the day
    it was made (--refresh makes it again)."""
    return base.record["created"][:10]


def _early_system_image(ctx: Context, phases: Phases,
                        bundled: concurrent.futures.Future[BuiltFile],
                        based: concurrent.futures.Future[Entry],
                        acceleration: accel.Acceleration,
                        packer: tuple[int, int, int]) -> Entry | None:
    """Build the system image, if it is missing, as soon as the base disk and CPython's
    bundle are there: its inputs (the system template, the base disk, provision/ and the
    plan's system sections) do not depend on what the native build makes after the
    bundle. It renders into a folder of its own; the render phase later computes the
    same identity from the final plan and finds the image cached."""
    bundle, base = bundled.result(), based.result()
    options = RenderOptions(packer_version=packer, libvirt_driver=acceleration.libvirt_driver,
                            prebuilt=Prebuilt(python_bundle=StagedFile(bundle.path.name,
                                                                       bundle.sha256)))
    rendered = render_platform(ctx.config, ctx.platform, ctx.work / "system-render", options)
    if not rendered.system_template:
        return None
    identity = _system_identity(ctx, rendered, base)
    if ctx.cache.lookup("system-image", identity, check="size"):
        return None  # the render phase's lookup finds it
    with phases.phase("system image") as note:
        image = _system_image(ctx, rendered, identity, _base_disk(ctx, "full"),
                              [bundle.path], acceleration.accelerator)
        note.append(f"built {image.file().name} ({image.size / 2**20:.0f} MiB, "
                    f"key {image.key[:12]}), beside the native build")
    return image


def _native_build_phase(ctx: Context, phases: Phases, tarball: Path,
                        bundled: concurrent.futures.Future[BuiltFile]
                        ) -> tuple[Prebuilt, list[Path], list[Path]]:
    try:
        with phases.phase("native build") as note:
            prebuilt, system_files, golden_files = _native_build(ctx, tarball, bundled)
            note.append(f"{system_files[0].name} + {len(prebuilt.wheels)} wheel(s) + "
                        f"{golden_files[0].name}")
    except BaseException as exc:
        if not bundled.done():  # the system image's thread waits for it: let it go
            bundled.set_exception(exc)
        raise
    return prebuilt, system_files, golden_files


def _native_build(ctx: Context, tarball: Path, bundled: concurrent.futures.Future[BuiltFile]
                  ) -> tuple[Prebuilt, list[Path], list[Path]]:
    """CPython and uWSGI compiled natively in a chroot of the release, and the app's
    virtualenv made there (see bundle.py); returns the plan's prebuilt files, the ones the
    system steps use and the ones the golden build uses."""
    from goldbox.bundle import (
        ReleaseChroot,
        build_app_env,
        build_cpython_bundle,
        build_native_wheel,
    )
    from goldbox.requirements import check_sdist

    platform = ctx.platform
    source = platform.source
    assert isinstance(source, DebootstrapSource)
    release = ReleaseChroot(suite=source.suite, mirror=source.mirror,
                            packages=tuple(platform.packages.build))
    bundle = build_cpython_bundle(
        ctx.cache, platform=platform.name, release=release,
        python_version=platform.python.version, tarball=tarball,
        tarball_sha256=platform.python.sha256,
        configure_flags=list(platform.python.configure_flags), log=ctx.log)
    bundled.set_result(bundle)  # the system image can be built now
    wheels = []
    requirements = ctx.config.app_dir / platform.python.requirements
    for sdist in sorted(ctx.wheelhouse.glob("*.tar.gz")):
        built = build_native_wheel(ctx.cache, release=release, bundle=bundle,
                                   python_version=platform.python.version, sdist=sdist,
                                   sdist_sha256=check_sdist(requirements, sdist), log=ctx.log)
        shutil.copy2(built.path, ctx.wheelhouse / built.path.name)
        wheels.append(StagedFile(f"wheelhouse/{built.path.name}", built.sha256))
    env = build_app_env(
        ctx.cache, platform=platform.name, release=release, bundle=bundle,
        python=python_section(platform, None),
        app=app_section(ctx.config, platform, Prebuilt(wheels=wheels)),
        app_dir=ctx.config.app_dir, wheelhouse=ctx.wheelhouse, log=ctx.log)
    prebuilt = Prebuilt(python_bundle=StagedFile(bundle.path.name, bundle.sha256), wheels=wheels,
                        app_env=StagedFile(env.path.name, env.sha256))
    return prebuilt, [bundle.path], [env.path]


def _manifest(ctx: Context, box: Path, digest: str, phases: Phases,
              extra: dict[str, str]) -> Manifest:
    components = dict(VERSION_LINE.findall(ctx.log.read_text(errors="replace")))
    components.setdefault("cpython", ctx.platform.python.version)
    components.update(extra)
    return Manifest(
        box_name=ctx.config.project.box.name,
        version=ctx.config.project.box.version,
        platform=ctx.platform.name,
        provider=ctx.provider,
        architecture=ctx.platform.arch,
        box_file=box.name,
        box_sha256=sha256_file(box),
        box_size=box.stat().st_size,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        .replace("+00:00", "Z"),
        components=components,
        git_commit=git_commit(ctx.root),
        input_hash=digest,
        phases=phases.seconds(),
    )

"""`invoke image`: artifacts -> native build -> base disk -> render + stage -> system
image -> packer -> box.

For debootstrap platforms the packer work comes in two builds: the system image (the
base disk with provision's system steps: repositories, packages, CPython), cached by a
key over its inputs, then the golden build from it (the app, uWSGI, nginx, cleanup) that
exports the box. A change to the app alone therefore redoes only the golden build.

Every phase is timed; a summary table ends the run. The box and its manifest.json land
in dist/<platform>/ only when everything succeeded (built in a partial folder, then
renamed). Running again with no input changed finishes in seconds: the manifest keeps
a hash over every input, and a match means the box is up to date.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from goldbox import PROJECT_ROOT, accel, proc
from goldbox.artifacts import (
    ArtifactCache,
    build_wheelhouse,
    cache_lock,
    sha256_file,
    tree_sha256,
)
from goldbox.config import Config, DebootstrapSource, Platform
from goldbox.errors import GoldboxError
from goldbox.keys import insecure_private_key
from goldbox.plan import SYSTEM_STEPS, Prebuilt, StagedFile, tarball_name
from goldbox.render import (
    Rendered,
    RenderOptions,
    packer_source_name,
    render_platform,
    write_atomically,
)
from goldbox.validate import declared_variables

# Bumped when the way a cached system image is made changes, so old ones are not reused.
_SYSTEM_FORMAT = 1
_BYTECODE = shutil.ignore_patterns("__pycache__", "*.pyc")
PROVIDER = "libvirt"  # what `invoke up` boots (vagrant-libvirt)
# Packer builder -> (packer source type, Vagrant provider of the box it makes)
BUILDERS = {"qemu": ("qemu", "libvirt"), "virtualbox": ("virtualbox-iso", "virtualbox")}
VERSION_LINE = re.compile(r"goldbox-version (\w+)=(\S+)")


@dataclass
class Phases:
    """Times each phase, remembers a note per phase and names the failing one."""

    rows: list[tuple[str, float, str]] = field(default_factory=list)
    log: Path | None = None

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[list[str]]:
        print(f"==> {name}", flush=True)
        note: list[str] = []
        start = time.monotonic()
        try:
            yield note
        except GoldboxError as exc:
            where = f"; log: {self.log}" if self.log and str(self.log) not in str(exc) else ""
            raise GoldboxError(f"phase {name!r} failed{where}: {exc}") from None
        self.rows.append((name, time.monotonic() - start, " ".join(note)))
        print(f"    {name}: {self.rows[-1][1]:.1f} s, {self.rows[-1][2]}", flush=True)

    def seconds(self) -> dict[str, float]:
        return {name: round(seconds, 1) for name, seconds, _ in self.rows}

    def table(self) -> str:
        width = max(len(name) for name, _, _ in self.rows)
        lines = [f"{'phase':<{width}}  {'seconds':>8}  result", "-" * (width + 30)]
        lines += [f"{name:<{width}}  {seconds:8.1f}  {note}" for name, seconds, note in self.rows]
        total = sum(seconds for _, seconds, _ in self.rows)
        lines.append(f"{'total':<{width}}  {total:8.1f}")
        return "\n".join(lines)


@dataclass(frozen=True)
class ImageResult:
    box: Path
    manifest: Path
    up_to_date: bool
    phases: Phases


def dist_dir(config: Config, platform: Platform) -> Path:
    return config.dist_dir / platform.name


def box_file_name(config: Config, provider: str = PROVIDER) -> str:
    box = config.project.box
    return f"{box.name}-{box.version}-{provider}.box"


def packer_version() -> tuple[int, int, int]:
    try:
        out = subprocess.run(["packer", "version"], capture_output=True, text=True,
                             check=False, timeout=60).stdout
    except OSError:
        raise GoldboxError("packer not found: apt-get install packer (see `invoke doctor`)"
                           ) from None
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", out)
    if not match:
        raise GoldboxError(f"`packer version` printed no version: {out.strip()!r}")
    return tuple(int(part) for part in match.groups())  # type: ignore[return-value]


def git_commit(root: Path = PROJECT_ROOT) -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                            text=True, check=False)
    commit = result.stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                           capture_output=True, text=True, check=False).stdout.strip()
    return f"{commit}-dirty" if dirty and commit != "unknown" else commit


def ensure_tarball(config: Config, platform: Platform) -> tuple[Path, str]:
    """The platform's CPython tarball from the verified cache, else from the first of its
    sources that serves the pinned sha256 (goldbox.sources); and which one served it."""
    from goldbox.sources import fetch_tarball

    return fetch_tarball(ArtifactCache(config.cache_dir), platform, tarball_name(platform))


def import_artifact(config: Config, platform: Platform, path: Path) -> Path:
    """Add a local copy of the platform's CPython tarball to the cache, if it matches."""
    known = {platform.python.sha256: tarball_name(platform)}
    return ArtifactCache(config.cache_dir).import_file(path, known)


def wheel_python_version(platform: Platform) -> str:
    return ".".join(platform.python.version.split(".")[:2])


def prepare_wheelhouse(config: Config, platform: Platform, dest: Path,
                       log: Path | None) -> list[Path]:
    """The app's pinned packages (and the Python's own tools, where it needs them) for
    the guest's Python version and platform, hash-checked, in `dest`."""
    files = []
    for requirements in filter(None, [platform.python.requirements,
                                      platform.python.tools_requirements]):
        files += build_wheelhouse(
            config.cache_dir, config.app_dir / requirements, dest,
            python_version=wheel_python_version(platform),
            platform_tags=platform.python.wheel_platforms, log=log)
    return sorted(files)


def _stage(config: Config, platform: Platform, stage: Path, wheelhouse: Path,
           plan: Path, extra: list[Path]) -> None:
    """Lay out what the guest gets in /tmp/goldbox-stage: the plan, provision/, the app,
    its wheelhouse and the prebuilt or source artifacts."""
    _fresh_stage(config, stage, plan, extra)
    shutil.copytree(config.app_dir, stage / "app", ignore=_BYTECODE)
    shutil.copytree(wheelhouse, stage / "wheelhouse")


def _fresh_stage(config: Config, stage: Path, plan: Path, extra: list[Path]) -> None:
    """A new stage folder with what every build uploads: the plan, provision/ and the
    prebuilt or source artifacts."""
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    shutil.copy2(plan, stage / "plan.json")
    shutil.copytree(config.root / "provision", stage / "provision", ignore=_BYTECODE)
    for path in extra:
        shutil.copy2(path, stage / path.name)


def _system_stage(config: Config, stage: Path, plan: Path, extra: list[Path],
                  wheelhouse: Path) -> Path:
    """What the system image's build uploads: the plan, provision/ and the CPython bundle
    or tarball (and the wheelhouse when the python step bootstraps pip from it)."""
    _fresh_stage(config, stage, plan, extra)
    if json.loads(plan.read_text())["python"].get("pip_bootstrap"):
        shutil.copytree(wheelhouse, stage / "wheelhouse")
    return stage


def _system_key(config: Config, rendered: Rendered, base_sha256: str) -> str:
    """The system image's cache key: its template, the base disk, provision/ and the
    plan's system sections (which carry the CPython bundle's or tarball's sha256)."""
    plan = json.loads(rendered.plan.read_text())
    return hashlib.sha256(json.dumps({
        "format": _SYSTEM_FORMAT,
        "template": sha256_file(rendered.system_template),
        "base": base_sha256,
        "provision": tree_sha256(config.root / "provision"),
        "plan": {key: plan[key] for key in ("format", "family", "adapters", "stage_dir",
                                            *SYSTEM_STEPS)},
    }, sort_keys=True).encode()).hexdigest()


def _system_image(config: Config, platform: Platform, rendered: Rendered, key: str,
                  base_vars: dict[str, str], make_stage: Callable[[], Path],
                  accelerator: str, log: Path) -> tuple[Path, str, bool]:
    """Return (path, sha256, was cached) of the system image `key`: the base disk with
    provision's system steps done, built by packer once (from the folder `make_stage`
    lays out) and kept under `<cache>/system/<key>/` (written as `<key>.partial/`, then
    renamed)."""
    store = config.cache_dir / "system" / key
    image = store / f"{platform.name}-system.qcow2"
    store.parent.mkdir(parents=True, exist_ok=True)
    with cache_lock(store.with_suffix(".lock")):
        cached = image.is_file()
        if not cached:
            partial = store.with_name(f"{key}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            try:
                output = partial / "packer-output"
                _packer_build(rendered.system_template, {
                    **base_vars, "accelerator": accelerator, "stage_dir": str(make_stage()),
                    "output_dir": str(output),
                }, f"qemu.{packer_source_name(platform)}", log)
                (output / image.name).rename(partial / image.name)
                shutil.rmtree(output)
                (partial / "sha256").write_text(sha256_file(partial / image.name) + "\n")
                partial.rename(store)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
    return image, (store / "sha256").read_text().strip(), cached


def _packer_build(template: Path, variables: dict[str, str], only: str, log: Path) -> None:
    """`packer build -only=<only>` of a rendered template, with those of `variables` it
    declares (plus Vagrant's insecure key) in a var file beside it."""
    variables = {**variables, "ssh_private_key_file": str(insecure_private_key())}
    declared = declared_variables(template)
    var_file = template.with_name(template.name.removesuffix(".pkr.hcl") + "-vars.json")
    write_atomically(var_file, json.dumps({k: v for k, v in variables.items() if k in declared},
                                          indent=2, sort_keys=True) + "\n")
    proc.run(["packer", "build", "-color=false", f"-var-file={var_file.name}", f"-only={only}",
              template.name], prefix="packer", log=log, cwd=template.parent)


def _read_manifest(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def build_image(config: Config, platform: Platform, *, builder: str = "qemu",
                force: bool = False) -> ImageResult:
    """Build (or confirm up to date) the golden box of `platform`; see the module doc."""
    if builder not in platform.builders:
        raise GoldboxError(f"--builder {builder!r}: platform {platform.name} has builders "
                           f"{', '.join(platform.builders)} (platforms/{platform.name}.toml)")
    source_type, provider = BUILDERS[builder]
    build = config.build_dir / platform.name
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    log = build / "logs" / f"image-{stamp}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    phases = Phases(log=log)
    out = dist_dir(config, platform)
    box_path, manifest_path = out / box_file_name(config, provider), out / "manifest.json"
    print(f"goldbox image: {platform.name}, box {config.project.box.name} "
          f"{config.project.box.version}; log: {log}")
    work = build / "work"
    work.mkdir(parents=True, exist_ok=True)

    with phases.phase("artifacts") as note:
        tarball, served_by = ensure_tarball(config, platform)
        wheelhouse = work / "wheelhouse"
        shutil.rmtree(wheelhouse, ignore_errors=True)
        wheels = prepare_wheelhouse(config, platform, wheelhouse, log)
        note.append(f"{tarball.name} verified (from {served_by}); "
                    f"{len(wheels)} files in wheelhouse")

    prebuilt, extra = Prebuilt(), [tarball]
    if platform.python.native_bundle:
        with phases.phase("native build") as note:
            prebuilt, extra = _native_build(config, platform, tarball, wheelhouse, log)
            note.append(f"{extra[0].name} + {len(prebuilt.wheels)} wheel(s)")

    base_vars: dict[str, str] = {}
    if isinstance(platform.source, DebootstrapSource):
        with phases.phase("base disk") as note:
            from goldbox.basedisk import build_base_disk

            base = build_base_disk(config.cache_dir, platform, log=log)
            base_vars = {"base_image": str(base), "base_image_sha256": sha256_file(base)}
            note.append(f"{base.name} ({base.stat().st_size / 2**20:.0f} MiB)")

    with phases.phase("render") as note:
        acceleration = accel.detect(config.cache_dir)
        options = RenderOptions(packer_version=packer_version(),
                                libvirt_driver=acceleration.libvirt_driver, prebuilt=prebuilt)
        rendered = render_platform(config, platform, build, options)
        stage = work / "stage"
        _stage(config, platform, stage, wheelhouse, rendered.plan, extra)
        system_key = None
        if rendered.system_template:
            system_key = _system_key(config, rendered, base_vars["base_image_sha256"])
        digest = hashlib.sha256(json.dumps({
            "template": sha256_file(rendered.packer_template),
            "stage": tree_sha256(stage),
            "base": system_key or base_vars.get("base_image_sha256"),
            "box": [config.project.box.name, config.project.box.version, builder],
        }, sort_keys=True).encode()).hexdigest()
        note.append(f"accelerator {acceleration.accelerator}; inputs {digest[:12]}")

    previous = _read_manifest(manifest_path)
    if (not force and previous and previous.get("input_hash") == digest
            and box_path.is_file() and box_path.stat().st_size == previous.get("box_size")):
        phases.rows.append(("packer", 0.0, "skipped: no input changed since the last build"))
        print(phases.table())
        print(f"up to date: {box_path}")
        return ImageResult(box_path, manifest_path, True, phases)

    if system_key:
        with phases.phase("system image") as note:
            image, image_sha256, cached = _system_image(
                config, platform, rendered, system_key, base_vars,
                lambda: _system_stage(config, work / "system-stage", rendered.plan, extra,
                                      wheelhouse),
                acceleration.accelerator, log)
            base_vars = {"base_image": str(image), "base_image_sha256": image_sha256}
            note.append(f"{'cached' if cached else 'built'} {image.name} "
                        f"({image.stat().st_size / 2**20:.0f} MiB, key {system_key[:12]})")

    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    packer_output = work / "packer-output"
    shutil.rmtree(packer_output, ignore_errors=True)
    try:
        with phases.phase("packer") as note:
            partial.mkdir(parents=True)
            _packer_build(rendered.packer_template, {
                **base_vars,
                "accelerator": acceleration.accelerator, "stage_dir": str(stage),
                "output_dir": str(packer_output),
                "box_output": str(partial / box_file_name(config, provider)),
            }, f"{source_type}.{packer_source_name(platform)}", log)
            note.append(f"{builder}" + (f", accelerator {acceleration.accelerator}"
                                        if builder == "qemu" else ""))
        with phases.phase("box") as note:
            box = partial / box_file_name(config, provider)
            manifest = _manifest(config, platform, box, provider, digest, log, phases)
            # The plan baked into this box: `invoke verify` checks the VM against it.
            shutil.copy2(stage / "plan.json", partial / "plan.json")
            write_atomically(partial / "manifest.json",
                             json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            note.append(f"{box.name} {manifest['box_size'] / 2**20:.0f} MiB")
            if out.exists():
                shutil.rmtree(out)
            partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(packer_output, ignore_errors=True)
    _record_phase_seconds(manifest_path, phases)
    print(phases.table())
    print(f"box: {box_path}\nmanifest: {manifest_path}")
    return ImageResult(box_path, manifest_path, False, phases)


def _native_build(config: Config, platform: Platform, tarball: Path, wheelhouse: Path,
                  log: Path) -> tuple[Prebuilt, list[Path]]:
    """CPython and uWSGI compiled natively in a chroot of the release (see bundle.py)."""
    from goldbox.bundle import ReleaseChroot, build_cpython_bundle, build_native_wheel

    source = platform.source
    assert isinstance(source, DebootstrapSource)
    release = ReleaseChroot(suite=source.suite, mirror=source.mirror,
                            packages=tuple(platform.packages.build))
    bundle = build_cpython_bundle(
        config.cache_dir, platform=platform.name, release=release,
        python_version=platform.python.version, tarball=tarball,
        tarball_sha256=platform.python.sha256,
        configure_flags=list(platform.python.configure_flags), log=log)
    wheels = []
    for sdist in sorted(wheelhouse.glob("*.tar.gz")):
        built = build_native_wheel(config.cache_dir, release=release, bundle=bundle,
                                   python_version=platform.python.version, sdist=sdist,
                                   sdist_sha256=sha256_file(sdist), log=log)
        shutil.copy2(built.path, wheelhouse / built.path.name)
        wheels.append(StagedFile(f"wheelhouse/{built.path.name}", built.sha256))
    prebuilt = Prebuilt(python_bundle=StagedFile(bundle.path.name, bundle.sha256), wheels=wheels)
    return prebuilt, [bundle.path]


def _manifest(config: Config, platform: Platform, box: Path, provider: str, digest: str,
              log: Path, phases: Phases) -> dict:
    if not box.is_file():
        raise GoldboxError(f"packer finished but wrote no box at {box}")
    components = dict(VERSION_LINE.findall(log.read_text(errors="replace")))
    components.setdefault("cpython", platform.python.version)
    components["packer"] = ".".join(map(str, packer_version()))
    return {
        "format": 1,
        "box_name": config.project.box.name,
        "version": config.project.box.version,
        "platform": platform.name,
        "provider": provider,
        "architecture": platform.arch,
        "box_file": box.name,
        "box_sha256": sha256_file(box),
        "box_size": box.stat().st_size,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        .replace("+00:00", "Z"),
        "components": components,
        "git_commit": git_commit(config.root),
        "input_hash": digest,
        "phases": phases.seconds(),
    }


def _record_phase_seconds(manifest_path: Path, phases: Phases) -> None:
    """The 'box' phase ends after the manifest is written; store the final figures."""
    manifest = json.loads(manifest_path.read_text())
    manifest["phases"] = phases.seconds()
    write_atomically(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")

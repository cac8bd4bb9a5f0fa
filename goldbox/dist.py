"""dist/<platform>/: the finished box, its manifest.json and the plan baked into it,
swapped in at once when a build succeeded (the previous box stays until then).

The boxes of other targets lie beside them (goldbox/targets.py): a new golden box keeps
them (they are linked into the new folder), and a build of another architecture puts
its box, plan and manifest in without touching the rest, the manifest last."""

from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path

from goldbox import faults, proc
from goldbox.context import Context
from goldbox.errors import GoldboxError
from goldbox.files import remove_tree, sha256_file, swap_in, write_atomically
from goldbox.manifest import Manifest, read_manifest, write_manifest
from goldbox.targets import PRIMARY_MANIFEST, Target, built_manifests


def git_commit(root: Path) -> str:
    commit = proc.capture(["git", "rev-parse", "HEAD"], cwd=root, check=False).stdout.strip()
    dirty = proc.capture(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                         check=False).stdout.strip()
    commit = commit or "unknown"
    return f"{commit}-dirty" if dirty and commit != "unknown" else commit


def previous_manifest(ctx: Context) -> Manifest | None:
    """The manifest of the box in dist/, if there is a sound one (a corrupt one only
    means the box is rebuilt)."""
    if not ctx.manifest.exists():
        return None
    try:
        return read_manifest(ctx.manifest)
    except GoldboxError as exc:
        print(f"note: {exc}; the box will be rebuilt")
        return None


def install_box(ctx: Context, digest: str, phases: dict[str, float],
                components: dict[str, str]) -> Manifest:
    """Assemble the new dist/<p>/ (box, manifest.json, the plan baked into the box) under
    a partial name, then swap it in with one atomic rename: the previous box stays in
    place until the new one is complete, and a kill at any point leaves one of them.
    The manifest is written once, here, with `components` (the versions the build
    found) and `phases` (the seconds of the phases before this one)."""
    if not ctx.packer_box.is_file():
        raise GoldboxError(f"packer finished but wrote no box at {ctx.packer_box}")
    if not ctx.primary:
        return _install_beside(ctx, digest, phases, components)
    partial = ctx.dist_partial
    remove_tree(partial)
    partial.mkdir(parents=True)
    try:
        _keep_other_targets(ctx, partial)
        box = partial / ctx.box_file
        try:
            os.rename(ctx.packer_box, box)
        except OSError:  # dist/ on another filesystem
            shutil.copyfile(ctx.packer_box, box)
        manifest = _manifest(ctx, box, digest, phases, components)
        # The plan baked into this box: `invoke verify` checks the VM against it.
        shutil.copy2(ctx.stage / "plan.json", partial / ctx.plan_file)
        write_manifest(partial / "manifest.json", manifest)
        old = swap_in(partial, ctx.dist)
        faults.point("dist-swap")  # the new box is in place, the old one not yet deleted
        if old is not None:
            remove_tree(old)
    finally:
        remove_tree(partial)
    return manifest


def _keep_other_targets(ctx: Context, partial: Path) -> None:
    """Hard-link the other targets' manifests, boxes and plans from dist/<p>/ into the
    next one: a new golden box does not take away an arm64 or VirtualBox box."""
    for path in built_manifests(ctx.dist):
        if path.name == PRIMARY_MANIFEST:
            continue
        try:
            other = read_manifest(path)
        except GoldboxError as exc:
            print(f"note: {exc}; not kept")
            continue
        names = [other.box_file, path.name]
        if other.architecture and other.architecture != "amd64":
            names.append(Target(other.provider, other.architecture).plan_name)
        for name in names:
            if (ctx.dist / name).is_file():
                os.link(ctx.dist / name, partial / name)


def _install_beside(ctx: Context, digest: str, phases: dict[str, float],
                    components: dict[str, str]) -> Manifest:
    """A box of another architecture into dist/<p>/ beside the golden box: its old
    manifest goes first, then the box and its plan come in (each by a rename), then the
    new manifest, so a manifest never names a box that is not complete."""
    ctx.dist.mkdir(parents=True, exist_ok=True)
    ctx.manifest.unlink(missing_ok=True)
    box = ctx.dist / ctx.box_file
    incoming = box.with_name(f".{box.name}.partial")
    try:
        try:
            os.rename(ctx.packer_box, incoming)
        except OSError:  # dist/ on another filesystem
            shutil.copyfile(ctx.packer_box, incoming)
        os.replace(incoming, box)
    finally:
        incoming.unlink(missing_ok=True)
    write_atomically(ctx.dist / ctx.plan_file, (ctx.stage / "plan.json").read_bytes())
    manifest = _manifest(ctx, box, digest, phases, components)
    write_manifest(ctx.manifest, manifest)
    return manifest


def _manifest(ctx: Context, box: Path, digest: str, phases: dict[str, float],
              components: dict[str, str]) -> Manifest:
    return Manifest(
        box_name=ctx.config.project.box.name,
        version=ctx.config.project.box.version,
        platform=ctx.platform.name,
        provider=ctx.provider,
        architecture=ctx.arch.name,
        box_file=box.name,
        box_sha256=sha256_file(box),
        box_size=box.stat().st_size,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        .replace("+00:00", "Z"),
        components=components,
        git_commit=git_commit(ctx.root),
        input_hash=digest,
        phases=phases,
    )

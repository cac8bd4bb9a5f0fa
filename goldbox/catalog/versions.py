"""Changing a catalog: publish (a candidate), release, revoke, prune, and recording that
a version passed `invoke verify --from-catalog`.

Every change happens under the catalog's exclusive lock, so two changes run one after
the other and each sees the other's result. Files land before the entries that name
them and go after the entries that named them are gone, so a change killed at any
instant leaves every channel's metadata.json naming only complete files with the right
checksum: a box is copied under a temporary name, flushed and renamed; a `--force`
replacement is copied under a new name, then the state and metadata switch to it, then
the old file goes. The leftovers of an interrupted change (temporary files, files and
folders the state does not name) are swept by the next change, under the same lock."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from goldbox.catalog.layout import (
    MANIFEST,
    PLAN,
    box_file_name,
    channel_url_path,
    invalid,
    is_url,
    relative_box_path,
    require_catalog_dir,
    require_safe_box_dir,
    semver_key,
)
from goldbox.catalog.layout import base_url as resolve_base_url
from goldbox.catalog.metadata import (
    CANDIDATE,
    DEFAULT_ARCHITECTURE,
    RELEASED,
    REVOKED,
    SEMVER,
    BoxMetadata,
    BoxState,
    Provider,
    VersionState,
    checked,
    find_version,
    in_vagrant_order,
    load_state,
    per_architecture,
    render_channels,
    save_state,
    write_signed,
    write_state,
)
from goldbox.catalog.store import (
    Progress,
    catalog_lock,
    copy_box,
    os_failure,
    remove_file,
)
from goldbox.errors import GoldboxError
from goldbox.files import PARTIAL_PREFIX
from goldbox.manifest import Manifest, read_manifest
from goldbox.plan_model import parse_plan
from goldbox.signing import SUFFIX, signature_path

DEFAULT_GRACE_HOURS = 24.0


@dataclass(frozen=True)
class Published:
    box: str
    version: str
    provider: str
    metadata: Path
    box_path: Path
    url: str
    architecture: str | None = None

    @property
    def metadata_url(self) -> str:
        return self.url.rsplit("/", 3)[0] + "/metadata.json"


@dataclass(frozen=True)
class Build:
    """What publishing takes from dist/<platform>/: the manifest, the box beside it and
    the build's plan.json (which `verify --from-catalog` checks the box against)."""
    manifest: Manifest
    box: Path
    plan: bytes


def read_build(manifest_path: Path) -> Build:
    manifest = read_manifest(manifest_path)
    box = manifest_path.parent / manifest.box_file
    if not box.is_file():
        raise invalid(str(manifest_path), f"box_file = {manifest.box_file!r}: no such file "
                                          f"beside the manifest")
    plan_path = manifest_path.parent / PLAN
    try:
        plan = plan_path.read_bytes()
    except FileNotFoundError:
        raise GoldboxError(f"{plan_path}: no such file: publish needs the build's plan "
                           f"beside its manifest (`invoke image` writes both)") from None
    except OSError as exc:
        raise os_failure(plan_path, "read", exc) from None
    try:
        parse_plan(plan.decode(), str(plan_path))
    except UnicodeDecodeError as exc:
        raise invalid(str(plan_path), f"not a readable plan: {exc}") from None
    return Build(manifest, box, plan)


def _folders(folder: Path) -> list[Path]:
    """The folders in `folder`, never through a link."""
    with os.scandir(folder) as entries:
        return sorted(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))


def _files(folder: Path, prefix: str = "", suffix: str = "") -> list[Path]:
    """The plain files in `folder` (no link) whose names start and end so."""
    with os.scandir(folder) as entries:
        return sorted(Path(e.path) for e in entries if e.is_file(follow_symlinks=False)
                      and e.name.startswith(prefix) and e.name.endswith(suffix))


def _tree(folder: Path) -> Iterator[Path]:
    """`folder` and every folder below it, never through a link."""
    yield folder
    for sub in _folders(folder):
        yield from _tree(sub)


def _sweep(box_dir: Path, state: BoxState, progress: Progress,
           signing_key: Path | None = None) -> None:
    """Remove what an interrupted change left behind: temporary files, box files and
    folders the state does not name; render the channels from the state again. Every
    step looks at what is there with lstat: nothing is followed."""
    if not os.path.isdir(box_dir) or os.path.islink(box_dir):
        return
    try:
        for folder in list(_tree(box_dir)):
            for partial_file in _files(folder, prefix=PARTIAL_PREFIX):
                partial_file.unlink()
                progress(f"removed unfinished file {partial_file}")
        named: dict[tuple[str, str], set[str]] = {}  # one file per architecture
        for v in state.versions:
            for p in v.providers:
                named.setdefault((v.version, p.name), set()).add(p.file_name)
        for version_dir in _folders(box_dir):
            if not re.fullmatch(SEMVER, version_dir.name):
                continue
            for provider_dir in _folders(version_dir):
                keep = named.get((version_dir.name, provider_dir.name))
                if keep is None:
                    shutil.rmtree(provider_dir)
                    progress(f"removed {provider_dir}: not a version of {box_dir.name} "
                             f"any more")
                    continue
                for stale in _files(provider_dir, suffix=".box"):
                    if stale.name not in keep:
                        stale.unlink()
                        progress(f"removed {stale}: replaced by {', '.join(sorted(keep))}")
            with contextlib.suppress(OSError):
                version_dir.rmdir()  # only when empty
    except OSError as exc:
        raise os_failure(box_dir, "sweep", exc) from None
    if state.versions:
        render_channels(box_dir, state, signing_key)


def _forget(state: BoxState, entries: list[VersionState], progress: Progress,
            why: str) -> list[str]:
    """Drop `entries` from the state (the sweep then deletes their files)."""
    for entry in entries:
        state.versions.remove(entry)
        progress(f"{state.name} {entry.version}: {why}, deleting its files")
    return [v.version for v in entries]


def _purge_revoked(state: BoxState, grace_hours: float, now: float,
                   progress: Progress) -> list[str]:
    """Drop revoked versions whose grace period is over. Returns the versions dropped."""
    expired = [v for v in state.versions if v.status == REVOKED
               and v.revoked_at is not None and v.revoked_at + grace_hours * 3600 <= now]
    return _forget(state, expired, progress, f"revoked more than {grace_hours:g} h ago")


def _hide(entry: VersionState, now: float) -> None:
    """Off every channel now; the files stay until the grace period from `now` is over."""
    if entry.status != REVOKED:
        entry.revoked_at = now
        entry.status = REVOKED


def require_same_base(state: BoxState, label: str, base: str) -> None:
    """All versions of a box must be reachable the same way (file:// or one base URL)."""
    for entry in state.versions:
        for provider in entry.providers:
            relative = relative_box_path(state.name, entry.version, provider.name,
                                         provider.file_name)
            if not provider.url.endswith(relative):
                continue
            existing = provider.url[: -len(relative)]
            if existing != base:
                how = ("without --base-url" if existing.startswith("file:")
                       else f"with --base-url {existing}")
                raise invalid(label, f"version {entry.version} is published under "
                                     f"{existing}, not {base}; publish {how}")


def _box_kind(provider: str, architecture: str | None) -> str:
    """How a message names one provider's box: `libvirt`, or `libvirt arm64` beside the
    default architecture's."""
    if architecture in (None, DEFAULT_ARCHITECTURE):
        return provider
    return f"{provider} {architecture}"


def _check_publishable(box_dir: Path, version: str, kinds: list[tuple[str, str | None]],
                       base: str, force: bool) -> BoxState:
    """The box's state, if `version` with these (provider, architecture)s may be published
    into it. A released
    version never changes: teammates who added it would keep other bits under the same
    version, and its box would skip the verified check `release` makes."""
    require_safe_box_dir(box_dir)
    state = load_state(box_dir)
    label = str(box_dir / "metadata.json")
    require_same_base(state, label, base)
    for entry in state.versions:
        if entry.version != version:
            continue
        if entry.status == REVOKED:
            raise invalid(label, f"version {version} was revoked; publish a new version")
        if entry.status == RELEASED:
            raise invalid(label, f"version {version} is released and a released version "
                                 f"never changes (not even with --force); publish a new "
                                 f"version")
        listed = {(p.name, p.architecture) for p in entry.providers}
        present = [kind for kind in kinds if kind in listed]
        if not force and present:
            raise invalid(label, f"version {version} already has a "
                                 f"{_box_kind(*present[0])} box; pass --force to replace it")
    return state


def _new_file_name(box: str, version: str, provider: str, architecture: str | None,
                   sha256: str, current: str | None) -> str:
    """The canonical name, unless the version being replaced uses it: then a name of
    its own, so the old file keeps serving until the metadata has switched."""
    canonical = per_architecture(box_file_name(box, version, provider), architecture)
    if current != canonical:
        return canonical
    return canonical.removesuffix(".box") + f"-{sha256[:12]}.box"


def publish(manifest_path: Path, catalog_dir: Path, **options) -> Published:
    """Publish one build (the box beside `manifest_path`); see `publish_builds`."""
    return publish_builds([manifest_path], catalog_dir, **options)[0]


@dataclass
class _Placed:
    """One build's box on its way into the catalog (what a failure takes back)."""
    build: Build
    file_name: str
    old_file: str | None
    box_path: Path
    relative: str

    @property
    def kind(self) -> tuple[str, str | None]:
        return self.build.manifest.provider, self.build.manifest.architecture


def _one_version(builds: list[Build], manifest_paths: list[Path]) -> None:
    """The builds publish as one version: one box name and version, each provider and
    architecture once."""
    first = builds[0].manifest
    seen: set[tuple[str, str | None]] = set()
    for build, path in zip(builds, manifest_paths, strict=True):
        manifest = build.manifest
        if (manifest.box_name, manifest.version) != (first.box_name, first.version):
            raise invalid(str(path), f"box {manifest.box_name} {manifest.version}: publish "
                                     f"makes one version of one box, and {manifest_paths[0]} "
                                     f"is {first.box_name} {first.version}")
        kind = (manifest.provider, manifest.architecture)
        if kind in seen:
            raise invalid(str(path), f"a second {_box_kind(*kind)} box of this version")
        seen.add(kind)


def publish_builds(manifest_paths: list[Path], catalog_dir: Path, *,
                   base_url: str | None = None, description: str | None = None,
                   force: bool = False, release: bool = False,
                   grace_hours: float = DEFAULT_GRACE_HOURS, now: float | None = None,
                   org: str | None = None, signing_key: Path | None = None,
                   progress: Progress = print) -> list[Published]:
    """Publish the boxes beside `manifest_paths` (one build each: provider x architecture,
    with the build's plan.json) to `catalog_dir` as one version, a candidate (released at
    once with `release`). Each provider's entries are listed in Vagrant's order
    (`in_vagrant_order`: the default architecture's last, for Vagrant 2.3).

    The URLs in metadata.json are file:// URLs of `catalog_dir`, or lie under
    `base_url` when the tree is served over HTTP. An existing candidate's box is
    replaced only with `force`; a released version never. `description` (if given)
    becomes the box's description. With `org`, the box is named `<org>/<box>` in its
    metadata (Vagrant installs it under that name; the catalog serves it at
    `/<org>/<box>` too) and keeps its folder `<catalog>/<box>/`. With `signing_key`,
    every channel's metadata.json, the manifests and plans get a signature beside
    them (`<file>.sig`, `write_signed`). Every check runs before anything is written; a
    refusal changes nothing."""
    builds = [read_build(path) for path in manifest_paths]
    _one_version(builds, manifest_paths)
    box, version = builds[0].manifest.box_name, builds[0].manifest.version
    kinds = [(b.manifest.provider, b.manifest.architecture) for b in builds]
    name = checked(BoxMetadata, {"name": f"{org}/{box}" if org else box, "versions": []},
                   "catalog.org").name
    if org and box.endswith(SUFFIX):
        raise invalid(str(manifest_paths[0]), f"box_name = {box!r}: /{org}/{box} is where "
                                              f"the catalog serves a signature; rename the box")
    base = resolve_base_url(catalog_dir, base_url)
    box_dir = catalog_dir / box
    if catalog_dir.is_dir():
        require_catalog_dir(catalog_dir, create=False)
        _check_publishable(box_dir, version, kinds, base, force)
    require_catalog_dir(catalog_dir, create=True)
    with catalog_lock(catalog_dir, progress):
        # Again under the lock: another publish may have finished meanwhile.
        state = _check_publishable(box_dir, version, kinds, base, force)
        _purge_revoked(state, grace_hours, time.time() if now is None else now, progress)
        _sweep(box_dir, state, progress, signing_key)
        entry = next((v for v in state.versions if v.version == version), None)
        if entry is None:
            entry = VersionState(version=version, status=CANDIDATE, providers=[])
            state.versions.append(entry)
        placed: list[_Placed] = []
        try:
            for build, path in zip(builds, manifest_paths, strict=True):
                placed.append(_place(build, path, entry, catalog_dir, box_dir, base,
                                     signing_key, progress))
            entry.providers = in_vagrant_order(entry.providers)
            if release:
                entry.status = RELEASED
            if description is not None:
                state.description = description
            if state.name != name:
                progress(f"{box}: named {name} (was {state.name}); teammates add it as {name}")
                state.name = name
            write_state(box_dir, state)
        except GoldboxError:
            for each in placed:
                _take_back(each)
            raise
        render_channels(box_dir, state, signing_key)
        progress(f"wrote {box_dir / 'metadata.json'}")
        for each in placed:
            manifest = each.build.manifest.model_copy(update={"box_file": each.file_name})
            write_signed(each.box_path.parent / per_architecture(MANIFEST, each.kind[1]),
                         manifest.dump().encode(), signing_key)
            if each.old_file and each.old_file != each.file_name:
                remove_file(each.box_path.parent / each.old_file)
                progress(f"removed the replaced {each.old_file}")
    published = [Published(box, version, each.kind[0], box_dir / "metadata.json",
                           each.box_path, base + each.relative, each.kind[1])
                 for each in placed]
    for made in published:
        progress(f"published {box} {version} ({_box_kind(made.provider, made.architecture)}) "
                 f"as a {'released version' if release else 'candidate'}: {made.url}")
    if signing_key is None:
        progress("not signed: catalog.signing_key is not set, so no signature was written "
                 "(teammates' `invoke add` and `catalog-check --signers` will refuse it)")
    first = published[0]
    if release and name != box and is_url(base):
        progress(f"teammates: VAGRANT_SERVER_URL={_base_of(first).rstrip('/')} "
                 f"vagrant box add {name} (or `invoke add {name}`)")
    elif release:
        progress(f"teammates: vagrant box add {first.metadata_url}")
    else:
        progress(f"try it: vagrant box add {_base_of(first)}"
                 f"{channel_url_path(box, 'candidate')}; then `invoke release {version}`")
    return published


def _place(build: Build, manifest_path: Path, entry: VersionState, catalog_dir: Path,
           box_dir: Path, base: str, signing_key: Path | None, progress: Progress) -> _Placed:
    """Copy one build's plan and box into its provider's folder and list it in `entry`
    (files before the entries that name them: a listed box has its plan)."""
    manifest = build.manifest
    provider, architecture = manifest.provider, manifest.architecture
    replaced = next((p for p in entry.providers
                     if (p.name, p.architecture) == (provider, architecture)), None)
    old_file = replaced.file_name if replaced else None
    file_name = _new_file_name(manifest.box_name, manifest.version, provider, architecture,
                               manifest.box_sha256, old_file)
    relative = relative_box_path(manifest.box_name, manifest.version, provider, file_name)
    box_path = catalog_dir / relative
    try:
        for folder in (box_dir, box_path.parent.parent, box_path.parent):
            folder.mkdir(mode=0o755, exist_ok=True)
    except OSError as exc:
        raise os_failure(box_path.parent, "create", exc) from None
    placing = _Placed(build, file_name, old_file if replaced else None, box_path, relative)
    plan = box_path.parent / per_architecture(PLAN, architecture)
    try:
        write_signed(plan, build.plan, signing_key)
        copy_box(build.box, box_path, manifest.box_sha256, progress)
    except GoldboxError:
        _take_back(placing)
        raise
    progress(f"copied {box_path.name}")
    entry.providers = [p for p in entry.providers if p is not replaced] + [
        _provider_entry(manifest, base + relative, str(manifest_path))]
    return placing


def _take_back(placed: _Placed) -> None:
    """Undo `_place` after a failure: a new copy nothing names any more goes, and so does
    the plan of a box that was not there before."""
    if placed.file_name != placed.old_file:
        remove_file(placed.box_path)
    if placed.old_file is None:
        plan = placed.box_path.parent / per_architecture(PLAN, placed.kind[1])
        remove_file(plan)
        remove_file(signature_path(plan))


def _provider_entry(manifest: Manifest, url: str, label: str) -> Provider:
    # Vagrant >= 2.4 picks a box by architecture; 2.3 ignores the key.
    return checked(Provider, {"name": manifest.provider, "url": url,
                              "checksum_type": "sha256", "checksum": manifest.box_sha256,
                              "architecture": manifest.architecture}, label)


def _base_of(published: Published) -> str:
    return published.metadata_url.removesuffix(f"{published.box}/metadata.json")


@contextlib.contextmanager
def _changing(catalog_dir: Path, box: str, progress: Progress) -> Iterator[BoxState]:
    """The box's state under the catalog's lock, after the checks every change makes:
    the catalog and the box's tree safe to work in (no link, as root nobody else's),
    the box published, its state readable (checked before waiting for the lock too)."""
    require_catalog_dir(catalog_dir, create=False)
    box_dir = catalog_dir / box
    require_safe_box_dir(box_dir)
    if not os.path.isfile(box_dir / "metadata.json"):
        raise GoldboxError(f"{box_dir / 'metadata.json'}: no such file (box {box!r} was "
                           f"never published to this catalog)")
    load_state(box_dir)
    with catalog_lock(catalog_dir, progress):
        require_safe_box_dir(box_dir)
        yield load_state(box_dir)


def release(catalog_dir: Path, box: str, version: str, *, require_verified: bool = False,
            signing_key: Path | None = None, progress: Progress = print) -> None:
    """Make a candidate version visible on every channel (the default metadata.json)."""
    box_dir = catalog_dir / box
    with _changing(catalog_dir, box, progress) as state:
        entry = find_version(state, version, str(box_dir / "metadata.json"))
        if entry.status == REVOKED:
            raise GoldboxError(f"{box} {version}: revoked versions stay revoked; publish "
                               f"a new version")
        if require_verified:
            for provider in entry.providers:
                if provider.checksum not in entry.verified_sha256:
                    raise GoldboxError(
                        f"{box} {version} ({provider.name}, sha256 "
                        f"{(provider.checksum or '')[:12]}...): not verified; run `invoke "
                        f"verify --from-catalog URL@{version}` first (catalog.require_verified)")
        was = entry.status
        entry.status = RELEASED
        _sweep(box_dir, state, progress, signing_key)
        save_state(box_dir, state, signing_key)
    progress(f"{box} {version}: {'already released' if was == RELEASED else 'released'}; "
             f"`vagrant box outdated` now offers it")


def revoke(catalog_dir: Path, box: str, version: str, *,
           grace_hours: float = DEFAULT_GRACE_HOURS, delete_now: bool = False,
           now: float | None = None, signing_key: Path | None = None,
           progress: Progress = print) -> None:
    """Hide a version from every channel at once; its files stay `grace_hours` for
    clients mid-download, then the next publish, prune or revoke deletes them. With
    `delete_now` (a leaked box) its files go at once too."""
    now = time.time() if now is None else now
    box_dir = catalog_dir / box
    with _changing(catalog_dir, box, progress) as state:
        entry = find_version(state, version, str(box_dir / "metadata.json"))
        _hide(entry, now)
        if delete_now:
            _forget(state, [entry], progress, "revoked with --now")
        _purge_revoked(state, grace_hours, now, progress)
        save_state(box_dir, state, signing_key)
        _sweep(box_dir, state, progress, signing_key)
    if delete_now:
        progress(f"{box} {version}: revoked, hidden from every channel, its files deleted")
    else:
        progress(f"{box} {version}: revoked, hidden from every channel; its files are "
                 f"deleted after {grace_hours:g} h (by the next publish, prune or revoke)")


def record_verified(catalog_dir: Path, box: str, version: str, sha256: str,
                    progress: Progress = print) -> None:
    """Note that `invoke verify --from-catalog` passed for this version's box `sha256`."""
    box_dir = catalog_dir / box
    with _changing(catalog_dir, box, progress) as state:
        entry = find_version(state, version, str(box_dir / "metadata.json"))
        if sha256 not in [p.checksum for p in entry.providers]:
            raise GoldboxError(f"{box} {version}: sha256 {sha256[:12]}... is not this "
                               f"version's box (replaced since the verify started?)")
        entry.verified_sha256 = sorted({*entry.verified_sha256, sha256})
        save_state(box_dir, state)
    progress(f"{box} {version}: verified (sha256 {sha256[:12]}...)")


def _superseded(state: BoxState, keep: int) -> list[VersionState]:
    """What `prune --keep` takes off the channels: released versions beyond the `keep`
    newest, and candidates older than the newest released version (never released
    since, and `vagrant box update` would never offer them). A candidate newer than
    every released version is still on trial and stays; the stable channel keeps
    `keep` >= 1 versions whenever it had any."""
    released = sorted((v for v in state.versions if v.status == RELEASED),
                      key=lambda v: semver_key(v.version))
    if not released:
        return []
    newest = semver_key(released[-1].version)
    stale = [v for v in state.versions
             if v.status == CANDIDATE and semver_key(v.version) < newest]
    return released[:-keep] + stale


def prune(catalog_dir: Path, box: str, keep: int, *,
          grace_hours: float = DEFAULT_GRACE_HOURS, now: float | None = None,
          signing_key: Path | None = None, progress: Progress = print) -> list[str]:
    """Keep the `keep` newest released versions of `box` (see `_superseded`). The others
    leave every channel now and their files go after `grace_hours` (for downloads
    under way), as a revoked version's do; files of versions revoked more than
    `grace_hours` ago go now. Returns the versions taken off the channels or deleted,
    oldest first."""
    if keep < 1:
        raise GoldboxError(f"--keep {keep}: say how many of the newest released versions "
                           f"to keep (at least 1)")
    now = time.time() if now is None else now
    box_dir = catalog_dir / box
    with _changing(catalog_dir, box, progress) as state:
        hidden = _superseded(state, keep)
        for entry in hidden:
            _hide(entry, now)
            progress(f"{box} {entry.version}: pruned, hidden from every channel")
        expired = _purge_revoked(state, grace_hours, now, progress)
        # Entries first, files second: a prune killed in between leaves folders that
        # the state no longer names, which this sweep (or the next one) removes.
        save_state(box_dir, state, signing_key)
        _sweep(box_dir, state, progress, signing_key)
    kept = [v.version for v in state.versions if v.status != REVOKED]
    removed = sorted({v.version for v in hidden} | set(expired), key=semver_key)
    progress(f"{box}: removed {', '.join(removed) or 'no version'}; kept "
             f"{', '.join(kept) or 'no version'}")
    return removed

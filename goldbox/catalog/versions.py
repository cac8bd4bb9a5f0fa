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
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from goldbox.catalog.layout import (
    MANIFEST,
    PARTIAL_PREFIX,
    box_file_name,
    channel_url_path,
    invalid,
    relative_box_path,
    require_catalog_dir,
    semver_key,
)
from goldbox.catalog.layout import base_url as resolve_base_url
from goldbox.catalog.metadata import (
    CANDIDATE,
    RELEASED,
    REVOKED,
    find_version,
    load_state,
    read_manifest,
    render_channels,
    save_state,
    write_state,
)
from goldbox.catalog.store import (
    Progress,
    catalog_lock,
    copy_box,
    os_failure,
    remove_file,
    write_file_atomically,
)
from goldbox.config import SEMVER
from goldbox.errors import GoldboxError

DEFAULT_GRACE_HOURS = 24.0


@dataclass(frozen=True)
class Published:
    box: str
    version: str
    provider: str
    metadata: Path
    box_path: Path
    url: str

    @property
    def metadata_url(self) -> str:
        return self.url.rsplit("/", 3)[0] + "/metadata.json"


def _file_of(provider_entry: dict) -> str:
    return provider_entry["url"].rsplit("/", 1)[1]


def _sweep(box_dir: Path, state: dict, progress: Progress) -> None:
    """Remove what an interrupted change left behind: temporary files, box files and
    folders the state does not name; render the channels from the state again."""
    if not box_dir.is_dir():
        return
    try:
        for partial_file in sorted(box_dir.rglob(f"{PARTIAL_PREFIX}*")):
            partial_file.unlink()
            progress(f"removed unfinished file {partial_file}")
        named = {(v["version"], p["name"]): _file_of(p)
                 for v in state["versions"] for p in v["providers"]}
        for version_dir in sorted(p for p in box_dir.iterdir() if p.is_dir()):
            if not SEMVER.match(version_dir.name):
                continue
            for provider_dir in sorted(p for p in version_dir.iterdir() if p.is_dir()):
                keep = named.get((version_dir.name, provider_dir.name))
                if keep is None:
                    shutil.rmtree(provider_dir)
                    progress(f"removed {provider_dir}: not a version of {box_dir.name} "
                             f"any more")
                    continue
                for stale in sorted(provider_dir.glob("*.box")):
                    if stale.name != keep:
                        stale.unlink()
                        progress(f"removed {stale}: replaced by {keep}")
            with contextlib.suppress(OSError):
                version_dir.rmdir()  # only when empty
    except OSError as exc:
        raise os_failure(box_dir, "sweep", exc) from None
    if state["versions"]:
        render_channels(box_dir, state)


def _purge_revoked(state: dict, grace_hours: float, now: float,
                   progress: Progress) -> list[str]:
    """Drop revoked versions whose grace period is over (the sweep then deletes their
    files). Returns the versions dropped."""
    expired = [v for v in state["versions"] if v["status"] == REVOKED
               and v["revoked_at"] + grace_hours * 3600 <= now]
    for entry in expired:
        state["versions"].remove(entry)
        progress(f"{state['name']} {entry['version']}: revoked more than {grace_hours:g} h "
                 f"ago, deleting its files")
    return [v["version"] for v in expired]


def _check_base(state: dict, label: str, base: str) -> None:
    """All versions of a box must be reachable the same way (file:// or one base URL)."""
    for entry in state["versions"]:
        for provider in entry["providers"]:
            relative = relative_box_path(state["name"], entry["version"], provider["name"],
                                         _file_of(provider))
            if not provider["url"].endswith(relative):
                continue
            existing = provider["url"][: -len(relative)]
            if existing != base:
                how = ("without --base-url" if existing.startswith("file:")
                       else f"with --base-url {existing}")
                raise invalid(label, f"version {entry['version']} is published under "
                                     f"{existing}, not {base}; publish {how}")


def _check_publishable(box_dir: Path, version: str, provider: str, base: str,
                       force: bool) -> dict:
    state = load_state(box_dir)
    label = str(box_dir / "metadata.json")
    _check_base(state, label, base)
    for entry in state["versions"]:
        if entry["version"] != version:
            continue
        if entry["status"] == REVOKED:
            raise invalid(label, f"version {version} was revoked; publish a new version")
        if not force and any(p["name"] == provider for p in entry["providers"]):
            raise invalid(label, f"version {version} already has a {provider} box; pass "
                                 f"--force to replace it")
    return state


def _new_file_name(box: str, version: str, provider: str, sha256: str,
                   current: str | None) -> str:
    """The canonical name, unless the version being replaced uses it: then a name of
    its own, so the old file keeps serving until the metadata has switched."""
    canonical = box_file_name(box, version, provider)
    if current != canonical:
        return canonical
    return canonical.removesuffix(".box") + f"-{sha256[:12]}.box"


def publish(manifest_path: Path, catalog_dir: Path, *, base_url: str | None = None,
            description: str | None = None, force: bool = False, release: bool = False,
            grace_hours: float = DEFAULT_GRACE_HOURS, now: float | None = None,
            progress: Progress = print) -> Published:
    """Publish the box beside `manifest_path` to `catalog_dir` as a candidate (released at
    once with `release`).

    The URLs in metadata.json are file:// URLs of `catalog_dir`, or lie under
    `base_url` when the tree is served over HTTP. An existing version + provider is
    refused unless `force`. `description` (if given) becomes the box's description.
    Every check runs before anything is written; a refusal changes nothing."""
    manifest = read_manifest(manifest_path)
    box, version, provider = manifest["box_name"], manifest["version"], manifest["provider"]
    base = resolve_base_url(catalog_dir, base_url)
    box_dir = catalog_dir / box
    if catalog_dir.is_dir():
        _check_publishable(box_dir, version, provider, base, force)
    require_catalog_dir(catalog_dir, create=True)
    with catalog_lock(catalog_dir, progress):
        # Again under the lock: another publish may have finished meanwhile.
        state = _check_publishable(box_dir, version, provider, base, force)
        _purge_revoked(state, grace_hours, time.time() if now is None else now, progress)
        _sweep(box_dir, state, progress)
        entry = next((v for v in state["versions"] if v["version"] == version), None)
        if entry is None:
            entry = {"version": version, "status": CANDIDATE, "providers": []}
            state["versions"].append(entry)
        replaced = next((p for p in entry["providers"] if p["name"] == provider), None)
        old_file = _file_of(replaced) if replaced else None
        file_name = _new_file_name(box, version, provider, manifest["box_sha256"], old_file)
        relative = relative_box_path(box, version, provider, file_name)
        box_path = catalog_dir / relative
        try:
            box_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_failure(box_path.parent, "create", exc) from None
        copy_box(manifest_path.parent / manifest["box_file"], box_path,
                 manifest["box_sha256"], progress)
        progress(f"copied {box_path.name}")
        provider_entry = {"name": provider, "url": base + relative,
                          "checksum_type": "sha256", "checksum": manifest["box_sha256"]}
        if manifest.get("architecture"):
            # Vagrant >= 2.4 picks a box by architecture; 2.3 ignores the key.
            provider_entry["architecture"] = manifest["architecture"]
        entry["providers"] = sorted(
            [p for p in entry["providers"] if p["name"] != provider] + [provider_entry],
            key=lambda p: p["name"])
        if release:
            entry["status"] = RELEASED
        if description is not None:
            state["description"] = description
        state = {"name": box, "description": state.get("description", ""), **state}
        try:
            write_state(box_dir, state)
        except GoldboxError:
            if file_name != old_file:  # nothing names the new copy: take it back
                remove_file(box_path)
            raise
        render_channels(box_dir, state)
        progress(f"wrote {box_dir / 'metadata.json'}")
        published_manifest = json.dumps({**manifest, "box_file": file_name}, indent=2,
                                        sort_keys=True) + "\n"
        write_file_atomically(box_path.parent / MANIFEST, published_manifest.encode())
        if old_file and old_file != file_name:
            remove_file(box_path.parent / old_file)
            progress(f"removed the replaced {old_file}")
    published = Published(box, version, provider, box_dir / "metadata.json", box_path,
                          base + relative)
    progress(f"published {box} {version} ({provider}) as a "
             f"{'released version' if release else 'candidate'}: {published.url}")
    if release:
        progress(f"teammates: vagrant box add {published.metadata_url}")
    else:
        progress(f"try it: vagrant box add {_base_of(published)}"
                 f"{channel_url_path(box, 'candidate')}; then `invoke release {version}`")
    return published


def _base_of(published: Published) -> str:
    return published.metadata_url.removesuffix(f"{published.box}/metadata.json")


def _locked_change(catalog_dir: Path, box: str, progress: Progress):
    require_catalog_dir(catalog_dir, create=False)
    box_dir = catalog_dir / box
    if not (box_dir / "metadata.json").is_file():
        raise GoldboxError(f"{box_dir / 'metadata.json'}: no such file (box {box!r} was "
                           f"never published to this catalog)")
    load_state(box_dir)  # refuse a broken one before taking the lock
    return box_dir, catalog_lock(catalog_dir, progress)


def release(catalog_dir: Path, box: str, version: str, *, require_verified: bool = False,
            progress: Progress = print) -> None:
    """Make a candidate version visible on every channel (the default metadata.json)."""
    box_dir, lock = _locked_change(catalog_dir, box, progress)
    with lock:
        state = load_state(box_dir)
        entry = find_version(state, version, str(box_dir / "metadata.json"))
        if entry["status"] == REVOKED:
            raise GoldboxError(f"{box} {version}: revoked versions stay revoked; publish "
                               f"a new version")
        if require_verified:
            passed = set(entry.get("verified_sha256", []))
            for provider in entry["providers"]:
                if provider["checksum"] not in passed:
                    raise GoldboxError(
                        f"{box} {version} ({provider['name']}, sha256 "
                        f"{provider['checksum'][:12]}...): not verified; run `invoke verify "
                        f"--from-catalog URL@{version}` first (catalog.require_verified)")
        was = entry["status"]
        entry["status"] = RELEASED
        _sweep(box_dir, state, progress)
        save_state(box_dir, state)
    progress(f"{box} {version}: {'already released' if was == RELEASED else 'released'}; "
             f"`vagrant box outdated` now offers it")


def revoke(catalog_dir: Path, box: str, version: str, *,
           grace_hours: float = DEFAULT_GRACE_HOURS, now: float | None = None,
           progress: Progress = print) -> None:
    """Hide a version from every channel at once; its files stay `grace_hours` for
    clients mid-download, then the next publish, prune or revoke deletes them."""
    now = time.time() if now is None else now
    box_dir, lock = _locked_change(catalog_dir, box, progress)
    with lock:
        state = load_state(box_dir)
        entry = find_version(state, version, str(box_dir / "metadata.json"))
        if entry["status"] != REVOKED:
            entry["status"], entry["revoked_at"] = REVOKED, now
        _purge_revoked(state, grace_hours, now, progress)
        save_state(box_dir, state)
        _sweep(box_dir, state, progress)
    progress(f"{box} {version}: revoked, hidden from every channel; its files are deleted "
             f"after {grace_hours:g} h (by the next publish, prune or revoke)")


def record_verified(catalog_dir: Path, box: str, version: str, sha256: str,
                    progress: Progress = print) -> None:
    """Note that `invoke verify --from-catalog` passed for this version's box `sha256`."""
    box_dir, lock = _locked_change(catalog_dir, box, progress)
    with lock:
        state = load_state(box_dir)
        entry = find_version(state, version, str(box_dir / "metadata.json"))
        if sha256 not in [p["checksum"] for p in entry["providers"]]:
            raise GoldboxError(f"{box} {version}: sha256 {sha256[:12]}... is not this "
                               f"version's box (replaced since the verify started?)")
        entry["verified_sha256"] = sorted({*entry.get("verified_sha256", []), sha256})
        save_state(box_dir, state)
    progress(f"{box} {version}: verified (sha256 {sha256[:12]}...)")


def prune(catalog_dir: Path, box: str, keep: int, *,
          grace_hours: float = DEFAULT_GRACE_HOURS, now: float | None = None,
          progress: Progress = print) -> list[str]:
    """Keep the `keep` newest versions of `box` (revoked ones aside); remove the older
    ones' entries, then their files, and the files of versions revoked more than
    `grace_hours` ago. Returns the removed versions, oldest first."""
    if keep < 1:
        raise GoldboxError(f"--keep {keep}: say how many of the newest versions to keep "
                           f"(at least 1)")
    box_dir, lock = _locked_change(catalog_dir, box, progress)
    with lock:
        state = load_state(box_dir)
        expired = _purge_revoked(state, grace_hours, time.time() if now is None else now,
                                 progress)
        live = sorted((v for v in state["versions"] if v["status"] != REVOKED),
                      key=lambda v: semver_key(v["version"]))
        doomed = live[:-keep]
        for entry in doomed:
            state["versions"].remove(entry)
        # Entries first, files second: a prune killed in between leaves folders that
        # the state no longer names, which this sweep (or the next one) removes.
        save_state(box_dir, state)
        _sweep(box_dir, state, progress)
    kept = [v["version"] for v in live[-keep:]]
    removed = sorted([v["version"] for v in doomed] + expired, key=semver_key)
    progress(f"{box}: removed {', '.join(removed) or 'no version'}; kept {', '.join(kept)}")
    return removed

"""What a catalog says about its boxes: the manifest `invoke image` wrote, Vagrant's box
metadata (one file per channel), and goldbox's own record of every version and its state
(`.goldbox-state.json`), from which the channels' metadata files are rendered.

A version's life: `candidate` (published, seen only on the candidate channel) ->
`released` (on every channel) -> `revoked` (on none; its files stay for a grace period,
then go). A catalog written before states existed reads as all versions released."""

from __future__ import annotations

import json
from pathlib import Path

from goldbox.catalog.layout import (
    METADATA,
    STATE_FILE,
    channel_url_path,
    invalid,
    semver_key,
)
from goldbox.catalog.store import write_file_atomically
from goldbox.config import SEMVER
from goldbox.manifest import read_manifest as load_manifest

CANDIDATE, RELEASED, REVOKED = "candidate", "released", "revoked"
STATES = (CANDIDATE, RELEASED, REVOKED)
# Channel name -> the states it lists. `stable` is <box>/metadata.json, the URL teammates add.
CHANNELS = {"stable": (RELEASED,), "candidate": (CANDIDATE, RELEASED)}


def read_manifest(path: Path) -> dict:
    """The manifest `invoke image` wrote (goldbox.manifest's one loader), with its box
    beside it: what publishing needs."""
    manifest = load_manifest(path)
    if not (path.parent / manifest.box_file).is_file():
        raise invalid(str(path), f"box_file = {manifest.box_file!r}: no such file "
                                 f"beside the manifest")
    return manifest.model_dump(exclude_none=True)


def parse_metadata(text: str, label: str) -> dict:
    """Vagrant box metadata, checked as far as this catalog relies on it."""
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as exc:
        raise invalid(label, f"not valid JSON: {exc}") from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        raise invalid(label, "not Vagrant box metadata: expected an object with a 'name'")
    versions = metadata.get("versions")
    if not isinstance(versions, list):
        raise invalid(label, "versions: expected a list")
    for index, entry in enumerate(versions):
        key = f"versions[{index}]"
        if not isinstance(entry, dict):
            raise invalid(label, f"{key}: expected an object")
        version = entry.get("version")
        if not isinstance(version, str) or not SEMVER.match(version):
            raise invalid(label, f"{key}.version = {version!r}: expected MAJOR.MINOR.PATCH")
        providers = entry.get("providers")
        if not isinstance(providers, list) or not all(
                isinstance(p, dict) and isinstance(p.get("name"), str)
                and isinstance(p.get("url"), str) for p in providers):
            raise invalid(label, f"{key}.providers: expected a list of objects with "
                                 f"'name' and 'url'")
    return metadata


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise invalid(str(path), f"cannot read: {exc}") from None


def load_metadata(path: Path, box: str) -> dict:
    """A box's metadata file (an empty box when there is none), named as its folder."""
    if not path.exists():
        return {"name": box, "versions": []}
    metadata = parse_metadata(_read_text(path), str(path))
    if metadata["name"] != box:
        raise invalid(str(path), f"name = {metadata['name']!r}, but it lies in the "
                                 f"folder of box {box!r}")
    return metadata


def load_state(box_dir: Path) -> dict:
    """Every version of the box in `box_dir` with its state; read from metadata.json (all
    released) for a catalog that has no state file yet."""
    path = box_dir / STATE_FILE
    if not path.exists():
        state = load_metadata(box_dir / METADATA, box_dir.name)
        for entry in state["versions"]:
            entry["status"] = RELEASED
        return state
    state = load_metadata(path, box_dir.name)
    for index, entry in enumerate(state["versions"]):
        if entry.get("status") not in STATES:
            raise invalid(str(path), f"versions[{index}].status = {entry.get('status')!r}: "
                                     f"expected one of {', '.join(STATES)}")
        if entry["status"] == REVOKED and not isinstance(entry.get("revoked_at"), int | float):
            raise invalid(str(path), f"versions[{index}].revoked_at: expected a UNIX time")
    return state


def find_version(state: dict, version: str, label: str) -> dict:
    entry = next((v for v in state["versions"] if v["version"] == version), None)
    if entry is None:
        known = ", ".join(f"{v['version']} ({v['status']})" for v in state["versions"])
        raise invalid(label, f"no version {version} of box {state['name']!r} "
                             f"(known: {known or 'none'})")
    return entry


def channel_metadata(state: dict, channel: str) -> dict:
    """Vagrant's metadata for one channel: the versions in its states, oldest first,
    with only the keys Vagrant reads."""
    listed = [{"version": v["version"], "providers": v["providers"]}
              for v in state["versions"] if v["status"] in CHANNELS[channel]]
    return {"name": state["name"], "description": state.get("description", ""),
            "versions": sorted(listed, key=lambda v: semver_key(v["version"]))}


def channel_path(box_dir: Path, channel: str) -> Path:
    return box_dir.parent / channel_url_path(box_dir.name, channel)


def save_state(box_dir: Path, state: dict) -> None:
    """Write the state, then each channel's metadata.json from it (each by a rename).
    Interrupted in between, the channels still list only files that exist: the next
    locked operation renders them again from the state."""
    write_state(box_dir, state)
    render_channels(box_dir, state)


def write_state(box_dir: Path, state: dict) -> None:
    state["versions"].sort(key=lambda v: semver_key(v["version"]))
    write_file_atomically(box_dir / STATE_FILE, _json(state))


def render_channels(box_dir: Path, state: dict) -> None:
    for channel in CHANNELS:
        path = channel_path(box_dir, channel)
        data = _json(channel_metadata(state, channel))
        if path.is_file() and path.read_bytes() == data:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomically(path, data)


def _json(value: dict) -> bytes:
    return (json.dumps(value, indent=2) + "\n").encode()

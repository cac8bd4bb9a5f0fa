"""What a catalog says about its boxes, as typed models: Vagrant's box metadata (one file
per channel, `BoxMetadata`) and goldbox's own record of every version and its state
(`.goldbox-state.json`, `BoxState`), from which the channels' metadata files are rendered.

Every byte of a catalog is untrusted input (anyone who can write the directory, or any
server a teammate points `verify --from-catalog` at, wrote it): names, versions,
providers, URLs and checksums are checked with allow-lists (`re.fullmatch`) before any
of it is used, and a bad file is one line naming it, the key, the value and what was
expected.

A version's life: `candidate` (published, seen only on the candidate channel) ->
`released` (on every channel) -> `revoked` (on none; its files stay for a grace period,
then go). A catalog written before states existed reads as all versions released."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from goldbox.catalog.layout import (
    METADATA,
    STATE_FILE,
    channel_url_path,
    invalid,
    semver_key,
)
from goldbox.catalog.store import read_file_no_follow, remove_file, write_file_atomically
from goldbox.signing import sign, signature_path
from goldbox.validation import allowed, validated, validated_json

Status = Literal["candidate", "released", "revoked"]
CANDIDATE: Final = "candidate"
RELEASED: Final = "released"
REVOKED: Final = "revoked"
# Channel name -> the states it lists. `stable` is <box>/metadata.json, the URL teammates add.
CHANNELS = {"stable": (RELEASED,), "candidate": (CANDIDATE, RELEASED)}

SEMVER = r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
SHA256 = r"[0-9a-f]{64}"


NAME = r"[a-z0-9][a-z0-9._-]*"
# `acme/goldbox-flask`: Vagrant installs a box under the name its metadata gives, so a
# Vagrantfile's `config.vm.box = "acme/goldbox-flask"` needs exactly that name here.
BoxName = Annotated[str, allowed(rf"({NAME}/)?{NAME}",
                                  "a box name, ORG/NAME or NAME, each of lowercase letters, "
                                  "digits, '.', '_' or '-'")]
ProviderName = Annotated[str, allowed(r"[a-z0-9_-]+", "a Vagrant provider name such as "
                                                       "libvirt")]
Architecture = Annotated[str, allowed(r"[a-z0-9_]+", "an architecture such as amd64")]
SemVer = Annotated[str, allowed(SEMVER, "MAJOR.MINOR.PATCH")]
Sha256 = Annotated[str, allowed(SHA256, "a sha256: 64 lowercase hex characters")]
BoxUrl = Annotated[str, allowed(r"(https?|file)://[^\s\"'`\\<>]+",
                                 "an http://, https:// or file:// URL")]
ChecksumType = Annotated[str, allowed(r"[A-Za-z0-9]+", "a checksum type such as sha256")]
Checksum = Annotated[str, allowed(r"[0-9A-Fa-f]+", "a hex checksum")]


class CatalogModel(BaseModel):
    # Other Vagrant servers add keys of their own: ignored, never passed on.
    model_config = ConfigDict(extra="ignore", strict=True)


class Provider(CatalogModel):
    name: ProviderName
    url: BoxUrl
    checksum_type: ChecksumType | None = None
    checksum: Checksum | None = None
    architecture: Architecture | None = None
    # Vagrant >= 2.4: the entry taken when the host's architecture has none of its own.
    default_architecture: bool | None = None

    @model_validator(mode="after")
    def _sha256_is_one(self) -> Provider:
        if self.checksum_type == "sha256" and not re.fullmatch(SHA256, self.checksum or ""):
            raise ValueError(f"checksum = {self.checksum!r}: expected a sha256: 64 lowercase "
                             f"hex characters")
        return self

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[1]


# The architecture a provider's entry defaults to for Vagrant >= 2.4 (`default_architecture`)
# and the one Vagrant 2.3, which ignores `architecture`, must find: it keeps the LAST entry
# of each provider name.
DEFAULT_ARCHITECTURE = "amd64"


def per_architecture(name: str, architecture: str | None) -> str:
    """`name` (a file in the provider's folder: the box, its manifest, its plan) for this
    architecture: as it is for the default architecture, `<stem>-<arch><suffix>` for
    another one (both share the folder)."""
    if architecture in (None, DEFAULT_ARCHITECTURE):
        return name
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}-{architecture}{dot}{suffix}"


def in_vagrant_order(providers: list[Provider]) -> list[Provider]:
    """`providers` as publish lists them: by name, and within a name the default
    architecture's entry last (what Vagrant 2.3 takes: an amd64 teammate on Debian's
    vagrant 2.3.4 gets the amd64 box), flagged `default_architecture` for Vagrant >= 2.4
    (the entry a host whose architecture has none of its own gets)."""
    def flagged(provider: Provider) -> Provider:
        if provider.architecture is None:
            return provider
        return provider.model_copy(update={
            "default_architecture": provider.architecture == DEFAULT_ARCHITECTURE})
    return sorted((flagged(p) for p in providers),
                  key=lambda p: (p.name, p.architecture == DEFAULT_ARCHITECTURE,
                                 p.architecture or ""))


class Version(CatalogModel):
    version: SemVer
    providers: list[Provider]


class BoxMetadata(CatalogModel):
    name: BoxName
    description: str = ""
    versions: list[Version]


class VersionState(Version):
    """A version as goldbox records it: Vagrant's entry plus its state."""
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)

    status: Status
    revoked_at: float | None = None
    verified_sha256: list[Sha256] = []
    # `invoke catalog-import`: the metadata URL the version came from, and when.
    imported_from: BoxUrl | None = None
    imported_at: float | None = None

    @model_validator(mode="after")
    def _revoked_has_a_time(self) -> VersionState:
        if self.status == REVOKED and self.revoked_at is None:
            raise ValueError("revoked_at: expected the UNIX time it was revoked")
        return self


class BoxState(BoxMetadata):
    """`.goldbox-state.json`: every version of one box, in any state."""
    model_config = ConfigDict(extra="forbid", strict=True)

    # pydantic narrows the field to versions with a state; mypy's lists are invariant.
    versions: list[VersionState]  # type: ignore[assignment]

    @model_validator(mode="after")
    def _each_version_once(self) -> BoxState:
        seen = [v.version for v in self.versions]
        twice = sorted({v for v in seen if seen.count(v) > 1}, key=semver_key)
        if twice:
            raise ValueError(f"versions listed twice: {', '.join(twice)}")
        return self


def checked(model: type[CatalogModel], data: object, label: str):
    """`data` as a `model`, or one GoldboxError naming `label`, the key and the value."""
    if not isinstance(data, dict):
        raise invalid(label, f"expected a JSON object, found {type(data).__name__}")
    return validated(model, data, label)


def parse_metadata(text: str, label: str) -> BoxMetadata:
    """Vagrant box metadata (a channel's metadata.json, local or remote), checked."""
    return validated_json(BoxMetadata, text, label)


def folder_of(name: str) -> str:
    """The catalog folder of a box: its name without the organisation (one per catalog)."""
    return name.rsplit("/", 1)[-1]


def _named_as_folder(metadata: BoxMetadata, path: Path, box: str) -> None:
    if folder_of(metadata.name) != box:
        raise invalid(str(path), f"name = {metadata.name!r}, but it lies in the folder of "
                                 f"box {box!r}")


def load_metadata(path: Path, box: str) -> BoxMetadata:
    """A box's metadata file (an empty box when there is none), named as its folder."""
    text = read_file_no_follow(path)
    if text is None:
        return BoxMetadata(name=box, versions=[])
    metadata = parse_metadata(text, str(path))
    _named_as_folder(metadata, path, box)
    return metadata


def load_state(box_dir: Path) -> BoxState:
    """Every version of the box in `box_dir` with its state; read from metadata.json (all
    released) for a catalog that has no state file yet."""
    path = box_dir / STATE_FILE
    text = read_file_no_follow(path)
    if text is None:
        metadata = load_metadata(box_dir / METADATA, box_dir.name)
        return BoxState(name=metadata.name, description=metadata.description,
                        versions=[VersionState(version=v.version, providers=v.providers,
                                               status=RELEASED) for v in metadata.versions])
    state = validated_json(BoxState, text, str(path))
    _named_as_folder(state, path, box_dir.name)
    return state


def find_version(state: BoxState, version: str, label: str) -> VersionState:
    entry = next((v for v in state.versions if v.version == version), None)
    if entry is None:
        known = ", ".join(f"{v.version} ({v.status})" for v in state.versions)
        raise invalid(label, f"no version {version} of box {state.name!r} "
                             f"(known: {known or 'none'})")
    return entry


def channel_metadata(state: BoxState, channel: str) -> BoxMetadata:
    """Vagrant's metadata for one channel: the versions in its states, oldest first,
    with only the keys Vagrant reads."""
    listed = [Version(version=v.version, providers=v.providers)
              for v in state.versions if v.status in CHANNELS[channel]]
    return BoxMetadata(name=state.name, description=state.description,
                       versions=sorted(listed, key=lambda v: semver_key(v.version)))


def channel_path(box_dir: Path, channel: str) -> Path:
    return box_dir.parent / channel_url_path(box_dir.name, channel)


def save_state(box_dir: Path, state: BoxState, signing_key: Path | None = None) -> None:
    """Write the state, then each channel's metadata.json from it (each by a rename).
    Interrupted in between, the channels still list only files that exist: the next
    locked operation renders them again from the state."""
    write_state(box_dir, state)
    render_channels(box_dir, state, signing_key)


def write_state(box_dir: Path, state: BoxState) -> None:
    state.versions.sort(key=lambda v: semver_key(v.version))
    write_file_atomically(box_dir / STATE_FILE, _json(state))


def render_channels(box_dir: Path, state: BoxState, signing_key: Path | None = None) -> None:
    """Each channel's metadata.json from the state, signed with `signing_key` if given.
    With a key every channel is signed again (a new maintainer key takes over at the
    next change), else only a changed channel is written."""
    for channel in CHANNELS:
        path = channel_path(box_dir, channel)
        data = _json(channel_metadata(state, channel))
        if signing_key is None and read_file_no_follow(path) == data.decode():
            continue
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        write_signed(path, data, signing_key)


def write_signed(path: Path, data: bytes, signing_key: Path | None) -> None:
    """Write `path` atomically, its signature `<path>.sig` (signing.sign) first.

    The order: the new signature is renamed into place, then the new file. Between the
    two renames (and after a crash between them) a reader sees the old file with the new
    signature, which fails verification (nothing unsigned is ever trusted), and the next
    change repairs it: it finds the file different and writes both again. The other
    order would leave a new file beside an old signature that a re-render of an
    unchanged file never replaces. Without a key, a signature of older content is
    removed: an unsigned file never lies beside a signature of something else."""
    signature = signature_path(path)
    if signing_key is None:
        remove_file(signature)
    else:
        signed = sign(data.decode(), signing_key, str(path)).encode()
        if read_file_no_follow(signature) != signed.decode():
            write_file_atomically(signature, signed)
    if read_file_no_follow(path) != data.decode():
        write_file_atomically(path, data)


def _json(value: BaseModel) -> bytes:
    return (json.dumps(value.model_dump(exclude_none=True), indent=2) + "\n").encode()

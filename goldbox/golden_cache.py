"""The golden build as a cache entry of kind "golden-box": the box packer exported and
the component versions the guest printed, keyed by the hash over every input of the
golden build (`render.digest` in goldbox/image.py) and the code that runs it.

The golden build is the one phase no other entry saves: a boot of minutes under TCG
that installs the app. As an entry it goes through `Cache.ensure` like every other kind,
so a second machine of a team with the same inputs pulls the box from the team cache
(goldbox/cache_remote.py: signed, every sha256 checked) instead of booting packer, and
a checkout whose dist/ was removed finds it locally. dist/ gets a copy: the entry stays
intact whatever is done to the box there."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from goldbox.basedisk import SSH_KEY_CREDENTIAL
from goldbox.cache import Entry
from goldbox.config import DebootstrapSource
from goldbox.context import Context
from goldbox.errors import GoldboxError
from goldbox.files import remove_tree
from goldbox.recipe import goldbox_code

KIND = "golden-box"
COMPONENTS = "components.json"
# The goldbox code that runs the golden build (the policy: goldbox/recipe.py); its
# template, stage and system image are in the render digest.
_CODE = ("golden_cache", "image", "packer")
# What the guest printed (goldbox/packer.py VERSION_LINE: `goldbox-version NAME=VALUE`).
_COMPONENT_NAME = re.compile(r"^\w+\Z")
_COMPONENT_VALUE = re.compile(r"^\S+\Z")


@dataclass(frozen=True)
class GoldenBox:
    entry: Entry
    components: dict[str, str]

    @property
    def source(self) -> str:
        """Where this run's golden box came from: "built", "remote" or "local"."""
        if not self.entry.cached:
            return "built"
        return "remote" if self.entry.note.startswith("pulled from") else "local"


def golden_code() -> dict[str, str]:
    """The hash of the code that makes a golden box (and packages it: add_metadata)."""
    return goldbox_code(*_CODE)


def golden_identity(ctx: Context, digest: str) -> dict[str, Any]:
    return {"platform": ctx.platform.name, "inputs": digest, "code": golden_code()}


def ensure_golden_box(ctx: Context, digest: str, build: Callable[[], dict[str, str]], *,
                      force: bool = False) -> GoldenBox:
    """The golden box of `digest` at ctx.packer_box, from the cache (local or the team's)
    or built by `build()` (packer's golden build, which writes ctx.packer_box and returns
    the components the guest printed). `force` builds it again even when cached."""
    for leftover in (ctx.packer_output, ctx.packer_box.parent):
        remove_tree(leftover)

    def make(folder: Path) -> None:
        try:
            components = build()
            if not ctx.packer_box.is_file():
                raise GoldboxError(f"packer finished but wrote no box at {ctx.packer_box}")
            add_metadata(ctx.packer_box, box_metadata(ctx))
            shutil.move(ctx.packer_box, folder / ctx.box_file)
        finally:
            remove_tree(ctx.packer_output)
            remove_tree(ctx.packer_box.parent)
        (folder / COMPONENTS).write_text(json.dumps(components, indent=2, sort_keys=True)
                                         + "\n")

    box = ctx.config.project.box
    entry = ctx.cache.ensure(
        KIND, golden_identity(ctx, digest), make, name=ctx.platform.name,
        summary=f"{ctx.platform.name} golden box {box.name} {box.version} ({ctx.builder})",
        rebuild="--force" if force else None)
    ctx.packer_box.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(entry.file(ctx.box_file), ctx.packer_box)
    return GoldenBox(entry, read_components(entry.file(COMPONENTS)))


def box_metadata(ctx: Context) -> dict[str, str]:
    """What goldbox adds to the metadata.json packer's vagrant post-processor writes (the
    provider, format and virtual size): the box's architecture, which Vagrant >= 2.4 reads
    (older Vagrant and vagrant-libvirt ignore it); and for a box made from goldbox's base
    disk, the systemd credential whose SSH key the guest authorizes in place of Vagrant's
    insecure key (goldbox/basedisk.py), which `invoke up` then gives its VM."""
    metadata = {"architecture": ctx.arch.name}
    if isinstance(ctx.platform.source, DebootstrapSource):
        metadata["ssh_key_credential"] = SSH_KEY_CREDENTIAL
    return metadata


def add_metadata(box: Path, fields: dict[str, str]) -> None:
    """Add `fields` to the metadata.json inside `box` (a plain tar, as packer's vagrant
    post-processor writes it with compression_level 0). metadata.json goes first, then
    the other files' bytes unchanged; written under a hidden name and renamed over `box`.

    A box's files lie at the root of its tar. packer writes GNU headers with access and
    change times where a ustar header has its name prefix, which Python's tarfile reads
    as one ("15303051106/box.img"): each file is written again under its own name."""
    partial = box.with_name(f".{box.name}.partial")
    try:
        with tarfile.open(box, "r:") as source, tarfile.open(partial, "w:") as out:
            members = {}
            for member in source.getmembers():
                name = member.name.rsplit("/", 1)[-1]
                if not member.isfile() or name in members:
                    raise GoldboxError(f"{box}: expected the box's files, each once, at the "
                                       f"root of its tar; found {member.name!r}")
                members[name] = member
            meta = members.pop("metadata.json", None)
            if meta is None:
                raise GoldboxError(f"{box}: no metadata.json in the box")
            stream = source.extractfile(meta)
            assert stream is not None  # a regular file's member has a stream
            try:
                metadata = json.loads(stream.read())
            except ValueError as exc:
                raise GoldboxError(f"{box}: metadata.json is not JSON ({exc})") from None
            if not isinstance(metadata, dict) or "provider" not in metadata:
                raise GoldboxError(f"{box}: metadata.json: expected an object with a "
                                   f"provider, got {metadata!r}")
            blob = (json.dumps({**metadata, **fields}, indent=2) + "\n").encode()
            for name, member, data in [("metadata.json", meta, io.BytesIO(blob)),
                                       *((n, m, source.extractfile(m))
                                         for n, m in members.items())]:
                info = tarfile.TarInfo(name)
                info.size = len(blob) if member is meta else member.size
                info.mode, info.mtime = member.mode, member.mtime
                out.addfile(info, data)
        os.replace(partial, box)
    except tarfile.TarError as exc:
        raise GoldboxError(f"{box}: cannot read it as a box: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)


def read_components(path: Path) -> dict[str, str]:
    """The versions an entry's golden build printed (an entry may come from the team's
    registry: names and values as packer's VERSION_LINE reads them, nothing else)."""
    try:
        components = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise GoldboxError(f"{path}: not readable as JSON ({exc})") from None
    if not isinstance(components, dict) or not all(
            isinstance(name, str) and isinstance(value, str)
            and _COMPONENT_NAME.fullmatch(name) and _COMPONENT_VALUE.fullmatch(value)
            for name, value in components.items()):
        raise GoldboxError(f"{path}: expected an object of component names (letters, digits, "
                           "_) to versions (no spaces)")
    return components

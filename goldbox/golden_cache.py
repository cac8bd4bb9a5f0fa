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

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from goldbox.cache import Entry
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


def golden_identity(ctx: Context, digest: str) -> dict[str, Any]:
    return {"platform": ctx.platform.name, "inputs": digest, "code": goldbox_code(*_CODE)}


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

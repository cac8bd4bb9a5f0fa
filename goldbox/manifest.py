"""manifest.json, what `invoke image` writes beside each box (shape: docs/contracts.md):
one typed model and one loader, used by image, up/verify and the catalog."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from goldbox.errors import GoldboxError
from goldbox.files import write_atomically
from goldbox.validation import validated_json

FORMAT = 1
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Annotated[int, Field(ge=1, le=FORMAT)] = FORMAT
    box_name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")]
    version: Annotated[str, Field(pattern=r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")]
    platform: str
    provider: Annotated[str, Field(pattern=r"^[a-z0-9_-]+$")]
    architecture: str | None = None
    box_file: Annotated[str, Field(pattern=r"^[^/]+\.box$")]
    box_sha256: Sha256
    box_size: Annotated[int, Field(ge=0)]
    created: str
    components: dict[str, str] = {}
    git_commit: str = "unknown"
    input_hash: str | None = None
    phases: dict[str, float] = {}

    def dump(self) -> str:
        return json.dumps(self.model_dump(exclude_none=True), indent=2, sort_keys=True) + "\n"


# What a malformed key should have been, in the words of the error message.
EXPECTED = {
    "box_name": "lowercase letters, digits, '.', '_' or '-'",
    "version": "a semantic version MAJOR.MINOR.PATCH, e.g. 1.2.0",
    "provider": "a Vagrant provider name such as libvirt",
    "box_file": "a .box file name beside the manifest",
    "box_sha256": "64 lowercase hex characters",
}


def parse_manifest(text: str, label: str) -> Manifest:
    """A manifest from its JSON text, or one GoldboxError naming `label`, the key, its
    value and what was expected."""
    return validated_json(Manifest, text, label, expected=EXPECTED)


def read_manifest(path: Path) -> Manifest:
    """The manifest at `path` (the one loader: image, up/verify and the catalog use it),
    or one GoldboxError naming the file and what is wrong."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GoldboxError(f"{path}: no such manifest (build the box with `invoke image`, "
                           "or pass --manifest PATH)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GoldboxError(f"{path}: cannot read it: {exc}") from None
    return parse_manifest(text, str(path))


def write_manifest(path: Path, manifest: Manifest) -> None:
    write_atomically(path, manifest.dump())

"""Where a catalog is and how its tree is laid out (the same on a local disk, a team
share or a static web host):

    <catalog>/<box>/metadata.json                        the `stable` channel (released)
    <catalog>/<box>/channels/<channel>/metadata.json     other channels, e.g. `candidate`
    <catalog>/<box>/<version>/<provider>/<box>-<version>-<provider>.box
    <catalog>/<box>/<version>/<provider>/manifest.json   what `invoke image` wrote
    <catalog>/<box>/.goldbox-state.json                  every version and its state
    <catalog>/.goldbox.lock, .goldbox-partial-*          never served

Dot files are goldbox's own bookkeeping: no web server may serve them."""

from __future__ import annotations

import re
from pathlib import Path

from goldbox.config import Config
from goldbox.errors import GoldboxError

LOCK_FILE = ".goldbox.lock"
STATE_FILE = ".goldbox-state.json"
METADATA = "metadata.json"
MANIFEST = "manifest.json"
CHANNELS_DIR = "channels"
PARTIAL_PREFIX = ".goldbox-partial-"
_URL = re.compile(r"^https?://", re.IGNORECASE)


def box_file_name(box: str, version: str, provider: str) -> str:
    return f"{box}-{version}-{provider}.box"


def relative_box_path(box: str, version: str, provider: str, file_name: str | None = None) -> str:
    return f"{box}/{version}/{provider}/{file_name or box_file_name(box, version, provider)}"


def channel_url_path(box: str, channel: str) -> str:
    """A channel's metadata.json, relative to the catalog: `stable` is the box's own."""
    if channel == "stable":
        return f"{box}/{METADATA}"
    return f"{box}/{CHANNELS_DIR}/{channel}/{METADATA}"


def semver_key(version: str) -> tuple[int, ...]:
    """Vagrant orders versions numerically, part by part (Gem::Version): 0.10.0 > 0.9.1."""
    return tuple(int(part) for part in version.split("."))


def invalid(label: str, problem: str) -> GoldboxError:
    return GoldboxError(f"{label}: {problem}")


def is_url(location: str | Path) -> bool:
    return bool(_URL.match(str(location)))


def catalog_location(option: str | None, config: Config) -> Path | str:
    """The catalog: `option` (a --catalog value, relative to the current directory) or
    else goldbox.toml's catalog.location (relative to the project). A directory, or an
    http(s) base URL ending in '/'."""
    value = option or config.project.catalog.location
    if is_url(value):
        return value.rstrip("/") + "/"
    return (Path.cwd() if option else config.root) / value


def catalog_directory(option: str | None, config: Config) -> Path:
    """Like `catalog_location`, but for tasks that write or serve files: a URL is refused."""
    location = catalog_location(option, config)
    if isinstance(location, str):
        raise GoldboxError(
            f"catalog {location}: an HTTP catalog cannot be written to; write the tree into "
            f"a directory and serve or upload it: --catalog DIR --base-url {location}"
        )
    return location


def base_url(catalog_dir: Path, option: str | None) -> str:
    if option is None:
        return catalog_dir.resolve().as_uri() + "/"
    if not is_url(option):
        raise GoldboxError(f"--base-url {option}: expected an http:// or https:// URL")
    return option.rstrip("/") + "/"


def require_catalog_dir(catalog_dir: Path, create: bool) -> None:
    if catalog_dir.is_dir():
        return
    if catalog_dir.exists():
        raise GoldboxError(f"catalog {catalog_dir}: not a directory")
    if not create or not catalog_dir.parent.is_dir():
        raise GoldboxError(f"catalog {catalog_dir}: no such directory")
    catalog_dir.mkdir()

"""Where a catalog is and how its tree is laid out (the same on a local disk, a team
share or a static web host):

    <catalog>/<box>/metadata.json                        the `stable` channel (released)
    <catalog>/<box>/channels/<channel>/metadata.json     other channels, e.g. `candidate`
    <catalog>/<box>/<version>/<provider>/<box>-<version>-<provider>.box
    <catalog>/<box>/<version>/<provider>/manifest.json   what `invoke image` wrote
    <catalog>/<box>/<version>/<provider>/plan.json       the build's plan (for verify)
    <catalog>/<box>/<version>/<provider>/imported.json   instead, for a catalog-import
    <catalog>/<box>/.goldbox-state.json                  every version and its state
    <catalog>/.goldbox.lock, .goldbox-partial-*          never served
    <catalog>/.goldbox-import/                           catalog-import's downloads

Dot files are goldbox's own bookkeeping: no web server may serve them."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from goldbox.config import Config
from goldbox.errors import GoldboxError

LOCK_FILE = ".goldbox.lock"
STATE_FILE = ".goldbox-state.json"
METADATA = "metadata.json"
MANIFEST = "manifest.json"
PLAN = "plan.json"
ORIGIN = "imported.json"  # beside an imported box: where it came from
CHANNELS_DIR = "channels"
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
    """The catalog directory exists (made when `create`), and as root nobody else can
    write it (`require_only_owner_writes`). Every writer and the server start here."""
    if not catalog_dir.is_dir():
        if catalog_dir.exists():
            raise GoldboxError(f"catalog {catalog_dir}: not a directory")
        if not create or not catalog_dir.parent.is_dir():
            raise GoldboxError(f"catalog {catalog_dir}: no such directory")
        catalog_dir.mkdir(mode=0o755)
    require_only_owner_writes(catalog_dir, os.stat(catalog_dir))


def require_only_owner_writes(path: Path, status: os.stat_result) -> None:
    """As root, a catalog folder that another user can change is refused: whoever writes
    it could swap a file or folder under goldbox between a check and its use and make
    root delete, overwrite or serve anything. Run as another user, the OS's permissions
    already stop goldbox where that user stops."""
    if os.geteuid() != 0:
        return
    if status.st_uid != 0:
        raise GoldboxError(f"{path}: owned by uid {status.st_uid}, and goldbox runs as "
                           f"root: run goldbox as that user, or `chown root: {path}`")
    if status.st_mode & 0o022:
        raise GoldboxError(f"{path}: writable by group or others (mode "
                           f"{stat.S_IMODE(status.st_mode):04o}) and goldbox runs as root: "
                           f"run `chmod go-w {path}`")


def require_safe_box_dir(box_dir: Path) -> None:
    """A box's folder and everything below it, without following anything: no symbolic
    link anywhere (refused in one line naming it, before anything is read or removed),
    and as root no folder another user can write. A box not published yet passes."""
    try:
        status = os.lstat(box_dir)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise GoldboxError(f"{box_dir}: cannot read: {exc.strerror}") from None
    folders = [(box_dir, status)]
    while folders:
        folder, status = folders.pop()
        if stat.S_ISLNK(status.st_mode):
            raise link_refused(folder)
        if not stat.S_ISDIR(status.st_mode):
            raise GoldboxError(f"{folder}: not a directory")
        require_only_owner_writes(folder, status)
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_symlink():
                        raise link_refused(entry.path)
                    if entry.is_dir(follow_symlinks=False):
                        folders.append((Path(entry.path), entry.stat(follow_symlinks=False)))
        except OSError as exc:
            raise GoldboxError(f"{folder}: cannot read: {exc.strerror}") from None


def link_refused(path: Path | str, where: str = "in the catalog") -> GoldboxError:
    return GoldboxError(f"{path}: a symbolic link {where}; refused (goldbox never "
                        f"follows a link in a catalog: whoever can write the catalog could "
                        f"point it anywhere); remove the link")

"""plan.json, the one contract between the host and provision/ (docs/contracts.md), as a
typed model. `render` checks every plan it writes against it; the host reads plans back
only through `read_plan`, so a broken plan is one line naming the file and the key.
provision/ reads the same JSON in the guest with the stdlib alone."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from goldbox.errors import GoldboxError
from goldbox.validation import validated, validated_json


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StagedFileSpec(_Section):
    file: str
    sha256: str


class FileSpec(_Section):
    path: str
    content: str
    mode: str
    defines_service: bool | None = None


class Adapters(_Section):
    packages: Literal["apt", "yum"]
    services: Literal["systemd", "sysv"]


class YumRepoSpec(_Section):
    id: str
    name: str
    baseurl: str
    gpgcheck: bool
    gpgkey: str


class Repositories(_Section):
    apt_sources: str | None
    yum_repos: list[YumRepoSpec]
    disable_repo_files: list[str]


class Packages(_Section):
    groups: list[str]
    build: list[str]
    runtime: list[str]
    # Take the repositories' updates (security, point release) of what is installed.
    update: bool = False


class Python(_Section):
    version: str
    prefix: str
    binary: str
    tarball: str
    sha256: str
    configure_flags: list[str]
    bundle: StagedFileSpec | None
    pip_bootstrap: str | None


class App(_Section):
    user: str
    group: str
    root: str
    source: str
    requirements: str
    wheelhouse: str
    local_wheels: list[StagedFileSpec]
    env_bundle: StagedFileSpec | None = None
    venv: Literal["venv", "virtualenv"]


class Socket(_Section):
    kind: Literal["unix", "tcp"]
    address: str | None = None
    runtime_directory: str | None = None
    directory_mode: str | None = None
    path: str | None = None
    owner: str | None = None
    group: str | None = None
    mode: str | None = None


class Uwsgi(_Section):
    service: str
    socket: Socket
    files: list[FileSpec]


class Nginx(_Section):
    service: str
    files: list[FileSpec]
    remove: list[str]


class Firewall(_Section):
    kind: Literal["none", "iptables"]
    tcp_ports: list[int]


class Selinux(_Section):
    booleans: dict[str, bool]


class Cleanup(_Section):
    enabled: bool
    paths: list[str]
    zero_free_space: bool


class Plan(_Section):
    """A whole plan; every step's section is optional: the plans provision runs natively
    in a chroot have only the sections of their steps (goldbox/chroot_provision.py), so
    the base disk's plan, and its cache key, hold no python."""

    format: Literal[1]
    platform: str
    family: Literal["debian", "el"]
    adapters: Adapters
    stage_dir: str
    repositories: Repositories | None = None
    packages: Packages | None = None
    python: Python | None = None
    app: App | None = None
    uwsgi: Uwsgi | None = None
    nginx: Nginx | None = None
    firewall: Firewall | None = None
    selinux: Selinux | None = None
    cleanup: Cleanup | None = None


def check_plan(data: dict, label: str) -> Plan:
    """`data` as a Plan, or one GoldboxError naming `label` and the first bad key."""
    return validated(Plan, data, label)


def parse_plan(text: str, label: str) -> Plan:
    """A plan from its JSON text (a file, or one a catalog serves), named `label`."""
    return validated_json(Plan, text, label)


def read_plan(path: Path) -> Plan:
    """The plan at `path`: the host's one reader of plan.json."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GoldboxError(f"{path}: not a readable plan: {exc}") from None
    return parse_plan(text, str(path))

"""`invoke pin-python`: move a platform's CPython pin to another release in one command.

The new sha256 comes from a source that vouches for it (python.org's published digest,
else the Debian archive's signed index, see goldbox.sources); the bytes are downloaded
and checked against it into the verified cache (so the next `invoke image` finds them);
the app's requirements must resolve for the new Python; only then is the platform file
rewritten, as text, so its comments stay."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from goldbox.artifacts import ArtifactCache
from goldbox.config import Config, Platform, load_platform
from goldbox.errors import GoldboxError
from goldbox.sources import (
    Vouched,
    debian_pool_url,
    debian_releases,
    platform_mirror,
    python_org_digest,
    python_org_url,
)

VERSION = re.compile(r"^3\.\d+(\.\d+)?$")


@dataclass(frozen=True)
class Pinned:
    release: Vouched
    served_by: str
    tarball: Path
    changes: list[str]


def find_release(config: Config, platform: Platform, wanted: str) -> tuple[Vouched, str, Path]:
    """The newest release matching `wanted` ("3.13.15", or "3.13" for the newest 3.13.x)
    that a voucher lists and a source serves, downloaded and verified into the cache."""
    if not VERSION.match(wanted):
        raise GoldboxError(f"pin-python {wanted!r}: expected a CPython 3 version, "
                           "e.g. 3.13.15, or a series, e.g. 3.13")
    tried: list[str] = []
    candidates: list[Vouched] = []
    if wanted.count(".") == 2:
        try:
            candidates.append(python_org_digest(wanted))
        except GoldboxError as exc:
            tried.append(f"python.org digest: {exc}")
    mirror = platform_mirror(platform)
    try:
        candidates += [r for r in debian_releases(mirror, wanted)
                       if wanted.count(".") == 1 or r.version == wanted]
    except GoldboxError as exc:
        tried.append(f"Debian archive's signed index: {exc}")
    cache = ArtifactCache(config.cache_dir)
    for release in candidates:
        filename = f"Python-{release.version}.tar.xz"
        if found := cache.cached(release.sha256, filename):
            return release, "the verified cache", found
        served = {"python.org": python_org_url(release.version),
                  "Debian archive": debian_pool_url(mirror, release.version)}
        for name, url in served.items():
            try:
                path = cache.ensure(url, release.sha256, filename)
            except GoldboxError as exc:
                tried.append(f"{release.version} from {name}: {exc}")
                continue
            return release, name, path
    if not candidates:
        tried.append(f"no voucher lists a release {wanted}")
    raise GoldboxError(f"no verified source serves CPython {wanted}; tried: {'; '.join(tried)}")


def set_toml_keys(text: str, table: str, values: dict[str, str]) -> str:
    """Replace the string values of `values`' keys inside `[table]` of a TOML text,
    leaving every other line (comments included) as it is."""
    lines = text.splitlines(keepends=True)
    current, missing = None, set(values)
    for index, line in enumerate(lines):
        header = re.match(r"^\s*\[([^\]]+)\]\s*(#.*)?$", line)
        if header:
            current = header.group(1).strip()
            continue
        key = re.match(r"^(\s*)([A-Za-z0-9_-]+)(\s*=\s*)\"[^\"]*\"(.*)$", line.rstrip("\n"))
        if key and (current or "") == table and key.group(2) in values:
            indent, name, equals, rest = key.groups()
            lines[index] = f'{indent}{name}{equals}"{values[name]}"{rest}\n'
            missing.discard(name)
    if missing:
        raise GoldboxError(f"no {', '.join(sorted(missing))} string key(s) in [{table or 'top'}]")
    return "".join(lines)


def pin_python(config: Config, platform: Platform, wanted: str) -> Pinned:
    """Find, verify and pin CPython `wanted` in platforms/<platform>.toml."""
    from goldbox.image import prepare_wheelhouse

    release, served_by, tarball = find_release(config, platform, wanted)
    python = platform.python
    new = {"version": release.version, "url": python_org_url(release.version),
           "sha256": release.sha256}
    # The wheelhouse step resolves the app's hash-pinned requirements for that Python.
    candidate = platform.model_copy(update={"python": python.model_copy(update=new)})
    with tempfile.TemporaryDirectory(prefix="goldbox-pin-") as scratch:
        prepare_wheelhouse(config, candidate, Path(scratch), log=None)
    path = config.root / "platforms" / f"{platform.name}.toml"
    text = set_toml_keys(path.read_text(), "python", new)
    top = {}
    if python.version in platform.description:
        top["description"] = platform.description.replace(python.version, release.version)
        text = set_toml_keys(text, "", top)
    changes = [f"python.{key}: {getattr(python, key)} -> {value}"
               for key, value in new.items() if getattr(python, key) != value]
    changes += [f"description: {platform.description!r} -> {value!r}" for value in top.values()]
    # Checked as a platform file before it replaces the old one (same name: the
    # platform's name is its file name).
    staging = path.parent / f".pin-python.{os.getpid()}"
    staging.mkdir()
    try:
        staged = staging / path.name
        staged.write_text(text)
        load_platform(staged, config.root)
        staged.rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Pinned(release, served_by, tarball, changes)

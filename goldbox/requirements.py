"""What a hash-pinned requirements file (`pip install --require-hashes`) promises.

The wheelhouse is filled by `pip download --require-hashes`, but what is compiled later
(the uWSGI sdist) is read from a folder on disk: it is checked again, against the hash
the app's requirements file pins, not against a hash computed from the file itself."""

from __future__ import annotations

import re
from pathlib import Path

from goldbox.errors import GoldboxError
from goldbox.files import sha256_file

_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def normalize(name: str) -> str:
    """A project name as PEP 503 compares them: `Flask_Foo` == `flask-foo`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_hashes(requirements_file: Path) -> dict[tuple[str, str], set[str]]:
    """(normalized name, version) -> the sha256 values the file pins for it."""
    text = Path(requirements_file).read_text().replace("\\\n", " ")
    pins: dict[tuple[str, str], set[str]] = {}
    for line in text.splitlines():
        match = _REQUIREMENT.match(line.strip())
        if match:
            pins[(normalize(match.group(1)), match.group(2))] = set(_HASH.findall(line))
    return pins


def check_sdist(requirements_file: Path, sdist: Path) -> str:
    """The sdist's sha256, once it is one of those the requirements file pins for its
    name and version; otherwise stop with one line."""
    name, _, version = sdist.name.removesuffix(".tar.gz").rpartition("-")
    allowed = pinned_hashes(requirements_file).get((normalize(name), version))
    if not allowed:
        raise GoldboxError(f"{requirements_file}: no hash-pinned {name}=={version} for "
                           f"{sdist.name}")
    actual = sha256_file(sdist)
    if actual not in allowed:
        raise GoldboxError(f"{sdist}: sha256 {actual} is not the one {requirements_file} pins "
                           f"for {name}=={version} ({', '.join(sorted(allowed))})")
    return actual

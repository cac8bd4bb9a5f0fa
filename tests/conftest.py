"""Fixtures shared by goldbox's tests."""

from __future__ import annotations

import difflib
import hashlib
import os
import pprint
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from goldbox import PROJECT_ROOT

# pytest prints every failed comparison's full diff when one of these is set (its
# running_on_ci()), whatever the verbosity: on large bytes that diff takes hours. The
# suite runs the same with or without them, so they go; -v still gives the full diff.
CI_VARIABLES = ("CI", "BUILD_NUMBER")
for _name in CI_VARIABLES:
    os.environ.pop(_name, None)

# Bytes longer than this are shown by size and sha256 when an `==` fails (see below).
BIG_BYTES = 4096


def _summarized(value: Any) -> Any:
    """`value` with every long bytes object in it (also inside dicts, lists and tuples)
    replaced by a short text naming its size, sha256 and first bytes."""
    if isinstance(value, (bytes, bytearray)) and len(value) > BIG_BYTES:
        return (f"<{len(value)} bytes, sha256 {hashlib.sha256(value).hexdigest()[:16]}..., "
                f"starting {bytes(value[:24])!r}>")
    if isinstance(value, dict):
        return {key: _summarized(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_summarized(item) for item in value)
    return value


def pytest_assertrepr_compare(op: str, left: Any, right: Any) -> list[str] | None:
    """A failed `==` on large bytes (a box, a disk) is explained by sizes and hashes.
    pytest's own full diff pretty-prints every byte and diffs the lines: a 280 MB box
    compared with a short text ran past CI's 90 minutes and printed gigabytes
    (2026-11-28). pytest's own diff still runs beside this hook (every implementation
    does), and only verbosity keeps it short: see CI_VARIABLES."""
    if op != "==":
        return None
    short_left, short_right = _summarized(left), _summarized(right)
    if short_left == left and short_right == right:
        return None  # nothing large: pytest's own explanation
    lines = ["values holding large bytes differ (each shown by size and sha256):"]
    lines += difflib.ndiff(pprint.pformat(short_right).splitlines(),
                           pprint.pformat(short_left).splitlines())
    return lines


# What a copy of the project needs to load, render and run its tasks.
PROJECT_FILES = ["goldbox.toml", "tasks.py", "platforms", "app", "packer", "vagrant", "configs",
                 "provision"]


def copy_project(root: Path) -> Path:
    """Copy the project's config, templates and app (PROJECT_FILES) into `root`."""
    for name in PROJECT_FILES:
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name)
        else:
            shutil.copy2(source, root / name)
    return root


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """A throwaway copy of the project's config, templates and app, to break at will."""
    root = tmp_path / "project"
    root.mkdir()
    return copy_project(root)


def run_invoke(root: Path, *args: str) -> subprocess.CompletedProcess:
    """Run `invoke ARGS` in `root` with this venv's invoke, capturing its output."""
    invoke = Path(sys.executable).parent / "invoke"
    return subprocess.run([str(invoke), *args], cwd=root, capture_output=True, text=True,
                          timeout=600, check=False)


@pytest.fixture
def tls(tmp_path: Path) -> dict[str, Path]:
    """A test CA and a server certificate it signed for 127.0.0.1 (catalog_fixtures)."""
    from tests.catalog_fixtures import make_test_ca

    return make_test_ca(tmp_path / "pki")

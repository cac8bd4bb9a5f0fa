"""Fixtures shared by goldbox's tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from goldbox import PROJECT_ROOT

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

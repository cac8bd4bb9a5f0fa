"""The fast unit layer: pure logic (config, plan, manifest, catalog metadata, cache and
recipe keys, rendering), no root and no tools. `invoke test` runs it first and stops at
its first failure; every test collected under this folder gets the `unit` marker."""

from __future__ import annotations

from pathlib import Path

import pytest

UNIT = Path(__file__).parent


def pytest_collection_modifyitems(items):
    for item in items:
        if UNIT in item.path.parents:
            item.add_marker(pytest.mark.unit)

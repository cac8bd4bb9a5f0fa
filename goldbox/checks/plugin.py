"""The checks' pytest plugin (`-p goldbox.checks.plugin`): their inputs. The plan the host
rendered (GOLDBOX_PLAN or --plan) is the single source of what the guest must hold;
GOLDBOX_INFRA_LIVE=1 adds the checks that need a booted guest (running services,
listening sockets, processes). See goldbox.checks for the command."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from goldbox import PROJECT_ROOT
from goldbox.checks.guest import RootContext, as_root
from goldbox.plan_model import read_plan


def pytest_addoption(parser):
    parser.addoption("--plan", default=os.environ.get("GOLDBOX_PLAN"),
                     help="the plan.json the guest was provisioned from")


@pytest.fixture(scope="session")
def plan(pytestconfig) -> dict:
    path = pytestconfig.getoption("--plan")
    if not path:
        pytest.fail("goldbox.checks needs the plan: set GOLDBOX_PLAN or pass --plan")
    return read_plan(Path(path)).model_dump(exclude_unset=True)  # checked first


def pytest_configure(config):
    config.addinivalue_line("markers", "live: needs a booted guest (GOLDBOX_INFRA_LIVE=1)")


def _booted() -> bool:
    """Whether the host is a booted guest (GOLDBOX_INFRA_LIVE=1), not a rootfs."""
    return os.environ.get("GOLDBOX_INFRA_LIVE") == "1"


def pytest_collection_modifyitems(config, items):
    """Without a booted guest the `live` checks are deselected, not skipped: a rootfs
    has no running init to ask."""
    if _booted():
        return
    live = [item for item in items if item.get_closest_marker("live")]
    if live:
        config.hook.pytest_deselected(items=live)
        items[:] = [item for item in items if not item.get_closest_marker("live")]


@pytest.fixture(scope="session")
def live() -> bool:
    return _booted()


@pytest.fixture(scope="session")
def pins(plan) -> dict[str, str]:
    """name -> version from the app's hash-pinned requirements (read on the host)."""
    text = (PROJECT_ROOT / plan["app"]["requirements"]).read_text()
    return {m.group(1).lower(): m.group(2)
            for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", text, re.M)}


@pytest.fixture(scope="module")
def root(host) -> RootContext:
    """`with root():` runs the commands in it as root (see goldbox.checks.guest)."""
    return as_root(host)

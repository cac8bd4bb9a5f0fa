"""The checks of a golden guest: a testinfra suite shipped with goldbox, so an installed
goldbox verifies a box without this repository's tests/ folder.

Every expectation comes from the plan the host rendered (GOLDBOX_PLAN or --plan); the
`live` checks need a booted guest (GOLDBOX_INFRA_LIVE=1). The same suite checks a
provisioned rootfs (testinfra's chroot backend) and a booted VM (its SSH backend):

    python -m pytest -p goldbox.checks.plugin --pyargs goldbox.checks \\
        --hosts=ssh://default --ssh-config=FILE --sudo      # a VM (`invoke verify`)
    ... --hosts=/path/to/rootfs --connection=chroot          # a rootfs
"""

from __future__ import annotations

import sys

PLUGIN = "goldbox.checks.plugin"


def pytest_command(*options: str) -> list[str]:
    """The command that runs the checks with this interpreter's pytest, plus `options`
    (the testinfra backend's). The plugin is named with -p: it adds --plan, which pytest
    must know before it collects the package."""
    return [sys.executable, "-m", "pytest", "-p", PLUGIN, "--pyargs", __name__,
            "-p", "no:cacheprovider", *options]

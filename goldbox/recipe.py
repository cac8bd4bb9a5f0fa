"""The one recipe policy of the build cache: the code that makes an entry is part of its
identity as the sha256 of the files that make it, never as a number bumped by hand.

Two kinds of code make entries: goldbox's own modules (the bundle's, the base disk's,
the system image's) and provision's steps, which run natively in a chroot or in the
guest. provision/steps/ holds one module per step (provision/steps/<step>.py); an entry
holds the modules of the steps it runs and everything they share (every other .py file
of provision/), and not the modules of the steps it does not run: editing the cleanup
step rebuilds no CPython bundle and no base disk."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from goldbox import PROJECT_ROOT
from goldbox.errors import GoldboxError
from goldbox.files import sha256_file

PROVISION = PROJECT_ROOT / "provision"
STEP_MODULES = PROVISION / "steps"
# The modules of provision/steps/ that are no step: what every step shares.
_SHARED_STEP_MODULES = ("__init__.py", "common.py")
_GOLDBOX = Path(__file__).parent


def step_names(provision: Path = PROVISION) -> list[str]:
    """The steps provision/steps/ has a module of."""
    return sorted(path.stem for path in (provision / "steps").glob("*.py")
                  if path.name not in _SHARED_STEP_MODULES)


def provision_code(steps: Iterable[str], provision: Path = PROVISION) -> dict[str, str]:
    """sha256 of each file of provision/ that a run of `steps` uses, by its path there:
    the steps' own modules and the shared ones, not the modules of the other steps."""
    wanted = set(steps)
    known = step_names(provision)
    unknown = sorted(wanted - set(known))
    if unknown:
        raise GoldboxError(f"provision step(s) {', '.join(unknown)} have no module in "
                           f"{provision / 'steps'} (steps: {', '.join(known)})")
    others = {provision / "steps" / f"{step}.py" for step in set(known) - wanted}
    return {str(path.relative_to(provision)): sha256_file(path)
            for path in sorted(provision.rglob("*.py"))
            if path not in others and "__pycache__" not in path.parts}


def goldbox_code(*modules: str) -> dict[str, str]:
    """sha256 of goldbox's own modules (by name: "bundle", "basedisk") that make an
    entry."""
    return {name: sha256_file(_GOLDBOX / f"{name}.py") for name in modules}

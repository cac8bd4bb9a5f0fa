"""provision/ run natively, in a chroot of the guest's release: the same steps the TCG
guest would run, done ~11x faster on the host, so that the guest later finds them done
(CPython's bundle, the app's virtualenv, the base disk's runtime packages)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from goldbox import PROJECT_ROOT
from goldbox.files import remove_tree
from goldbox.plan_model import check_plan
from goldbox.rootfs import chroot_run

STAGE = "/tmp/goldbox-stage"
_BYTECODE = shutil.ignore_patterns("__pycache__", "*.pyc")


def plan_head(platform: str) -> dict:
    """The sections every plan run in a chroot starts with (a debootstrapped Debian)."""
    return {
        "format": 1,
        "platform": platform,
        "family": "debian",
        "adapters": {"packages": "apt", "services": "systemd"},
        "stage_dir": STAGE,
    }


def _stage_in(root: Path, files: dict[str, Path]) -> Path:
    """The chroot's stage folder with provision/ and `files` (stage name -> host file or
    folder) in it."""
    stage = root / STAGE.lstrip("/")
    stage.mkdir(parents=True)
    shutil.copytree(PROJECT_ROOT / "provision", stage / "provision", ignore=_BYTECODE)
    for name, source in files.items():
        if source.is_dir():
            shutil.copytree(source, stage / name, symlinks=True, ignore=_BYTECODE)
        else:
            shutil.copyfile(source, stage / name)
    return stage


def provision_in_chroot(root: Path, plan: dict, steps: list[str], *, label: str, prefix: str,
                        files: dict[str, Path] | None = None, log: Path | None = None) -> None:
    """`python3 -m provision plan.json --only STEP...` in `root` with `plan` (checked
    first, named `label` in errors) and `files` staged beside it; the stage is removed
    afterwards."""
    check_plan(plan, label)
    stage = _stage_in(root, files or {})
    (stage / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    only = [arg for step in steps for arg in ("--only", step)]
    chroot_run(root, ["python3", "-m", "provision", "plan.json", *only], prefix=prefix,
               log=log, cwd=STAGE)
    remove_tree(stage)

"""What the guest gets in /tmp/goldbox-stage: the plan, provision/, the app, its
wheelhouse and the prebuilt or source artifacts. The app is copied as it is, links
and all, but only after `check_app_tree` has refused every link that leaves app/:
goldbox runs as root, and a link to /root/.ssh/id_ed25519 in app/static/ would put
that key in the box, served by nginx."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from goldbox.errors import GoldboxError
from goldbox.files import remove_tree
from goldbox.plan_model import read_plan

_BYTECODE = shutil.ignore_patterns("__pycache__", "*.pyc")


def check_app_tree(app_dir: Path, root: Path) -> None:
    """Refuse, in one line naming the link, any symbolic link below `app_dir` that
    points outside it, loops, or cannot be resolved."""
    app = app_dir.resolve()
    for folder, dirs, files in os.walk(app_dir):
        for name in dirs + files:
            path = Path(folder) / name
            if not path.is_symlink():
                continue
            shown = path.relative_to(root) if path.is_relative_to(root) else path
            try:
                os.stat(path)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise GoldboxError(f"{shown} is a symbolic link loop "
                                       f"(-> {os.readlink(path)}): remove it") from None
            target = Path(os.path.realpath(path))
            if not target.is_relative_to(app):
                raise GoldboxError(
                    f"{shown} is a symbolic link to {os.readlink(path)}, outside "
                    f"{app_dir.name}/: goldbox copies only what is in the app folder "
                    "(copy the file in instead)")


def fresh_stage(root: Path, stage: Path, plan: Path, extra: list[Path]) -> Path:
    """A new stage folder with what every build uploads: the plan, provision/ and the
    prebuilt or source artifacts."""
    remove_tree(stage)
    stage.mkdir(parents=True)
    shutil.copy2(plan, stage / "plan.json")
    shutil.copytree(root / "provision", stage / "provision", ignore=_BYTECODE)
    for path in extra:
        shutil.copy2(path, stage / path.name)
    return stage


def golden_stage(root: Path, app_dir: Path, stage: Path, wheelhouse: Path, plan: Path,
                 extra: list[Path]) -> Path:
    """The golden build's stage: everything, the app (links kept as links) and its
    wheelhouse included."""
    fresh_stage(root, stage, plan, extra)
    shutil.copytree(app_dir, stage / "app", symlinks=True, ignore=_BYTECODE)
    shutil.copytree(wheelhouse, stage / "wheelhouse")
    return stage


def system_files(plan: Path, extra: list[Path], wheelhouse: Path) -> dict[str, Path]:
    """What the system image's build stages beside its plan and provision/ (stage name ->
    host file or folder): the CPython bundle or tarball, and the wheelhouse when the
    python step bootstraps pip from it."""
    files = {path.name: path for path in extra}
    python = read_plan(plan).python
    if python and python.pip_bootstrap:
        files["wheelhouse"] = wheelhouse
    return files

"""Cache keys per step (goldbox/recipe.py): each entry's identity holds the provision
steps it runs and the code that makes it, nothing else. Fast: the keys are computed in
a copy of the project, nothing is built."""

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from goldbox import PROJECT_ROOT
from goldbox.errors import GoldboxError
from goldbox.recipe import provision_code, step_names

# Prints the keys of the entries a debian-12 build uses, as the project at argv[1] makes
# them. The system image's base disk is named by its key and the recorded sha256 of the
# tree it was made of (its bytes are not read to compute a key).
KEYS = r"""
import json, sys
from pathlib import Path
from goldbox.basedisk import base_disk_identity
from goldbox.bundle import ReleaseChroot, bundle_identity
from goldbox.cache import Entry, identity_key
from goldbox.config import load_config
from goldbox.context import Context
from goldbox.plan import Prebuilt, StagedFile
from goldbox.render import RenderOptions
from goldbox.system_image import render_system_plan

config = load_config(Path(sys.argv[1]))
platform = config.platform("debian-12")
source = platform.source
release = ReleaseChroot(source.suite, source.mirror, tuple(platform.packages.build))
bundle = bundle_identity(platform=platform.name, release=release,
                         python_version=platform.python.version,
                         tarball_sha256=platform.python.sha256,
                         configure_flags=list(platform.python.configure_flags))
base = base_disk_identity(platform)
base_entry = Entry("basedisk", identity_key("basedisk", base), Path("/nonexistent"),
                   {"files": {"debian-12-base.qcow2": {"sha256": "b" * 64, "size": 1},
                              "rootfs.tar": {"sha256": sys.argv[2], "size": 1}}})
options = RenderOptions(prebuilt=Prebuilt(python_bundle=StagedFile(
    "cpython.tar.gz", identity_key("bundle", bundle))))
system = render_system_plan(Context(config, platform), options, base_entry)
import goldbox
assert goldbox.PROJECT_ROOT == Path(sys.argv[1]), goldbox.PROJECT_ROOT
print(json.dumps({"bundle": identity_key("bundle", bundle),
                  "basedisk": identity_key("basedisk", base),
                  "system-image": identity_key("system-image", system.identity)}))
"""


@pytest.fixture
def project(tmp_path):
    """A copy of the project (its sources, configs and platforms) to edit."""
    copy = tmp_path / "project"
    shutil.copytree(PROJECT_ROOT, copy, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "__pycache__", "*.egg-info", ".ci", "bench"))
    return copy


def keys(project: Path, base_tree: str = "b" * 64) -> dict[str, str]:
    """The keys of the entries of a debian-12 build of `project`, its base disk's tree
    having the recorded sha256 `base_tree`."""
    result = subprocess.run([sys.executable, "-c", KEYS, str(project), base_tree],
                            capture_output=True,
                            text=True, cwd=project,
                            env={**os.environ, "PYTHONPATH": str(project)},
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_an_edit_of_the_cleanup_step_keeps_every_cached_entry(project):
    """The cleanup step runs only in the golden build: no CPython bundle, base disk or
    system image is rebuilt for it."""
    before = keys(project)
    edit(project / "provision/steps/cleanup.py", 'MACHINE_ID = "/etc/machine-id"',
         'MACHINE_ID = "/etc/machine-id"\nZERO_FILL_BLOCK = "1M"')
    assert keys(project) == before


def test_an_edit_of_the_python_step_rebuilds_cpython_but_not_the_base_disk(project):
    before = keys(project)
    edit(project / "provision/steps/python.py", '"make", "-j"', '"make", "-s", "-j"')
    after = keys(project)
    assert after["basedisk"] == before["basedisk"]
    assert after["bundle"] != before["bundle"]
    assert after["system-image"] != before["system-image"]


def test_an_edit_of_the_packages_step_rebuilds_the_base_disk(project):
    before = keys(project)
    edit(project / "provision/steps/packages.py", "no updates pending", "nothing to update")
    after = keys(project)
    assert after["bundle"] == before["bundle"]
    assert after["basedisk"] != before["basedisk"]


@pytest.mark.parametrize("change", ["pin", "configure flag"])
def test_a_python_change_keeps_the_base_disk(project, change):
    """A `pin-python` or a configure flag rebuilds CPython and the system image, never
    the base disk (which would take the repositories' newest updates silently)."""
    toml = project / "platforms/debian-12.toml"
    python = tomllib.loads(toml.read_text())["python"]
    before = keys(project)
    if change == "pin":
        edit(toml, python["sha256"], "f" * 64)
    else:
        flags = python["configure_flags"]
        edit(toml, json.dumps(flags[-1]), json.dumps(flags[-1]) + ', "--with-lto"')
    after = keys(project)
    assert after["basedisk"] == before["basedisk"]
    assert after["bundle"] != before["bundle"]
    assert after["system-image"] != before["system-image"]


def test_a_shared_provision_file_is_in_every_steps_code(tmp_path):
    provision = tmp_path / "provision"
    (provision / "steps").mkdir(parents=True)
    for name, text in {"runner.py": "A = 1\n", "steps/__init__.py": "", "steps/common.py": "",
                       "steps/python.py": "B = 1\n", "steps/cleanup.py": "C = 1\n"}.items():
        (provision / name).write_text(text)
    assert step_names(provision) == ["cleanup", "python"]
    python = provision_code(["python"], provision)
    assert sorted(python) == ["runner.py", "steps/__init__.py", "steps/common.py",
                              "steps/python.py"]
    (provision / "steps/__pycache__").mkdir()
    (provision / "steps/__pycache__/python.cpython-311.pyc").write_bytes(b"bytecode")
    (provision / "steps/cleanup.py").write_text("C = 2\n")
    assert provision_code(["python"], provision) == python
    (provision / "runner.py").write_text("A = 2\n")
    assert provision_code(["python"], provision) != python


def test_a_step_without_a_module_is_refused(tmp_path):
    with pytest.raises(GoldboxError, match=r"step\(s\) pyhton have no module in .*steps"):
        provision_code(["pyhton"])


def test_every_step_provision_runs_has_its_own_module():
    sys.path.insert(0, str(PROJECT_ROOT))
    from provision.steps import STEPS

    assert sorted(name for name, _ in STEPS) == step_names()
    assert all(step.__module__ == f"provision.steps.{name}" for name, step in STEPS)


def test_a_base_disk_made_again_rebuilds_the_system_image_only(project):
    """`--refresh` makes the base disk again under the same key with the updates
    published since: the system image, made from its tree, is made again too."""
    before = keys(project)
    after = keys(project, "c" * 64)
    assert after["basedisk"] == before["basedisk"]
    assert after["bundle"] == before["bundle"]
    assert after["system-image"] != before["system-image"]

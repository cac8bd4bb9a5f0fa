"""Faults under a catalog change, injected for real: a `publish --force` killed between
its steps (stock `vagrant box add` must still accept the catalog), a full disk (a small
tmpfs), a lock file the publisher may not open. Each error is one line, exit 1, and
leaves nothing half-written."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from goldbox import PROJECT_ROOT
from goldbox.catalog import LOCK_FILE, PARTIAL_PREFIX, STATE_FILE, publish
from tests.boxes import BOX_NAME, make_box
from tests.catalog_fixtures import QUIET, installed, vagrant
from tests.conftest import run_invoke

KILLED_AT_STEP = """\
import os, signal, sys
from pathlib import Path
from goldbox.catalog import publish

def progress(line):
    if line.startswith(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)

publish(Path(sys.argv[1]), Path(sys.argv[2]), force=True, progress=progress)
"""


def _box_sha(manifest: Path) -> str:
    return json.loads(manifest.read_text())["box_sha256"]


@pytest.mark.parametrize("step", ["copied ", "wrote ", "published "])
def test_publish_force_killed_between_steps_leaves_a_catalog_vagrant_accepts(
        step, tmp_path, project_copy):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    first = make_box(tmp_path / "first", "1.0.0")
    publish(first, catalog, progress=QUIET)  # a candidate: --force may replace its box
    rebuilt = make_box(tmp_path / "rebuilt", "1.0.0")  # same version, other bytes
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    child = subprocess.run([sys.executable, "-c", KILLED_AT_STEP, str(rebuilt), str(catalog),
                            step], env=env, capture_output=True, text=True, check=False)
    assert child.returncode == -signal.SIGKILL, child.stderr

    # Whichever instant it died at, the channel names a complete box with its checksum.
    channel = catalog / BOX_NAME / "channels" / "candidate" / "metadata.json"
    metadata = json.loads(channel.read_text())
    (provider,) = metadata["versions"][0]["providers"]
    expected = _box_sha(first) if step == "copied " else _box_sha(rebuilt)
    assert provider["checksum"] == expected
    home = tmp_path / "vagrant.d"
    vagrant(home, "box", "add", str(channel))
    assert installed(home) == [f"{BOX_NAME} (libvirt, 1.0.0)"]

    # The next change sweeps what the killed one left; the check then finds nothing.
    publish(make_box(tmp_path / "next", "1.1.0"), catalog, release=True, progress=QUIET)
    boxes = sorted(p.name for p in (catalog / BOX_NAME / "1.0.0" / "libvirt").glob("*.box"))
    assert len(boxes) == 1 and provider["url"].endswith(boxes[0])
    check = run_invoke(project_copy, "catalog-check", "--catalog", str(catalog))
    assert check.returncode == 0, check.stdout + check.stderr


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("goldbox: error: "), result.stderr
    return lines[0]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 2 MiB tmpfs, mounted for this test only."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                   check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_a_full_disk_under_publish_is_one_line_and_leaves_nothing(small_disk, tmp_path,
                                                                   project_copy):
    catalog = small_disk / "catalog"
    catalog.mkdir()
    publish(make_box(tmp_path / "small", "1.0.0"), catalog, release=True, progress=QUIET)
    before = _files(catalog)
    big = make_box(tmp_path / "big", "1.1.0", padding_mib=3)
    result = run_invoke(project_copy, "publish", "--release", "--manifest", str(big),
                        "--catalog", str(catalog))
    line = _one_line_error(result)
    assert f"{catalog / BOX_NAME / '1.1.0' / 'libvirt'}" in line
    assert "cannot copy the box: No space left on device" in line
    assert _files(catalog) == before  # no partial file, no new entry
    assert not list(catalog.rglob(f"{PARTIAL_PREFIX}*"))


@pytest.fixture
def shared_catalog():
    """A catalog under /tmp that another user can reach, its lock file owned by root."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a lock file another user cannot open")
    top = Path(tempfile.mkdtemp(prefix="goldbox-shared-"))
    try:
        os.chmod(top, 0o755)
        catalog = top / "catalog"
        catalog.mkdir(mode=0o777)
        os.chmod(catalog, 0o777)
        yield top, catalog
    finally:
        shutil.rmtree(top)


def test_a_lock_file_the_publisher_cannot_open_is_one_line(shared_catalog):
    top, catalog = shared_catalog
    manifest = make_box(top / "dist", "1.0.0")
    for path in (top / "dist", *(top / "dist").iterdir()):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    (catalog / LOCK_FILE).write_text("")
    os.chmod(catalog / LOCK_FILE, 0o644)  # root's: `nobody` may not open it for writing
    invoke = Path(sys.executable).parent / "invoke"
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(invoke),
         "publish", "--manifest", str(manifest), "--catalog", str(catalog)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=False,
        env={**os.environ, "HOME": str(top)})
    line = _one_line_error(result)
    assert line == (f"goldbox: error: {catalog / LOCK_FILE}: cannot open the catalog's lock "
                    f"file: Permission denied (every publisher needs write access to it)")
    assert sorted(p.name for p in catalog.iterdir()) == [LOCK_FILE]
    assert not (catalog / BOX_NAME / STATE_FILE).exists()


def test_a_disk_that_fills_after_the_copy_takes_the_new_box_back(small_disk, tmp_path,
                                                                   project_copy):
    catalog = small_disk / "catalog"
    catalog.mkdir()
    publish(make_box(tmp_path / "small", "1.0.0"), catalog, release=True, progress=QUIET)
    new = make_box(tmp_path / "new", "1.1.0")
    box_size = json.loads(new.read_text())["box_size"]
    # Leave room for the box's and the plan's pages and not one more: the copy lands, the
    # state cannot.
    stats = os.statvfs(small_disk)
    page = stats.f_frsize
    plan_size = (new.parent / "plan.json").stat().st_size
    filler_size = stats.f_bavail * page - sum((size + page - 1) // page * page
                                              for size in (box_size, plan_size))
    (catalog / "filler").write_bytes(b"\0" * filler_size)
    before = _files(catalog)
    result = run_invoke(project_copy, "publish", "--release", "--manifest", str(new),
                        "--catalog", str(catalog))
    line = _one_line_error(result)
    assert f"{catalog / BOX_NAME / STATE_FILE}: cannot write: No space left on device" in line
    assert _files(catalog) == before  # the copied box was taken back, metadata unchanged

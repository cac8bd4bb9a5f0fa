"""Faults on the host side, injected for real: a kill between the two steps of the
dist/ swap, a full disk under image's output, two `invoke image` at once on one
checkout, and bad inputs (a non-UTF-8 config, corrupt manifest and probe files, an
unwritable lock file, links out of app/, a link loop): each ends in one line, exit 1,
with nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from goldbox.config import load_config
from goldbox.context import Context
from goldbox.manifest import read_manifest
from tests.conftest import run_invoke

INVOKE = str(Path(sys.executable).parent / "invoke")
DEFAULT = load_config().project.box.default_platform  # what `invoke image` builds
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts, chattr)")

# Runs the real `install_box` of goldbox/dist.py on a project copy, from a box that
# "packer" left in build/<p>/work/box/ (a stand-in file: packer is not what is tested).
INSTALL_BOX = """
import sys
from pathlib import Path
from goldbox.config import load_config
from goldbox.context import Context
from goldbox.dist import install_box
from goldbox.phase_report import Phases
from goldbox.errors import GoldboxError
config = load_config(Path(sys.argv[1]))
ctx = Context(config, config.platform(None))
ctx.packer_box.parent.mkdir(parents=True, exist_ok=True)
ctx.packer_box.write_bytes(b"N" * int(sys.argv[2]))
ctx.stage.mkdir(parents=True, exist_ok=True)
(ctx.stage / "plan.json").write_text("{}")
ctx.log.parent.mkdir(parents=True, exist_ok=True)
ctx.log.write_text("goldbox-version nginx=1.22.1\\n")
phases = Phases(log=ctx.log)
try:
    with phases.phase("box"):
        install_box(ctx, "f" * 64, phases.seconds(), {})
except GoldboxError as exc:
    print(f"goldbox: error: {exc}", file=sys.stderr)
    sys.exit(1)
"""


def _previous_box(project: Path) -> Path:
    """A dist/<p>/ from an earlier build: box, manifest and plan."""
    ctx = Context(load_config(project), load_config(project).platform(None))
    ctx.dist.mkdir(parents=True)
    ctx.box.write_bytes(b"the previous box\n")
    ctx.manifest.write_text(json.dumps({
        "box_name": "goldbox-flask", "version": "0.1.0", "platform": DEFAULT,
        "provider": "libvirt", "box_file": ctx.box_file, "box_sha256": "0" * 64,
        "box_size": 17, "created": "2026-01-01T00:00:00Z"}) + "\n")
    return ctx.dist


def _install_box(project: Path, size: int, env: dict | None = None):
    return subprocess.run([sys.executable, "-c", INSTALL_BOX, str(project), str(size)],
                          capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=120, check=False)


def test_a_kill_between_the_dist_swap_and_the_cleanup_leaves_the_new_box(project_copy):
    dist = _previous_box(project_copy)
    result = _install_box(project_copy, 4096, {"GOLDBOX_KILL_AT": "dist-swap"})
    assert result.returncode == -signal.SIGKILL, result.stderr
    manifest = read_manifest(dist / "manifest.json")  # valid, and the new one
    assert (dist / manifest.box_file).read_bytes() == b"N" * 4096
    assert manifest.box_size == 4096
    # The old box is left under the partial name, and the next run sweeps it.
    leftover = dist.with_name(f".{dist.name}.partial")
    assert (leftover / manifest.box_file).read_bytes() == b"the previous box\n"
    result = _install_box(project_copy, 2048)
    assert result.returncode == 0, result.stderr
    assert not leftover.exists()
    assert read_manifest(dist / "manifest.json").box_size == 2048


@needs_root
def test_a_full_disk_under_dist_is_one_line_and_keeps_the_previous_box(project_copy):
    dist_root = project_copy / "dist"
    dist_root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "goldbox-test", dist_root],
                   check=True)
    try:
        dist = _previous_box(project_copy)
        result = _install_box(project_copy, 4 << 20)  # a 4 MiB box on a 1 MiB disk
        assert result.returncode == 1
        (line,) = result.stderr.splitlines()
        assert line.startswith("goldbox: error: phase 'box' failed")
        assert "No space left on device" in line
        assert sorted(p.name for p in dist_root.iterdir()) == [DEFAULT], \
            "no partial dist folder may be left"
        assert (dist / "goldbox-flask-0.1.0-libvirt.box").read_bytes() == b"the previous box\n"
        assert read_manifest(dist / "manifest.json").box_size == 17
    finally:
        subprocess.run(["umount", dist_root], check=True)


def test_a_second_image_run_on_one_checkout_is_refused_in_one_line(project_copy, tmp_path,
                                                                   monkeypatch):
    dist = _previous_box(project_copy)
    # An empty cache keeps the first run building: with the shared cache warm (the e2e
    # tests built this very golden image) it finished in 2 s, before the second began,
    # and published its box over the previous one (CI, 2026-11-28).
    monkeypatch.setenv("GOLDBOX_CACHE", str(tmp_path / "empty-cache"))
    first = subprocess.Popen([INVOKE, "image"], cwd=project_copy, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert first.stdout is not None
        while not first.stdout.readline().startswith("goldbox image: "):
            assert first.poll() is None, "the first run ended early"
        second = run_invoke(project_copy, "image")
        assert first.poll() is None, "the first run must still be going"
        assert second.returncode == 1
        (line,) = second.stderr.splitlines()
        assert line == (f"goldbox: error: another `invoke image` (pid {first.pid}) is building "
                        f"{DEFAULT} in this checkout ({project_copy}/build/{DEFAULT}/image.lock "
                        "is locked): wait for it or stop it")
        assert second.stdout == ""
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        first.wait(timeout=60)
    assert (dist / "goldbox-flask-0.1.0-libvirt.box").read_bytes() == b"the previous box\n"


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    (line,) = result.stderr.splitlines()
    assert line.startswith("goldbox: error: ")
    return line


def test_a_non_utf8_config_is_one_line(project_copy):
    config = project_copy / "goldbox.toml"
    config.write_bytes(config.read_bytes().replace(b"Flask behind", b"Fl\xe4sk behind"))
    line = _one_line_error(run_invoke(project_copy, "render"))
    assert line.startswith("goldbox: error: goldbox.toml: not UTF-8 text (byte 0xe4 at offset")
    assert not (project_copy / "build").exists()


def test_a_corrupt_manifest_in_dist_is_one_line_naming_it(project_copy):
    dist = _previous_box(project_copy)
    (dist / "manifest.json").write_text('{"box_name": "goldbox-flask", "version": ')
    line = _one_line_error(run_invoke(project_copy, "up"))
    assert f"{dist / 'manifest.json'}: not valid JSON" in line
    (dist / "manifest.json").write_text('{"box_name": "goldbox-flask"}')
    line = _one_line_error(run_invoke(project_copy, "up"))
    assert f"{dist / 'manifest.json'}: missing key 'version'" in line
    (dist / "manifest.json").write_text((dist / "manifest.json").read_text().replace(
        '"goldbox-flask"}', '"Gold Box", "version": "1"}'))
    line = _one_line_error(run_invoke(project_copy, "up"))
    assert (f"{dist / 'manifest.json'}: box_name = 'Gold Box': expected lowercase letters, "
            "digits") in line


@pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                    reason="without /dev/kvm nothing reads the probe file")
def test_a_corrupt_accel_probe_file_is_probed_again(tmp_path, monkeypatch, capsys):
    """This host has no /boot/vmlinuz-*: a file stands in for the kernel, which qemu then
    refuses at once, so the probe ends in TCG; the corrupt file is what is tested."""
    from goldbox import accel

    kernel = tmp_path / "vmlinuz-stand-in"
    kernel.write_bytes(b"not a kernel")
    monkeypatch.setattr(accel, "probe_kernel", lambda: kernel)
    (tmp_path / "accel-probe.json").write_text("\0\0garbage")
    result = accel.detect(tmp_path)
    assert "accel-probe.json is unreadable or corrupt; probing again" in capsys.readouterr().out
    assert result.accelerator == "tcg"
    saved = json.loads((tmp_path / "accel-probe.json").read_text())
    assert saved["accelerator"] == "tcg"
    assert accel.detect(tmp_path).reason.endswith("(cached probe)")


@needs_root
def test_an_unwritable_lock_file_is_one_line(project_copy):
    lock = project_copy / "build" / DEFAULT / "image.lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    if subprocess.run(["chattr", "+i", lock], capture_output=True).returncode != 0:
        pytest.skip(f"chattr +i is not supported on {lock.parent}'s filesystem")
    try:
        line = _one_line_error(run_invoke(project_copy, "image"))
    finally:
        subprocess.run(["chattr", "-i", lock], check=True)
    assert line == f"goldbox: error: {lock}: cannot open the lock file: Operation not permitted"


@pytest.mark.parametrize("target, expected", [
    ("/etc/ssh/ssh_host_ed25519_key", "is a symbolic link to /etc/ssh/ssh_host_ed25519_key, "
                                      "outside app/"),
    ("../../goldbox.toml", "is a symbolic link to ../../goldbox.toml, outside app/"),
    ("loop", "is a symbolic link loop (-> loop)"),
])
def test_links_out_of_app_and_loops_are_refused_before_anything_runs(project_copy, target,
                                                                      expected):
    link = project_copy / "app" / "static" / "loop"
    link.symlink_to(target)
    line = _one_line_error(run_invoke(project_copy, "image"))
    assert line == f"goldbox: error: app/static/loop {expected}" + (
        ": goldbox copies only what is in the app folder (copy the file in instead)"
        if "outside" in expected else ": remove it")
    assert not (project_copy / "build").exists()


def test_links_inside_app_are_kept_as_links(project_copy, tmp_path):
    from goldbox.stage import check_app_tree, golden_stage

    (project_copy / "app" / "static" / "alias.css").symlink_to("style.css")
    check_app_tree(project_copy / "app", project_copy)
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    plan = tmp_path / "plan.json"
    plan.write_text("{}")
    stage = golden_stage(project_copy, project_copy / "app", tmp_path / "stage", wheelhouse,
                         plan, [])
    copied = stage / "app" / "static" / "alias.css"
    assert copied.is_symlink() and os.readlink(copied) == "style.css"

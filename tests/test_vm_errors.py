"""`up`/`verify`/`destroy` refuse clearly, naming the command that fixes the problem."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from goldbox.config import load_config
from goldbox.errors import GoldboxError
from tests.conftest import run_invoke

DEFAULT = load_config().project.box.default_platform


def test_up_without_a_built_box(project_copy):
    result = run_invoke(project_copy, "up")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"goldbox: error: no box built for {DEFAULT} (no {project_copy}/dist/{DEFAULT}/"
        f"manifest.json): run `invoke image --platform {DEFAULT}` first")


@pytest.mark.parametrize("task", ["up", "verify"])
def test_the_arm64_vm_without_an_arm64_box_names_the_target_to_build(project_copy, task):
    result = run_invoke(project_copy, task, "--arch", "arm64")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"goldbox: error: no arm64 box built for {DEFAULT} (no {project_copy}/dist/{DEFAULT}/"
        f"manifest.libvirt-arm64.json): run `invoke image --platform {DEFAULT} --target "
        "libvirt/arm64` first")


def test_an_unknown_arch_is_one_line_naming_the_option(project_copy):
    result = run_invoke(project_copy, "destroy", "--arch", "x86_64")
    assert result.returncode == 1
    assert result.stderr.strip() == ("goldbox: error: destroy --arch: unknown architecture "
                                     "'x86_64': expected one of amd64, arm64")


def test_up_with_a_busy_port(project_copy):
    out = project_copy / "dist" / DEFAULT
    out.mkdir(parents=True)
    (out / "goldbox-flask-0.1.0-libvirt.box").write_bytes(b"box")
    (out / "manifest.json").write_text(json.dumps({
        "box_name": "goldbox-flask", "version": "0.1.0", "platform": DEFAULT,
        "provider": "libvirt", "box_file": "goldbox-flask-0.1.0-libvirt.box",
        "box_sha256": "0" * 64, "box_size": 3, "created": "2026-01-01T00:00:00Z"}))
    config = (project_copy / "goldbox.toml").read_text()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        (project_copy / "goldbox.toml").write_text(
            config.replace("host_http = 8088", f"host_http = {port}"))
        result = run_invoke(project_copy, "up")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"goldbox: error: port {port} on 127.0.0.1 is busy: stop what listens there, or set "
        "ports.host_http in goldbox.toml to a free port")


def test_destroy_without_a_vm_is_harmless(project_copy):
    result = run_invoke(project_copy, "destroy")
    assert result.returncode == 0
    assert f"{DEFAULT}: no VM to destroy" in result.stdout


def test_the_pools_copy_of_a_box_must_hold_its_disk(tmp_path):
    """verify --from-catalog boots the pool's copy of a box version if one exists: it is
    used only when it holds the very disk of the catalog's box."""
    from goldbox.vm import require_same_image
    from tests.boxes import make_box

    make_box(tmp_path, "0.1.0")
    (box,) = tmp_path.glob("*.box")
    subprocess.run(["tar", "-xf", box, "-C", tmp_path, "box.img"], check=True)
    volume = tmp_path / "box.img"  # what vagrant-libvirt uploads: box.img byte for byte
    require_same_image(volume, box)
    with open(volume, "ab") as other:
        other.write(b"another build")
    with pytest.raises(GoldboxError, match=r"^libvirt volume .* holds another disk than "
                                           r".*invoke destroy --purge"):
        require_same_image(volume, box)

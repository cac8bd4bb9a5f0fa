"""Build targets (`box.targets`, `invoke image --target`): the allow-list in goldbox.toml,
and a target this build cannot make refused before anything runs, through the real
`invoke image` of a project copy (it stops before any phase: no build, no lock)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from goldbox.config import load_config
from goldbox.errors import GoldboxError
from goldbox.targets import Target, buildable_targets, built_manifests
from tests.conftest import run_invoke


def _set_targets(root: Path, value: str) -> None:
    toml = root / "goldbox.toml"
    text, count = re.subn(r"(?m)^targets = .*$", lambda _: f"targets = {value}",
                          toml.read_text())
    assert count == 1
    toml.write_text(text)


def test_targets_default_to_the_libvirt_amd64_box(project_copy):
    assert load_config(project_copy).project.box.targets == ["libvirt/amd64"]


@pytest.mark.parametrize("value, problem", [
    ('["vmware/amd64"]', "box.targets[0] = 'vmware/amd64': expected <provider>/<arch> with "
                         "provider libvirt or virtualbox and arch amd64 or arm64"),
    ('["libvirt/amd64\\n"]', "box.targets[0] = 'libvirt/amd64\\n': expected <provider>/<arch>"),
    ('["libvirt/x86_64"]', "box.targets[0] = 'libvirt/x86_64': expected"),
    ("[]", "box.targets = []: List should have at least 1 item"),
    ('"libvirt/amd64"', "box.targets = 'libvirt/amd64': expected a valid list"),
])
def test_a_target_outside_the_allow_list_is_one_line_naming_key_and_value(
        project_copy, value, problem):
    _set_targets(project_copy, value)
    with pytest.raises(GoldboxError) as raised:
        load_config(project_copy)
    assert str(raised.value).startswith(f"goldbox.toml: {problem}")
    assert "\n" not in str(raised.value).replace("\\n", "")


@pytest.mark.parametrize("args, message", [
    (["--target", "virtualbox/arm64"],
     "--target = 'virtualbox/arm64': this build cannot make virtualbox/arm64 yet "
     "(supported: libvirt/amd64, virtualbox/amd64, libvirt/arm64)"),
    (["--target", "libvirt/arm64", "--target", "virtualbox/arm64"],
     "--target = 'virtualbox/arm64': this build cannot make virtualbox/arm64 yet "
     "(supported: libvirt/amd64, virtualbox/amd64, libvirt/arm64)"),
    (["--target", "qemu/amd64"], "--target = 'qemu/amd64': expected <provider>/<arch>"),
])
def test_image_refuses_a_target_it_cannot_make_before_any_phase(project_copy, args, message):
    result = run_invoke(project_copy, "image", *args)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"goldbox: error: {message}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "==>" not in result.stdout  # no phase started
    assert not (project_copy / "build").exists() and not (project_copy / "dist").exists()


def test_config_targets_are_refused_naming_the_config_key(project_copy):
    _set_targets(project_copy, '["libvirt/amd64", "virtualbox/arm64"]')
    result = run_invoke(project_copy, "image")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "goldbox: error: goldbox.toml: box.targets = 'virtualbox/arm64': this build cannot "
        "make virtualbox/arm64 yet (supported: libvirt/amd64, virtualbox/amd64, libvirt/arm64)")


def test_virtualbox_needs_a_kernel_with_the_e1000_driver(project_copy):
    """debian-12 keeps Debian's cloud kernel, which has no driver for VirtualBox's NIC: a
    VirtualBox box of it would never answer on SSH (seen under QEMU standing in for
    VirtualBox: networking.service waits for an eth0 that never comes)."""
    result = run_invoke(project_copy, "image", "--platform", "debian-12",
                        "--target", "virtualbox/amd64")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "goldbox: error: platforms/debian-12.toml: source.kernel_package = "
        "'linux-image-cloud-amd64' and target virtualbox/amd64: that kernel has no e1000 "
        "driver (VirtualBox's NIC); use linux-image-amd64")


def test_the_default_platform_boots_on_virtualbox_hardware(project_copy):
    """debian-13 (the default) carries the full kernel, so it can have a VirtualBox box."""
    config = load_config(project_copy)
    assert config.platform(None).source.kernel_package == "linux-image-amd64"


def test_targets_are_taken_once_each_in_order():
    assert buildable_targets(["virtualbox/amd64", "libvirt/amd64", "virtualbox/amd64"],
                             "--target") == [Target("virtualbox", "amd64"),
                                             Target("libvirt", "amd64")]


def test_each_target_has_its_own_box_and_manifest_name(tmp_path):
    assert Target("libvirt", "amd64").box_file("b", "1.0.0") == "b-1.0.0-libvirt.box"
    assert Target("libvirt", "amd64").manifest_name == "manifest.json"
    assert Target("virtualbox", "amd64").box_file("b", "1.0.0") == "b-1.0.0-virtualbox.box"
    assert Target("libvirt", "arm64").box_file("b", "1.0.0") == "b-1.0.0-libvirt-arm64.box"
    names = [Target(p, a).manifest_name for p in ("virtualbox", "libvirt")
             for a in ("arm64", "amd64")]
    for name in names:
        (tmp_path / name).write_text("{}")
    (tmp_path / "manifest.json.sig").write_text("")
    assert [p.name for p in built_manifests(tmp_path)] == [
        "manifest.json", "manifest.libvirt-arm64.json", "manifest.virtualbox-amd64.json",
        "manifest.virtualbox-arm64.json"]
    assert all(re.fullmatch(r"manifest(\.[a-z]+-[a-z0-9]+)?\.json", n) for n in names)


@pytest.mark.parametrize("target, message", [
    # centos-6.4 is installed from an ISO (its VirtualBox box comes from packer's own
    # virtualbox-iso builder, --builder virtualbox), not converted from a golden qcow2.
    ("virtualbox/amd64", "target virtualbox/amd64: made from the golden disk of a debootstrap "
                         "platform's qemu build"),
    # An arm64 box is built from the platform's arm64 base disk (debootstrap), with qemu:
    # centos-6.4's ISO install has none.
    ("libvirt/arm64", "target libvirt/arm64: built from a debootstrap platform's base disk "
                      "by the qemu builder"),
])
def test_a_target_made_from_a_base_disk_needs_a_debootstrap_platform(project_copy, target,
                                                                     message):
    result = run_invoke(project_copy, "image", "--platform", "centos-6.4", "--target", target)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"goldbox: error: {message} (platforms/centos-6.4.toml has source iso, --builder is "
        "qemu)")
    assert "==>" not in result.stdout
    assert not (project_copy / "build").exists()

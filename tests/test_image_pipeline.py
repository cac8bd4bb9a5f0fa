"""`invoke image`'s phases as typed results (goldbox/image.py): the box's component
versions come from the golden build's own output, and the manifest is written once,
with them. Real packer (its null builder: no VM) and goldbox's own code; fast."""

import json
from pathlib import Path

from goldbox.accel import Acceleration
from goldbox.arch import ARM64
from goldbox.config import load_config
from goldbox.context import Context
from goldbox.image import GoldenBuild, Host, box_phase
from goldbox.manifest import read_manifest
from goldbox.packer import packer_build
from goldbox.render import render_platform
from goldbox.stage import system_files

# A packer build that boots nothing and prints what the golden build's last provisioner
# prints of a guest.
NULL_BUILD = """
variable "ssh_private_key_file" {
  type = string
}
source "null" "guest" {
  communicator = "none"
}
build {
  sources = ["source.null.guest"]
  provisioner "shell-local" {
    inline = ["echo goldbox-version nginx=1.22.1", "echo goldbox-version uwsgi=2.0.31"]
  }
}
"""


def test_a_builds_versions_are_what_it_printed_not_the_rest_of_the_log(tmp_path):
    """An earlier build of the run (the system image's) printed versions too: they are
    not this build's."""
    template = tmp_path / "golden.pkr.hcl"
    template.write_text(NULL_BUILD)
    log = tmp_path / "image.log"
    log.write_text("goldbox-version nginx=0.0.1\ngoldbox-version flask=0.1\n")
    printed = packer_build(template, {"stage_dir": "unused"}, "null.guest", log,
                           tmp_path / "console.log", None)  # no guest, no console
    assert printed == {"nginx": "1.22.1", "uwsgi": "2.0.31"}
    assert json.loads(tmp_path.joinpath("golden-vars.json").read_text()).keys() == {
        "ssh_private_key_file"}


def test_the_manifest_holds_the_golden_builds_versions_and_the_phases_before(project_copy):
    config = load_config(project_copy)
    ctx = Context(config, config.platform("debian-12"))
    ctx.packer_box.parent.mkdir(parents=True)
    ctx.packer_box.write_bytes(b"a box\n")
    ctx.stage.mkdir(parents=True)
    (ctx.stage / "plan.json").write_text("{}\n")
    ctx.log.parent.mkdir(parents=True)
    ctx.log.write_text("goldbox-version nginx=0.0.1\n")
    host = Host(Acceleration("tcg", "test"), (1, 6, 6))
    golden = GoldenBuild({"cpython": "3.13.15", "nginx": "1.22.1", "uwsgi": "2.0.31",
                          "flask": "3.1.1"})
    manifest = box_phase(ctx, host, "d" * 64, golden, None, {"render": 1.0, "packer": 60.0})
    assert read_manifest(ctx.manifest) == manifest
    assert manifest.components == {"cpython": "3.13.15", "nginx": "1.22.1", "uwsgi": "2.0.31",
                                   "flask": "3.1.1", "packer": "1.6.6"}
    assert manifest.phases == {"render": 1.0, "packer": 60.0}
    assert manifest.input_hash == "d" * 64
    assert Path(ctx.dist / "plan.json").read_text() == "{}\n"


def test_the_system_steps_get_the_wheelhouse_only_when_pip_comes_from_it(tmp_path):
    """What the system image's chroot gets staged beside its plan: CPython's bundle or
    tarball, and the wheelhouse only for a plan whose python step bootstraps pip from it
    (centos-6.4's CPython 2.7)."""
    config = load_config()
    tarball, wheelhouse = tmp_path / "Python.tar.xz", tmp_path / "wheelhouse"
    staged = {}
    for name in ("debian-13", "centos-6.4"):
        rendered = render_platform(config, config.platform(name), tmp_path / name)
        staged[name] = system_files(rendered.plan, [tarball], wheelhouse)
    assert staged == {"debian-13": {"Python.tar.xz": tarball},
                      "centos-6.4": {"Python.tar.xz": tarball, "wheelhouse": wheelhouse}}


def _packer_made(ctx: Context, content: bytes, plan: str) -> None:
    """What packer's golden build leaves for the box phase: the box and the stage's plan."""
    ctx.packer_box.parent.mkdir(parents=True, exist_ok=True)
    ctx.packer_box.write_bytes(content)
    ctx.stage.mkdir(parents=True, exist_ok=True)
    (ctx.stage / "plan.json").write_text(plan)


def test_an_arm64_box_lies_beside_the_golden_box_and_a_new_golden_box_keeps_it(project_copy):
    config = load_config(project_copy)
    amd64 = Context(config, config.platform("debian-12"))
    arm64 = amd64.for_arch(ARM64)
    assert arm64.work != amd64.work and arm64.render_dir != amd64.render_dir
    # One run: one log, and one record of the cache entries it used (for --prune).
    assert arm64.log == amd64.log and arm64.cache is amd64.cache
    amd64.log.parent.mkdir(parents=True)
    amd64.log.write_text("")
    host = Host(Acceleration("tcg", "test"), (1, 6, 6))
    golden = GoldenBuild({"cpython": "3.13.15"})

    _packer_made(amd64, b"amd64 box 1\n", "{\"amd64\": 1}\n")
    box_phase(amd64, host, "a" * 64, golden, None, {})
    _packer_made(arm64, b"arm64 box\n", "{\"arm64\": 1}\n")
    made = box_phase(arm64, host, "b" * 64, golden, None, {"arm64 packer": 600.0})
    assert made.architecture == "arm64" and made.box_file.endswith("-libvirt-arm64.box")
    assert arm64.manifest.name == "manifest.libvirt-arm64.json"
    assert read_manifest(arm64.manifest) == made
    assert read_manifest(amd64.manifest).architecture == "amd64"  # untouched
    assert (amd64.dist / "plan-arm64.json").read_text() == "{\"arm64\": 1}\n"
    assert (amd64.dist / "plan.json").read_text() == "{\"amd64\": 1}\n"

    # A new golden box swaps dist/<p>/ in whole: the arm64 box, plan and manifest stay.
    _packer_made(amd64, b"amd64 box 2\n", "{\"amd64\": 2}\n")
    box_phase(amd64, host, "c" * 64, golden, None, {})
    assert amd64.box.read_bytes() == b"amd64 box 2\n"
    assert arm64.box.read_bytes() == b"arm64 box\n"
    assert read_manifest(arm64.manifest) == made
    assert (amd64.dist / "plan-arm64.json").read_text() == "{\"arm64\": 1}\n"
    assert sorted(p.name for p in amd64.dist.iterdir()) == sorted([
        amd64.box_file, arm64.box_file, "manifest.json", "manifest.libvirt-arm64.json",
        "plan.json", "plan-arm64.json"])

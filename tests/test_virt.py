"""goldbox.virt, the one module that knows Vagrant's and vagrant-libvirt's commands and
formats: with real vagrant 2.3.4 and its own VAGRANT_HOME (no VM, no libvirt needed), and
vagrant-libvirt's own volume names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from goldbox import PROJECT_ROOT, virt
from goldbox.errors import GoldboxError
from tests.boxes import make_box


def one_version_metadata(folder: Path, name: str, version: str, box: Path) -> Path:
    """A one-entry metadata.json, as `invoke up` adds its build (vm.add_box)."""
    metadata = folder / f"{name.replace('/', '-')}-{version}.json"
    metadata.write_text(json.dumps({"name": name, "versions": [{"version": version, "providers": [
        {"name": "libvirt", "url": box.resolve().as_uri()}]}]}))
    return metadata


@pytest.fixture
def vagrant_env(tmp_path) -> dict[str, str]:
    return {"VAGRANT_HOME": str(tmp_path / "vagrant.d"), "VAGRANT_CHECKPOINT_DISABLE": "1"}


def test_box_list_add_and_remove_with_real_vagrant(tmp_path, vagrant_env):
    assert virt.installed_boxes(vagrant_env) == set()  # "There are no installed boxes!"
    box = tmp_path / "box" / "goldbox-test-0.1.0-libvirt.box"
    make_box(tmp_path / "box", "0.1.0")
    for name, version in (("acme/base", "1.2.0"), ("goldbox-test", "0.1.0")):
        virt.add_box(one_version_metadata(tmp_path, name, version, box), env=vagrant_env)
    assert virt.installed_boxes(vagrant_env) == {("acme/base", "1.2.0"),
                                                 ("goldbox-test", "0.1.0")}
    # What `invoke up` looks at instead of `vagrant box list` when its marker says the
    # build is added: the folder real vagrant made.
    assert virt.box_stored("acme/base", "1.2.0", vagrant_env)
    assert not virt.box_stored("acme/base", "1.3.0", vagrant_env)

    assert virt.remove_box("acme/base", "1.2.0", env=vagrant_env) is True
    assert not virt.box_stored("acme/base", "1.2.0", vagrant_env)
    assert virt.remove_box("acme/base", "1.2.0", env=vagrant_env) is False  # not installed
    assert virt.installed_boxes(vagrant_env) == {("goldbox-test", "0.1.0")}


def test_box_list_lines_of_other_providers_and_vagrant_2_4():
    """Only libvirt boxes count; Vagrant 2.4 adds the architecture to each line."""
    listed = ("acme/base    (libvirt, 1.2.0)\n"
              "acme/base    (virtualbox, 1.2.0)\n"
              "goldbox-test (libvirt, 0.1.0, amd64)\n")
    assert virt.parse_box_list(listed) == [
        virt.Box("acme/base", "libvirt", "1.2.0"), virt.Box("acme/base", "virtualbox", "1.2.0"),
        virt.Box("goldbox-test", "libvirt", "0.1.0")]


def test_a_failing_vagrant_command_is_one_line_naming_it(tmp_path, vagrant_env):
    with pytest.raises(GoldboxError) as failed:
        virt.ssh_config(tmp_path, vagrant_env)  # no Vagrantfile here
    message = str(failed.value)
    assert message.startswith(f"`vagrant ssh-config` (in {tmp_path}) failed: ")
    assert "\n" not in message


def test_volume_names_are_vagrant_libvirts():
    # vagrant-libvirt 0.11.2, action/handle_box_image.rb: box.name with "/" as
    # "-VAGRANTSLASH-", then "_vagrant_box_image_#{version}_#{disk}.img".
    name = virt.box_volume_name("acme/base", "1.2.0")
    assert name == "acme-VAGRANTSLASH-base_vagrant_box_image_1.2.0_box.img"
    assert virt.parse_box_volume(name) == ("acme/base", "1.2.0")
    assert virt.parse_box_volume("goldbox-test_vagrant_box_image_0.1.0_box.img") == (
        "goldbox-test", "0.1.0")
    assert virt.parse_box_volume("debian-12_default.img") is None  # a VM's disk
    assert virt.parse_box_volume(name + "\n") is None


def test_machine_state_of_a_vagrantfile_without_a_vm(tmp_path, vagrant_env):
    (tmp_path / "Vagrantfile").write_text('Vagrant.configure("2") do |config|\n'
                                          '  config.vm.box = "goldbox-test"\nend\n')
    env = {**vagrant_env, "VAGRANT_DEFAULT_PROVIDER": "libvirt"}
    assert virt.machine_state(tmp_path, env) == "not_created"


NO_DAEMON = r"""
import json
from goldbox import pool, virt
lines = []
print(json.dumps([virt.daemon_version(), pool.purge(progress=lines.append), lines]))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="a private /run/libvirt needs root")
def test_without_a_libvirt_daemon_purge_says_it_did_not_check():
    """`invoke destroy --purge` and `invoke prune` on a host where no libvirt daemon runs:
    seen in a private mount namespace with an empty /run (no daemon's socket; /run/libvirt
    itself exists only once a daemon has run on the host)."""
    script = ('mount -t tmpfs goldbox-test /run && exec "$0" -c "$1"')
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-ec",
                             script, sys.executable, NO_DAEMON], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == [None, [], [
        "pool default: not checked, no libvirt daemon answers at qemu:///system"]]

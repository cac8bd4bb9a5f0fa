"""The libvirt box booted by the vagrant-qemu plugin (QEMU without libvirt: what a teammate
on macOS and Apple Silicon runs), with the stock Vagrant here: the plugin reads the
libvirt box format ("same as vagrant-libvirt version-1"), so no box of its own is made.

The plugin is not packaged for Debian and CI cannot fetch it: the test takes its source
tree from $GOLDBOX_VAGRANT_QEMU_SOURCE (e.g. `git archive v0.4.1` of ppggff/vagrant-qemu)
and loads it from the Vagrantfile, as a plugin's own lib/ is loaded; it is skipped,
saying why, without it. Boots a VM (TCG here): one VM user at a time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from goldbox import PROJECT_ROOT
from goldbox.catalog.serve import free_port
from goldbox.config import load_config
from goldbox.manifest import read_manifest
from goldbox.plan import UWSGI_SERVICE

SOURCE = "GOLDBOX_VAGRANT_QEMU_SOURCE"
CONFIG = load_config()
INVOKE = str(Path(sys.executable).parent / "invoke")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="boots a VM as CI does, as root")]


def plugin_lib() -> Path:
    source = os.environ.get(SOURCE)
    if not source:
        pytest.skip(f"the vagrant-qemu plugin is not packaged for Debian and CI cannot fetch "
                    f"it: set {SOURCE} to a source tree of it to run this")
    lib = Path(source) / "lib"
    assert (lib / "vagrant-qemu.rb").is_file(), f"{SOURCE}={source}: no lib/vagrant-qemu.rb"
    return lib


def vagrantfile(lib: Path, box: str, ssh_port: int, http_port: int) -> str:
    """A teammate's Vagrantfile for the plugin on an x86_64 Linux host without KVM: TCG,
    the plugin's q35 machine, the CPU packer's boots have (qemu64 with RDRAND)."""
    return f"""\
$LOAD_PATH.unshift({json.dumps(str(lib))})
require "vagrant-qemu"
Vagrant.configure("2") do |config|
  config.vm.box = {json.dumps(box)}
  config.vm.synced_folder ".", "/vagrant", disabled: true
  config.vm.boot_timeout = 900
  config.vm.network "forwarded_port", guest: 80, host: {http_port}, host_ip: "127.0.0.1"
  config.vm.provider "qemu" do |qe|
    qe.arch = "x86_64"
    qe.machine = "q35,accel=tcg"
    qe.cpu = "qemu64,+rdrand"
    qe.memory = "1G"
    qe.ssh_port = {ssh_port}
  end
end
"""


def test_the_libvirt_box_boots_with_the_vagrant_qemu_plugin_and_serves_hello(tmp_path):
    lib = plugin_lib()
    built = subprocess.run([INVOKE, "image", "--platform", "debian-13"], cwd=PROJECT_ROOT,
                           capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    folder = CONFIG.dist_dir / "debian-13"
    box = folder / read_manifest(folder / "manifest.json").box_file
    # A short VAGRANT_HOME: the plugin puts qemu's monitor socket under it, and a unix
    # socket's path must stay under 108 bytes (pytest's tmp_path is longer).
    home = Path(tempfile.mkdtemp(prefix="vq-"))
    env = {**os.environ, "VAGRANT_HOME": str(home), "VAGRANT_CHECKPOINT_DISABLE": "1"}
    name = "goldbox-qemu-test"
    added = subprocess.run(["vagrant", "box", "add", "--name", name, str(box)], env=env,
                           capture_output=True, text=True, check=False)
    assert added.returncode == 0, added.stdout + added.stderr
    assert "(libvirt" in subprocess.run(["vagrant", "box", "list"], env=env, capture_output=True,
                                        text=True, check=True).stdout
    machine = tmp_path / "machine"
    machine.mkdir()
    http_port = free_port()
    (machine / "Vagrantfile").write_text(vagrantfile(lib, name, free_port(), http_port))
    started = time.monotonic()
    try:
        up = subprocess.run(["vagrant", "up", "--provider", "qemu"], cwd=machine, env=env,
                            capture_output=True, text=True, check=False, timeout=1200)
        seconds = time.monotonic() - started
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
        print(f"vagrant-qemu up: {seconds:.1f} s")
        # Vagrant swapped its insecure key for the machine's own, as with vagrant-libvirt.
        assert "Key inserted!" in up.stdout
        # nginx and uWSGI started by the boot: `Hello!` through the plugin's forward.
        deadline = time.monotonic() + 180
        while True:
            try:
                response = requests.get(f"http://127.0.0.1:{http_port}/", timeout=10)
                if response.status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "no HTTP answer through the forward in 180 s"
            time.sleep(2)
        assert response.text == "Hello!"
        inside = subprocess.run(["vagrant", "ssh", "-c", "uname -m; sudo systemctl is-active "
                                 f"nginx {UWSGI_SERVICE}"], cwd=machine, env=env,
                                capture_output=True, text=True, check=False, timeout=300)
        assert inside.stdout.split() == ["x86_64", "active", "active"], inside.stdout
    finally:
        destroyed = subprocess.run(["vagrant", "destroy", "-f"], cwd=machine, env=env,
                                   capture_output=True, text=True, check=False, timeout=300)
        shutil.rmtree(home, ignore_errors=True)
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr

"""Orphaned vagrant-libvirt box images: found and deleted on a real libvirt daemon (in a
network namespace of the test's own, tests/harness.py), in a transient pool of the test's
own. That daemon listens on the host's libvirt socket: like the tests that boot VMs
(marked slow with them), it must not run beside another libvirt daemon of the host."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bench.harness import libvirt_netns
from goldbox.catalog import publish
from goldbox.pool import box_volumes, orphaned, pool_check, purge
from goldbox.virt import VIRSH
from tests.boxes import BOX_NAME, make_box
from tests.catalog_fixtures import vagrant

pytestmark = pytest.mark.slow


def virsh(*args: str) -> str:
    return subprocess.run([*VIRSH, *args], capture_output=True, text=True,
                          check=True).stdout


def test_orphaned_box_volumes_are_reported_and_purged(tmp_path: Path):
    pool = f"goldbox-test-{os.getpid()}"
    pool_dir = tmp_path / "pool"
    pool_dir.mkdir()
    with libvirt_netns():
        virsh("pool-create-as", pool, "dir", "--target", str(pool_dir))
        try:
            for version in ("0.1.0", "0.2.0", "0.3.0"):
                virsh("vol-create-as", pool, f"{BOX_NAME}_vagrant_box_image_{version}_box.img",
                      "1M", "--allocation", "1M", "--format", "raw")
            base = pool_dir / f"{BOX_NAME}_vagrant_box_image_0.3.0_box.img"
            # A VM's disk on top of 0.3.0's image: 0.3.0 is in use though not installed.
            virsh("vol-create-as", pool, "goldbox-vm.img", "1M", "--format", "qcow2",
                  "--backing-vol", str(base), "--backing-vol-format", "raw")
            # Installed in this VAGRANT_HOME: 0.2.0.
            catalog = tmp_path / "catalog"
            catalog.mkdir()
            publish(make_box(tmp_path / "box", "0.2.0"), catalog, release=True,
                    progress=lambda line: None)
            home = tmp_path / "vagrant.d"
            vagrant(home, "box", "add", str(catalog / BOX_NAME / "metadata.json"))
            env = {**os.environ, "VAGRANT_HOME": str(home)}

            assert sorted(v.version for v in box_volumes(pool)) == ["0.1.0", "0.2.0", "0.3.0"]
            (orphan,) = orphaned(pool, env)
            assert (orphan.box, orphan.version, orphan.size) == (BOX_NAME, "0.1.0", 1 << 20)
            check = pool_check(pool, env)
            assert not check.ok and not check.required
            assert check.detail == f"1 orphaned box volume(s), 1.0 MiB: {BOX_NAME} 0.1.0"

            lines: list[str] = []
            assert [v.version for v in purge(pool, env, progress=lines.append)] == ["0.1.0"]
            assert lines == [f"removed pool volume {orphan.name} (1.0 MiB): {BOX_NAME} 0.1.0 "
                             f"is no longer installed"]
            assert not orphan.path.exists()
            assert sorted(p.name for p in pool_dir.iterdir()) == [
                f"{BOX_NAME}_vagrant_box_image_0.2.0_box.img",
                f"{BOX_NAME}_vagrant_box_image_0.3.0_box.img", "goldbox-vm.img"]
            assert pool_check(pool, env).detail == "no orphaned box volume"
        finally:
            subprocess.run([*VIRSH, "pool-destroy", pool], capture_output=True, check=False)


def test_the_harness_refuses_to_start_beside_another_libvirt_daemon():
    """Two daemons on one socket break each other's VMs: a second harness (as a host
    libvirtd would) makes the next one refuse before it starts anything."""
    with libvirt_netns():
        with pytest.raises(RuntimeError, match="a libvirt daemon already answers"):
            with libvirt_netns(f"gb-second-{os.getpid()}"):
                pass
        assert virsh("uri").strip() == "qemu:///system"  # the first one still answers


def test_purge_before_the_pool_is_there_or_started_is_a_no_op_with_a_line(tmp_path: Path):
    """`invoke destroy --purge` on a host where vagrant-libvirt never booted a VM (libvirt
    answers but has no such pool), or after libvirtd restarted (the pool is defined but not
    started): nothing to delete, one line says so."""
    missing, stopped = f"goldbox-none-{os.getpid()}", f"goldbox-stopped-{os.getpid()}"
    with libvirt_netns():
        virsh("pool-define-as", stopped, "dir", "--target", str(tmp_path))
        try:
            for pool in (missing, stopped):
                lines: list[str] = []
                assert purge(pool, progress=lines.append) == []
                assert lines == [f"pool {pool}: does not exist or is not started (`vagrant up` "
                                 "makes and starts it): no box volume to remove"]
                check = pool_check(pool)
                assert check.ok
                assert check.detail == "does not exist or is not started (`vagrant up` does both)"
        finally:
            subprocess.run([*VIRSH, "pool-undefine", stopped], capture_output=True, check=False)

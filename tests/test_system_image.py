"""The debian-13 system image made natively (goldbox/system_image.py): the base disk's
tree, provision's system steps in a chroot of it, the base disk's own disk code. Built
once (cached) from the real base disk and CPython bundle (both cached after their first
build) and checked without mounting it (debugfs)."""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from goldbox.basedisk import base_disk_file, build_base_disk, filesystem_ids
from goldbox.bundle import build_cpython_bundle
from goldbox.config import load_config
from goldbox.context import Context
from goldbox.errors import GoldboxError
from goldbox.image_artifacts import ensure_tarball
from goldbox.native import release_of
from goldbox.plan import Prebuilt, StagedFile, python_binary
from goldbox.render import RenderOptions
from goldbox.system_image import ensure_system_image, render_system_plan
from tests.conftest import copy_project
from tests.test_basedisk import PARTITION, debugfs, raw_copy

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap and chroot need root"),
]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    """A build context of debian-13 in a copy of the project (its build/ folder is the
    copy's), with the shared cache."""
    root = copy_project(tmp_path_factory.mktemp("project"))
    config = load_config(root)
    context = Context(config, config.platform("debian-13"))
    context.work.mkdir(parents=True)
    context.log.parent.mkdir(parents=True, exist_ok=True)
    return context


@pytest.fixture(scope="module")
def inputs(ctx):
    """The base disk and CPython's bundle (from the cache after their first build)."""
    platform = ctx.platform
    tarball, _ = ensure_tarball(ctx.config, platform, ctx.cache)
    bundle = build_cpython_bundle(
        ctx.cache, platform=platform.name, release=release_of(platform),
        python_version=platform.python.version, tarball=tarball,
        tarball_sha256=platform.python.sha256,
        configure_flags=list(platform.python.configure_flags), log=ctx.log)
    base = build_base_disk(ctx.cache, platform, log=ctx.log)
    return base, bundle


@pytest.fixture(scope="module")
def system_image(ctx, inputs, tmp_path_factory):
    base, bundle = inputs
    options = RenderOptions(prebuilt=Prebuilt(python_bundle=StagedFile(bundle.path.name,
                                                                       bundle.sha256)))
    plan = render_system_plan(ctx, options, base)
    started = time.monotonic()
    entry = ensure_system_image(ctx, plan, [bundle.path], lambda: base, "full")
    print(f"system image: {'cached' if entry.cached else 'built'} in "
          f"{time.monotonic() - started:.1f} s, {entry.size / 2**20:.0f} MiB, {entry.path}")
    return raw_copy(entry.file(), tmp_path_factory)


def test_cpython_is_installed_and_no_identity_is_baked_in(ctx, system_image):
    assert "Type: regular" in debugfs(system_image, f"stat {python_binary(ctx.platform)}")
    assert "ssh_host_" not in debugfs(system_image, "ls -l /etc/ssh")
    assert "Size: 0" in debugfs(system_image, "stat /etc/machine-id")
    for absent in ("/etc/resolv.conf", "/usr/sbin/policy-rc.d", "/tmp/goldbox-stage"):
        assert "File not found" in subprocess.run(
            ["debugfs", "-R", f"stat {absent}", f"{system_image}{PARTITION}"],
            capture_output=True, text=True).stderr, absent


def test_it_boots_as_the_base_disk_does(inputs, system_image):
    """Same file system UUID as the base disk, so the base disk's grub configuration
    (root=UUID=...) boots it; the kernel's initrd is there."""
    base, _ = inputs
    fs_uuid, _ = filesystem_ids(base.record["identity"])
    assert f"Filesystem UUID:          {fs_uuid}" in debugfs(system_image, "stats")
    grub = debugfs(system_image, "cat /boot/grub/grub.cfg")
    assert f"root=UUID={fs_uuid}" in grub
    (kernel,) = [line.split("/boot/initrd.img-")[1] for line in grub.splitlines()
                 if "initrd /boot/initrd.img-" in line]
    assert "Type: regular" in debugfs(system_image, f"stat /boot/initrd.img-{kernel}")
    assert "Type: regular" in debugfs(system_image, f"stat /boot/vmlinuz-{kernel}")
    assert base_disk_file(base) == "debian-13-base.qcow2"


def test_a_bundle_that_is_not_the_plans_names_the_command_and_leaves_nothing(
        ctx, inputs, tmp_path, monkeypatch):
    """The python step checks the staged bundle against the plan's sha256: the error
    names the command, and no entry, partial entry or scratch folder is left."""
    base, bundle = inputs
    monkeypatch.setenv("GOLDBOX_CACHE", str(tmp_path / "cache"))  # an empty cache
    broken = Context(ctx.config, ctx.platform)
    other = tmp_path / bundle.path.name
    shutil.copyfile(bundle.path, other)
    with other.open("ab") as extra:
        extra.write(b"\0")
    options = RenderOptions(prebuilt=Prebuilt(python_bundle=StagedFile(bundle.path.name,
                                                                       bundle.sha256)))
    plan = render_system_plan(broken, options, base)
    with pytest.raises(GoldboxError) as error:
        ensure_system_image(broken, plan, [other], lambda: base, "full")
    first, *last = str(error.value).splitlines()  # proc's: the command, then its last lines
    assert first.startswith("`chroot ") and "-m provision plan.json" in first, first
    assert "exited with code" in first, first
    assert any("sha256" in line for line in last), last
    # An entry, whole or partial, is a folder; its lock file stays.
    assert not [p for p in (tmp_path / "cache/system-image").iterdir() if p.is_dir()]
    assert not [p for p in (tmp_path / "cache/work").iterdir() if p.suffix != ".lock"]


def test_base_disk_entry_keeps_its_tree(inputs):
    base, _ = inputs
    assert sorted(base.record["files"]) == ["debian-13-base.qcow2", "rootfs.tar"]
    listing = subprocess.run(["tar", "-tvf", base.file("rootfs.tar"), "./etc/ssh/"],
                             capture_output=True, text=True, check=True).stdout
    assert "sshd_config" in listing and "ssh_host_" not in listing
    assert Path(base.file("rootfs.tar")).stat().st_size > 0


def test_systemds_update_units_have_nothing_left_to_do_at_boot(system_image):
    """/etc/.updated and /var/.updated carry /usr's time (systemd-update-done ran in the
    tree after ldconfig, sysusers and the catalog), so ConditionNeedsUpdate keeps those
    units from running in every golden build's TCG boot."""
    usr = re.search(r"^ mtime: (.+)$", debugfs(system_image, "stat /usr"), re.M)
    for marker in ("/etc/.updated", "/var/.updated"):
        stat = debugfs(system_image, f"stat {marker}")
        assert "Type: regular" in stat, marker
        assert usr and re.search(r"^ mtime: (.+)$", stat, re.M).group(1) == usr.group(1), marker

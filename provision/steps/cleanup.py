"""9. cleanup: golden-image hygiene."""

from __future__ import print_function

import glob
import os
import re

LOG_DIRS = ["/var/log"]
ROTATED_OR_JOURNAL = re.compile(r"(\.journal~?|\.[0-9]+|\.gz|\.xz|-[0-9]{8})$")

# EL6's udev pins eth0 to the build VM's MAC: a clone would come up with eth1 only.
IDENTITY_AND_BUILD_FILES = ["/etc/ssh/ssh_host_*", "/root/.bash_history",
                            "/home/*/.bash_history", "/usr/local/src/goldbox-python",
                            "/var/lib/dbus/machine-id",
                            "/etc/udev/rules.d/70-persistent-net.rules"]
MACHINE_ID = "/etc/machine-id"
ZERO_FILL = "goldbox-zero.fill"


def run(ctx):
    """Golden-image hygiene: no identity, caches, logs, history or build files. Acts
    only on what is there: with nothing to clean it changes nothing, and the free
    space, released by the run that cleaned, is not trimmed or zeroed again."""
    spec = ctx.plan["cleanup"]
    if not spec.get("enabled"):
        return False, "disabled in the plan"
    runner = ctx.runner
    changed = False
    if runner.dry_run or ctx.packages.cached_files():
        ctx.packages.clean()
        changed = True
    for pattern in IDENTITY_AND_BUILD_FILES:
        for path in sorted(glob.glob(pattern)) if not runner.dry_run else [pattern]:
            if not os.path.islink(path):
                changed = runner.remove(path) or changed
    changed = runner.write_file(MACHINE_ID, "", 0o444) or changed
    for folder in LOG_DIRS:
        for path in _log_files(folder) if not runner.dry_run else [folder + "/*"]:
            if ROTATED_OR_JOURNAL.search(path):
                changed = runner.remove(path) or changed  # a truncated journal is corrupt
            elif runner.dry_run or os.path.getsize(path) > 0:
                runner.say("    truncate %s" % path)
                if not runner.dry_run:
                    open(path, "w").close()
                changed = True
    for path in spec.get("paths", []):
        changed = runner.remove(path) or changed
    if not changed:
        return False, "nothing to clean"
    note = "identity, caches, logs and build files removed"
    if spec.get("zero_free_space"):
        if ctx.services.booted or runner.dry_run:
            note += "; free space " + _release_free_space(runner, "/")
        else:
            runner.say("    zero free space: skipped (not a booted guest)")
    return True, note


def _log_files(folder):
    found = []
    for directory, _, files in os.walk(folder):
        for name in files:
            found.append(os.path.join(directory, name))
    return sorted(found)


def _release_free_space(runner, mountpoint):
    """Free blocks back to the image, so it compacts: trimmed when the disk takes
    discards (qemu with discard=unmap drops those qcow2 clusters, in seconds), else
    filled with zeros that are then deleted (a write of the whole free space)."""
    filler = os.path.join(mountpoint, ZERO_FILL)
    if runner.dry_run:
        runner.say("    $ fstrim -v %s  # if the disk takes discards, else:" % mountpoint)
        runner.say("    $ dd if=/dev/zero of=%s bs=1M; rm %s" % (filler, filler))
        return "trimmed or zero-filled"
    if takes_discards(mountpoint):
        runner.run(["fstrim", "-v", mountpoint])
        return "trimmed"
    runner.say("    zero free space (the disk takes no discards)")
    runner.query(["dd", "if=/dev/zero", "of=" + filler, "bs=1M"])  # ends at "no space"
    runner.remove(filler)
    runner.query(["sync"])
    return "zero-filled"


def takes_discards(mountpoint, sys_root="/sys"):
    """Whether the block device under `mountpoint` accepts discards (TRIM/UNMAP): its
    queue's discard_max_bytes is not 0. A partition's queue is its disk's."""
    device = os.stat(mountpoint).st_dev
    node = os.path.join(sys_root, "dev", "block",
                        "%d:%d" % (os.major(device), os.minor(device)))
    for queue in (os.path.join(node, "queue"), os.path.join(node, "..", "queue")):
        try:
            handle = open(os.path.join(queue, "discard_max_bytes"))
            try:
                return int(handle.read().strip() or 0) > 0
            finally:
                handle.close()
        except (IOError, OSError, ValueError):
            continue
    return False

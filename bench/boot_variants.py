"""A/B boots of the built box's disk under plain qemu: the same disk booted N times per
variant of its kernel command line, alternating variants, to see what a kernel argument
does to the boot before a box is built with it (issue 22).

Each variant is NAME=ARGS: ARGS are appended to the `linux` line of the disk's
/boot/grub/grub.cfg, and an ARG written -ARG is taken out of it (written into a raw copy
with debugfs: no loop device, no mount; `NAME=` boots the disk as built; e.g.
`without=-tsc=unstable`). Each boot runs under the machine and CPU vagrant-libvirt
gives a TCG guest (i440FX, qemu64 with RDRAND, the config's vCPUs and memory, virtio
disk, net and RNG, cirrus VGA), with user-mode networking and SSH forwarded to a free
port. Per boot it prints the seconds from qemu's start to a login with Vagrant's insecure
key, systemd's "Startup finished" line, whether the kernel marked sched_clock stable, and
any panic or Oops on the console; then one JSON line with each variant's median.
Consoles are kept under --out.

Usage (root, one VM user at a time): .venv/bin/python bench/boot_variants.py -n 3
        [--platform P] [--out DIR] base= tsc=tsc=unstable
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.boot_cycles import TROUBLE, ConsoleClock  # noqa: E402
from goldbox.arch import AMD64  # noqa: E402
from goldbox.catalog.serve import free_port  # noqa: E402
from goldbox.config import load_config  # noqa: E402
from goldbox.keys import insecure_private_key  # noqa: E402
from goldbox.manifest import read_manifest  # noqa: E402

SSH_WAIT_S = 600
# Each boot is a new guest with new host keys on a reused port: nothing to remember.
SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR"]
STABLE = "sched_clock: Marking stable"


def partition_offset(raw: Path) -> int:
    table = json.loads(subprocess.run(["sfdisk", "--json", raw], capture_output=True,
                                      text=True, check=True).stdout)["partitiontable"]
    return table["partitions"][0]["start"] * 512


def variant_disk(base: Path, offset: int, extra: str, scratch: Path) -> Path:
    """A sparse copy of `base` whose grub.cfg's linux line is changed by `extra`."""
    disk = scratch / "boot.raw"
    subprocess.run(["cp", "--sparse=always", base, disk], check=True)
    if not extra:
        return disk
    target = f"{disk}?offset={offset}"
    grub = subprocess.run(["debugfs", "-R", "cat /boot/grub/grub.cfg", target],
                          capture_output=True, text=True, check=True).stdout
    def edit(line: re.Match) -> str:
        words = line[1].split(" ")
        for arg in extra.split():
            if arg.startswith("-"):
                words = [word for word in words if word != arg[1:]]
            else:
                words.append(arg)
        return " ".join(words)
    edited, count = re.subn(r"^(\s*linux\s.*)$", edit, grub, flags=re.M)
    if count == 0:
        raise SystemExit(f"{base}: no linux line in /boot/grub/grub.cfg")
    local = scratch / "grub.cfg"
    local.write_text(edited)
    subprocess.run(["debugfs", "-w", "-f", "-", target], check=True, capture_output=True,
                   input=f"rm /boot/grub/grub.cfg\nwrite {local} /boot/grub/grub.cfg\n", text=True)
    return disk


def boot(disk: Path, *, cpus: int, memory: int, key: Path, console: Path,
         fmt: str = "raw") -> dict:
    port = free_port()
    argv = ["qemu-system-x86_64", "-accel", "tcg", *AMD64.qemu_machine_args(),
            "-smp", str(cpus), "-m", str(memory),
            "-drive", f"file={disk},format={fmt},if=virtio,cache=writeback",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device", "virtio-net-pci,netdev=n0", "-device", "virtio-rng-pci",
            "-vga", "cirrus", "-display", "none", "-monitor", "none",
            "-serial", f"file:{console}"]
    ssh = ["ssh", *SSH_OPTIONS, "-o", "BatchMode=yes", "-i", str(key), "-p", str(port),
           "vagrant@127.0.0.1"]
    started = time.monotonic()
    console.unlink(missing_ok=True)
    clock = ConsoleClock(console, started)
    clock.start()
    vm = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    result: dict = {"ssh_s": None, "startup": "", "sched_clock_stable": False, "trouble": [],
                    "console": clock.seen}
    try:
        while time.monotonic() - started < SSH_WAIT_S and vm.poll() is None:
            if subprocess.run([*ssh, "true"], capture_output=True).returncode == 0:
                result["ssh_s"] = round(time.monotonic() - started, 1)
                break
            if TROUBLE.search(console.read_text(errors="replace") if console.exists() else ""):
                break
            time.sleep(0.5)
        if result["ssh_s"] is not None:
            analyze = subprocess.run([*ssh, "sudo systemd-analyze"], capture_output=True,
                                     text=True).stdout
            result["startup"] = analyze.splitlines()[0].strip() if analyze else ""
    finally:
        vm.kill()
        vm.wait()
        clock.done.set()
        clock.join()
    text = console.read_text(errors="replace") if console.exists() else ""
    result["sched_clock_stable"] = STABLE in text
    result["trouble"] = [line.strip() for line in text.splitlines() if TROUBLE.search(line)][:3]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=3, help="boots per variant (default 3)")
    parser.add_argument("--platform", help="platform whose dist/ box to boot "
                                           "(default: the config's default)")
    parser.add_argument("--out", type=Path, help="folder for the consoles (default "
                                                 "build/boot-variants/<time>)")
    parser.add_argument("variants", nargs="+", metavar="NAME=ARGS",
                        help="kernel arguments to append (NAME= for the disk as built)")
    options = parser.parse_args()
    variants = []
    for spec in options.variants:
        name, sep, extra = spec.partition("=")
        if not sep or not name:
            parser.error(f"variant {spec!r}: expected NAME=ARGS, e.g. base= or tsc=tsc=unstable")
        variants.append((name, extra.strip()))
    config = load_config()
    platform = config.platform(options.platform)
    folder = ROOT / "dist" / platform.name
    box = folder / read_manifest(folder / "manifest.json").box_file
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = options.out or ROOT / "build" / "boot-variants" / stamp
    out.mkdir(parents=True, exist_ok=True)
    print(f"box {box}; consoles in {out}", flush=True)
    times: dict[str, list[float]] = {name: [] for name, _ in variants}
    with tempfile.TemporaryDirectory(prefix="goldbox-variants-") as tmp:
        scratch = Path(tmp)
        with tarfile.open(box) as archive:
            # Matched by base name: Python reads a prefix into the names of packer's tars
            # that GNU tar does not show.
            member = next(m for m in archive if m.isfile() and Path(m.name).name == "box.img")
            source = archive.extractfile(member)
            assert source is not None
            with source, open(scratch / "box.img", "wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
        base = scratch / "base.raw"
        subprocess.run(["qemu-img", "convert", "-O", "raw", scratch / "box.img", base],
                       check=True)
        offset = partition_offset(base)
        key = scratch / "key"
        shutil.copyfile(insecure_private_key(), key)
        key.chmod(0o600)
        for run in range(1, options.n + 1):
            for name, extra in variants:
                disk = variant_disk(base, offset, extra, scratch)
                console = out / f"{name}-{run:02d}.console.log"
                result = boot(disk, cpus=config.project.vm.cpus,
                              memory=config.project.vm.memory, key=key, console=console)
                if result["ssh_s"] is not None:
                    times[name].append(result["ssh_s"])
                ssh = f"{result['ssh_s']:6.1f} s" if result["ssh_s"] is not None else " no SSH "
                print(f"{name:>12} #{run}: SSH {ssh}  {result['startup']}"
                      f"{'  sched_clock marked stable' if result['sched_clock_stable'] else ''}"
                      + f"\n{'':>16}console: " + "  ".join(
                          f"{stage} {seconds:5.1f}" for stage, seconds in result["console"].items())
                      + "".join(f"\n{'':>16}{line}" for line in result["trouble"]), flush=True)
    print(json.dumps({"box": str(box), "boots_per_variant": options.n, "out": str(out),
                      "median_ssh_s": {name: (statistics.median(values) if values else None)
                                       for name, values in times.items()},
                      "reached_ssh": {name: len(values) for name, values in times.items()}}))
    return 0 if all(len(values) == options.n for values in times.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

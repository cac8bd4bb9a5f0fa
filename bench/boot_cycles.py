"""N `invoke up` / `invoke destroy` cycles of the built box, each guest's serial console
kept, as the proof that boots do not panic (issue 22) and a record of each boot's stages.

Per cycle it prints the seconds from `invoke up`'s start to the domain's start, to the
guest's IP address, to SSH ("Machine booted and ready!"), and (with --verify) the
seconds of `invoke verify`; and the console lines that show trouble (a kernel panic, an
Oops/BUG, an emergency or rescue shell, a failed fsck), including those of a boot that
`invoke up` retried itself (its console.failed.log). Then one JSON line of the totals.

Runs in this checkout, on the box `invoke image` left in dist/<platform>/, with libvirt
inside a network namespace of its own (bench/harness.py), as the e2e does. Boots VMs:
run it where one VM user at a time is the rule under that rule's lock.
Usage (root): .venv/bin/python bench/boot_cycles.py [-n 20] [--platform P] [--verify]
              [--journal] [--disk-gib N] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402
from goldbox.config import load_config  # noqa: E402
from goldbox.console import clean  # noqa: E402
from goldbox.vm import CONSOLE_LOG, FAILED_CONSOLE_LOG, VAGRANT_ENV  # noqa: E402

INVOKE = str(Path(sys.executable).parent / "invoke")
# What `invoke up` (vagrant-libvirt 0.11) prints as a boot passes each stage.
STAGES = {
    "domain": "Waiting for domain to get an IP address",
    "ip": "Waiting for machine to boot",
    "ssh": "Machine booted and ready!",
}
TROUBLE = re.compile(r"Kernel panic|\bOops\b|\bBUG: |general protection fault|"
                     r"You are in (emergency|rescue) mode|UNEXPECTED INCONSISTENCY|"
                     r"doesn't work!")
RETRIED = "booting once more"
# What the guest's serial console shows as its boot passes each stage, timed on the host
# (seconds since `invoke up` started) by following the console file as it is written:
# firmware + grub end where the kernel's first line appears.
CONSOLE_STAGES = {
    "kernel": "Linux version",
    "init": "Run /init",
    "systemd": "systemd[1]: systemd ",
    "login": " login:",
}


@dataclass
class Cycle:
    number: int
    stages: dict[str, float] = field(default_factory=dict)
    console: dict[str, float] = field(default_factory=dict)
    up_s: float = 0.0
    verify_s: float | None = None
    up_ok: bool = False
    retried: bool = False
    trouble: list[str] = field(default_factory=list)


def run_timed(argv: list[str], netns: str, log, on_line=None) -> tuple[int, float]:
    """Run `argv` inside `netns` in this checkout, its output appended to `log`, each line
    after the seconds since the start (where a boot's time goes, line by line); call
    `on_line(seconds since start, line)` for each line. Returns (exit code, seconds)."""
    started = time.monotonic()
    child = subprocess.Popen(["ip", "netns", "exec", netns, *argv], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert child.stdout is not None
    for line in child.stdout:
        seconds = time.monotonic() - started
        log.write(f"{seconds:7.1f} {line}")
        log.flush()  # followable while the cycle runs
        if on_line is not None:
            on_line(seconds, line)
    code = child.wait()
    return code, time.monotonic() - started


class _Clock(threading.Thread):
    """Polls every `interval` s until `done` is set or poll() says all is seen; what it
    sees it notes in seconds since `started`."""

    interval = 0.1

    def __init__(self, started: float) -> None:
        super().__init__(daemon=True)
        self.started = started
        self.done = threading.Event()

    def since(self) -> float:
        return time.monotonic() - self.started

    def poll(self) -> bool:
        raise NotImplementedError

    def run(self) -> None:
        while not self.done.wait(self.interval) and not self.poll():
            pass


class ConsoleClock(_Clock):
    """Follows a console file from its creation: when each of CONSOLE_STAGES first shows."""

    def __init__(self, path: Path, started: float) -> None:
        super().__init__(started)
        self.path, self.offset, self.text = path, 0, ""
        self.seen: dict[str, float] = {}

    def poll(self) -> bool:
        try:
            with open(self.path, "rb") as console:
                console.seek(self.offset)
                chunk = console.read()
        except FileNotFoundError:
            return False
        self.offset += len(chunk)
        # The tail of the last read too: a marker may span two reads.
        self.text = self.text[-256:] + chunk.decode("utf-8", errors="replace")
        for name, marker in CONSOLE_STAGES.items():
            if name not in self.seen and marker in self.text:
                self.seen[name] = self.since()
        return len(self.seen) == len(CONSOLE_STAGES)


class LeaseClock(_Clock):
    """When libvirt first lists a DHCP lease on vagrant-libvirt's management network
    (inside `netns`): the guest's DHCP as the host sees it, before Vagrant reports the IP."""

    interval = 0.25

    def __init__(self, netns: str, started: float) -> None:
        super().__init__(started)
        self.netns = netns
        self.seen: float | None = None

    def poll(self) -> bool:
        leases = subprocess.run(["ip", "netns", "exec", self.netns, "virsh", "-c",
                                 "qemu:///system", "net-dhcp-leases", "vagrant-libvirt"],
                                capture_output=True, text=True, check=False).stdout
        if "ipv4" in leases:
            self.seen = self.since()
        return self.seen is not None


def console_trouble(path: Path) -> list[str]:
    """The lines of a console log that show trouble."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    return [clean(line) for line in text.splitlines() if TROUBLE.search(line)]


def keep_journal(vm_dir: Path, netns: str, target: Path) -> None:
    """The guest's journal of this boot with each line's seconds since the kernel started
    (`short-monotonic`): with no D-Bus in the box `systemd-analyze` cannot answer, and this
    shows which unit the boot waited on."""
    with open(target, "w", encoding="utf-8") as journal:
        subprocess.run(["ip", "netns", "exec", netns, "env",
                        *(f"{name}={value}" for name, value in VAGRANT_ENV.items()),
                        "vagrant", "ssh", "-c",
                        "sudo journalctl -b -o short-monotonic --no-pager"],
                       cwd=vm_dir, stdout=journal, stderr=subprocess.STDOUT, check=False)


def one_cycle(number: int, platform: str, netns: str, out: Path, verify: bool,
              journal: bool = False, disk_gib: int | None = None) -> Cycle:
    cycle = Cycle(number)
    vm_dir = ROOT / "build" / platform
    (vm_dir / FAILED_CONSOLE_LOG).unlink(missing_ok=True)  # an earlier run's
    with open(out / f"cycle-{number:02d}.log", "w", encoding="utf-8") as log:

        def stage(seconds: float, line: str) -> None:
            for name, marker in STAGES.items():
                if marker in line and name not in cycle.stages:
                    cycle.stages[name] = seconds
            if RETRIED in line:
                cycle.retried = True
                cycle.stages.clear()  # the stages of the boot that counts

        bigger = ["--disk-gib", str(disk_gib)] if disk_gib else []
        (vm_dir / CONSOLE_LOG).unlink(missing_ok=True)  # the clock follows this boot's
        clock = ConsoleClock(vm_dir / CONSOLE_LOG, time.monotonic())
        lease = LeaseClock(netns, clock.started)
        clock.start()
        lease.start()
        code, cycle.up_s = run_timed([INVOKE, "up", "--platform", platform, *bigger], netns,
                                     log, stage)
        cycle.up_ok = code == 0
        clock.done.set()
        lease.done.set()
        clock.join()
        lease.join()
        cycle.console = dict(clock.seen)
        if lease.seen is not None:
            cycle.console["lease"] = lease.seen
        if cycle.up_ok and verify:
            code, seconds = run_timed([INVOKE, "verify", "--platform", platform], netns, log)
            cycle.verify_s = seconds if code == 0 else None
        if cycle.up_ok and journal:
            keep_journal(vm_dir, netns, out / f"cycle-{number:02d}.journal.log")
        for name, kept in ((FAILED_CONSOLE_LOG, "failed-console"), (CONSOLE_LOG, "console")):
            source = vm_dir / name
            if source.is_file():
                target = out / f"cycle-{number:02d}.{kept}.log"
                shutil.copyfile(source, target)
                cycle.trouble += console_trouble(target)
        run_timed([INVOKE, "destroy", "--platform", platform], netns, log)
    return cycle


def describe(cycle: Cycle) -> str:
    stages = "  ".join(f"to {name} {cycle.stages[name]:6.1f} s" if name in cycle.stages
                       else f"to {name}    -   " for name in STAGES)
    verify = f"verify {cycle.verify_s:5.1f} s" if cycle.verify_s is not None else ""
    status = "ok" if cycle.up_ok and not cycle.trouble and not cycle.retried else "TROUBLE"
    line = f"cycle {cycle.number:2d}: {status:<7} {stages}  up {cycle.up_s:6.1f} s  {verify}"
    console = "  ".join(f"{name} {seconds:5.1f}" for name, seconds in cycle.console.items())
    line += f"\n    console, lease (s since up): {console or 'nothing seen'}"
    return line + "".join(f"\n    console: {text}" for text in cycle.trouble[:4])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20, help="number of up/destroy cycles")
    parser.add_argument("--platform", default=None)
    parser.add_argument("--verify", action="store_true", help="run `invoke verify` too")
    parser.add_argument("--journal", action="store_true",
                        help="keep each guest's journal (cycle-NN.journal.log)")
    parser.add_argument("--disk-gib", type=int, default=None,
                        help="give each VM a disk this big (`invoke up --disk-gib`)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the logs (default build/boot-cycles/<UTC time>)")
    args = parser.parse_args()
    platform = load_config(ROOT).platform(args.platform).name
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or ROOT / "build" / "boot-cycles" / stamp
    out.mkdir(parents=True, exist_ok=True)
    print(f"{args.n} cycles of {platform}; logs and consoles in {out}", flush=True)
    cycles = []
    with harness.libvirt_netns(f"gb-cycles-{os.getpid()}") as netns:
        for number in range(1, args.n + 1):
            cycles.append(one_cycle(number, platform, netns, out, args.verify, args.journal,
                                    args.disk_gib))
            print(describe(cycles[-1]), flush=True)
    troubled = [c.number for c in cycles if c.trouble or c.retried or not c.up_ok]
    summary = {"platform": platform, "cycles": len(cycles), "troubled": troubled,
               "panics": sum(any("Kernel panic" in t for t in c.trouble) for c in cycles),
               "median_up_s": sorted(c.up_s for c in cycles)[len(cycles) // 2],
               "out": str(out)}
    print(json.dumps(summary))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()

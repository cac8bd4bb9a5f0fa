"""N consecutive packer boots of the golden build (`invoke image --force`), each guest's
serial console kept, as the proof that packer's boots do not panic (issue 22) and a
record of each boot's stages.

`invoke image --force` reruns packer's golden build (from the cached system image; the
artifacts, native build, base disk and system image are found in the cache) and the box
after it: goldbox's real packer build, its guest booted, reached on SSH, provisioned and
shut down each time. Per boot it prints the seconds from `invoke image`'s start to the
guest's start ("Starting VM"), to SSH ("Connected to SSH!") and the seconds between the
two, the time packer reports for its build, the seconds of the whole `invoke image`, and
the console lines that show trouble (bench/boot_cycles.py's TROUBLE: a kernel panic, an
Oops/BUG, an emergency or rescue shell, a failed fsck). Then one JSON line of the totals.

Runs in this checkout; packer's qemu uses user networking (no libvirt). Each boot's
console (build/<p>/logs/image-*.console.golden.log), its build log and `invoke image`'s
output are copied to --out as boot-NN.console.log, boot-NN.image.log, boot-NN.invoke.log.
Usage: .venv/bin/python bench/packer_boots.py [-n 20] [--platform P] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.boot_cycles import TROUBLE, console_trouble  # noqa: E402
from goldbox.config import load_config  # noqa: E402

INVOKE = str(Path(sys.executable).parent / "invoke")
# What `invoke image` prints (goldbox/image.py, goldbox/packer.py, packer 1.x's qemu
# builder behind "[packer] ") as the golden build passes each stage.
STAGES = {
    "vm": "Starting VM, booting disk image",
    "ssh": "Connected to SSH!",
}
BUILD_LOG = re.compile(r"^goldbox image: .*; log: (?P<path>/.+)$")
CONSOLE = re.compile(r"^packer: guest console: (?P<path>/.+)$")
# packer's last word on a build: "Build 'qemu.debian-13' finished after 2 minutes 58 seconds."
FINISHED = re.compile(r"^(?:\[packer\] )?Build '[^']+' finished after (?P<took>.+)\.$")
UNIT_S = {"hour": 3600, "minute": 60, "second": 1, "millisecond": 0.001}
DURATION = re.compile(r"(?P<count>\d+) (?P<unit>hour|minute|second|millisecond)s?\b")


@dataclass
class Boot:
    number: int
    stages: dict[str, float] = field(default_factory=dict)
    build_log: Path | None = None
    consoles: list[Path] = field(default_factory=list)
    packer_s: float | None = None
    total_s: float = 0.0
    ok: bool = False
    trouble: list[str] = field(default_factory=list)
    last_line: str = ""

    @property
    def to_ssh_s(self) -> float | None:
        """Seconds from the guest's start to packer's SSH connection: its boot."""
        if "vm" in self.stages and "ssh" in self.stages:
            return self.stages["ssh"] - self.stages["vm"]
        return None


def packer_duration(took: str) -> float:
    """Seconds of packer's "2 minutes 58 seconds" (its build's duration, as it prints it)."""
    return sum(int(m["count"]) * UNIT_S[m["unit"]] for m in DURATION.finditer(took))


def read_line(boot: Boot, seconds: float, line: str) -> None:
    """Take what one line of `invoke image`'s output, `seconds` after its start, tells of
    the boot: a stage reached, where the build log and the guest's console are, how long
    packer says its build took."""
    line = line.rstrip("\n")
    if line.strip():
        boot.last_line = line
    for name, marker in STAGES.items():
        if marker in line and name not in boot.stages:
            boot.stages[name] = seconds
    if match := BUILD_LOG.match(line):
        boot.build_log = Path(match["path"])
    elif match := CONSOLE.match(line):
        boot.consoles.append(Path(match["path"]))
    elif match := FINISHED.match(line):
        boot.packer_s = packer_duration(match["took"])


def run_image(argv: list[str], log, boot: Boot) -> tuple[int, float]:
    """Run `argv` in this checkout, its output appended to `log` and read into `boot`.
    Returns (exit code, seconds)."""
    started = time.monotonic()
    child = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    assert child.stdout is not None
    for line in child.stdout:
        log.write(line)
        read_line(boot, time.monotonic() - started, line)
    code = child.wait()
    return code, time.monotonic() - started


def one_boot(number: int, platform: str, out: Path) -> Boot:
    boot = Boot(number)
    with open(out / f"boot-{number:02d}.invoke.log", "w", encoding="utf-8") as log:
        code, boot.total_s = run_image([INVOKE, "image", "--force", "--platform", platform],
                                       log, boot)
    boot.ok = code == 0
    if not boot.ok and TROUBLE.search(boot.last_line):
        boot.trouble.append(boot.last_line)  # goldbox's own line: "guest kernel panicked..."
    for index, console in enumerate(boot.consoles):
        if console.is_file():
            suffix = "" if index == 0 else f".{index + 1}"
            target = out / f"boot-{number:02d}.console{suffix}.log"
            shutil.copyfile(console, target)
            boot.trouble += console_trouble(target)
    if boot.build_log is not None and boot.build_log.is_file():
        shutil.copyfile(boot.build_log, out / f"boot-{number:02d}.image.log")
    return boot


def seconds(value: float | None, width: int = 6) -> str:
    return f"{value:{width}.1f} s" if value is not None else f"{'-':>{width}}  "


def describe(boot: Boot) -> str:
    status = "ok" if boot.ok and not boot.trouble else "FAILED" if not boot.ok else "TROUBLE"
    stages = "  ".join(f"to {name} {seconds(boot.stages.get(name))}" for name in STAGES)
    line = (f"boot {boot.number:2d}: {status:<7} {stages}  boot to SSH "
            f"{seconds(boot.to_ssh_s, 5)}  packer {seconds(boot.packer_s)}  "
            f"total {seconds(boot.total_s)}")
    if not boot.ok and not boot.trouble:
        line += f"\n    invoke: {boot.last_line}"
    if not boot.consoles:
        line += "\n    no console log named (packer did not start)"
    return line + "".join(f"\n    console: {text}" for text in boot.trouble[:4])


def median(values: list[float]) -> float | None:
    return round(sorted(values)[len(values) // 2], 1) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20, help="number of packer boots")
    parser.add_argument("--platform", default=None)
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the logs (default build/packer-boots/<UTC time>)")
    args = parser.parse_args()
    platform = load_config(ROOT).platform(args.platform).name
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or ROOT / "build" / "packer-boots" / stamp
    out.mkdir(parents=True, exist_ok=True)
    print(f"{args.n} packer boots (invoke image --force) of {platform}; logs and consoles "
          f"in {out}", flush=True)
    boots = []
    for number in range(1, args.n + 1):
        boots.append(one_boot(number, platform, out))
        print(describe(boots[-1]), flush=True)
    summary = {"platform": platform, "boots": len(boots),
               "troubled": [b.number for b in boots if b.trouble or not b.ok],
               "panics": sum(any("Kernel panic" in t for t in b.trouble) for b in boots),
               "median_total_s": median([b.total_s for b in boots]),
               "median_to_ssh_s": median([b.to_ssh_s for b in boots
                                          if b.to_ssh_s is not None]),
               "out": str(out)}
    print(json.dumps(summary))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()

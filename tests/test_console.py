"""The console watcher ends a wait for a dead guest: a real kernel that panics under
plain qemu (TCG), a real packer boot of a disk that never boots, and real children
that stay silent or print an emergency shell's text. Plus the pattern matching on
recorded console text, and what goldbox writes into the Vagrantfile and packer's
templates for the console."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from goldbox import proc
from goldbox.config import load_config
from goldbox.console import (
    GuestTrouble,
    checked_path,
    clean,
    find_trouble,
    run_watched,
    silence_limit,
)
from goldbox.errors import GoldboxError
from goldbox.render import render_platform

CONFIG = load_config()
KERNEL_CACHE = Path("~/.cache/goldbox-test/kernel").expanduser()
# The watchdog of these tests: a watcher that misses its cue leaves the child running
# until then, and the test fails (proc's "exited with code -9", not a GuestTrouble).
WATCHDOG_S = 240
NEVER = "a line no child prints"


@pytest.fixture(scope="session")
def kernel() -> Path:
    """A Debian cloud kernel (the guests' kind), from the Debian mirror once, then cached."""
    found = sorted(KERNEL_CACHE.glob("boot/vmlinuz-*"))
    if found:
        return found[-1]
    depends = subprocess.run(["apt-cache", "depends", "linux-image-cloud-amd64"],
                             capture_output=True, text=True, check=True).stdout
    package = next(line.split()[-1] for line in depends.splitlines()
                   if line.strip().startswith("Depends: linux-image-"))
    download = KERNEL_CACHE.with_name("kernel-download")
    shutil.rmtree(download, ignore_errors=True)
    download.mkdir(parents=True)
    subprocess.run(["apt-get", "download", package], cwd=download, check=True,
                   capture_output=True)
    deb = next(download.glob("*.deb"))
    unpacked = download / "unpacked"
    unpacked.mkdir()
    subprocess.run(f"dpkg-deb --fsys-tarfile {deb.name} | tar -x -C unpacked ./boot",
                   shell=True, cwd=download, check=True)
    shutil.rmtree(KERNEL_CACHE, ignore_errors=True)
    unpacked.rename(KERNEL_CACHE)
    shutil.rmtree(download)
    return sorted(KERNEL_CACHE.glob("boot/vmlinuz-*"))[-1]


def _still_running(marker: str) -> list[int]:
    """Processes whose command line holds `marker`, a path of one test's own, or that run
    in a folder under it (packer's)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and (marker in cmdline or cwd.startswith(marker)):
            found.append(int(entry.name))
    return found


class Watchdog(threading.Timer):
    """Kills, after WATCHDOG_S, the processes a test started (their command lines hold
    `marker`, a path of the test's own), so a missed cue fails instead of hanging."""

    def __init__(self, marker: str) -> None:
        super().__init__(WATCHDOG_S, self._kill, args=(marker,))
        self.fired = False

    def _kill(self, marker: str) -> None:
        self.fired = True
        for pid in _still_running(marker):
            os.kill(pid, 9)


def _watched(argv: list[str], console: Path, silence: float | None,
             reached: str = NEVER) -> GuestTrouble:
    """Run `argv` under the watcher; a watchdog kills what the watcher left running."""
    watchdog = Watchdog(str(console))
    watchdog.start()
    try:
        with pytest.raises(GuestTrouble) as caught:
            run_watched(argv, console=console, silence=silence, reached=reached,
                        prefix="guest", cwd=console.parent)
    finally:
        watchdog.cancel()
    assert not watchdog.fired  # the watcher ended the wait, not the watchdog
    assert _still_running(str(console)) == []
    return caught.value


def _python(code: str) -> list[str]:
    """A child of one process (the watcher stops that process): Python running `code`."""
    return [sys.executable, "-c", f"import time; {code}"]


def test_a_guest_kernel_that_panics_ends_the_wait(kernel, tmp_path):
    """A real kernel with no root device panics under TCG; with panic=0 qemu would run
    forever. No silence limit: only the panic can end the wait."""
    console = tmp_path / "console.log"
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-display", "none", "-monitor", "none",
            "-no-reboot", "-m", "256", "-kernel", str(kernel),
            "-append", "console=ttyS0 panic=0", "-serial", f"file:{console}"]
    started = time.monotonic()
    trouble = _watched(argv, console, silence=None)
    message = str(trouble)
    assert message.startswith("guest kernel panicked at ")
    assert "Kernel panic - not syncing: VFS: Unable to mount root fs" in message
    assert message.endswith(f"; full console: {console}")
    assert "\n" not in message
    assert trouble.trouble.log == console
    panic_line = trouble.trouble.quoted[-1]
    assert panic_line in clean(console.read_text(errors="replace"))
    print(f"panic seen, qemu stopped {time.monotonic() - started:.1f} s after its start")


def test_a_silent_guest_ends_the_wait(tmp_path):
    """A child that writes nothing, to its console or its output: after `silence` s."""
    console = tmp_path / "console.log"
    console.touch()
    trouble = _watched(_python(f"time.sleep(600)  # {console}"), console, silence=2)
    assert str(trouble) == (f"no console output for 2 s (nor from the command) while "
                            f"waiting for the guest; full console: {console}")


def test_an_emergency_shell_ends_the_wait(tmp_path):
    console = tmp_path / "console.log"
    text = (b"[FAILED] Failed to mount sysroot.mount - /sysroot.\r\n"
            b"\x1b[0;1;31mYou are in emergency mode.\x1b[0m After logging in, "
            b'type "journalctl -xb"\r\n')
    trouble = _watched(_python(f"open({str(console)!r}, 'ab').write({text!r}); "
                               "time.sleep(600)"), console, silence=None)
    assert str(trouble).startswith(
        "guest boot dropped to an emergency shell; console: "
        "`[FAILED] Failed to mount sysroot.mount - /sysroot.` | "
        "`You are in emergency mode. After logging in, type \"journalctl -xb\"`")


def test_silence_after_the_guest_is_reached_is_no_trouble(tmp_path):
    """Provisioning may be quiet for long: silence counts only until the guest answers."""
    console = tmp_path / "console.log"
    run_watched(["sh", "-c", "echo 'Connected to SSH!'; sleep 6; echo done"],
                console=console, silence=3, reached="Connected to SSH!", prefix="guest",
                cwd=tmp_path)


def test_an_upload_before_the_guest_starts_is_not_a_silent_guest(tmp_path):
    """vagrant uploads the box to libvirt before the domain starts, its progress bar one
    line of carriage returns for minutes (issue 22): no line reaches the watcher, and no
    console log exists yet. That is not a silent guest; once the guest starts (its console
    log appears), silence counts."""
    console = tmp_path / "console.log"
    script = ("for i in 1 2 3 4 5 6 7 8; do printf '\\rProgress: %s0%%' $i; sleep 0.5; done; "
              f"echo; echo 'Linux version' > '{console}'; echo 'Machine booted and ready!'")
    run_watched(["sh", "-c", script], console=console, silence=2,
                reached="Machine booted and ready!", prefix="vagrant", cwd=tmp_path)
    trouble = _watched(_python(f"open({str(console)!r}, 'w').write('Linux version'); "
                               "time.sleep(600)"), console, silence=2)
    assert str(trouble).startswith("no console output for 2 s")


def test_a_packer_boot_that_never_reaches_its_guest_ends(tmp_path):
    """goldbox's own packer build (the golden build's template) of a disk that does not
    boot: qemu writes the console log packer's template names, nothing comes, and the
    watcher stops packer, and qemu with it, after the silence limit."""
    from goldbox.packer import packer_build

    platform = CONFIG.platform("debian-12")
    rendered = render_platform(CONFIG, platform, tmp_path / "render")
    disk = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    digest = subprocess.run(["sha256sum", str(disk)], capture_output=True, text=True,
                            check=True).stdout.split()[0]
    console = tmp_path / "logs" / "image-1.console.golden.log"
    console.parent.mkdir()
    (tmp_path / "stage").mkdir()
    watchdog = Watchdog(str(tmp_path))
    watchdog.start()
    try:
        with pytest.raises(GuestTrouble, match=r"^no console output for 5 s"):
            packer_build(rendered.packer_template, {
                "base_image": str(disk), "base_image_sha256": digest, "accelerator": "tcg",
                "stage_dir": str(tmp_path / "stage"), "output_dir": str(tmp_path / "out"),
                "box_output": str(tmp_path / "box" / "golden.box"),
            }, "qemu.debian-12", tmp_path / "logs" / "image-1.log", console, 5)
    finally:
        watchdog.cancel()
    assert not watchdog.fired
    assert console.is_file()  # qemu opened it: the template's -serial reached qemu
    assert _still_running(str(tmp_path)) == []


# Recorded console text (the panic of issue 22, from its screen, and a normal boot).
PANIC_22 = """\
[   24.401822] BUG: kernel NULL pointer dereference, address: 0000000000000000
[   24.402710] #PF: supervisor read access in kernel mode
[   24.410113] RIP: 0010:crng_make_state+0x21/0x1a0
[   24.433010] Call Trace:
[   24.451207] RIP: 0010:crng_make_state+0x21/0x1a0
[   24.512935] Kernel panic - not syncing: Fatal exception in interrupt
[   24.513802] Kernel Offset: disabled
"""
NORMAL_BOOT = "\n".join([
    "[    7.912001] EXT4-fs (vda1): mounted filesystem with ordered data mode.",
    "[    9.101000] systemd-fsck[212]: /dev/vda1: clean, 31021/393216 files",
    "\x1b[0;32m  OK  \x1b[0m] Finished \x1b[0;1;39msystemd-fsck-root.service\x1b[0m"
    " - File System Check on Root Device.",
    "[  OK  ] Reached target multi-user.target - Multi-User System.",
    "Debian GNU/Linux 12 goldbox ttyS0",
    "",
    "goldbox login: ",
])


def _first_trouble(text: str):
    lines: list[str] = []
    for raw in text.splitlines():
        lines.append(clean(raw))
        if found := find_trouble(lines, Path("/logs/console.log")):
            return found
    return None


def test_the_panic_of_issue_22_is_told_with_its_rip():
    found = _first_trouble(PANIC_22)
    assert found.summary == "guest kernel panicked at 24.5 s (RIP crng_make_state+0x21/0x1a0)"
    assert found.quoted == (
        "[   24.401822] BUG: kernel NULL pointer dereference, address: 0000000000000000",
        "[   24.451207] RIP: 0010:crng_make_state+0x21/0x1a0",
        "[   24.512935] Kernel panic - not syncing: Fatal exception in interrupt")


def test_a_normal_boot_is_no_trouble():
    assert _first_trouble(NORMAL_BOOT) is None


@pytest.mark.parametrize("line, summary", [
    ("Give root password for maintenance", "guest boot dropped to an emergency shell"),
    ("You are in rescue mode. After logging in, type", "guest boot dropped to an emergency shell"),
    ("ALERT!  UUID=1234 does not exist.  Dropping to a shell!",
     "guest boot dropped to an emergency shell"),
    ("[FAILED] Failed to start systemd-fsck-root.service - File System Check on Root Device.",
     "guest's file system check failed"),
    ("/dev/vda1: UNEXPECTED INCONSISTENCY; RUN fsck MANUALLY.",
     "guest's file system check failed"),
])
def test_each_fatal_console_line_is_recognised(line, summary):
    assert _first_trouble(line).summary == summary


def test_the_silence_limit_comes_from_the_accelerator_or_the_environment(monkeypatch):
    monkeypatch.delenv("GOLDBOX_CONSOLE_SILENCE_S", raising=False)
    assert (silence_limit("tcg"), silence_limit("kvm")) == (180, 90)
    monkeypatch.setenv("GOLDBOX_CONSOLE_SILENCE_S", "45")
    assert silence_limit("tcg") == 45
    monkeypatch.setenv("GOLDBOX_CONSOLE_SILENCE_S", "45\n")
    with pytest.raises(GoldboxError, match=r"^GOLDBOX_CONSOLE_SILENCE_S='45\\n': expected"):
        silence_limit("tcg")


def test_a_console_path_libvirt_or_packer_would_misread_is_refused(tmp_path):
    assert checked_path(tmp_path / "console.log") == (tmp_path / "console.log").resolve()
    for bad in ("it's", "a&b", "<x>", "{{ .Name }}"):
        with pytest.raises(GoldboxError, match=r"^console log .*expected letters"):
            checked_path(tmp_path / bad / "console.log")


def test_a_stop_before_the_start_ends_the_command_as_it_starts(tmp_path):
    stop = proc.Stop()
    stop.stop()
    with pytest.raises(GoldboxError, match="exited with code -9"):
        proc.run(["sleep", "600"], prefix="sleep", stop=stop)


def test_a_console_log_this_user_cannot_read_is_said_and_not_watched(tmp_path, capsys):
    """virtlogd writes a domain's console log 0600 as root: a user who cannot read it is
    told so, and a healthy boot is not ended for the silence the watcher cannot see."""
    console = tmp_path / "console.log"
    console.mkdir()  # unreadable as a file, for root too
    run_watched(_python("time.sleep(3)"), console=console, silence=1, reached=NEVER,
                prefix="guest", cwd=tmp_path)
    assert f"note: cannot read the guest's console (Is a directory: {console}): not watched" \
        in capsys.readouterr().out


def _boot_cpu(rendered) -> tuple[str, str]:
    """The CPU of packer's boots (the golden template's `-cpu`) and of vagrant-libvirt's
    domain (the Vagrantfile's model and required features), each as qemu's -cpu text."""
    packer = re.search(r'variable "cpu_model" \{[^}]*default += "([^"]+)"',
                       rendered.packer_template.read_text())
    vagrantfile = rendered.vagrantfile.read_text()
    model = re.search(r'libvirt\.cpu_model = "([^"]+)"', vagrantfile)
    features = re.findall(r'libvirt\.cpu_feature :name => "([^"]+)", :policy => "require"',
                          vagrantfile)
    return (packer[1] if packer else "qemu64",  # qemu's default for TCG
            ",".join([model[1] if model else "?", *(f"+{name}" for name in features)]))


def test_the_boots_cpu_seeds_the_kernels_random_generator_as_it_starts(kernel, tmp_path):
    """Issue 22: a guest panicked in crng_make_state, inside an interrupt, 24.5 s into a
    boot on libvirt's plain qemu64, before its random generator was seeded (that came
    86-202 s into boots here). The CPU goldbox gives packer's boots and vagrant-libvirt's
    domain is one and the same, and with it a real Debian cloud kernel under TCG is
    seeded (RDRAND, which TCG emulates) before it even looks for its root file system."""
    rendered = render_platform(CONFIG, CONFIG.platform("debian-13"), tmp_path / "render")
    packer_cpu, libvirt_cpu = _boot_cpu(rendered)
    assert packer_cpu == libvirt_cpu
    console = tmp_path / "console.log"
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-cpu", packer_cpu, "-display", "none",
            "-monitor", "none", "-no-reboot", "-m", "256", "-kernel", str(kernel),
            "-append", "console=ttyS0 panic=0", "-serial", f"file:{console}"]
    _watched(argv, console, silence=None)  # it panics: no root file system
    lines = clean(console.read_text(errors="replace")).splitlines()
    seeded = [n for n, line in enumerate(lines) if "random: crng init done" in line]
    panic = next(n for n, line in enumerate(lines) if "Kernel panic" in line)
    assert seeded and seeded[0] < panic, "the kernel's crng was not seeded before the panic"

"""Watch a booting guest's serial console, so a dead guest is never waited for in silence.

Every boot goldbox makes (packer's qemu, vagrant-libvirt's domain) writes the guest's
serial console (the kernel's console is on ttyS0) to a log file. While a command waits
for that guest (`vagrant up` for an IP address and SSH, `packer build` for SSH and its
provisioning), a thread follows the log. A kernel panic, an emergency or rescue shell or
a failed fsck, or, from the guest's start until it is reached, no new output from the
console nor from the command for a limit, stops the command (through proc.Stop) and the
wait ends with a GuestTrouble: one line that quotes the console's telling lines and
names the log. A guest that panicked under TCG is seen to hang at "Waiting for domain to
get an IP address" for the whole boot timeout otherwise (issue 22)."""

from __future__ import annotations

import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from goldbox import proc
from goldbox.errors import GoldboxError, describe_os_error

# Seconds without new console output (nor output of the waiting command) before the
# guest is reached, after which a boot counts as hung: under TCG a Debian guest's
# console is quiet for a few seconds at most between its kernel's start and its login
# prompt (42-49 s in all); under KVM it is faster still.
SILENCE_S = {"tcg": 180, "kvm": 90}
SILENCE_ENV = "GOLDBOX_CONSOLE_SILENCE_S"
POLL_S = 0.5
# vagrant-libvirt puts a console's path into the domain's XML unescaped (in '...') and
# packer reads its qemuargs as Go templates ({{ }}): a path of these characters only.
PATH_CHARS = re.compile(r"[A-Za-z0-9 _./+@%=:~-]+")
QUOTED = 3  # console lines quoted in the error at most
RECENT = 200  # console lines kept for finding the quoted ones

FATAL = (
    ("kernel panic", re.compile(r"Kernel panic - not syncing")),
    ("emergency shell", re.compile(
        r"You are in (emergency|rescue) mode|Give root password for maintenance"
        r"|Entering (emergency|rescue) mode|Dropping to a shell")),
    ("failed fsck", re.compile(
        r"UNEXPECTED INCONSISTENCY|requires a manual fsck|fsck exited with status code"
        r"|Failed to start .*File System Check")),
)
# Lines that say where a panic or a failed boot came from, quoted before the fatal one:
# the first of the kernel's report (and its last RIP), or the first failure of the boot.
CAUSES = {
    "kernel panic": re.compile(r"\bBUG: |Oops: |general protection fault|Unable to handle"
                               r"|invalid opcode|\bRIP: "),
    "emergency shell": re.compile(r"ALERT!|\[FAILED\]|Failed to (start|mount)"),
    "failed fsck": re.compile(r"fsck|\[FAILED\]"),
}
RIP = re.compile(r"\bRIP: [0-9a-f]{4}:(?P<where>\S+)")
STAMP = re.compile(r"^\[\s*(?P<seconds>\d+\.\d+)\]")
# Terminal escapes (systemd's colours) and other control characters of a console line.
NOISE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class Trouble:
    """What ended a boot: a summary for the user ("guest kernel panicked at 24.5 s (RIP
    crng_make_state+0x21/0x1c0)") and the console lines that show it."""

    summary: str
    quoted: tuple[str, ...]
    log: Path

    def message(self) -> str:
        quoted = " | ".join(f"`{line}`" for line in self.quoted)
        console = f"; console: {quoted}" if quoted else ""
        return f"{self.summary}{console}; full console: {self.log}"


class GuestTrouble(GoldboxError):
    """A boot ended because of what its console showed (or did not show)."""

    def __init__(self, trouble: Trouble) -> None:
        super().__init__(trouble.message())
        self.trouble = trouble


def silence_limit(accelerator: str) -> int:
    """Seconds of silence that end a boot: $GOLDBOX_CONSOLE_SILENCE_S, else the
    accelerator's default."""
    value = os.environ.get(SILENCE_ENV)
    if value is None:
        return SILENCE_S.get(accelerator, SILENCE_S["tcg"])
    if not re.fullmatch(r"[1-9][0-9]{0,4}", value):
        raise GoldboxError(f"{SILENCE_ENV}={value!r}: expected whole seconds, 1 to 99999")
    return int(value)


def checked_path(path: Path) -> Path:
    """`path` (absolute), if libvirt and packer get it as it is (see PATH_CHARS)."""
    path = path.resolve()
    if not PATH_CHARS.fullmatch(str(path)):
        raise GoldboxError(f"console log {str(path)!r}: a character libvirt's XML or "
                           "packer's qemuargs would read otherwise; expected letters, digits, "
                           "spaces and _ . / + @ % = : ~ - only (move the checkout)")
    return path


def run_watched(cmd: list[str], *, console: Path, silence: float | None, reached: str,
                prefix: str, cwd: Path, log: Path | None = None,
                env: dict[str, str] | None = None, isolate: bool = False) -> None:
    """proc.run of `cmd` (the command that waits for a guest) with the guest's console
    watched (see ConsoleWatch): raises GuestTrouble when the console shows the guest dead."""
    stop = proc.Stop()
    with ConsoleWatch(console, stop, silence, reached) as watch:
        proc.run(cmd, prefix=prefix, log=log, cwd=cwd, env=env, isolate=isolate, stop=stop,
                 on_line=watch.line)


def clean(raw: str) -> str:
    """A console line as text: no terminal escapes, no carriage returns."""
    return NOISE.sub("", raw).strip()


def find_trouble(lines: list[str], log: Path) -> Trouble | None:
    """The trouble the last of `lines` shows, if it is a fatal one (with the lines before
    it kept for context)."""
    if not lines:
        return None
    last = lines[-1]
    for kind, pattern in FATAL:
        if pattern.search(last):
            causes = [line for line in lines[:-1] if CAUSES[kind].search(line)]
            return Trouble(_summary(kind, last, causes), (*_telling(causes), last), log)
    return None


def _telling(causes: list[str]) -> list[str]:
    """At most QUOTED - 1 cause lines: the first (BUG:, Oops:, [FAILED]) and the last RIP."""
    rips = [line for line in causes if RIP.search(line)]
    first = [line for line in causes if not RIP.search(line)][:1]
    return (first + rips[-1:])[: QUOTED - 1]


def _summary(kind: str, line: str, causes: list[str]) -> str:
    stamp = STAMP.match(line)
    when = f" at {float(stamp['seconds']):.1f} s" if stamp else ""
    if kind == "kernel panic":
        rips = [m['where'] for m in map(RIP.search, causes) if m]
        return f"guest kernel panicked{when}" + (f" (RIP {rips[-1]})" if rips else "")
    return {"emergency shell": f"guest boot dropped to an emergency shell{when}",
            "failed fsck": f"guest's file system check failed{when}"}[kind]


class ConsoleWatch:
    """Follows a console log in a thread while a command waits for its guest; stops the
    command through `stop` when the console shows trouble. Use as a context manager
    around the command: on leaving it, a trouble found is raised as GuestTrouble (in place
    of the error of the command it stopped).

    Silence counts from the guest's start (its console log appears) until `reached` (the
    command has the guest on SSH): in between, no new console output nor output of the
    command for `silence` seconds is trouble. With
    `silence` None (an installer that writes nothing to the serial port), only what the
    console shows is."""

    def __init__(self, log: Path, stop: proc.Stop, silence: float | None,
                 reached_marker: str | None = None) -> None:
        self.log, self.stop, self.silence = log, stop, silence
        self.reached_marker = reached_marker
        self.trouble: Trouble | None = None
        self.reached = False
        self._done = threading.Event()
        self._last_progress = time.monotonic()
        self._thread = threading.Thread(target=self._follow, name=f"console {log.name}",
                                        daemon=True)

    def line(self, text: str) -> None:
        """A line of the waiting command's output (proc.run's on_line): progress, and the
        guest is reached when it holds `reached_marker`."""
        self._last_progress = time.monotonic()
        if self.reached_marker and self.reached_marker in text:
            self.reached = True

    def __enter__(self) -> ConsoleWatch:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._done.set()
        self._thread.join()
        if self.trouble is not None:
            raise GuestTrouble(self.trouble) from None

    def _follow(self) -> None:
        recent: deque[str] = deque(maxlen=RECENT)
        partial, offset = b"", 0
        while not self._done.wait(POLL_S):
            try:
                chunk, offset = _read_from(self.log, offset)
            except OSError as exc:  # virtlogd writes it 0600: only root reads it then
                print(f"note: cannot read the guest's console ({describe_os_error(exc)}): "
                      "not watched", flush=True)
                return None
            if chunk is None:  # no guest yet, so none that is silent (see _read_from)
                self._last_progress = time.monotonic()
                continue
            if chunk:
                self._last_progress = time.monotonic()
                *complete, partial = (partial + chunk).split(b"\n")
                for raw in complete:
                    recent.append(clean(raw.decode("utf-8", "replace")))
                    found = find_trouble(list(recent), self.log)
                    if found:
                        return self._end(found)
            quiet = time.monotonic() - self._last_progress
            if self.silence is not None and not self.reached and quiet >= self.silence:
                tail = [line for line in recent if line][-1:]
                return self._end(Trouble(
                    f"no console output for {self.silence:.0f} s (nor from the command) "
                    "while waiting for the guest", tuple(tail), self.log))

    def _end(self, trouble: Trouble) -> None:
        self.trouble = trouble
        self.stop.stop()


def _read_from(log: Path, offset: int) -> tuple[bytes | None, int]:
    """The bytes appended to `log` since `offset` (from the start again when it was
    truncated, as a new boot does); None while it does not exist: the guest has not
    started (qemu, or libvirt's virtlogd, makes it as the guest starts). Before that the
    command prepares the guest (vagrant adds the box and uploads it to libvirt, its
    progress bar a line with no newline for minutes), which is not a silent guest."""
    try:
        with open(log, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size < offset:
                offset = 0
            file.seek(offset)
            chunk = file.read()
    except FileNotFoundError:
        return None, offset
    return chunk, offset + len(chunk)

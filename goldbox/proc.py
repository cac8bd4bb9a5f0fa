"""Every host command goldbox runs goes through this module.

`run` streams a long command's output live, each line prefixed, into the terminal and
(optionally) a log file; `capture` runs a short command and returns its output. A
failure of either becomes a GoldboxError that names the command, its exit code and its
last lines of output. Children die with goldbox: each is started with a parent-death
signal, so a killed goldbox leaves no packer, chroot or compiler running on its own.
`start` starts a long-running child (a server) that its caller stops itself.

Cancellation: inside `cancellation()` (one build), `cancel` (a phase failed, or SIGINT /
SIGTERM arrived) kills every command `run` is running, in any thread, and every later
`run` raises Cancelled at once instead of starting: a thread between two commands of a
phase does not start its next one. `capture` is not refused: its short commands are
also the cleanup (umount, virsh vol-delete) that must still run after a failure."""

from __future__ import annotations

import collections
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from goldbox.errors import GoldboxError

TAIL_LINES = 20
_cpu = threading.local()  # CPU seconds of the commands this thread ran (see cpu_seconds)
_running: set[subprocess.Popen] = set()


def cpu_seconds() -> float:
    """User + system CPU seconds used so far by the commands `run` ran in this thread
    (with everything they waited for): phases add it to their table."""
    return getattr(_cpu, "seconds", 0.0)


class Cancelled(GoldboxError):
    """A command refused or killed because the build was cancelled."""


class TimedOut(GoldboxError):
    """`capture`'s command outlived its timeout (and was killed)."""


# Why the current build was cancelled (None: it was not); `cancel` sets it only inside
# `cancellation()`, whose end clears it, so one failed build does not refuse the commands
# of the next one in the same process (a test run).
_cancelled: str | None = None
_scopes = 0
# Reentrant: SIGINT's handler cancels in the main thread, which may hold it in `run`.
_running_lock = threading.RLock()


def cancel(reason: str) -> None:
    """Kill every command `run` is running, in any thread, and (inside `cancellation()`)
    refuse every later one: "cancelled: <reason>". The first reason is kept (the root
    cause: "native build failed"); the others follow from it."""
    global _cancelled
    with _running_lock:
        if _scopes and _cancelled is None:
            _cancelled = reason
        for child in _running:
            if child.returncode is None:
                child.send_signal(signal.SIGKILL)


def _cancelled_error() -> Cancelled | None:
    return None if _cancelled is None else Cancelled(f"cancelled: {_cancelled}")


def _cancel_on_signal(signum: int, frame: object) -> None:
    cancel(f"interrupted by {signal.Signals(signum).name}")
    raise KeyboardInterrupt


@contextlib.contextmanager
def cancellation() -> Iterator[None]:
    """One build: a `cancel` in it refuses every later `run` until the block ends. In the
    main thread, SIGINT and SIGTERM cancel too (then KeyboardInterrupt, as ^C does), so an
    interrupted build starts nothing more while its threads wind down."""
    global _cancelled, _scopes
    main = threading.current_thread() is threading.main_thread()
    previous = ({signum: signal.signal(signum, _cancel_on_signal)
                 for signum in (signal.SIGINT, signal.SIGTERM)} if main else {})
    with _running_lock:
        _scopes += 1
    try:
        yield
    finally:
        with _running_lock:
            _scopes -= 1
            if not _scopes:
                _cancelled = None
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class Stop:
    """Ends one command `run` is running, from another thread: the console watcher ends
    the boot of a guest that panicked. A `stop` before the command starts ends it as soon
    as it starts; `requested` says whether `stop` was called."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self.requested = False

    def stop(self) -> None:
        with self._lock:
            self.requested = True
            if self._pid is not None:
                os.kill(self._pid, signal.SIGKILL)

    def _attach(self, pid: int | None) -> None:
        """`run` attaches its child while the child cannot have been reaped (its pid
        cannot name another process yet), and detaches it before reaping it."""
        with self._lock:
            self._pid = pid
            if pid is not None and self.requested:
                os.kill(pid, signal.SIGKILL)


# A private mount namespace and PID namespace for one command: every mount it (or a
# child) makes is dropped by the kernel when the namespace's last process ends, and all
# of its processes are killed when `unshare` dies (--kill-child), which the parent-death
# signal below ties to goldbox's own life. So neither a mount nor a process of it can
# outlive goldbox, whatever kills goldbox: SIGKILL, SIGHUP of a dropped session, ^C.
ISOLATE = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork",
           "--kill-child=SIGKILL", "--"]


def _argv(cmd: Sequence[str | os.PathLike[str]], isolate: bool, show: str | None,
          death: signal.Signals = signal.SIGKILL) -> tuple[list[str], str]:
    """The argv to execute and the command as shown to the user. The child gets `death`
    when goldbox dies, whatever killed it (util-linux's setpriv sets the parent-death
    signal, which survives exec; preexec_fn would not be safe beside threads)."""
    argv = [os.fspath(arg) for arg in cmd]
    shown = show or shlex.join(argv)
    if shutil.which(argv[0]) is None:
        raise GoldboxError(f"cannot run `{shown}`: {argv[0]} not found")
    return (["setpriv", "--pdeathsig", death.name.removeprefix("SIG"), "--",
             *(ISOLATE if isolate else []), *argv], shown)


def _failure(shown: str, code: int, tail: Sequence[str], log: Path | None) -> GoldboxError:
    where = f" (full log: {log})" if log is not None else ""
    last = "\n".join(f"  {line}" for line in tail)
    return GoldboxError(f"`{shown}` exited with code {code}{where}; last lines:\n{last}")


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    prefix: str,
    log: Path | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    isolate: bool = False,
    show: str | None = None,
    stop: Stop | None = None,
    on_line: Callable[[str], None] | None = None,
) -> None:
    """Run `cmd` (stdout and stderr merged) and print each line as `[prefix] line`.

    With `log`, the unprefixed lines are appended to that file too. `env` is added to
    the current environment. With `isolate`, the command runs in namespaces of its own
    (see ISOLATE): for anything that mounts, or leaves processes behind (qemu). `show`
    is how the command is named in messages. `stop` lets another thread end the command;
    `on_line` is called with each line of output as it comes. Raises GoldboxError if the
    command cannot start or exits non-zero, Cancelled if the build is (or gets) cancelled."""
    argv, shown = _argv(cmd, isolate, show)
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    full_env = {**os.environ, **env} if env else None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    with open(log or os.devnull, "a", encoding="utf-8", buffering=1) as log_file:
        log_file.write(f"$ {shown}\n")
        log_file.flush()
        # Checked and registered under one lock: a `cancel` either comes first (nothing
        # starts) or finds the child in _running (it is killed).
        with _running_lock:
            if refused := _cancelled_error():
                raise refused
            try:
                child = subprocess.Popen(
                    argv, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            except OSError as exc:
                raise GoldboxError(f"cannot run `{shown}`: {exc.strerror}") from None
            _running.add(child)
        assert child.stdout is not None
        if stop is not None:
            stop._attach(child.pid)
        try:
            with child.stdout:
                for raw in child.stdout:
                    line = raw.decode("utf-8", "replace").rstrip("\n")
                    tail.append(line)
                    log_file.write(line + "\n")
                    sys.stdout.write(f"[{prefix}] {line}\n")
                    sys.stdout.flush()
                    if on_line is not None:
                        on_line(line)
            if stop is not None:  # exited, not reaped yet: still our child's pid
                os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
                stop._attach(None)
            # wait4, not wait: its resource usage is what the phase table shows as CPU.
            _, status, usage = os.wait4(child.pid, 0)
        except BaseException:
            # Interrupted (^C, SIGTERM, an on_line that raised): the command ends with it.
            child.kill()
            child.wait()
            raise
        finally:
            if stop is not None:
                stop._attach(None)
            with _running_lock:
                _running.discard(child)
        child.returncode = code = os.waitstatus_to_exitcode(status)
        _cpu.seconds = cpu_seconds() + usage.ru_utime + usage.ru_stime
        log_file.write(f"# exit code {code}\n")
    if code != 0:
        raise _cancelled_error() or _failure(shown, code, tail, log)


def capture(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    input: str | None = None,
    check: bool = True,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a short command quietly and return it (text stdout and stderr).

    With `check`, a non-zero exit is a GoldboxError naming the command and its last lines
    of output; a command that cannot start always is one, and one that outlives `timeout`
    is killed and raises TimedOut."""
    argv, shown = _argv(cmd, False, None)
    try:
        result = subprocess.run(
            argv, cwd=cwd, input=input, capture_output=True, encoding="utf-8", errors="replace",
            timeout=timeout, env={**os.environ, **env} if env else None,
            stdin=None if input is not None else subprocess.DEVNULL,
            check=False)
    except OSError as exc:
        raise GoldboxError(f"cannot run `{shown}`: {exc.strerror}") from None
    except subprocess.TimeoutExpired:
        raise TimedOut(f"`{shown}` did not finish within {timeout:g} s") from None
    if check and result.returncode != 0:
        lines = (result.stdout + result.stderr).splitlines()[-TAIL_LINES:]
        raise _failure(shown, result.returncode, lines, None)
    return result


def start(cmd: Sequence[str | os.PathLike[str]], *,
          death: signal.Signals = signal.SIGTERM) -> subprocess.Popen[str]:
    """Start a long-running child (a server, such as nginx in the foreground) and return
    it: stdout discarded, stderr a text pipe for its failure message. Its caller waits for
    it and stops it; if goldbox dies first, the kernel sends it `death` (SIGTERM lets a
    server end its work cleanly). Not cancelled with a build: it is no build's command."""
    argv, shown = _argv(cmd, False, None, death)
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    except OSError as exc:
        raise GoldboxError(f"cannot run `{shown}`: {exc.strerror}") from None

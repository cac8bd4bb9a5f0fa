"""A failed phase cancels the whole build (goldbox.proc.cancel through phase_report's
Phases, as `invoke image` runs its parallel phases): a command another phase is running
is killed, and a thread between two commands does not start its next one. Real
commands, real threads; the asserts are on what ran (a marker file that must not
appear) and on the processes being gone, never on time."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from goldbox import proc
from goldbox.errors import GoldboxError
from goldbox.phase_report import Phases

WAIT_S = 60  # only so that a broken test ends; no assert depends on it


class PhaseThread(threading.Thread):
    """`body` inside `phases.phase(name)` in a thread of its own; keeps its error."""

    def __init__(self, phases: Phases, name: str, body):
        super().__init__(name=name)
        self.phases, self.phase_name, self.body, self.error = phases, name, body, None

    def run(self) -> None:
        try:
            with self.phases.phase(self.phase_name):
                self.body()
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            self.error = exc

    def finish(self) -> BaseException | None:
        self.join(WAIT_S)
        assert not self.is_alive()
        return self.error


def announced_pid(started: threading.Event, pids: list[int]):
    """proc.run's on_line for `sh -c 'echo $$; exec sleep 30'`: the pid the sleep gets."""
    def on_line(line: str) -> None:
        pids.append(int(line))
        started.set()
    return on_line


def gone(pid: int) -> bool:
    """The process is not there any more (reaped: no /proc entry), or only a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_failed_phase_kills_the_other_phases_running_command(tmp_path):
    marker = tmp_path / "ran-after-sleep"
    started, pids = threading.Event(), []
    phases = Phases()

    def sleeper() -> None:
        proc.run(["sh", "-c", "echo $$; exec sleep 30"], prefix="sleeper",
                 on_line=announced_pid(started, pids))
        proc.run(["touch", marker], prefix="sleeper")

    def failer() -> None:
        assert started.wait(WAIT_S)
        proc.run(["false"], prefix="failer")

    with proc.cancellation():
        threads = [PhaseThread(phases, "sleeper", sleeper), PhaseThread(phases, "failer", failer)]
        for thread in threads:
            thread.start()
        slept, failed = (thread.finish() for thread in threads)
    assert isinstance(failed, GoldboxError) and not isinstance(failed, proc.Cancelled)
    assert str(failed).startswith("phase 'failer' failed: `false` exited with code 1")
    assert isinstance(slept, proc.Cancelled)
    assert str(slept) == "cancelled: failer failed"
    assert gone(pids[0])
    assert not marker.exists()


def test_a_thread_between_two_commands_starts_no_new_one(tmp_path):
    marker = tmp_path / "second-command-ran"
    first_done, failed_phase = threading.Event(), threading.Event()
    phases = Phases()

    def two_commands() -> None:
        proc.run(["true"], prefix="two")
        first_done.set()
        assert failed_phase.wait(WAIT_S)
        proc.run(["touch", marker], prefix="two")

    def failer() -> None:
        assert first_done.wait(WAIT_S)
        proc.run(["false"], prefix="failer")

    with proc.cancellation():
        between = PhaseThread(phases, "two commands", two_commands)
        failing = PhaseThread(phases, "failer", failer)
        between.start()
        failing.start()
        # The phase has failed (and so cancelled) when its thread ends: only then does
        # the other thread go on to its second command.
        assert isinstance(failing.finish(), GoldboxError)
        failed_phase.set()
        error = between.finish()
        # The build is over; nothing else starts either.
        with pytest.raises(proc.Cancelled, match=r"^cancelled: failer failed$"):
            proc.run(["touch", marker], prefix="later")
    assert isinstance(error, proc.Cancelled) and str(error) == "cancelled: failer failed"
    assert not marker.exists()


def test_the_next_build_runs_its_commands(tmp_path):
    """A cancelled build does not refuse the commands of the next one in this process."""
    with proc.cancellation():
        proc.cancel("an earlier phase failed")
        with pytest.raises(proc.Cancelled):
            proc.run(["true"], prefix="refused")
    with proc.cancellation():
        proc.run(["touch", tmp_path / "ran"], prefix="next build")
    assert (tmp_path / "ran").exists()


def test_sigterm_kills_the_running_command_and_refuses_new_ones(tmp_path):
    """SIGTERM (or ^C's SIGINT) inside a build: its command is killed, KeyboardInterrupt
    ends the build as ^C would, and nothing starts after it."""
    marker = tmp_path / "ran-after-sigterm"
    pids: list[int] = []

    def terminate_us(line: str) -> None:
        pids.append(int(line))
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    with proc.cancellation():
        with pytest.raises(KeyboardInterrupt):
            proc.run(["sh", "-c", "echo $$; exec sleep 30"], prefix="sleeper",
                     on_line=terminate_us)
        with pytest.raises(proc.Cancelled, match=r"^cancelled: interrupted by SIGTERM$"):
            proc.run(["touch", marker], prefix="later")
    assert signal.getsignal(signal.SIGTERM) is previous
    assert gone(pids[0])
    assert not marker.exists()

"""The phase report of `invoke image`: each phase timed (wall clock, and the CPU its
commands used), a note per phase, the failing one named, and the table that ends a run."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from goldbox import proc
from goldbox.errors import GoldboxError, describe_os_error


@dataclass
class Phases:
    """Times each phase, remembers a note per phase and names the failing one. Phases
    may run in several threads at once; a failing one cancels the others (proc.cancel)."""

    rows: list[tuple[str, float, float, str]] = field(default_factory=list)
    log: Path | None = None

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[list[str]]:
        print(f"==> {name}", flush=True)
        note: list[str] = []
        start, cpu = time.monotonic(), proc.cpu_seconds() + time.thread_time()
        try:
            yield note
        except proc.Cancelled:
            raise  # another phase failed first: its error is the one to report
        except BaseException as exc:
            # The build stops at once: the other phases' commands are killed, and none
            # of theirs starts any more (see proc.cancellation).
            proc.cancel(f"{name} failed")
            if not isinstance(exc, (GoldboxError, OSError)):
                raise
            message = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
            where = f"; log: {self.log}" if self.log and str(self.log) not in message else ""
            raise GoldboxError(f"phase {name!r} failed{where}: {message}") from None
        wall = time.monotonic() - start
        used = proc.cpu_seconds() + time.thread_time() - cpu
        self.rows.append((name, wall, used, " ".join(note)))
        print(f"    {name}: {wall:.1f} s, {' '.join(note)}", flush=True)

    def skipped(self, name: str, note: str) -> None:
        self.rows.append((name, 0.0, 0.0, note))

    def seconds(self) -> dict[str, float]:
        return {name: round(wall, 1) for name, wall, _, _ in self.rows}

    def table(self, wall: float) -> str:
        width = max(len(name) for name, *_ in self.rows)
        lines = [f"{'phase':<{width}}  {'wall s':>7}  {'cpu s':>7}  result", "-" * (width + 40)]
        lines += [f"{name:<{width}}  {seconds:7.1f}  {cpu:7.1f}  {note}"
                  for name, seconds, cpu, note in self.rows]
        lines.append(f"{'total':<{width}}  {wall:7.1f}  "
                     f"{sum(cpu for _, _, cpu, _ in self.rows):7.1f}  "
                     "(wall: end to end; phases may overlap)")
        return "\n".join(lines)

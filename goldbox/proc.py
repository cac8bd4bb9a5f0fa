"""Run one external command the way every goldbox phase does: its output streams live,
each line prefixed, into the terminal and (optionally) a log file; a failure becomes a
GoldboxError that names the command, its exit code and its last lines of output."""

from __future__ import annotations

import collections
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from goldbox.errors import GoldboxError

TAIL_LINES = 20


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    prefix: str,
    log: Path | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Run `cmd` (stdout and stderr merged) and print each line as `[prefix] line`.

    With `log`, the unprefixed lines are appended to that file too. `env` is added to
    the current environment. Raises GoldboxError if the command cannot start or exits
    non-zero."""
    argv = [os.fspath(arg) for arg in cmd]
    shown = shlex.join(argv)
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    full_env = {**os.environ, **env} if env else None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    with open(log or os.devnull, "a", encoding="utf-8", buffering=1) as log_file:
        log_file.write(f"$ {shown}\n")
        log_file.flush()
        try:
            child = subprocess.Popen(
                argv, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )
        except OSError as exc:
            raise GoldboxError(f"cannot run `{shown}`: {exc}") from exc
        assert child.stdout is not None
        with child.stdout:
            for raw in child.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                tail.append(line)
                log_file.write(line + "\n")
                sys.stdout.write(f"[{prefix}] {line}\n")
                sys.stdout.flush()
        code = child.wait()
        log_file.write(f"# exit code {code}\n")
    if code != 0:
        where = f" (full log: {log})" if log is not None else ""
        last = "\n".join(f"  {line}" for line in tail)
        raise GoldboxError(f"`{shown}` exited with code {code}{where}; last lines:\n{last}")

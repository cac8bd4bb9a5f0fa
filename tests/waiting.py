"""Synchronisation for tests: wait for a condition (a file, a lock waiter, a port), never
for a fixed time. The limit only ends a test whose condition never comes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest


def wait_until(condition: Callable[[], object], what: str, seconds: float = 60) -> None:
    """Return as soon as `condition()` is true; fail the test naming `what` if it is still
    false after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {seconds:.0f} s for {what}")
        time.sleep(0.02)


def lock_waiters(lock_file: Path) -> int:
    """How many processes or threads are blocked on a lock of `lock_file` (/proc/locks
    lists each blocked waiter as a `->` line naming the file's inode)."""
    inode = f":{lock_file.stat().st_ino} "
    return sum(1 for line in Path("/proc/locks").read_text().splitlines()
               if "->" in line and inode in line)

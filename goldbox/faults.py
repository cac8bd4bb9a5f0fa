"""Fault points: named places where a test can have goldbox killed for real.

`point("dist-swap")` does nothing unless the environment variable GOLDBOX_KILL_AT names
that point; then the process sends itself SIGKILL right there. The fault tests use it to
stop goldbox between two steps that must each leave a valid state on their own (the swap
of dist/<p>/ and the deletion of the old box, say), which no outside timing can hit."""

from __future__ import annotations

import os
import signal


def point(name: str) -> None:
    if os.environ.get("GOLDBOX_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)

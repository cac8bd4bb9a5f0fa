"""Questions to a guest that the checks share, each asked in one command: every command
is an SSH round trip under TCG, and one that needs root adds sudo's own start in the
guest (0.4-0.7 s, against 0.1 s for the command itself). The suite runs as the login
user and raises only what needs root: nginx's config test, uWSGI's 0660 socket, and
systemctl, which a user reaches over D-Bus (the box has none) and root through systemd's
own socket."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

RootContext = Callable[[], contextlib.AbstractContextManager[Any]]


def as_root(host: Any) -> RootContext:
    """`host.sudo` for a login user; nothing to raise when the backend is root already (a
    rootfs's chroot, where sudo may not even be installed)."""
    if host.user().name == "root":
        return contextlib.nullcontext
    return host.sudo


def unit_files_enabled(host: Any, root: RootContext, units: Iterable[str]) -> dict[str, str]:
    """unit -> its `systemctl is-enabled` state ("enabled", "disabled", "masked", ...),
    for every unit in one command; it works offline too (a rootfs)."""
    names = list(units)
    with root():
        # Exit status 1 when one is not enabled: its line still says what it is.
        lines = host.run("systemctl is-enabled -- " + " ".join(names)).stdout.splitlines()
    states = [line.strip() for line in lines]
    return dict(zip(names, states + [""] * (len(names) - len(states)), strict=True))


def unit_properties(host: Any, root: RootContext, units: Iterable[str],
                    properties: Iterable[str]) -> dict[str, dict[str, str]]:
    """unit -> {property: value} from one `systemctl show` of them all (a running
    systemd). systemctl prints one block per unit, in the order asked, blank-line apart;
    a unit it does not know still gets its block (its Id, asked first, is never empty)."""
    names = list(units)
    with root():
        text = host.check_output("systemctl show --property=" + ",".join(["Id", *properties])
                                 + " -- " + " ".join(names))
    blocks = [dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
              for block in text.split("\n\n")]
    if len(blocks) != len(names):
        raise AssertionError(f"systemctl show gave {len(blocks)} blocks for the units "
                             f"{names}: {text!r}")
    return dict(zip(names, blocks, strict=True))

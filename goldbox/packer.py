"""packer, as `invoke image` runs it: its version, and a build of a rendered template
whose result is the component versions the guest printed during that build."""

from __future__ import annotations

import json
import re
from pathlib import Path

from goldbox import proc
from goldbox.console import checked_path, run_watched
from goldbox.errors import GoldboxError
from goldbox.files import write_atomically
from goldbox.keys import insecure_private_key
from goldbox.validate import declared_variables

# What the golden build's last provisioner prints of the guest (packer/*.pkr.hcl.j2).
VERSION_LINE = re.compile(r"goldbox-version (\w+)=(\S+)")
# What packer prints once the guest answers on SSH (its boot is over).
PACKER_REACHED = "Connected to SSH!"


def packer_version() -> tuple[int, int, int]:
    out = proc.capture(["packer", "version"], timeout=60).stdout
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", out)
    if not match:
        raise GoldboxError(f"`packer version` printed no version: {out.strip()!r}")
    return tuple(int(part) for part in match.groups())  # type: ignore[return-value]


def console_log(log: Path, stage: str) -> Path:
    """The serial console log of one packer boot: beside the build's log, named after it."""
    return checked_path(log.with_name(f"{log.stem}.console.{stage}.log"))


def packer_build(template: Path, variables: dict[str, str], only: str, log: Path,
                 console: Path, silence: int | None) -> dict[str, str]:
    """`packer build -only=<only>` of a rendered template, with those of `variables` it
    declares (plus Vagrant's insecure key and the console log) in a var file beside it.
    The guest's console is watched until packer reaches it on SSH (see goldbox.console:
    `silence` None for a guest that writes nothing there, an installer), for a panic or
    an emergency shell to the end. Returns the `goldbox-version name=value` lines this
    build printed (its own output, not the rest of the log) as {name: value}."""
    print(f"packer: guest console: {console}", flush=True)
    variables = {**variables, "ssh_private_key_file": str(insecure_private_key()),
                 "console_log": str(console)}
    declared = declared_variables(template)
    var_file = template.with_name(template.name.removesuffix(".pkr.hcl") + "-vars.json")
    write_atomically(var_file, json.dumps({k: v for k, v in variables.items() if k in declared},
                                          indent=2, sort_keys=True) + "\n")
    start = log.stat().st_size if log.exists() else 0
    # Isolated: qemu, packer's child, must not outlive a killed goldbox.
    run_watched(["packer", "build", "-color=false", f"-var-file={var_file.name}",
                 f"-only={only}", template.name], console=console, silence=silence,
                reached=PACKER_REACHED, prefix="packer", log=log, cwd=template.parent,
                isolate=True)
    with open(log, "rb") as handle:
        handle.seek(start)
        printed = handle.read().decode("utf-8", "replace")
    return dict(VERSION_LINE.findall(printed))

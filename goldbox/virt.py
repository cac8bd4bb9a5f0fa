"""What goldbox knows of Vagrant and libvirt, in one place: the box list, adding and
removing a box version, vagrant-libvirt's names for the pool volumes it uploads, a
machine's state, and whether the libvirt daemon answers. Every command goes through
goldbox.proc; the callers (vm, pool, libvirtd, doctor, the catalog's trial) hold no
command line or output format of their own."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from goldbox import proc
from goldbox.context import PROVIDER
from goldbox.errors import GoldboxError

URI = "qemu:///system"
VIRSH = ["virsh", "-c", URI]
DEFAULT_POOL = "default"  # where vagrant-libvirt uploads box images

# `vagrant box list`: "acme/base    (libvirt, 1.2.0)" (Vagrant 2.4 adds ", amd64").
_BOX_LINE = re.compile(r"^(?P<box>\S+)\s+\((?P<provider>[^,]+),\s*(?P<version>[^,)]+)")
# vagrant-libvirt's volume of a box version's disk: "<box>_vagrant_box_image_<version>_
# <disk>.img", with "/" in the box name spelled "-VAGRANTSLASH-".
_SLASH = "-VAGRANTSLASH-"
_BOX_VOLUME = re.compile(r"^(?P<box>.+)_vagrant_box_image_(?P<version>[0-9][^_]*)_"
                         r"(?P<disk>.+)\.img\Z")
_DAEMON_VERSION = re.compile(r"Running against daemon: (\S+)")


@dataclass(frozen=True)
class Box:
    """One line of `vagrant box list`."""

    name: str
    provider: str
    version: str


def parse_box_list(text: str) -> list[Box]:
    """The boxes in `vagrant box list`'s output (its "no installed boxes" line is none)."""
    return [Box(match["box"], match["provider"].strip(), match["version"].strip())
            for line in text.splitlines() if (match := _BOX_LINE.match(line))]


def installed_boxes(env: Mapping[str, str] | None = None) -> set[tuple[str, str]]:
    """(box, version) of every libvirt box in Vagrant's box list (of `env`'s
    VAGRANT_HOME, if it names one)."""
    listed = _vagrant(["box", "list"], env=env)
    return {(box.name, box.version) for box in parse_box_list(listed)
            if box.provider == PROVIDER}


def vagrant_home(env: Mapping[str, str] | None = None) -> Path:
    """Vagrant's home: `env`'s VAGRANT_HOME, else this process's, else ~/.vagrant.d."""
    home = (env or {}).get("VAGRANT_HOME") or os.environ.get("VAGRANT_HOME") or "~/.vagrant.d"
    return Path(home).expanduser()


def box_folder(name: str, env: Mapping[str, str] | None = None) -> Path:
    """The folder of box `name` in Vagrant's box store ("/" spelled -VAGRANTSLASH-)."""
    return vagrant_home(env) / "boxes" / name.replace("/", _SLASH)


def box_stored(name: str, version: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether Vagrant's box store holds the libvirt box `name` `version`: its folder as
    Vagrant 2.3 lays it out (<box folder>/<version>/libvirt/metadata.json)."""
    return (box_folder(name, env) / version / PROVIDER / "metadata.json").is_file()


def add_box(source: str | Path, *, env: Mapping[str, str] | None = None,
            cwd: Path | None = None, version: str | None = None,
            cacert: Path | None = None) -> None:
    """`vagrant box add` of a libvirt box from `source` (a metadata.json path or URL),
    its output shown as it comes."""
    proc.run(["vagrant", "box", "add", "--provider", PROVIDER, str(source),
              *(["--box-version", version] if version else []),
              *(["--cacert", str(cacert)] if cacert else [])],
             prefix="vagrant", cwd=cwd, env=env)


def remove_box(name: str, version: str, *, env: Mapping[str, str] | None = None) -> bool:
    """`vagrant box remove` of one libvirt box version; False when it is not installed.
    vagrant-libvirt's copy of it in the pool stays (see delete_box_volume)."""
    if (name, version) not in installed_boxes(env):
        return False
    _vagrant(["box", "remove", name, "--box-version", version, "--provider", PROVIDER,
              "--force"], env=env)
    return True


def box_volume_name(name: str, version: str, disk: str = "box") -> str:
    """vagrant-libvirt's name for the copy of a box version's disk in the pool."""
    return f"{name.replace('/', _SLASH)}_vagrant_box_image_{version}_{disk}.img"


def parse_box_volume(volume: str) -> tuple[str, str] | None:
    """(box, version) whose disk a pool volume of this name holds, or None (a VM's disk,
    anything not uploaded by vagrant-libvirt)."""
    match = _BOX_VOLUME.match(volume)
    return (match["box"].replace(_SLASH, "/"), match["version"]) if match else None


def virsh(*args: str, wrapper: Sequence[str] = ()) -> str:
    """`virsh -c qemu:///system ARGS` (inside `wrapper`, e.g. `ip netns exec NAME`): its
    output, or a GoldboxError naming the command and what virsh said."""
    result = proc.capture([*wrapper, *VIRSH, *args], check=False)
    if result.returncode != 0:
        raise GoldboxError(f"`virsh {' '.join(args)}` failed: "
                           f"{(result.stderr or result.stdout).strip()}")
    return result.stdout


def pool_active(pool: str = DEFAULT_POOL) -> bool:
    """Whether the storage pool exists and runs, so its volumes can be listed: `vagrant
    up` makes and starts `default`, which libvirt does not start again after a restart
    (no autostart)."""
    result = proc.capture([*VIRSH, "pool-info", pool], check=False)
    return result.returncode == 0 and re.search(r"^State:\s+running$", result.stdout,
                                                re.MULTILINE) is not None


def box_volume_path(name: str, version: str, pool: str = DEFAULT_POOL) -> Path | None:
    """The file of the pool's copy of this box version, None when there is none."""
    result = proc.capture([*VIRSH, "vol-path", "--pool", pool, box_volume_name(name, version)],
                          check=False)
    return Path(result.stdout.strip()) if result.returncode == 0 else None


def delete_box_volume(name: str, version: str, pool: str = DEFAULT_POOL) -> None:
    """Delete the pool's copy of this box version, if there is one: `vagrant box remove`
    leaves it (vagrant-libvirt#85), and a later box of the same name and version would
    boot it instead of its own disk."""
    proc.capture([*VIRSH, "vol-delete", "--pool", pool, box_volume_name(name, version)],
                 check=False)


def daemon_version(wrapper: Sequence[str] = (), timeout: float = 30) -> str | None:
    """The version of the libvirt daemon that answers at qemu:///system (inside
    `wrapper`), or None when none does (or virsh is missing)."""
    try:
        result = proc.capture([*wrapper, *VIRSH, "version", "--daemon"], check=False,
                              timeout=timeout)
    except GoldboxError:  # virsh or the wrapper missing, or no answer in time
        return None
    match = _DAEMON_VERSION.search(result.stdout)
    return match[1] if result.returncode == 0 and match else None


def daemon_answers(wrapper: Sequence[str] = (), timeout: float = 30) -> bool:
    return daemon_version(wrapper, timeout) is not None


def machine_created(directory: Path) -> bool:
    """Whether Vagrant holds a machine for `directory`'s Vagrantfile: the id file it
    writes when it creates one and removes on destroy (what Vagrant's own
    `not_created` state is: a machine without an id)."""
    return (directory / ".vagrant" / "machines" / "default" / PROVIDER / "id").is_file()


def machine_state(directory: Path, env: Mapping[str, str] | None = None) -> str:
    """Vagrant's state of the machine of `directory`'s Vagrantfile: running, shutoff,
    not_created, ... (`vagrant status --machine-readable`; without a machine id, no
    command: each vagrant command is a second or more of Ruby starting)."""
    if not machine_created(directory):
        return "not_created"
    states = parse_machine_states(_vagrant(["status", "--machine-readable"], cwd=directory,
                                           env=env))
    return states[0] if states else "not_created"


def parse_machine_states(text: str) -> list[str]:
    """The `state` records of Vagrant's machine-readable output ("TIME,TARGET,state,X")."""
    return [fields[3] for line in text.splitlines()
            if len(fields := line.split(",", 3)) == 4 and fields[2] == "state"]


def destroy(directory: Path, env: Mapping[str, str] | None = None) -> None:
    """`vagrant destroy --force` of `directory`'s machine, its output shown as it comes."""
    proc.run(["vagrant", "destroy", "--force"], prefix="vagrant", cwd=directory, env=env)


def ssh_config(directory: Path, env: Mapping[str, str] | None = None) -> str:
    """`vagrant ssh-config` of `directory`'s running machine."""
    return _vagrant(["ssh-config"], cwd=directory, env=env)


def _vagrant(args: list[str], *, cwd: Path | None = None,
             env: Mapping[str, str] | None = None) -> str:
    """A quiet vagrant command's output, or a GoldboxError naming it (and where it ran)
    with vagrant's last line."""
    result = proc.capture(["vagrant", *args], cwd=cwd, env=env, check=False)
    if result.returncode != 0:
        where = f" (in {cwd})" if cwd else ""
        said = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise GoldboxError(f"`vagrant {' '.join(args)}`{where} failed: {said[0]}")
    return result.stdout

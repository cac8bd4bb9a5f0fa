"""`invoke up`, `invoke verify`, `invoke destroy`: the built box as a running VM.

Vagrant is driven (through goldbox.virt) from build/<platform>/, where the rendered
Vagrantfile and Vagrant's state (.vagrant/) live. The box is added under its name and
version through a one-entry metadata.json, so Vagrant knows its version.

The box of another architecture (`arch`: arm64, built by `invoke image --target
libvirt/arm64`) is a VM of its own, in build/<platform>/vm-<arch>/, always emulated, its
box added as <name>-<arch> (Debian's vagrant 2.3.4 keeps one box per name, version and
provider, whatever its architecture)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from goldbox import accel, libvirtd, proc, virt
from goldbox.arch import AMD64, Architecture
from goldbox.basedisk import SSH_KEY_CREDENTIAL
from goldbox.config import Config, Platform, check_disk
from goldbox.console import GuestTrouble, checked_path, run_watched, silence_limit
from goldbox.context import PROVIDER, dist_dir
from goldbox.errors import GoldboxError
from goldbox.files import remove_tree, sha256_file, write_atomically
from goldbox.manifest import Manifest, read_manifest
from goldbox.render import RenderOptions, VmKey, render_vagrantfile
from goldbox.targets import Target

# The guest's serial console, beside the Vagrantfile (vagrant/Vagrantfile.j2 names it),
# and where the console of a boot that failed is kept while the next one runs.
CONSOLE_LOG = "console.log"
FAILED_CONSOLE_LOG = "console.failed.log"
# The SSH key pair `invoke up` makes for its VM, beside the Vagrantfile (destroy removes it).
VM_KEY_DIR = ".goldbox-ssh"
VM_KEY_COMMENT = "goldbox"
_PUBLIC_KEY = re.compile(r"ssh-ed25519 [A-Za-z0-9+/]+={0,2} " + VM_KEY_COMMENT)
# What `vagrant up` prints once the guest answers on SSH: the boot is over.
BOOTED = "Machine booted and ready!"


@dataclass(frozen=True)
class Built:
    """The box `invoke image` left in dist/<platform>/."""

    box: Path
    manifest: Manifest
    plan: Path


def built_box(config: Config, platform: Platform, arch: Architecture = AMD64) -> Built:
    out, target = dist_dir(config, platform), Target(PROVIDER, arch.name)
    manifest_path = out / target.manifest_name
    build = f"`invoke image --platform {platform.name}" + (
        "`" if arch is AMD64 else f" --target {target.name}`")
    if not manifest_path.is_file():
        which = "" if arch is AMD64 else f"{arch.name} "
        raise GoldboxError(f"no {which}box built for {platform.name} (no "
                           f"{manifest_path}): run {build} first")
    manifest = read_manifest(manifest_path)
    box = out / manifest.box_file
    if not box.is_file():
        raise GoldboxError(f"{manifest_path} names {box.name}, which is missing: "
                           f"run {build} again")
    return Built(box, manifest, out / target.plan_name)


def vm_dir(config: Config, platform: Platform, arch: Architecture = AMD64) -> Path:
    base = config.build_dir / platform.name
    return base if arch is AMD64 else base / f"vm-{arch.name}"


def _label(platform: Platform, arch: Architecture) -> str:
    """The VM as messages name it."""
    return platform.name if arch is AMD64 else f"{platform.name} ({arch.name})"


def local_box_name(name: str, arch: Architecture = AMD64) -> str:
    """The name a built box is added to Vagrant under (see the module doc)."""
    return name if arch is AMD64 else f"{name}-{arch.name}"


# What every vagrant command of a platform's VM runs with.
VAGRANT_ENV = {"VAGRANT_DEFAULT_PROVIDER": PROVIDER}


def ssh_config(config: Config, platform: Platform, arch: Architecture = AMD64) -> str:
    """Vagrant's ssh-config for the platform's running VM."""
    return virt.ssh_config(vm_dir(config, platform, arch), VAGRANT_ENV)


def state(config: Config, platform: Platform, arch: Architecture = AMD64) -> str:
    """Vagrant's state of the VM: running, shutoff, not_created, ..."""
    if not (vm_dir(config, platform, arch) / "Vagrantfile").is_file():
        return "not_created"
    return virt.machine_state(vm_dir(config, platform, arch), VAGRANT_ENV)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def add_box(config: Config, platform: Platform, built: Built,
            arch: Architecture = AMD64) -> None:
    """Add the built box to Vagrant under its name and version; replace an older build
    of the same version (and the image vagrant-libvirt uploaded from it)."""
    name, version = local_box_name(built.manifest.box_name, arch), built.manifest.version
    # Which build is installed under this name and version is a fact of Vagrant's box
    # store, which every platform's boxes share (same name and version): so the record
    # lives beside that store, not in build/<platform>/.
    marker = (virt.vagrant_home() / "goldbox-added"
              / f"{name.replace('/', '-')}-{version}-{PROVIDER}.sha256")
    if (marker.is_file() and marker.read_text().strip() == built.manifest.box_sha256
            and virt.box_stored(name, version)):
        return  # this build is the one added (no `vagrant box list`: seconds of Ruby)
    present = (name, version) in virt.installed_boxes()
    if present:
        print(f"replacing box {name} {version} with the build in dist/{platform.name}/")
        virt.remove_box(name, version)
    # A copy uploaded from an earlier build of this version would be booted instead.
    virt.delete_box_volume(name, version)
    metadata = vm_dir(config, platform, arch) / "local-box" / "metadata.json"
    write_atomically(metadata, json.dumps({
        "name": name,
        "description": config.project.box.description,
        "versions": [{"version": version, "providers": [{
            "name": PROVIDER, "url": built.box.resolve().as_uri(),
            "checksum_type": "sha256", "checksum": built.manifest.box_sha256}]}],
    }, indent=2) + "\n")
    print(f"adding box {name} {version} from {built.box}")
    virt.add_box(metadata)
    write_atomically(marker, built.manifest.box_sha256 + "\n")


def box_image_sha256(box: Path) -> str:
    """The sha256 of the disk (box.img) inside a libvirt .box, read as a stream."""
    try:
        with tarfile.open(box, "r|*") as archive:
            for member in archive:
                if member.name.rsplit("/", 1)[-1] == "box.img" and member.isfile():
                    digest = hashlib.sha256()
                    source = archive.extractfile(member)
                    assert source is not None  # a regular file's member has a stream
                    while chunk := source.read(1 << 20):
                        digest.update(chunk)
                    return digest.hexdigest()
    except (OSError, tarfile.TarError) as exc:
        raise GoldboxError(f"{box}: cannot read it as a box: {exc}") from None
    raise GoldboxError(f"{box}: no box.img in it")


def read_box_metadata(box: Path) -> dict:
    """The metadata.json inside a .box, read as a stream up to that member (goldbox's
    boxes have it first)."""
    try:
        with tarfile.open(box, "r|*") as archive:
            for member in archive:
                if member.name.rsplit("/", 1)[-1] == "metadata.json" and member.isfile():
                    source = archive.extractfile(member)
                    assert source is not None  # a regular file's member has a stream
                    metadata = json.loads(source.read())
                    if not isinstance(metadata, dict):
                        raise GoldboxError(f"{box}: its metadata.json is not a JSON object")
                    return metadata
    except (OSError, tarfile.TarError, ValueError) as exc:
        raise GoldboxError(f"{box}: cannot read its metadata.json: {exc}") from None
    raise GoldboxError(f"{box}: no metadata.json in it")


def takes_vm_key(box: Path) -> bool:
    """Whether the box's guest authorizes the SSH key given to it as goldbox's credential
    (a box made from goldbox's base disk by this version or later says so in its
    metadata.json, goldbox/golden_cache.py)."""
    return read_box_metadata(box).get("ssh_key_credential") == SSH_KEY_CREDENTIAL


def vm_key(directory: Path, *, fresh: bool) -> VmKey | None:
    """The SSH key of the VM in `directory`: a new Ed25519 pair for a new VM (`fresh`),
    else the one it was created with; None for a VM created without one (it keeps the key
    Vagrant swapped in). Written under a temporary name, then renamed into place."""
    folder = directory / VM_KEY_DIR
    private = folder / "id_ed25519"
    if fresh:
        remove_tree(folder)
        scratch = Path(tempfile.mkdtemp(prefix=f"{VM_KEY_DIR}.", dir=directory))
        try:
            proc.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", VM_KEY_COMMENT,
                      "-f", scratch / private.name], prefix="ssh-keygen")
            os.rename(scratch, folder)
        finally:
            remove_tree(scratch)
    elif not private.is_file():
        return None
    public = private.with_name(private.name + ".pub")
    try:
        text = public.read_text().strip()
    except OSError as exc:
        raise GoldboxError(f"{public}: cannot read this VM's public key ({exc}): "
                           "run `invoke destroy`, then `invoke up`") from None
    if not _PUBLIC_KEY.fullmatch(text):
        raise GoldboxError(f"{public}: expected one `ssh-ed25519 <base64> {VM_KEY_COMMENT}` "
                           f"line: run `invoke destroy`, then `invoke up`")
    return VmKey(private, text, SSH_KEY_CREDENTIAL)


def require_same_image(volume: Path, box: Path) -> None:
    """vagrant-libvirt boots the pool's copy of a box version if there is one: it must
    hold `box`'s disk, or the VM would not be the box."""
    if sha256_file(volume) != box_image_sha256(box):
        raise GoldboxError(f"libvirt volume {volume} holds another disk than {box.name} "
                           f"(a local build of the same name and version, added by "
                           f"`invoke up`); vagrant-libvirt would boot it instead: remove it "
                           f"with `invoke destroy --purge`")


def with_disk(config: Config, platform: Platform, disk_gib: str | int | None) -> Config:
    """`config` with vm.disk_gib set from `invoke up --disk-gib`, checked as the config's
    own value is."""
    if disk_gib is None:
        return config
    try:
        value = int(disk_gib)
    except ValueError:
        raise GoldboxError(f"up --disk-gib {disk_gib!r}: expected a whole number of GiB") from None
    check_disk(value, platform, "up --disk-gib")  # at least the box's size
    vm = config.project.vm.model_copy(update={"disk_gib": value})
    return config.model_copy(update={"project": config.project.model_copy(update={"vm": vm})})


def up(config: Config, platform: Platform, arch: Architecture = AMD64) -> None:
    built = built_box(config, platform, arch)
    label = _label(platform, arch)
    current = state(config, platform, arch)
    if current == "running":
        print(f"{label}: already running")
        return
    port = config.project.ports.host_http
    if not port_is_free(port):
        raise GoldboxError(f"port {port} on 127.0.0.1 is busy: stop what listens there, or "
                           "set ports.host_http in goldbox.toml to a free port")
    directory = vm_dir(config, platform, arch)
    directory.mkdir(parents=True, exist_ok=True)
    console = checked_path(directory / CONSOLE_LOG)
    acceleration = accel.detect(config.cache_dir)
    silence, driver = silence_limit(acceleration.accelerator), acceleration.libvirt_driver
    if arch is not AMD64:  # another architecture than the host's: emulated
        silence, driver = silence_limit("tcg"), "qemu"
    # A box whose guest takes goldbox's key gets one (an arm64 domain's too: its UEFI
    # gives the guest the SMBIOS tables); other boxes, Vagrant's key swap.
    takes_key = takes_vm_key(built.box)

    def render(fresh: bool) -> None:
        render_vagrantfile(config, platform, directory, RenderOptions(
            libvirt_driver=driver, arch=arch.name,
            box_name=local_box_name(config.project.box.name, arch),
            ssh_key=vm_key(directory, fresh=fresh) if takes_key else None))

    render(fresh=current == "not_created")
    if daemons := libvirtd.ensure_answering():
        print("no libvirt daemon answered and no service manager runs here: goldbox started "
              + ", ".join(f"{name} (pid {pid}, {pidfile})"
                          for name, (pid, pidfile) in daemons.daemons.items())
              + f"; stop them with `{daemons.stop_hint()}`")
    add_box(config, platform, built, arch)
    print(f"booting {label} with vagrant-libvirt (driver {driver}); "
          f"guest console: {console}")
    started = time.monotonic()
    try:
        vagrant_up_watched(directory, console, silence)
    except GuestTrouble as failed:
        kept = console.with_name(FAILED_CONSOLE_LOG)
        os.replace(console, kept)
        print(f"{failed.trouble.summary}; booting once more (that boot's console: {kept})")
        destroy(config, platform, arch)
        render(fresh=True)
        vagrant_up_watched(directory, console, silence)
    print(f"{label} is up after {time.monotonic() - started:.0f} s: "
          f"http://127.0.0.1:{port}/")


def vagrant_up_watched(directory: Path, console: Path, silence: int,
                       env: dict[str, str] | None = None) -> None:
    """`vagrant up` in `directory` (`env` added to the environment), with its guest's
    console watched until the guest answers on SSH: a panic, an emergency shell, a failed
    fsck or a silent boot stops it (GuestTrouble). An earlier boot's log goes first, so
    its text is not read as this boot's (libvirt's virtlogd then writes the file, mode
    0600). Used by `invoke up` and by `verify --from-catalog`'s trial VM."""
    console.unlink(missing_ok=True)
    run_watched(["vagrant", "up", "--provider", PROVIDER], console=console, silence=silence,
                reached=BOOTED, prefix="vagrant", cwd=directory,
                env={**VAGRANT_ENV, **(env or {})})


def require_running(config: Config, platform: Platform, arch: Architecture = AMD64) -> None:
    current = state(config, platform, arch)
    if current != "running":
        option = "" if arch is AMD64 else f" --arch {arch.name}"
        raise GoldboxError(f"the {platform.name}{'' if arch is AMD64 else ' ' + arch.name} "
                           f"VM is not up (state: {current}): "
                           f"run `invoke up --platform {platform.name}{option}`")


def destroy(config: Config, platform: Platform, arch: Architecture = AMD64) -> None:
    directory = vm_dir(config, platform, arch)
    label = _label(platform, arch)
    if state(config, platform, arch) == "not_created":
        print(f"{label}: no VM to destroy")
    else:
        virt.destroy(directory, VAGRANT_ENV)
    # ssh-config: what verify wrote here before it kept its config in a private folder.
    for leftover in (directory / ".vagrant", directory / "ssh-config", directory / VM_KEY_DIR):
        remove_tree(leftover)
    print(f"{label}: destroyed")

"""`invoke verify --from-catalog URL[@VERSION]`: test what teammates get before
releasing it. The box is added through the catalog URL by stock Vagrant into a private
VAGRANT_HOME (the path a teammate takes, tokens included), booted, checked with the
same suite as `invoke verify` (goldbox/verify.py) against the plan.json published with
the box (not one rendered from today's checkout), and destroyed; a pass is recorded
for the version's box sha256, which `invoke release` can require.

Everything read from the catalog is untrusted: the metadata, the manifest and the plan
are parsed into their typed models, and the box's name and version go into the config
through its validation before anything is rendered or run. The trial VM has a libvirt
domain name and a host port of its own, so it never meets the VM `invoke up` runs."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from goldbox.arch import host_architecture
from goldbox.catalog.client import catalog_client
from goldbox.catalog.layout import MANIFEST, PLAN, box_file_name, is_url, semver_key
from goldbox.catalog.metadata import parse_metadata, per_architecture
from goldbox.config import SEMVER, Config, ProjectConfig
from goldbox.errors import GoldboxError
from goldbox.files import copy_hashing, file_chunks, partial_file
from goldbox.manifest import Manifest, parse_manifest
from goldbox.plan_model import read_plan
from goldbox.validation import validated

PROVIDER = "libvirt"


@dataclass(frozen=True)
class Target:
    metadata_url: str
    version: str | None


@dataclass(frozen=True)
class Candidate:
    box: str
    version: str
    box_url: str
    sha256: str
    architecture: str | None = None

    def beside_box(self, name: str) -> str:
        """The URL of the build's `name` (manifest, plan) in the box's folder
        (<box>/<version>/<provider>/): each architecture's build has its own."""
        return self.box_url.rsplit("/", 1)[0] + "/" + per_architecture(name, self.architecture)


class Reader:
    """How the catalog is read: through goldbox.catalog.client, under its token rule
    (VAGRANT_CLOUD_TOKEN to VAGRANT_SERVER_URL's origin only, as Vagrant sends it),
    trusting `cacert` for https when given; a catalog may also be a local folder."""

    def __init__(self, cacert: Path | None = None):
        self.client = catalog_client(None, cacert=cacert)

    def text(self, url: str) -> str:
        """The text at `url`, or one GoldboxError naming it."""
        if is_url(url):
            data = self.client.read(url)
            if data is None:
                raise GoldboxError(f"{url}: HTTP 404")
            return _decoded(data, url)
        try:
            return _local_path(url).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise GoldboxError(f"{url}: cannot read: {exc}") from None

    def copy(self, url: str, dest: Path) -> str:
        """Copy what `url` holds to `dest`; returns its sha256."""
        if is_url(url):
            return self.client.download(url, dest)
        digest = hashlib.sha256()
        with partial_file(dest, "copy") as out:
            copy_hashing(_read_chunks(_local_path(url)), out, {"sha256": digest})
        return digest.hexdigest()


def _decoded(data: bytes, url: str) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise GoldboxError(f"{url}: cannot read: {exc}") from None


def _read_chunks(path: Path) -> Iterator[bytes]:
    try:
        yield from file_chunks(path)
    except OSError as exc:
        raise GoldboxError(f"{path}: cannot read: {exc}") from None


def parse_target(text: str) -> Target:
    """`URL` or `URL@VERSION` (a channel's metadata.json, as teammates add it)."""
    url, _, version = text.rpartition("@")
    if url and SEMVER.fullmatch(version):
        return Target(url, version)
    return Target(text, None)


def _local_path(url: str) -> Path:
    return Path(url2pathname(urlsplit(url).path)) if url.startswith("file:") else Path(url)


def choose(target: Target, reader: Reader, architecture: str | None = None) -> Candidate:
    """The version to try (the newest unless pinned) and its libvirt box for
    `architecture` (default: this host's; an entry that names none is taken as any), from
    the channel's metadata read through its typed model."""
    wanted = architecture or host_architecture().name
    metadata = parse_metadata(reader.text(target.metadata_url), target.metadata_url)
    versions = sorted(metadata.versions, key=lambda v: semver_key(v.version))
    if target.version:
        versions = [v for v in versions if v.version == target.version]
    if not versions:
        raise GoldboxError(f"{target.metadata_url}: no version "
                           f"{target.version or ''} listed".replace("  ", " "))
    entry = versions[-1]
    provider = next((p for p in entry.providers if p.name == PROVIDER
                     and p.architecture in (wanted, None)), None)
    if provider is None or provider.checksum_type != "sha256" or not provider.checksum:
        raise GoldboxError(f"{target.metadata_url}: version {entry.version} has no "
                           f"{PROVIDER} box for {wanted} with a sha256 checksum")
    return Candidate(metadata.name, entry.version, provider.url, provider.checksum,
                     provider.architecture)


def read_published_manifest(candidate: Candidate, reader: Reader) -> Manifest:
    """The manifest published beside the box; it must describe that very box."""
    url = candidate.beside_box(MANIFEST)
    manifest = parse_manifest(reader.text(url), url)
    said = (manifest.box_name, manifest.version, manifest.box_sha256)
    if said != (candidate.box, candidate.version, candidate.sha256):
        raise GoldboxError(f"{url}: describes {said[0]} {said[1]} (sha256 {said[2]}), the "
                           f"catalog lists {candidate.box} {candidate.version} (sha256 "
                           f"{candidate.sha256})")
    return manifest


def fetch_plan(candidate: Candidate, reader: Reader, dest: Path) -> Path:
    """The plan.json the box was built from, published beside it: what the suite checks
    the VM against (checked against the plan model before use)."""
    url = candidate.beside_box(PLAN)
    try:
        text = reader.text(url)
    except GoldboxError as exc:
        raise GoldboxError(f"{exc} (the box's plan.json: publish the box again with this "
                           f"goldbox, which publishes it beside the box)") from None
    path = dest / PLAN
    path.write_text(text, encoding="utf-8")
    read_plan(path)
    return path


def download_box(candidate: Candidate, reader: Reader, dest: Path) -> Path:
    """The box itself (for the suite's look inside it), checked against its sha256."""
    box = dest / box_file_name(candidate.box, candidate.version, PROVIDER)  # checked names
    digest = reader.copy(candidate.box_url, box)
    if digest != candidate.sha256:
        raise GoldboxError(f"{candidate.box_url}: sha256 {digest}, the catalog "
                           f"says {candidate.sha256}")
    return box


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def trial_config(config: Config, candidate: Candidate, host_http: int, label: str) -> Config:
    """The project's config with the box pinned to the candidate's name and version and
    the VM's HTTP forwarded to `host_http`, built through the config's validation: the
    catalog's name and version are checked as goldbox.toml's would be (one line naming
    `label` when not)."""
    data = config.project.model_dump()
    data["box"].update(name=candidate.box, version=candidate.version)
    data["ports"]["host_http"] = host_http
    project = validated(ProjectConfig, data, label)
    return config.model_copy(update={"project": project})


def domain_prefix(candidate: Candidate) -> str:
    """The trial VM's libvirt domain is `goldbox-trial-<version>-default`: never the
    `<platform>_default` that `invoke up` boots."""
    return f"goldbox-trial-{candidate.version}-"


def try_from_catalog(config: Config, platform_name: str | None, target: Target, work: Path,
                     *, cacert: Path | None = None,
                     progress: Callable[[str], None] = print) -> tuple[Candidate, list]:
    """Add, boot, check and destroy the catalog's box in `work`; returns the candidate and
    the suite's results (goldbox.verify.run_suite). Everything the catalog says is read
    and checked before the first vagrant command."""
    from goldbox import accel, virt
    from goldbox.console import checked_path, silence_limit
    from goldbox.render import RenderOptions, render_vagrantfile
    from goldbox.verify import run_suite
    from goldbox.vm import CONSOLE_LOG, Built, require_same_image, vagrant_up_watched

    reader = Reader(cacert)
    candidate = choose(target, reader)
    trial = trial_config(config, candidate, free_port(), target.metadata_url)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    manifest = read_published_manifest(candidate, reader)
    platform = config.platform(platform_name or manifest.platform)
    if platform.name != manifest.platform:
        raise GoldboxError(f"{candidate.beside_box(MANIFEST)}: the box is built for "
                           f"{manifest.platform}, not --platform {platform.name}")
    plan = fetch_plan(candidate, reader, work)
    box = download_box(candidate, reader, work)
    acceleration = accel.detect(config.cache_dir)
    render_vagrantfile(trial, platform, work, RenderOptions(
        libvirt_driver=acceleration.libvirt_driver,
        domain_prefix=domain_prefix(candidate)))
    # A volume of this name and version (uploaded by `invoke up`) is what vagrant-libvirt
    # would boot: used only if it holds these very bytes, and then left to its owner.
    existing = virt.box_volume_path(candidate.box, candidate.version)
    if existing:
        require_same_image(existing, box)
    home = work / "vagrant.d"  # nothing of the host's Vagrant is used or changed
    env = {**os.environ, "VAGRANT_HOME": str(home), "VAGRANT_DEFAULT_PROVIDER": PROVIDER,
           "VAGRANT_CHECKPOINT_DISABLE": "1"}
    progress(f"adding {candidate.box} {candidate.version} through {target.metadata_url}")
    virt.add_box(target.metadata_url, env=env, cwd=work, version=candidate.version,
                 cacert=cacert)
    try:
        console = checked_path(work / CONSOLE_LOG)
        progress(f"booting {candidate.box} {candidate.version} as libvirt domain "
                 f"{domain_prefix(candidate)}default, HTTP on 127.0.0.1:"
                 f"{trial.project.ports.host_http}; guest console: {console}")
        vagrant_up_watched(work, console, silence_limit(acceleration.accelerator), env)
        ssh_config = work / "ssh-config"
        ssh_config.write_text(virt.ssh_config(work, env))
        results = run_suite(trial, ssh_config, Built(box, manifest, plan))
    finally:
        box.unlink(missing_ok=True)  # a copy for the suite only
        virt.destroy(work, env)
        virt.remove_box(candidate.box, candidate.version, env=env)
        if existing is None:
            virt.delete_box_volume(candidate.box, candidate.version)
    return candidate, results

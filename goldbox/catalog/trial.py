"""`invoke verify --from-catalog URL[@VERSION]`: test what teammates get before
releasing it. The box is added through the catalog URL by stock Vagrant into a private
VAGRANT_HOME (the path a teammate takes, tokens included), booted, checked with the
same suite as `invoke verify` (goldbox/verify.py), and destroyed; a pass is recorded
for the version's box sha256, which `invoke release` can require.

The VM steps go through `run` (vagrant commands) and `check` (the suite), so the flow
is tested without booting; a real run needs libvirt (see tests/harness.py)."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests

from goldbox import proc
from goldbox.catalog.layout import is_url, semver_key
from goldbox.catalog.metadata import parse_metadata
from goldbox.config import SEMVER, Config, Platform
from goldbox.errors import GoldboxError
from goldbox.manifest import parse_manifest

PROVIDER = "libvirt"
Run = Callable[[list[str], Path, dict[str, str]], str]


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

    @property
    def manifest_url(self) -> str:
        return self.box_url.rsplit("/", 1)[0] + "/manifest.json"


def parse_target(text: str) -> Target:
    """`URL` or `URL@VERSION` (a channel's metadata.json, as teammates add it)."""
    url, _, version = text.rpartition("@")
    if url and SEMVER.match(version):
        return Target(url, version)
    return Target(text, None)


def _auth_headers(url: str) -> dict[str, str]:
    """What Vagrant would send: the token only to the host VAGRANT_SERVER_URL names."""
    token, server = os.environ.get("VAGRANT_CLOUD_TOKEN"), os.environ.get("VAGRANT_SERVER_URL")
    if token and server and urlsplit(server).hostname == urlsplit(url).hostname:
        return {"Authorization": f"Bearer {token}"}
    return {}


def _get(url: str, **options) -> requests.Response:
    try:
        response = requests.get(url, headers=_auth_headers(url), timeout=60, **options)
    except requests.RequestException as exc:
        raise GoldboxError(f"cannot read {url}: {exc}") from None
    if response.status_code == 401:
        raise GoldboxError(f"{url}: HTTP 401: set VAGRANT_CLOUD_TOKEN to your catalog token "
                           f"and VAGRANT_SERVER_URL to the catalog's URL")
    if not response.ok:
        raise GoldboxError(f"{url}: HTTP {response.status_code}")
    return response


def _local_path(url: str) -> Path:
    return Path(urlsplit(url).path) if url.startswith("file:") else Path(url)


def choose(target: Target) -> Candidate:
    """The version to try (the newest unless pinned) and its libvirt box."""
    if is_url(target.metadata_url):
        text = _get(target.metadata_url).text
    else:
        path = _local_path(target.metadata_url)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise GoldboxError(f"{path}: cannot read: {exc}") from None
    metadata = parse_metadata(text, target.metadata_url)
    versions = sorted(metadata.versions, key=lambda v: semver_key(v.version))
    if target.version:
        versions = [v for v in versions if v.version == target.version]
    if not versions:
        raise GoldboxError(f"{target.metadata_url}: no version "
                           f"{target.version or ''} listed".replace("  ", " "))
    entry = versions[-1]
    provider = next((p for p in entry.providers if p.name == PROVIDER), None)
    if provider is None or provider.checksum_type != "sha256":
        raise GoldboxError(f"{target.metadata_url}: version {entry.version} has no "
                           f"{PROVIDER} box with a sha256 checksum")
    return Candidate(metadata.name, entry.version, provider.url, provider.checksum)


def download_box(candidate: Candidate, dest: Path) -> Path:
    """The box itself (for the suite's look inside it), checked against its sha256."""
    box = dest / candidate.box_url.rsplit("/", 1)[1]
    digest = hashlib.sha256()
    with open(box, "wb") as out:
        if is_url(candidate.box_url):
            for chunk in _get(candidate.box_url, stream=True).iter_content(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        else:
            with open(_local_path(candidate.box_url), "rb") as source:
                while chunk := source.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != candidate.sha256:
        raise GoldboxError(f"{candidate.box_url}: sha256 {digest.hexdigest()}, the catalog "
                           f"says {candidate.sha256}")
    return box


def read_published_manifest(candidate: Candidate) -> dict:
    url = candidate.manifest_url
    try:
        text = _get(url).text if is_url(url) else _local_path(url).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise GoldboxError(f"{url}: cannot read the published manifest: {exc}") from None
    return parse_manifest(text, url).model_dump(exclude_none=True)


def trial_config(config: Config, candidate: Candidate) -> Config:
    """The project's config with the box pinned to the candidate's name and version."""
    box = config.project.box.model_copy(update={"name": candidate.box,
                                                "version": candidate.version})
    return config.model_copy(update={"project": config.project.model_copy(
        update={"box": box})})


def run_vagrant(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = proc.capture(["vagrant", *args], cwd=cwd, env=env, check=False)
    if result.returncode != 0:
        raise GoldboxError(f"`vagrant {' '.join(args)}` (in {cwd}) failed: "
                           f"{(result.stderr or result.stdout).strip().splitlines()[-1:]}")
    return result.stdout


def try_from_catalog(config: Config, platform: Platform, target: Target, work: Path,
                     check: Callable[[Path, dict, Path, Path], list], *,
                     run: Run = run_vagrant, libvirt_driver: str = "qemu",
                     remove_volume: Callable[[str, str], None] | None = None,
                     progress: Callable[[str], None] = print) -> tuple[Candidate, list]:
    """Add, boot, check and destroy the catalog's box in `work`; returns the candidate and
    the suite's results. `check(ssh_config, manifest, box, plan)` runs the suite;
    `remove_volume(box, version)` drops the copy vagrant-libvirt keeps in its pool."""
    from goldbox.render import RenderOptions, render_platform
    from goldbox.vm import _delete_libvirt_volume

    remove_volume = remove_volume or _delete_libvirt_volume

    candidate = choose(target)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    home = work / "vagrant.d"  # nothing of the host's Vagrant is used or changed
    env = {**os.environ, "VAGRANT_HOME": str(home), "VAGRANT_DEFAULT_PROVIDER": PROVIDER,
           "VAGRANT_CHECKPOINT_DISABLE": "1"}
    rendered = render_platform(trial_config(config, candidate), platform, work,
                               RenderOptions(libvirt_driver=libvirt_driver))
    manifest = read_published_manifest(candidate)
    box = download_box(candidate, work)
    progress(f"adding {candidate.box} {candidate.version} through {target.metadata_url}")
    run(["box", "add", target.metadata_url, "--box-version", candidate.version,
         "--provider", PROVIDER], work, env)
    try:
        progress(f"booting {candidate.box} {candidate.version}")
        run(["up", "--provider", PROVIDER], work, env)
        ssh_config = work / "ssh-config"
        ssh_config.write_text(run(["ssh-config"], work, env))
        results = check(ssh_config, manifest, box, rendered.plan)
    finally:
        box.unlink(missing_ok=True)  # a copy for the suite only
        run(["destroy", "--force"], work, env)
        run(["box", "remove", candidate.box, "--box-version", candidate.version,
             "--provider", PROVIDER, "--force"], work, env)
        remove_volume(candidate.box, candidate.version)
    return candidate, results

"""One build of one platform: the validated config, the platform, the cache and every
path the build reads or writes, made once and passed through the phases of `invoke
image` (as mkosi passes its Context through its steps). No phase rebuilds a path from
(config, platform) on its own, so the layout below is the only one:

    build/<p>/image.lock          held by the one `invoke image` of <p> in this checkout
    build/<p>/logs/image-*.log    each run's full log
    build/<p>/prebuilt.json       what the last native build made (`invoke render` reads it)
    build/<p>/work/               wheelhouse, stage folders, packer's output and box
    dist/<p>/                     the finished box, manifest.json, plan.json
    dist/.<p>.partial/            the next dist/<p>/ while it is assembled

A build of another architecture (`arch`: arm64 for target libvirt/arm64) has its own
work folder (build/<p>/work-arm64/), native build record (prebuilt-arm64.json), and box,
manifest and plan in dist/<p>/ named by its target (goldbox/targets.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from goldbox import locks
from goldbox.arch import AMD64, Architecture
from goldbox.cache import Cache
from goldbox.config import Config, Platform
from goldbox.errors import GoldboxError
from goldbox.targets import PRIMARY_MANIFEST, Target

PROVIDER = "libvirt"  # what `invoke up` boots (vagrant-libvirt)
# Packer builder -> (packer source type, Vagrant provider of the box it makes)
BUILDERS = {"qemu": ("qemu", "libvirt"), "virtualbox": ("virtualbox-iso", "virtualbox")}


def dist_dir(config: Config, platform: Platform) -> Path:
    return config.dist_dir / platform.name


@dataclass(frozen=True)
class Context:
    config: Config
    platform: Platform
    builder: str = "qemu"
    arch: Architecture = AMD64
    stamp: str = field(default_factory=lambda: datetime.datetime.now(datetime.UTC)
                       .strftime("%Y%m%dT%H%M%SZ"))

    def __post_init__(self) -> None:
        if self.builder not in self.platform.builders:
            raise GoldboxError(
                f"--builder {self.builder!r}: platform {self.platform.name} has builders "
                f"{', '.join(self.platform.builders)} (platforms/{self.platform.name}.toml)")

    @functools.cached_property
    def cache(self) -> Cache:
        remote = None
        if self.config.project.cache.remote:  # a team cache (oras is imported only then)
            from goldbox.cache_remote import open_remote
            remote = open_remote(self.config)
        return Cache(self.config.cache_dir, remote=remote)

    @property
    def root(self) -> Path:
        return self.config.root

    @property
    def provider(self) -> str:
        return BUILDERS[self.builder][1]

    @property
    def source_type(self) -> str:
        return BUILDERS[self.builder][0]

    @property
    def build(self) -> Path:
        return self.config.build_dir / self.platform.name

    def for_arch(self, arch: Architecture) -> Context:
        """This build for another architecture: the same run (its stamp, so one log) and
        the same Cache object, whose record of the entries used (`invoke cache --prune`
        keeps them) then covers every architecture's."""
        other = dataclasses.replace(self, arch=arch)
        other.__dict__["cache"] = self.cache  # functools.cached_property's own slot
        return other

    @property
    def target(self) -> Target:
        return Target(self.provider, self.arch.name)

    @property
    def primary(self) -> bool:
        """The host's own architecture: the build `invoke up` and `verify` use."""
        return self.arch is AMD64

    def _arch_suffix(self, separator: str = "-") -> str:
        return "" if self.primary else f"{separator}{self.arch.name}"

    @property
    def work(self) -> Path:
        return self.build / f"work{self._arch_suffix()}"

    @property
    def render_dir(self) -> Path:
        """Where the golden build's templates are rendered: build/<p>/ (`invoke up` reads
        its Vagrantfile), or a folder of the architecture's own."""
        return self.build if self.primary else self.build / f"render-{self.arch.name}"

    @property
    def log(self) -> Path:
        return self.build / "logs" / f"image-{self.stamp}.log"

    @property
    def wheelhouse(self) -> Path:
        return self.work / "wheelhouse"

    @property
    def stage(self) -> Path:
        return self.work / "stage"

    @property
    def prebuilt_record(self) -> Path:
        """What the last native build made, for `invoke render` (goldbox/native.py)."""
        return self.build / f"prebuilt{self._arch_suffix()}.json"

    @property
    def packer_output(self) -> Path:
        return self.work / "packer-output"

    @property
    def packer_box(self) -> Path:
        """Where packer's vagrant post-processor writes the box."""
        return self.work / "box" / self.box_file

    @property
    def dist(self) -> Path:
        return dist_dir(self.config, self.platform)

    @property
    def dist_partial(self) -> Path:
        return self.dist.with_name(f".{self.dist.name}.partial")

    @property
    def box_file(self) -> str:
        box = self.config.project.box
        return self.target.box_file(box.name, box.version)

    @property
    def box(self) -> Path:
        return self.dist / self.box_file

    @property
    def manifest(self) -> Path:
        return self.dist / (PRIMARY_MANIFEST if self.primary else self.target.manifest_name)

    @property
    def plan_file(self) -> str:
        """The name in dist/<p>/ of the plan baked into the box (`invoke verify` reads it)."""
        return self.target.plan_name

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold build/<p>/image.lock: one `invoke image` per platform and checkout, since
        two would delete and rewrite each other's work folder and dist/ output."""
        lock_file = self.build / "image.lock"
        with locks.exclusive(lock_file, wait=False) as holder:
            if holder is not None:
                raise GoldboxError(
                    f"another `invoke image` (pid {holder}) is building {self.platform.name} "
                    f"in this checkout ({lock_file} is locked): wait for it or stop it")
            yield

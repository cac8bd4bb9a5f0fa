"""Build targets: which boxes `invoke image` makes of one platform, each a Vagrant
provider and a guest architecture (`box.targets` in goldbox.toml, `invoke image --target`).

A target's box lies in dist/<platform>/ with a manifest of its own: libvirt/amd64 keeps
today's names (`<box>-<version>-libvirt.box`, `manifest.json`, what `invoke up` and
`verify` read), any other target is `<box>-<version>-<provider>[-<arch>].box` beside
`manifest.<provider>-<arch>.json`. `invoke publish` lists every manifest there as one
version of the box.

Targets share every phase they have in common: both amd64 boxes come from one golden
disk (the golden build makes the libvirt box; the VirtualBox box is converted from its
disk, goldbox/vbox.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from goldbox.errors import GoldboxError

PROVIDERS = ("libvirt", "virtualbox")
ARCHITECTURES = ("amd64", "arm64")
TARGET = re.compile(r"^(?P<provider>libvirt|virtualbox)/(?P<arch>amd64|arm64)\Z")
TARGET_EXPECTED = (f"<provider>/<arch> with provider {' or '.join(PROVIDERS)} and arch "
                   f"{' or '.join(ARCHITECTURES)}, e.g. libvirt/amd64")
DEFAULT_TARGETS = ["libvirt/amd64"]
# What this build can make today; the others of TARGET are refused up front.
BUILDABLE = ("libvirt/amd64", "virtualbox/amd64", "libvirt/arm64")
# Debian's kernel flavours without the e1000 driver of VirtualBox's default NIC.
KERNELS_WITHOUT_E1000 = ("linux-image-cloud-amd64",)
PRIMARY_MANIFEST = "manifest.json"


@dataclass(frozen=True, order=True)
class Target:
    provider: str
    arch: str

    @property
    def name(self) -> str:
        return f"{self.provider}/{self.arch}"

    @property
    def primary(self) -> bool:
        """libvirt/amd64: the golden build's own box, named as before targets existed."""
        return self.name == DEFAULT_TARGETS[0]

    def box_file(self, box: str, version: str) -> str:
        arch = "" if self.arch == "amd64" else f"-{self.arch}"
        return f"{box}-{version}-{self.provider}{arch}.box"

    @property
    def manifest_name(self) -> str:
        return PRIMARY_MANIFEST if self.primary else f"manifest.{self.provider}-{self.arch}.json"

    @property
    def plan_name(self) -> str:
        """The plan baked into the golden box of this target's architecture (`invoke
        verify` checks the VM against it): plan.json for amd64."""
        return "plan.json" if self.arch == "amd64" else f"plan-{self.arch}.json"


def parse_target(value: str, key: str) -> Target:
    match = TARGET.fullmatch(value)
    if not match:
        raise GoldboxError(f"{key} = {value!r}: expected {TARGET_EXPECTED}")
    return Target(match["provider"], match["arch"])


def buildable_targets(values: list[str], key: str) -> list[Target]:
    """The targets named in `values` (each once, in order), or one GoldboxError naming
    `key` and the first this build cannot make, before anything runs."""
    targets: list[Target] = []
    for value in values:
        target = parse_target(value, key)
        if target.name not in BUILDABLE:
            raise GoldboxError(f"{key} = {value!r}: this build cannot make {target.name} yet "
                               f"(supported: {', '.join(BUILDABLE)})")
        if target not in targets:
            targets.append(target)
    if not targets:
        raise GoldboxError(f"{key}: no target (supported: {', '.join(BUILDABLE)})")
    return targets


def check_kernel(targets: list[Target], kernel_package: str | None, label: str) -> None:
    """A VirtualBox box boots on VirtualBox's default NIC, an Intel PRO/1000 (e1000):
    a kernel without its driver makes a box that never answers on SSH."""
    if kernel_package in KERNELS_WITHOUT_E1000 and Target("virtualbox", "amd64") in targets:
        raise GoldboxError(
            f"{label}: source.kernel_package = {kernel_package!r} and target virtualbox/amd64: "
            "that kernel has no e1000 driver (VirtualBox's NIC); use linux-image-amd64")


def built_manifests(dist: Path) -> list[Path]:
    """The manifests of every target built into `dist` (dist/<platform>/): manifest.json
    first, then the others by name."""
    primary = dist / PRIMARY_MANIFEST
    others = sorted(dist.glob("manifest.*-*.json"))
    return ([primary] if primary.is_file() else []) + [p for p in others if p.is_file()]

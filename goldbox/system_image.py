"""The system image of a debootstrap platform: the base disk with provision's system
steps done (repositories, packages, CPython), made natively and kept as a cache entry of
kind "system-image"; the golden build starts from it.

No VM makes it (a packer boot under TCG did, a minute and more of both cores): the tree
the base disk was made of (its entry keeps it as a tar) is unpacked into a scratch
folder, the system steps run in a chroot of it with the same plan the guest would get
(repositories and packages find everything installed: the base disk installed the
runtime packages with that same code; python unpacks CPython's bundle), and the disk is
made by the base disk's own code, with its file system ids: the same grub
configuration boots it.

Its plan is rendered once, as soon as CPython's bundle is there (it needs nothing the
native build makes after the bundle), and its identity computed once from it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from goldbox.basedisk import ROOTFS_TAR, make_disk, provision_natively, unpack_base_rootfs
from goldbox.cache import Check, Entry
from goldbox.config import DebootstrapSource
from goldbox.context import Context
from goldbox.plan import SYSTEM_STEPS, Prebuilt
from goldbox.plan_model import read_plan
from goldbox.recipe import goldbox_code, provision_code
from goldbox.render import Rendered, RenderOptions, render_platform
from goldbox.stage import system_files

# The goldbox code that makes a system image (the policy: goldbox/recipe.py): the disk
# and the chroot's provisioning are the base disk's code.
_CODE = ("system_image", "stage", "basedisk", "chroot_provision")


@dataclass(frozen=True)
class SystemPlan:
    """The system image's rendered plan, and the identity it gives it."""

    rendered: Rendered
    identity: dict


def render_system_plan(ctx: Context, options: RenderOptions, base: Entry) -> SystemPlan:
    """Render the system image's plan (once per run, into a folder of its own) and
    compute its identity: the base disk (its entry's key, which names the disk's layout,
    and the recorded sha256 of the tree it was made of), the code of provision's system
    steps and the plan's system sections (which carry the CPython bundle's or tarball's
    sha256)."""
    assert isinstance(ctx.platform.source, DebootstrapSource), \
        f"{ctx.platform.name} has no system image"
    prebuilt = options.prebuilt or Prebuilt()
    only_system = RenderOptions(packer_version=options.packer_version,
                                libvirt_driver=options.libvirt_driver,
                                prebuilt=Prebuilt(python_bundle=prebuilt.python_bundle))
    rendered = render_platform(ctx.config, ctx.platform, ctx.work / "system-render", only_system)
    plan = read_plan(rendered.plan).model_dump(exclude_unset=True)
    return SystemPlan(rendered, {
        "code": goldbox_code(*_CODE),
        "platform": ctx.platform.name,
        "base": {"key": base.key, "rootfs": base.sha256(ROOTFS_TAR)},
        "provision": provision_code(SYSTEM_STEPS),
        "plan": {key: plan[key] for key in ("format", "family", "adapters", "stage_dir",
                                            *SYSTEM_STEPS)},
    })


def ensure_system_image(ctx: Context, system: SystemPlan, files: list[Path],
                        full_base: Callable[[], Entry], check: Check) -> Entry:
    """The system image for `system`, from the cache (check="size" beside the native
    build; "full" where packer uses it) or made natively from the base disk `full_base()`
    returns (every byte of it checked) with `files` (CPython's bundle or tarball)
    staged."""
    label = ctx.platform.name if ctx.primary else f"{ctx.platform.name}-{ctx.arch.name}"
    image = f"{label}-system.qcow2"
    plan_file = system.rendered.plan

    def make(folder: Path) -> None:
        base = full_base()
        with ctx.cache.scratch("system-image") as work:
            root = unpack_base_rootfs(base, work / "rootfs", log=ctx.log)
            provision_natively(root, json.loads(plan_file.read_text()), list(SYSTEM_STEPS),
                               label=str(plan_file), prefix="system image",
                               files=system_files(plan_file, files, ctx.wheelhouse),
                               log=ctx.log)
            make_disk(root, work / "disk.raw", folder / image, base.record["identity"],
                      log=ctx.log)

    return ctx.cache.ensure("system-image", system.identity, make, name=label, check=check,
                            summary=f"{label} system image (packages, CPython)")

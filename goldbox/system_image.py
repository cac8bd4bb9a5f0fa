"""The system image of a debootstrap platform: the base disk with provision's system
steps done (repositories, packages, CPython), built by packer once and kept as a cache
entry of kind "system-image"; the golden build starts from it.

Its plan is rendered once, as soon as CPython's bundle is there (it needs nothing the
native build makes after the bundle), and its identity computed once from it."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from goldbox.cache import Check, Entry
from goldbox.console import silence_limit
from goldbox.context import Context
from goldbox.files import sha256_file
from goldbox.packer import console_log, packer_build
from goldbox.plan import SYSTEM_STEPS, Prebuilt
from goldbox.plan_model import read_plan
from goldbox.recipe import goldbox_code, provision_code
from goldbox.render import Rendered, RenderOptions, packer_source_name, render_platform
from goldbox.stage import system_stage

# The goldbox code that makes a system image (the policy: goldbox/recipe.py); the
# template it is built from is in its identity as rendered.
_CODE = ("system_image", "stage", "packer")


@dataclass(frozen=True)
class SystemPlan:
    """The system image's rendered template and plan, and the identity they give it."""

    rendered: Rendered
    identity: dict


def render_system_plan(ctx: Context, options: RenderOptions, base: Entry) -> SystemPlan:
    """Render the system image's template and plan (once per run, into a folder of its
    own) and compute its identity: its template, the base disk, the code of provision's
    system steps and the plan's system sections (which carry the CPython bundle's or
    tarball's sha256)."""
    prebuilt = options.prebuilt or Prebuilt()
    only_system = RenderOptions(packer_version=options.packer_version,
                                libvirt_driver=options.libvirt_driver,
                                prebuilt=Prebuilt(python_bundle=prebuilt.python_bundle))
    rendered = render_platform(ctx.config, ctx.platform, ctx.work / "system-render", only_system)
    assert rendered.system_template, f"{ctx.platform.name} has no system image"
    plan = read_plan(rendered.plan).model_dump(exclude_unset=True)
    return SystemPlan(rendered, {
        "code": goldbox_code(*_CODE),
        "platform": ctx.platform.name,
        "template": sha256_file(rendered.system_template),
        "base": base.sha256(),
        "provision": provision_code(SYSTEM_STEPS),
        "plan": {key: plan[key] for key in ("format", "family", "adapters", "stage_dir",
                                            *SYSTEM_STEPS)},
    })


def ensure_system_image(ctx: Context, system: SystemPlan, files: list[Path],
                        accelerator: str, full_base: Callable[[], Entry],
                        check: Check) -> Entry:
    """The system image for `system`, from the cache (check="size" beside the native
    build; "full" where packer uses it) or built from the base disk `full_base()`
    returns (every byte of it checked) with `files` (CPython's bundle or tarball)
    staged."""
    image = f"{ctx.platform.name}-system.qcow2"
    rendered = system.rendered
    assert rendered.system_template

    def make(folder: Path) -> None:
        base = full_base()
        stage = system_stage(ctx.root, ctx.system_stage, rendered.plan, files, ctx.wheelhouse)
        output = folder / "packer-output"
        assert rendered.system_template
        packer_build(rendered.system_template, {
            "base_image": str(base.file()), "base_image_sha256": base.sha256(),
            "accelerator": accelerator, "stage_dir": str(stage), "output_dir": str(output),
        }, f"qemu.{packer_source_name(ctx.platform)}", ctx.log,
            console_log(ctx.log, "system"), silence_limit(accelerator))
        (output / image).rename(folder / image)
        shutil.rmtree(output)

    return ctx.cache.ensure("system-image", system.identity, make, name=ctx.platform.name,
                            check=check,
                            summary=f"{ctx.platform.name} system image (packages, CPython)")

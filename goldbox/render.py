"""Render every template a platform needs into build/<platform>/, deterministically.

Same inputs, byte-identical output: no timestamps, sorted JSON, StrictUndefined so a
missing variable is an error instead of an empty string.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import jinja2

from goldbox.config import BOX_DISK_GIB, Config, IsoSource, Platform
from goldbox.errors import GoldboxError
from goldbox.files import write_atomically
from goldbox.keys import insecure_public_key
from goldbox.plan import (
    STAGE_DIR,
    UWSGI_INI_PATH,
    UWSGI_SERVICE,
    Prebuilt,
    build_plan,
    python_binary,
    uwsgi_socket,
)
from goldbox.plan_model import check_plan

PACKER_TEMPLATES = {"debootstrap": "packer/debootstrap.pkr.hcl.j2", "iso": "packer/iso.pkr.hcl.j2"}
UWSGI_UNIT_TEMPLATES = {"systemd": "configs/uwsgi.service.j2", "sysv": "configs/uwsgi.sysv.j2"}


@dataclass(frozen=True)
class VmKey:
    """The SSH key `invoke up` gives its VM (goldbox/vm.py): Vagrant logs in with
    `private`; the guest authorizes `public`, read from the systemd `credential` the
    domain carries in an SMBIOS OEM string (goldbox/basedisk.py SSH_KEY_UNIT)."""

    private: Path
    public: str
    credential: str


@dataclass(frozen=True)
class RenderOptions:
    """Inputs that come from the host rather than from the config files."""

    packer_version: tuple[int, int, int] = (1, 6, 6)
    libvirt_driver: str = "qemu"  # "kvm" when the acceleration probe passes
    prebuilt: Prebuilt | None = None
    cleanup: bool = True
    # The libvirt domain's name is this + "default" (vagrant-libvirt's default_prefix);
    # None: the folder's name + "_", as vagrant-libvirt names it.
    domain_prefix: str | None = None
    # The guest's architecture (Debian's name), and the name the box is added to Vagrant
    # under (None: the box's own name).
    arch: str = "amd64"
    box_name: str | None = None
    # None: Vagrant logs in with its insecure key and swaps it for one of its own.
    ssh_key: VmKey | None = None


@dataclass(frozen=True)
class Rendered:
    """Paths of what `render_platform` wrote."""

    directory: Path
    packer_template: Path
    vagrantfile: Path
    plan: Path
    nginx_conf: Path
    uwsgi_ini: Path
    uwsgi_unit: Path
    answer_file: Path | None
    # systemd platforms: the sandbox drop-in for the distribution's nginx.service.
    nginx_dropin: Path | None = None

    def files(self) -> list[Path]:
        return [p for p in vars(self).values() if isinstance(p, Path) and p != self.directory]


def ruby_string(value: object) -> str:
    """A single-quoted Ruby literal of `value`: in '...' Ruby reads only \\ and \\' as
    escapes and interpolates nothing (a double-quoted string, and so `tojson`, would run
    a `#{...}` inside it)."""
    text = str(value)
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def hcl_text(value: object) -> str:
    """The inside of an HCL2 quoted string holding `value` as it is: JSON's escapes (HCL
    reads the same), and `${` / `%{` doubled, which HCL would otherwise interpolate. For
    a comment, too: a newline in it becomes `\\n`, so the comment cannot end early."""
    escaped = json.dumps(str(value), ensure_ascii=False)[1:-1]
    return escaped.replace("${", "$${").replace("%{", "%%{")


def hcl_string(value: object) -> str:
    """A quoted HCL2 string holding `value` as it is (see `hcl_text`)."""
    return f'"{hcl_text(value)}"'


def _environment(root: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters.update(ruby=ruby_string, hcl=hcl_string, hcl_text=hcl_text,
                       sh=shlex.quote)
    return env


def _render(env: jinja2.Environment, template: str, context: dict) -> str:
    try:
        return env.get_template(template).render(context)
    except jinja2.TemplateNotFound as exc:
        raise GoldboxError(f"{template}: template not found ({exc.name})") from None
    except jinja2.UndefinedError as exc:
        raise GoldboxError(f"{template}: {exc.message}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise GoldboxError(f"{exc.name or template}:{exc.lineno}: {exc.message}") from None


def render_template(root: Path, template: str, context: dict) -> str:
    """One template of the project (a path below `root`) with goldbox's filters."""
    return _render(_environment(root), template, context)


def packer_source_name(platform: Platform) -> str:
    """The platform's name as a Packer source label: packer 1.6's -only splits on dots."""
    return platform.name.replace(".", "_")


def _context(config: Config, platform: Platform, options: RenderOptions) -> dict:
    return {
        "project": config.project,
        "platform": platform,
        "stage_dir": STAGE_DIR,
        "uwsgi_ini_path": UWSGI_INI_PATH,
        "python_binary": python_binary(platform),
        "uwsgi_service": UWSGI_SERVICE,
        "uwsgi_socket": uwsgi_socket(config, platform),
        "source_name": packer_source_name(platform),
        "base_disk_mb": BOX_DISK_GIB * 1024,
        "libvirt_driver": options.libvirt_driver,
        "domain_prefix": options.domain_prefix,
        "arch": options.arch,
        "box_name": options.box_name or config.project.box.name,
        "ssh_key": options.ssh_key,
        "packer": {
            "version": ".".join(map(str, options.packer_version)),
            # packer >= 1.7 ships builders as plugins, installed by `packer init`.
            "required_plugins": options.packer_version >= (1, 7, 0),
        },
    }


def render_vagrantfile(config: Config, platform: Platform, out_dir: Path,
                       options: RenderOptions | None = None) -> Path:
    """Only the Vagrantfile (what `invoke up` needs), into `out_dir`."""
    context = _context(config, platform, options or RenderOptions())
    path = out_dir / "Vagrantfile"
    write_atomically(path, _render(_environment(config.root), "vagrant/Vagrantfile.j2", context))
    return path


def render_platform(
    config: Config, platform: Platform, out_dir: Path | None = None,
    options: RenderOptions | None = None,
) -> Rendered:
    """Render the packer template, answer file, Vagrantfile, guest configs and plan.json
    of `platform` into `out_dir` (default build/<platform>/). Renders everything in
    memory first, so a template error leaves the folder as it was."""
    options = options or RenderOptions()
    out_dir = out_dir or config.build_dir / platform.name
    env = _environment(config.root)
    context = _context(config, platform, options)
    guest = {
        "nginx": _render(env, "configs/nginx.conf.j2", context),
        "uwsgi_ini": _render(env, "configs/uwsgi.ini.j2", context),
        "uwsgi_unit": _render(env, UWSGI_UNIT_TEMPLATES[platform.service_manager], context),
    }
    if platform.service_manager == "systemd":
        guest["nginx_dropin"] = _render(env, "configs/nginx-hardening.conf.j2", context)
    plan = build_plan(config, platform, guest, options.prebuilt, cleanup=options.cleanup)
    check_plan(plan, f"plan.json of {platform.name}")  # the contract provision/ relies on
    outputs: dict[str, tuple[str, str, int]] = {
        "packer_template": (f"{platform.name}.pkr.hcl",
                            _render(env, PACKER_TEMPLATES[platform.source.kind], context), 0o644),
        "vagrantfile": ("Vagrantfile", _render(env, "vagrant/Vagrantfile.j2", context), 0o644),
        "plan": ("plan.json", json.dumps(plan, indent=2, sort_keys=True) + "\n", 0o644),
        "nginx_conf": ("nginx-goldbox.conf", guest["nginx"], 0o644),
        "uwsgi_ini": ("uwsgi.ini", guest["uwsgi_ini"], 0o644),
        "uwsgi_unit": (PurePosixPath(plan["uwsgi"]["files"][1]["path"]).name,
                       guest["uwsgi_unit"], 0o755 if platform.service_manager == "sysv" else 0o644),
    }
    if "nginx_dropin" in guest:
        outputs["nginx_dropin"] = ("nginx-goldbox-hardening.conf", guest["nginx_dropin"], 0o644)
    if isinstance(platform.source, IsoSource):
        name = Path(platform.source.answer_file).name.removesuffix(".j2")
        answer_context = {**context, "vagrant_public_key": insecure_public_key()}
        outputs["answer_file"] = (f"http/{name}",
                                  _render(env, platform.source.answer_file, answer_context), 0o644)
    for relative, text, mode in outputs.values():
        write_atomically(out_dir / relative, text, mode)
    paths = {name: out_dir / relative for name, (relative, _, _) in outputs.items()}
    answer_file = paths.pop("answer_file", None)
    return Rendered(directory=out_dir, answer_file=answer_file,
                    nginx_dropin=paths.pop("nginx_dropin", None), **paths)

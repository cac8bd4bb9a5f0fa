"""Check rendered files with their real tools: packer, vagrant, nginx."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from goldbox import proc
from goldbox.errors import GoldboxError
from goldbox.keys import insecure_private_key

VARIABLE = re.compile(r'^variable\s+"([^"]+)"\s*\{(.*?)^\}', re.S | re.M)


def _check(argv: list[str], cwd: Path, what: str) -> str:
    result = proc.capture(argv, cwd=cwd, check=False, timeout=300)
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        raise GoldboxError(f"{what}: `{' '.join(argv)}` failed ({result.returncode}): {output}")
    return output


def declared_variables(template: Path) -> set[str]:
    """The names of the `variable` blocks of an HCL2 template."""
    return {name for name, _ in VARIABLE.findall(template.read_text())}


def packer_placeholder_vars(template: Path, scratch: Path) -> dict[str, str]:
    """Values for the template's variables that have no default, enough for `packer
    validate` to check everything else: zeros for checksums, the real insecure key, an
    output folder that does not exist yet, existing folders and files for other paths."""
    placeholder = scratch / "placeholder"
    placeholder.write_text("")
    values = {}
    for name, body in VARIABLE.findall(template.read_text()):
        if "default" in body:
            continue
        if "sha256" in name or "checksum" in name:
            values[name] = "0" * 64
        elif name.endswith("key_file"):
            values[name] = str(insecure_private_key())
        elif name.endswith("_dir") and "output" in name:
            values[name] = str(scratch / "output")
        elif name.endswith("_dir"):
            values[name] = str(scratch)
        else:
            values[name] = str(placeholder)
    return values


def packer_validate(template: Path, only: str | None = None) -> str:
    with tempfile.TemporaryDirectory() as scratch:
        values = packer_placeholder_vars(template, Path(scratch))
        argv = ["packer", "validate"]
        if only:
            argv.append(f"-only={only}")
        for name, value in sorted(values.items()):
            argv += ["-var", f"{name}={value}"]
        return _check([*argv, template.name], template.parent, str(template))


def vagrant_validate(vagrantfile: Path) -> str:
    return _check(["vagrant", "validate"], vagrantfile.parent, str(vagrantfile))


def nginx_test(site_conf: Path) -> str:
    """`nginx -t` of the site config inside an http block like the distribution's."""
    with tempfile.TemporaryDirectory() as scratch:
        conf_dir = Path(scratch)
        for name in ("mime.types", "uwsgi_params"):
            shutil.copy(Path("/etc/nginx") / name, conf_dir / name)
        (conf_dir / "nginx.conf").write_text(
            f"events {{}}\nhttp {{\n    include mime.types;\n    include {site_conf};\n}}\n")
        return _check(["nginx", "-t", "-p", scratch, "-c", str(conf_dir / "nginx.conf"),
                       "-g", f"pid {scratch}/nginx.pid; error_log {scratch}/error.log;"],
                      conf_dir, str(site_conf))

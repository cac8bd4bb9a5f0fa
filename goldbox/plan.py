"""The JSON plan that `provision/` runs in the guest (shape: docs/contracts.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

from goldbox.config import Config, Platform

STAGE_DIR = "/tmp/goldbox-stage"
PLAN_FORMAT = 1
UWSGI_SERVICE = "goldbox-uwsgi"
UWSGI_INI_PATH = "/etc/goldbox/uwsgi.ini"
# systemd makes /run/<this> at each start of the uWSGI unit (RuntimeDirectory=).
UWSGI_RUNTIME_DIRECTORY = "goldbox-uwsgi"
NGINX_DROPIN_PATH = "/etc/systemd/system/nginx.service.d/goldbox-hardening.conf"
# provision's steps that make the system image, the same for every app: the golden
# stage then starts from that image, so a change to the app alone does not redo them.
SYSTEM_STEPS = ("repositories", "packages", "python")


@dataclass(frozen=True)
class StagedFile:
    """A file the host staged beside the plan, verified again in the guest."""

    file: str  # relative to the stage folder
    sha256: str


@dataclass(frozen=True)
class Prebuilt:
    """What the host compiled natively so the guest only installs it (issue: TCG is slow)."""

    python_bundle: StagedFile | None = None
    wheels: list[StagedFile] = field(default_factory=list)
    # The app's virtualenv, built in the chroot at the guest's path (app.env_bundle).
    app_env: StagedFile | None = None


def uwsgi_unit_path(platform: Platform) -> tuple[str, str]:
    """Where the uWSGI service definition goes, and its mode."""
    if platform.service_manager == "systemd":
        return f"/etc/systemd/system/{UWSGI_SERVICE}.service", "0644"
    return f"/etc/init.d/{UWSGI_SERVICE}", "0755"


def uwsgi_socket(config: Config, platform: Platform) -> dict:
    """Where uWSGI listens and who may connect: the plan's `uwsgi.socket`."""
    if config.uwsgi_socket(platform) == "tcp":
        return {"kind": "tcp", "address": f"127.0.0.1:{config.project.ports.uwsgi}"}
    return {"kind": "unix", "runtime_directory": UWSGI_RUNTIME_DIRECTORY,
            "directory_mode": "0711",
            "path": f"/run/{UWSGI_RUNTIME_DIRECTORY}/uwsgi.sock",
            "owner": config.project.app.user, "group": platform.nginx.user, "mode": "0660"}


def python_binary(platform: Platform) -> str:
    """The interpreter `make altinstall` installs: /usr/local/bin/pythonX.Y."""
    major_minor = ".".join(platform.python.version.split(".")[:2])
    return f"/usr/local/bin/python{major_minor}"


def tarball_name(platform: Platform) -> str:
    return PurePosixPath(platform.python.url).name


def repositories_section(platform: Platform) -> dict:
    """The plan's `repositories`: where the package manager installs from."""
    repos = platform.repositories
    return {
        "apt_sources": repos.apt_sources.lstrip("\n") if repos.apt_sources else None,
        "yum_repos": [repo.model_dump() for repo in repos.yum_repos],
        "disable_repo_files": list(repos.disable_repo_files),
    }


def python_section(platform: Platform, bundle: StagedFile | None) -> dict:
    """The plan's `python`: the CPython to build, or the bundle of it to unpack."""
    python = platform.python
    return {
        "version": python.version,
        "prefix": "/usr/local",
        "binary": python_binary(platform),
        "tarball": tarball_name(platform),
        "sha256": python.sha256,
        "configure_flags": list(python.configure_flags),
        "bundle": {"file": bundle.file, "sha256": bundle.sha256} if bundle else None,
        "pip_bootstrap": python.pip_bootstrap,
    }


def app_section(config: Config, platform: Platform, prebuilt: Prebuilt) -> dict:
    """The plan's `app`: who runs it, where, and the virtualenv it runs in."""
    env = prebuilt.app_env
    return {
        "user": config.project.app.user,
        "group": config.project.app.user,
        "root": config.project.app.root,
        "source": "app",
        "requirements": f"app/{platform.python.requirements}",
        "wheelhouse": "wheelhouse",
        "local_wheels": [{"file": w.file, "sha256": w.sha256} for w in prebuilt.wheels],
        "env_bundle": {"file": env.file, "sha256": env.sha256} if env else None,
        "venv": platform.python.venv,
    }


def build_plan(
    config: Config,
    platform: Platform,
    guest_files: dict[str, str],
    prebuilt: Prebuilt | None = None,
    cleanup: bool = True,
) -> dict:
    """The plan for `platform`. `guest_files` maps the rendered config names
    (nginx, uwsgi_ini, uwsgi_unit, and nginx_dropin under systemd) to their text."""
    project = config.project
    prebuilt = prebuilt or Prebuilt()
    bundle = prebuilt.python_bundle
    # A native build compiles CPython and every sdist of the wheelhouse (uWSGI's): the
    # guest then needs no compiler.
    compiles_nothing = bundle is not None
    unit_path, unit_mode = uwsgi_unit_path(platform)
    nginx_files: list[dict[str, str | bool]] = [
        {"path": platform.nginx.conf_path, "content": guest_files["nginx"], "mode": "0644"}]
    if "nginx_dropin" in guest_files:
        nginx_files.append({"path": NGINX_DROPIN_PATH, "content": guest_files["nginx_dropin"],
                            "mode": "0644", "defines_service": True})
    return {
        "format": PLAN_FORMAT,
        "platform": platform.name,
        "family": platform.family,
        "adapters": {"packages": platform.package_manager, "services": platform.service_manager},
        "stage_dir": STAGE_DIR,
        "repositories": repositories_section(platform),
        "packages": {
            "groups": [] if compiles_nothing else list(platform.packages.groups),
            "build": [] if compiles_nothing else list(platform.packages.build),
            "runtime": list(platform.packages.runtime),
        },
        "python": python_section(platform, bundle),
        "app": app_section(config, platform, prebuilt),
        "uwsgi": {
            "service": UWSGI_SERVICE,
            "socket": uwsgi_socket(config, platform),
            "files": [
                {"path": UWSGI_INI_PATH, "content": guest_files["uwsgi_ini"], "mode": "0644"},
                {"path": unit_path, "content": guest_files["uwsgi_unit"], "mode": unit_mode,
                 "defines_service": True},
            ],
        },
        "nginx": {
            "service": "nginx",
            "files": nginx_files,
            "remove": list(platform.nginx.remove),
        },
        "firewall": {"kind": platform.firewall.kind, "tcp_ports": [project.ports.guest_http]},
        "selinux": {"booleans": dict(platform.selinux.booleans)},
        "cleanup": {"enabled": cleanup, "paths": [STAGE_DIR], "zero_free_space": cleanup},
    }

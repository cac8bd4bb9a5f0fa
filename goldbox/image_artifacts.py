"""What `invoke image` (and `invoke fetch`, `invoke pin`) take from outside: the
platform's CPython tarball, verified, and the app's wheelhouse for the guest's Python."""

from __future__ import annotations

from pathlib import Path

from goldbox.arch import AMD64, Architecture
from goldbox.artifacts import ArtifactCache, build_wheelhouse
from goldbox.cache import Cache
from goldbox.config import Config, Platform
from goldbox.files import remove_tree
from goldbox.plan import tarball_name


def ensure_tarball(config: Config, platform: Platform,
                   cache: Cache | None = None) -> tuple[Path, str]:
    """The platform's CPython tarball from the verified cache, else from the first of its
    sources that serves the pinned sha256 (goldbox.sources); and which one served it."""
    from goldbox.sources import fetch_tarball

    return fetch_tarball(ArtifactCache(cache or config.cache_dir), platform,
                         tarball_name(platform))


def import_artifact(config: Config, platform: Platform, path: Path) -> Path:
    """Add a local copy of the platform's CPython tarball to the cache, if it matches."""
    known = {platform.python.sha256: tarball_name(platform)}
    return ArtifactCache(config.cache_dir).import_file(path, known)


def wheel_python_version(platform: Platform) -> str:
    return ".".join(platform.python.version.split(".")[:2])


def prepare_wheelhouse(config: Config, platform: Platform, dest: Path,
                       log: Path | None, cache: Cache | None = None,
                       arch: Architecture = AMD64) -> list[Path]:
    """The app's pinned packages (and the Python's own tools, where it needs them) for
    the guest's Python version, platform and architecture, hash-checked, in `dest`."""
    remove_tree(dest)
    files = []
    for requirements in filter(None, [platform.python.requirements,
                                      platform.python.tools_requirements]):
        files += build_wheelhouse(
            cache or config.cache_dir, config.app_dir / requirements, dest,
            python_version=wheel_python_version(platform),
            platform_tags=arch.wheel_platforms(platform.python.wheel_platforms), log=log)
    return sorted(files)

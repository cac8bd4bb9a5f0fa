"""A versioned Vagrant box catalog that stock Vagrant reads (`vagrant box add
<catalog>/<box>/metadata.json`, `vagrant box outdated`, `vagrant box update`), with a
release life cycle, channels, per-teammate tokens, nginx serving and a check.

One module per concern:
    layout    where a catalog is and how its tree is laid out
    store     the lock, atomic writes and copies
    metadata  Vagrant metadata and the version states (typed), and the channels
    versions  publish, release, revoke, prune (changes under the lock)
    listing   `invoke boxes`
    tokens    per-teammate read tokens
    sites     the nginx sites rendered for a catalog, and their record (token changes)
    serve     nginx: `invoke catalog-serve` and `--render-only`
    check     `invoke catalog-check`
"""

from goldbox.catalog.layout import (
    LOCK_FILE,
    METADATA,
    STATE_FILE,
    box_file_name,
    catalog_directory,
    catalog_location,
    channel_url_path,
    is_url,
)
from goldbox.catalog.listing import BoxRow, format_table, list_boxes
from goldbox.catalog.metadata import CHANNELS, BoxMetadata, Provider, Version, parse_metadata
from goldbox.catalog.store import catalog_lock
from goldbox.catalog.versions import (
    Published,
    prune,
    publish,
    publish_builds,
    record_verified,
    release,
    revoke,
)
from goldbox.files import PARTIAL_PREFIX

__all__ = [
    "CHANNELS", "LOCK_FILE", "METADATA", "PARTIAL_PREFIX", "STATE_FILE", "BoxMetadata",
    "BoxRow", "Provider", "Version",
    "Published", "box_file_name", "catalog_directory", "catalog_location", "catalog_lock",
    "channel_url_path", "format_table", "is_url", "list_boxes", "parse_metadata", "prune",
    "publish", "publish_builds", "record_verified", "release", "revoke",
]

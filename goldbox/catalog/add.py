"""`invoke add`: a teammate adds a box with stock Vagrant, but only from metadata whose
SSH signature a maintainer's key (in an allowed_signers file) made.

Vagrant checks a box against the sha256 that metadata.json gives, and nothing checks
metadata.json: whoever can change the catalog or the connection could change both. So
goldbox fetches the metadata and its signature (the metadata URL + `.sig`), verifies
them (goldbox.signing), and hands Vagrant the VERIFIED copy from a local file: Vagrant
downloads the box named there and checks it against the signed sha256. A catalog on
plain http is then as safe to add from as one on https (the token aside: the token
rule of goldbox.catalog.client applies, as to every read of a catalog).

Afterwards the installed box's `metadata_url` (Vagrant's record of where to look for
updates) is set to the catalog's URL, not the local copy's, so `vagrant box outdated`
reports newer versions as for any box added from a catalog. `vagrant box update` would
then trust the catalog's metadata unverified: `invoke add` again gets the update
verified."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from goldbox import proc, virt
from goldbox.catalog.client import catalog_client
from goldbox.catalog.layout import is_url
from goldbox.catalog.metadata import parse_metadata
from goldbox.errors import GoldboxError
from goldbox.files import write_atomically
from goldbox.signing import SUFFIX, verify

# A short name as Vagrant expands it through VAGRANT_SERVER_URL: ORG/BOX.
SHORT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*/[a-z0-9][a-z0-9._-]*")
DEFAULT_SIGNERS = Path("~/.config/goldbox/allowed_signers")
_ADDED = re.compile(r"Successfully added box '(?P<name>[^']+)' \(v(?P<version>[^)]+)\) "
                    r"for '(?P<provider>[^']+)'")


@dataclass(frozen=True)
class Added:
    name: str
    version: str
    provider: str
    principal: str
    url: str


def metadata_url(target: str, environ: dict[str, str]) -> str:
    """The metadata URL of `target`: a URL as it is, a short name ORG/BOX under
    VAGRANT_SERVER_URL (as Vagrant expands it)."""
    if is_url(target):
        return target
    if not SHORT_NAME.fullmatch(target):
        raise GoldboxError(f"add {target!r}: expected an http(s):// URL of a box's metadata "
                           f"or a short name ORG/BOX (lowercase letters, digits, '.', '_', '-')")
    server = environ.get("VAGRANT_SERVER_URL")
    if not server or not is_url(server):
        raise GoldboxError(f"add {target}: a short name needs VAGRANT_SERVER_URL, the "
                           f"catalog's http(s):// URL (found {server!r})")
    return f"{server.rstrip('/')}/{target}"


def _text(data: bytes, label: str) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise GoldboxError(f"{label}: not UTF-8 text: {exc}") from None


def verified_metadata(url: str, signers: Path, environ: dict[str, str],
                      cacert: Path | None) -> tuple[str, str]:
    """The metadata at `url` and the principal who signed it, or one GoldboxError: no
    metadata, no signature, a foreign key, a signature of other content."""
    client = catalog_client(None, cacert=cacert, environ=environ)
    data = client.read(url)
    if data is None:
        raise GoldboxError(f"{url}: HTTP 404, no such box")
    signature = client.read(url + SUFFIX)
    text = _text(data, url)
    principal = verify(text, None if signature is None else _text(signature, url + SUFFIX),
                       signers, url)
    parse_metadata(text, url)  # signed, and still only what goldbox's allow-lists accept
    return text, principal


def _vagrant_failure(result, url: str) -> GoldboxError:
    output = result.stdout + result.stderr
    if "checksum of the downloaded box did not match" in output:
        return GoldboxError(f"vagrant box add: the box it downloaded does not have the sha256 "
                            f"that the signed metadata ({url}) gives: a swapped or damaged "
                            f"box; nothing was added")
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    return GoldboxError(f"vagrant box add from {url} failed: {(lines or ['no output'])[-1]}")


def add(target: str, signers: Path, *, cacert: Path | None = None,
        provider: str | None = None, environ: dict[str, str] | None = None) -> Added:
    """Verify `target`'s metadata against `signers`, then `vagrant box add` from the
    verified copy; point the installed box's metadata_url at the catalog."""
    environ = dict(os.environ if environ is None else environ)
    url = metadata_url(target, environ)
    text, principal = verified_metadata(url, signers, environ, cacert)
    with tempfile.TemporaryDirectory(prefix="goldbox-add-") as scratch:
        copy = Path(scratch) / "metadata.json"
        copy.write_text(text)
        command = ["vagrant", "box", "add", *(["--cacert", str(cacert)] if cacert else []),
                   *(["--provider", provider] if provider else []), str(copy)]
        result = proc.capture(command, check=False, env=environ)
    added = _ADDED.search(result.stdout)
    if result.returncode != 0 or added is None:
        raise _vagrant_failure(result, url)
    box_dir = virt.box_folder(added["name"], environ)
    # Vagrant reads this file for `box outdated`/`box update`: the catalog, not the copy.
    write_atomically(box_dir / "metadata_url", url)
    return Added(added["name"], added["version"], added["provider"], principal, url)

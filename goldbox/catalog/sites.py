"""The nginx sites goldbox renders for a catalog, and the record of them that lets a
token change reach every one.

A site is two files in one folder: `goldbox-catalog.conf` (the server block, no secret
in it) and, for a private catalog, `goldbox-catalog.tokens` (the token map the site
includes, mode 0600). Every `--render-only` output is recorded in the catalog's
`.goldbox-sites.json`; `catalog-token add|revoke` renders each recorded site again
(atomically) and prints the command that reloads the nginx serving it.

Every value rendered into nginx goes through an allow-list first (paths, listen,
server_name, tokens): nginx has no escaping a value could rely on. The record lies in
the catalog, which others may write, so it is read without following links, typed and
checked on every load, and goldbox only ever overwrites files it rendered for this very
catalog (their first line says so)."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import shlex
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import jinja2
from pydantic import BaseModel, ConfigDict

from goldbox.catalog.store import Progress, catalog_lock, write_file_atomically
from goldbox.catalog.tokens import load_tokens, read_no_follow
from goldbox.config import ORG
from goldbox.errors import GoldboxError
from goldbox.validation import allowed, validated

SITE_FILE = "goldbox-catalog.conf"
# Not *.conf: Debian's nginx includes conf.d/*.conf at the http level; the site includes it.
TOKENS_MAP = "goldbox-catalog.tokens"
SITES_FILE = ".goldbox-sites.json"
_TEMPLATES = Path(__file__).parent / "templates"
_NGINX_PATH = re.compile(r"/[A-Za-z0-9 ._@+,=~/-]*")
_LISTEN = re.compile(r"(?:(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):)?[0-9]{1,5}")
_SERVER_NAME = re.compile(r"[A-Za-z0-9*_.-]+(?: [A-Za-z0-9*_.-]+)*")
EXPECTED = {
    "path": "an absolute path of letters, digits, spaces and . _ @ + , = ~ / -",
    "listen": "PORT or ADDRESS:PORT (goldbox adds `ssl` itself with --cert)",
    "server_name": "host names of letters, digits, '*', '_', '.' or '-', space-separated",
    "org": "an organisation: lowercase letters, digits, '_' or '-'",
}


NginxPath = Annotated[str, allowed(_NGINX_PATH, EXPECTED["path"])]
Listen = Annotated[str, allowed(_LISTEN, EXPECTED["listen"])]
ServerName = Annotated[str, allowed(_SERVER_NAME, EXPECTED["server_name"])]
Org = Annotated[str, allowed(ORG, EXPECTED["org"])]


class Site(BaseModel):
    """One nginx site of a catalog: all it takes to render it again when the tokens
    change, and to name the nginx that serves it."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    directory: NginxPath
    listen: Listen
    server_name: ServerName = "_"
    cert: NginxPath | None = None
    key: NginxPath | None = None
    access_log: NginxPath
    error_log: NginxPath
    # The nginx.conf of the nginx that includes the site (None: nginx's default one).
    nginx_conf: NginxPath | None = None
    insecure_http: bool = False
    # catalog.org: the site answers Vagrant's short names, /<org>/<box>.
    org: Org | None = None

    @property
    def site_file(self) -> Path:
        return Path(self.directory) / SITE_FILE

    @property
    def tokens_file(self) -> Path:
        return Path(self.directory) / TOKENS_MAP

    def reload_command(self) -> str:
        conf = ["-c", self.nginx_conf] if self.nginx_conf else []
        return shlex.join(["nginx", *conf, "-s", "reload"])


class SitesRecord(BaseModel):
    """.goldbox-sites.json: every site `--render-only` wrote for this catalog."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    sites: list[Site] = []


def site_id(catalog_dir: Path) -> str:
    """Names this catalog's nginx variables, so two catalogs' sites can share one nginx."""
    return hashlib.sha256(str(catalog_dir.resolve()).encode()).hexdigest()[:8]


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              trim_blocks=True, lstrip_blocks=True, autoescape=False)


def render_template(name: str, **values) -> str:
    return _environment().get_template(name).render(**values)


def _headers(catalog_dir: Path) -> tuple[str, str]:
    """The first lines of a site and of its token map: how goldbox knows a file there is
    its own, rendered for this catalog, before it overwrites it."""
    identity = site_id(catalog_dir)
    return (f"# goldbox catalog site {identity}\n", f"# goldbox catalog tokens {identity}\n")


def _catalog_root(catalog_dir: Path) -> str:
    root = str(catalog_dir.resolve())
    if not _NGINX_PATH.fullmatch(root):
        raise GoldboxError(f"catalog {root}: nginx cannot be given this path safely; "
                           f"expected {EXPECTED['path']}: move or rename it")
    return root


def render_site(catalog_dir: Path, site: Site, private: bool) -> str:
    """The nginx server block serving `catalog_dir`; a private one includes its token map."""
    return render_template("site.conf.j2", header=_headers(catalog_dir)[0],
                           id=site_id(catalog_dir), root=_catalog_root(catalog_dir),
                           site=site, private=private)


def render_tokens_map(catalog_dir: Path, tokens: dict[str, str]) -> str:
    """The token map a private site includes: tokens only, never teammates' names."""
    return render_template("tokens.conf.j2", header=_headers(catalog_dir)[1],
                           id=site_id(catalog_dir), tokens=sorted(tokens.values()))


def _require_ours(path: Path, header: str) -> None:
    """Refuse to overwrite anything but a regular file goldbox rendered for this catalog
    (a recorded folder may be anyone's: the record lies in the catalog)."""
    data = read_no_follow(path, "a site goldbox rendered", "where a site is rendered")
    if data is None:
        return
    first = data.split(b"\n", 1)[0].decode("utf-8", "replace") + "\n"
    if first != header:
        raise GoldboxError(f"{path}: not a file goldbox rendered for this catalog (its first "
                           f"line is not {header.strip()!r}); refusing to overwrite it")


def write_site(catalog_dir: Path, site: Site) -> None:
    """Render `site` into its folder: the token map first (the site includes it), then the
    site, each atomically, each only over a file goldbox rendered for this catalog."""
    tokens = load_tokens(catalog_dir)
    site_header, tokens_header = _headers(catalog_dir)
    text = render_site(catalog_dir, site, private=tokens is not None)
    _require_ours(site.site_file, site_header)
    _require_ours(site.tokens_file, tokens_header)
    if tokens is not None:
        write_file_atomically(site.tokens_file,
                              render_tokens_map(catalog_dir, tokens).encode(), mode=0o600)
    write_file_atomically(site.site_file, text.encode(), mode=0o644)


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address((host or "").strip("[]")).is_loopback
    except ValueError:
        return False


def _listen_host(listen: str) -> str | None:
    """The address of a listen value; None when it listens on every address."""
    return listen.rsplit(":", 1)[0] if ":" in listen else None


def require_safe_transport(catalog_dir: Path, site: Site, base_url: str | None) -> None:
    """A private catalog's tokens never cross a network in clear text, unless the user
    said --insecure-http: no plain http site listening beyond loopback, and no plain http
    base URL (the URL teammates send their token to) naming another host."""
    if site.cert is not None or site.insecure_http or load_tokens(catalog_dir) is None:
        return
    if not _is_loopback(_listen_host(site.listen)):
        raise GoldboxError(f"catalog {catalog_dir} is private (it has tokens): plain http on "
                           f"{site.listen} would send them in clear text; pass --cert FILE "
                           f"--key FILE, or --insecure-http")
    where = urlsplit(base_url) if base_url else None
    if where is not None and where.scheme == "http" and not _is_loopback(where.hostname):
        raise GoldboxError(f"catalog {catalog_dir} is private (it has tokens), but its base "
                           f"URL {base_url} is plain http on another host: teammates would "
                           f"send their tokens in clear text; use an https base URL "
                           f"(catalog.base_url) or pass --insecure-http")


def _sites_path(catalog_dir: Path) -> Path:
    return catalog_dir / SITES_FILE


def recorded_sites(catalog_dir: Path) -> list[Site]:
    path = _sites_path(catalog_dir)
    data = read_no_follow(path, "the sites goldbox rendered")
    if data is None:
        return []
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise GoldboxError(f"{path}: not valid JSON: {exc}") from None
    return list(validated(SitesRecord, raw, str(path)).sites)


def record_site(catalog_dir: Path, site: Site, progress: Progress = print) -> None:
    """Remember a rendered site (one per folder) so token changes reach it."""
    with catalog_lock(catalog_dir, progress):
        sites = [s for s in recorded_sites(catalog_dir) if s.directory != site.directory]
        record = SitesRecord(sites=[*sites, site])
        write_file_atomically(_sites_path(catalog_dir),
                              (record.model_dump_json(indent=2) + "\n").encode(), mode=0o644)


def rewrite_recorded_sites(catalog_dir: Path, progress: Progress = print) -> list[Site]:
    """After a token change: render every recorded site again and say how to reload it.
    One site that cannot be rewritten does not keep the others on the old tokens."""
    rewritten, failed = [], []
    for site in recorded_sites(catalog_dir):
        if not os.path.isdir(site.directory):
            progress(f"{site.directory}: no longer there; its site was not rewritten")
            continue
        try:
            write_site(catalog_dir, site)
        except GoldboxError as exc:
            progress(str(exc))
            failed.append(site.directory)
            continue
        rewritten.append(site)
        progress(f"rewrote {site.tokens_file}: reload its nginx with `{site.reload_command()}`")
    if failed:
        raise GoldboxError(f"{_sites_path(catalog_dir)}: {len(failed)} recorded site(s) still "
                           f"have the old tokens: {', '.join(failed)} (see above)")
    return rewritten

"""The one HTTP client for everything goldbox reads from a catalog or a Vagrant server
(`invoke boxes`, `add`, `catalog-check`, `catalog-import`, `verify --from-catalog`), and
its one token rule.

The token rule: a read token belongs to exactly one origin (scheme, host and port).
`--token T` belongs to the catalog URL given with it on the command line; otherwise
$VAGRANT_CLOUD_TOKEN belongs to $VAGRANT_SERVER_URL, as Vagrant sends it (without
VAGRANT_SERVER_URL it goes nowhere). A request carries `Authorization: Bearer` only when
its URL has that very origin: never to another host or port, and a redirect to another
origin (https to http on the same host included) arrives without it. Over plain http it
goes only to a loopback address (127.0.0.0/8, ::1, localhost); a catalog on another host
needs https (with --cacert FILE for a CA this host does not trust), else the request is
refused in one line before anything is sent."""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from goldbox.errors import GoldboxError
from goldbox.files import copy_hashing, partial_file

TIMEOUT = 60
CHUNK = 1 << 20
# What `read` accepts: metadata, manifests and plans are small.
MAX_DOCUMENT = 16 << 20
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> str:
    """`scheme://host:port` of `url`, the port always spelled out, lowercase."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        raise GoldboxError(f"{url}: not a valid URL (its port)") from None
    host = (parts.hostname or "").lower()
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Token:
    """A read token and the one origin it may be sent to."""
    value: str = field(repr=False)  # never in a log or a traceback
    origin: str


def token_for(catalog_url: str | None, explicit: str | None = None,
              environ: Mapping[str, str] | None = None) -> Token | None:
    """The token rule (see the module's docstring): `explicit` (--token) for the origin of
    `catalog_url`, else VAGRANT_CLOUD_TOKEN for VAGRANT_SERVER_URL's origin, else none."""
    if explicit:
        if catalog_url is None:
            raise GoldboxError("--token: only with an http(s) catalog URL")
        return Token(explicit, origin(catalog_url))
    environ = os.environ if environ is None else environ
    token, server = environ.get("VAGRANT_CLOUD_TOKEN"), environ.get("VAGRANT_SERVER_URL")
    if token and server:
        return Token(token, origin(server))
    return None


class _BearerToOneOrigin(requests.auth.AuthBase):
    """Adds the token to a request for its origin only (also after every redirect)."""

    def __init__(self, token: Token):
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.pop("Authorization", None)
        url = request.url or ""
        if origin(url) != self.token.origin:
            return request
        if urlsplit(url).scheme.lower() != "https" and not is_loopback(url):
            raise GoldboxError(f"{url}: the catalog token is not sent over plain http to "
                               f"another host (anyone on the way could read it): use the "
                               f"catalog's https:// URL")
        request.headers["Authorization"] = f"Bearer {self.token.value}"
        return request


class _Session(requests.Session):
    def rebuild_auth(self, prepared_request: requests.PreparedRequest,
                     response: requests.Response) -> None:
        """On a redirect: the token again only if the new URL has its origin (requests
        would keep it from http to https of one host, and fall back to ~/.netrc)."""
        prepared_request.headers.pop("Authorization", None)
        if self.auth is not None:
            prepared_request.prepare_auth(self.auth)


class Client:
    """GETs (and HEADs) with timeouts, `cacert` trusted for https, the token rule, and
    every failure one line naming the URL."""

    def __init__(self, token: Token | None = None, cacert: Path | None = None,
                 token_option: bool = False):
        self.session = _Session()
        self.session.auth = _BearerToOneOrigin(token) if token else None
        # Per request: requests lets REQUESTS_CA_BUNDLE override a session's `verify`.
        self.verify: str | bool = str(cacert) if cacert else True
        self.token_option = token_option

    def request(self, method: str, url: str, *, headers: dict[str, str] | None = None,
                stream: bool = False) -> requests.Response:
        """The response whatever its status, except 401: one line saying how to pass a
        token."""
        try:
            response = self.session.request(method, url, headers=headers, timeout=TIMEOUT,
                                            stream=stream, verify=self.verify)
        except requests.RequestException as exc:
            raise GoldboxError(f"cannot read {url}: {exc}") from None
        if response.status_code == 401:
            response.close()
            raise GoldboxError(
                f"{url}: HTTP 401: set VAGRANT_CLOUD_TOKEN to your token and "
                f"VAGRANT_SERVER_URL to the server's URL"
                + (", or pass --token" if self.token_option else ""))
        return response

    def get(self, url: str, *, headers: dict[str, str] | None = None, stream: bool = False,
            also: tuple[int, ...] = ()) -> requests.Response:
        """A 2xx response (or one of the statuses `also`), else one line naming `url`."""
        response = self.request("GET", url, headers=headers, stream=stream)
        if not response.ok and response.status_code not in also:
            response.close()
            raise GoldboxError(f"{url}: HTTP {response.status_code}")
        return response

    def read(self, url: str, limit: int = MAX_DOCUMENT,
             headers: dict[str, str] | None = None) -> bytes | None:
        """The body at `url` (at most `limit` bytes), None for 404."""
        response = self.get(url, headers=headers, stream=True, also=(404,))
        with response:
            if response.status_code == 404:
                return None
            data = b""
            for chunk in response.iter_content(CHUNK):
                data += chunk
                if len(data) > limit:
                    raise GoldboxError(f"{url}: larger than {limit >> 20} MiB; refused")
        return data

    def chunks(self, url: str, headers: dict[str, str] | None = None,
               also: tuple[int, ...] = ()) -> tuple[requests.Response, Iterator[bytes]]:
        response = self.get(url, headers=headers, stream=True, also=also)
        return response, response.iter_content(CHUNK)

    def download(self, url: str, dest: Path, *, limit: int | None = None,
                 label: str = "", progress: Callable[[str], None] | None = None) -> str:
        """Stream `url` into `dest` (written atomically: nothing is left of a failed
        download) and return its sha256; more than `limit` bytes is refused."""
        digest = hashlib.sha256()
        response, chunks = self.chunks(url)
        total = int(response.headers.get("Content-Length") or 0)
        with response, partial_file(dest, "download") as out:
            copy_hashing(_limited(chunks, limit, url), out, {"sha256": digest}, total=total,
                         label=label or url, progress=progress)
        return digest.hexdigest()


def _limited(chunks: Iterator[bytes], limit: int | None, url: str) -> Iterator[bytes]:
    received = 0
    for chunk in chunks:
        received += len(chunk)
        if limit is not None and received > limit:
            raise GoldboxError(f"{url}: larger than {limit} bytes; refused")
        yield chunk


def catalog_client(catalog_url: str | None, *, token: str | None = None,
                   cacert: Path | None = None, environ: Mapping[str, Any] | None = None,
                   token_option: bool = False) -> Client:
    """The client for a catalog at `catalog_url` under the token rule."""
    return Client(token_for(catalog_url, token, environ), cacert, token_option)

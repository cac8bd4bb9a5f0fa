"""The team's build cache on an OCI registry it already runs (docs/team-cache.md).

A cache entry (goldbox/cache.py) maps onto an OCI artifact: the tag `<kind>-<key>` in the
repository of `cache.remote`, one layer per file of the entry, and two annotations on
the manifest: the entry's identity.json as written (its identity and every file's size
and sha256) and an SSH signature of that text (`ssh-keygen -Y sign`, namespace
goldbox-cache@goldbox, so a catalog or git signature never counts here).

Whoever can write the registry must not be able to feed a poisoned CPython into every
teammate's box, so an entry is used only when
  1. a key in allowed_signers signed its record;
  2. the record names the very identity being built, its kind and the cache format (a
     signed entry copied under another tag is refused), and file names from an
     allow-list;
  3. each file, fetched by the digest the signed record names (never a name or digest
     from the unsigned rest of the manifest), has its recorded size; then the cache
     checks the folder exactly as a local entry (every sha256) before renaming it in.
Anything else is one line and a local build. So is a registry that is down, refuses
(401/403) or times out: after that line the remote is left alone for the rest of the
run, and it never fails a build.

The protocol is oras-py's (`oras.provider.Registry`). goldbox adds a timeout to every
request, drops oras's retry loop (5 tries sleeping up to 83 s each: minutes lost to a
registry that is down), and picks oras's auth backend from the registry's challenge:
Basic for an htpasswd registry, Bearer tokens for GHCR, Harbor, GitLab and the like.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import oras.container
import oras.defaults
import oras.provider
import requests
import requests.adapters
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from goldbox import signing
from goldbox.config import OCI_REMOTE, CacheSection, Config, Sha256, Text
from goldbox.errors import GoldboxError

NAMESPACE = "goldbox-cache@goldbox"
RECORD_ANNOTATION = "org.goldbox.cache.record"
SIGNATURE_ANNOTATION = "org.goldbox.cache.signature"
CONFIG_MEDIA_TYPE = "application/vnd.goldbox.cache.record.v1+json"
FILE_MEDIA_TYPE = "application/vnd.goldbox.cache.file.v1"
# Written beside identity.json in an entry pulled from the remote (`invoke cache` shows it).
ORIGIN = "remote.json"
DEFAULT_SIGNERS = Path("~/.config/goldbox/allowed_signers")
# (connect, read) seconds of every request: a registry that stops answering costs this.
TIMEOUT = (10, 120)
CHUNK = 16 * 2**20
# Credentials, first found wins: a token, a user and password, then a credentials file.
TOKEN_VAR = "GOLDBOX_CACHE_TOKEN"
USER_VAR, PASSWORD_VAR = "GOLDBOX_CACHE_USER", "GOLDBOX_CACHE_PASSWORD"

Note = Callable[[str], None]

# An entry's file: '/'-separated names that start with no '.' or '-' (no '..', nothing
# hidden, no option) of letters, digits and . _ + ~ -.
_FILE_NAME = re.compile(r"^[A-Za-z0-9_+~][A-Za-z0-9._+~-]*(/[A-Za-z0-9_+~][A-Za-z0-9._+~-]*)*\Z")


class EntryRejected(GoldboxError):
    """This entry of the remote is not used (unsigned, foreign, tampered); others may be."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RemoteFile(_Strict):
    size: int = Field(ge=0)
    sha256: Sha256


class RemoteRecord(_Strict):
    """identity.json as a signer pushed it: untrusted until checked against the identity
    being built."""

    format: int
    kind: str
    name: Text
    summary: Text
    identity: dict[str, Any]
    files: dict[str, RemoteFile] = Field(min_length=1)
    created: Text


def tag_of(kind: str, key: str) -> str:
    """The entry's tag: its kind and identity key (both allow-listed: an OCI tag)."""
    return f"{kind}-{key}"


def parse_record(text: str, kind: str, identity: dict[str, Any], cache_format: int
                 ) -> RemoteRecord:
    """The signed record, if it is the entry asked for, else EntryRejected."""
    try:
        record = RemoteRecord.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        first = str(exc).splitlines()[:3]
        raise EntryRejected(f"its record is not a goldbox cache record ({' '.join(first)})"
                            ) from None
    if record.format != cache_format or record.kind != kind or record.identity != identity:
        raise EntryRejected("its signed record names another entry (kind, format or "
                            "identity): a signed entry replayed under this tag")
    bad = sorted(name for name in record.files
                 if not _FILE_NAME.fullmatch(name) or name.split("/")[0] in ("identity.json",
                                                                             ORIGIN))
    if bad:
        raise EntryRejected(f"its record lists a file name that is not allowed: {bad[0]!r}")
    return record


class _Registry(oras.provider.Registry):
    """oras's client without its retry decorator, which sleeps 3, 5, 11, 29 and 83 s
    after a refused connection: a cache that is down costs one failed request."""

    do_request = oras.provider.Registry.do_request.__wrapped__


class _TimeoutAdapter(requests.adapters.HTTPAdapter):
    """Every request of the session gets TIMEOUT (oras sets none)."""

    def send(self, request, **kwargs):
        kwargs["timeout"] = kwargs.get("timeout") or TIMEOUT
        return super().send(request, **kwargs)


def _with_timeout(session: requests.Session) -> None:
    for prefix in ("https://", "http://"):
        session.mount(prefix, _TimeoutAdapter())


def auth_file(environ: Mapping[str, str]) -> Path | None:
    """The credentials file the way container tools find it: $REGISTRY_AUTH_FILE
    (podman, skopeo), $DOCKER_CONFIG/config.json, ~/.docker/config.json."""
    candidates = [environ.get("REGISTRY_AUTH_FILE"),
                  environ.get("DOCKER_CONFIG") and str(Path(environ["DOCKER_CONFIG"],
                                                            "config.json")),
                  str(Path("~/.docker/config.json").expanduser())]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


@dataclass
class Remote:
    """One run's view of the team cache: pulls (and pushes) entries, or says in one line
    why not and leaves the build to the local cache."""

    url: str
    registry: str  # host[:port]
    repository: str
    allowed_signers: Path
    signing_key: Path | None  # None: this machine does not push
    cacert: Path | None
    # Where the credentials are read from; never shown (repr) since it holds them.
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ), repr=False)
    note: Note = field(default=print, repr=False)
    pulled_bytes: int = 0
    _client: _Registry | None = field(default=None, repr=False)
    _down: str | None = None  # why the remote is left alone for the rest of the run
    _warned_signers: bool = False

    # ---- the registry ------------------------------------------------------------------

    def _container(self, tag: str) -> oras.container.Container:
        return oras.container.Container(f"{self.repository}:{tag}", registry=self.registry)

    def _verify(self) -> str | bool:
        return str(self.cacert) if self.cacert else True

    def _challenge(self) -> requests.Response:
        """GET /v2/ unauthenticated: the registry's answer says whether it is up and
        which auth it wants (`WWW-Authenticate: Basic` or `Bearer`)."""
        with requests.Session() as session:
            _with_timeout(session)
            return session.get(f"https://{self.registry}/v2/", verify=self._verify())

    def _connect(self) -> _Registry:
        if self._client is not None:
            return self._client
        challenge = self._challenge()
        scheme = challenge.headers.get("WWW-Authenticate", "").split(" ")[0].lower()
        client = _Registry(hostname=self.registry, tls_verify=self._verify(),
                           auth_backend="basic" if scheme == "basic" else "token")
        _with_timeout(client.session)
        self._log_in(client, scheme)
        try:
            answer = client.do_request(f"https://{self.registry}/v2/", "GET")
        except AttributeError:  # oras's Basic backend, given a file without this host
            raise GoldboxError(f"no credentials for {self.registry} ({self._sources()})"
                               ) from None
        if answer.status_code != 200:
            raise GoldboxError(f"the registry refused the credentials (HTTP "
                               f"{answer.status_code} {answer.reason}; {self._sources()})")
        if scheme == "basic":
            # oras sends Basic credentials only after a 401; the registry answers an
            # upload chunk without them at once and closes the connection mid-body
            # (SSLEOFError on any file over a few MiB): send them with every request.
            client.set_header("Authorization", client.auth.get_auth_header()["Authorization"])
        self._client = client
        return client

    def _sources(self) -> str:
        return (f"credentials from ${TOKEN_VAR}, ${USER_VAR} + ${PASSWORD_VAR}, "
                "$REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json or ~/.docker/config.json")

    def _log_in(self, client: _Registry, scheme: str) -> None:
        """Hand oras the credentials: a token, a user and password, or a credentials file
        (its auths, credHelpers and credsStore, as docker reads them)."""
        token = self.environ.get(TOKEN_VAR)
        user, password = self.environ.get(USER_VAR), self.environ.get(PASSWORD_VAR)
        found = auth_file(self.environ)
        if (token and scheme != "basic") or (user and password):
            # oras reads ~/.docker/config.json before each pull and push, and its entry
            # for this host would replace these: the variables win, so it reads no file.
            client.auth._auth_config = {"auths": {}}
        if token and scheme != "basic":
            client.auth.set_token_auth(token)
        elif user and password:
            client.auth.set_basic_auth(user, password)
        elif found:
            client.auth.load_configs(self._container("probe"), configs=[str(found)])
        elif scheme == "basic":
            raise GoldboxError(f"the registry asks for a password and none is set "
                               f"({self._sources()})")

    # ---- the boundary: nothing here fails a build --------------------------------------

    def _give_up(self, action: str, exc: BaseException) -> None:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        self._down = f"{type(exc).__name__}: {detail[:300]}"
        self.note(f"cache: remote {self.url} {action} failed ({self._down}); building "
                  "locally, and not asking it again in this run")

    def pull(self, kind: str, key: str, identity: dict[str, Any], folder: Path,
             cache_format: int) -> str | None:
        """Fill the empty `folder` with the remote's entry `kind`/`key`: its files and
        identity.json as signed, and ORIGIN. Returns who signed it, or None when there
        is none to use (one line said why, unless the remote simply has no such entry)."""
        if self._down or not self._signers_ok():
            return None
        try:
            return self._pull(kind, key, identity, folder, cache_format)
        except EntryRejected as exc:
            self.note(f"cache: remote {self.url} has {kind} {key[:12]} but it is not used: "
                      f"{exc}; building it locally")
        except Exception as exc:  # a failing remote (whatever oras raises) never fails a build
            self._give_up(f"pulling {kind} {key[:12]}", exc)
        return None

    def push(self, kind: str, key: str, folder: Path) -> None:
        """Push the entry in `folder` (just built here), signed, if this machine pushes."""
        if self.signing_key is None or self._down:
            return
        try:
            self._push(kind, key, folder)
        except Exception as exc:  # a failing remote (whatever oras raises) never fails a build
            self._give_up(f"pushing {kind} {key[:12]}", exc)

    def _signers_ok(self) -> bool:
        if self.allowed_signers.is_file():
            return True
        if not self._warned_signers:
            self._warned_signers = True
            self.note(f"cache: remote {self.url}: no allowed_signers file "
                      f"{self.allowed_signers} (cache.allowed_signers), so no entry of it "
                      "can be trusted; building locally")
        return False

    # ---- pull and push -----------------------------------------------------------------

    def _pull(self, kind: str, key: str, identity: dict[str, Any], folder: Path,
              cache_format: int) -> str | None:
        client = self._connect()
        container = self._container(tag_of(kind, key))
        head = client.do_request(f"https://{container.manifest_url()}", "HEAD",
                                 headers={"Accept": oras.defaults.default_manifest_media_type})
        if head.status_code == 404:
            return None
        annotations = client.get_manifest(container).get("annotations") or {}
        text, signature = (annotations.get(RECORD_ANNOTATION),
                           annotations.get(SIGNATURE_ANNOTATION))
        if not isinstance(text, str) or not isinstance(signature, str):
            raise EntryRejected("it is not signed (no goldbox record and signature in its "
                                "manifest's annotations)")
        try:
            signer = signing.verify(text, signature, self.allowed_signers,
                                    f"{self.url}:{container.tag}", namespace=NAMESPACE)
        except GoldboxError as exc:
            raise EntryRejected(str(exc)) from None
        record = parse_record(text, kind, identity, cache_format)
        for name, item in record.files.items():
            self._fetch(client, container, folder / name, item)
        (folder / "identity.json").write_text(text)
        origin = {"remote": self.url, "tag": container.tag, "signer": signer,
                  "pulled": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
        (folder / ORIGIN).write_text(json.dumps(origin, indent=2, sort_keys=True) + "\n")
        return signer

    def _fetch(self, client: _Registry, container: oras.container.Container, target: Path,
               item: RemoteFile) -> None:
        """Download the blob of `item`'s digest to `target`, stopping at its size."""
        target.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with client.get_blob(container, f"sha256:{item.sha256}", stream=True) as response:
            if response.status_code != 200:
                raise EntryRejected(f"{target.name}: the registry answered HTTP "
                                    f"{response.status_code} for its blob")
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            with os.fdopen(os.open(target, flags, 0o644), "wb") as out:
                for chunk in response.iter_content(CHUNK):
                    written += len(chunk)
                    if written > item.size:
                        raise EntryRejected(f"{target.name}: the registry sent more than "
                                            f"the {item.size} bytes its signed record lists")
                    out.write(chunk)
        if written != item.size:
            raise EntryRejected(f"{target.name}: {written} bytes, its signed record lists "
                                f"{item.size}")
        self.pulled_bytes += written

    def _push(self, kind: str, key: str, folder: Path) -> None:
        assert self.signing_key is not None
        client = self._connect()
        text = (folder / "identity.json").read_text()
        signature = signing.sign(text, self.signing_key, f"cache.signing_key {self.signing_key}",
                                 namespace=NAMESPACE)
        files = [f"{folder / name}:{FILE_MEDIA_TYPE}" for name in json.loads(text)["files"]]
        client.push(target=str(self._container(tag_of(kind, key))), files=files,
                    disable_path_validation=True, do_chunked=True, chunk_size=CHUNK,
                    manifest_config=f"{folder / 'identity.json'}:{CONFIG_MEDIA_TYPE}",
                    manifest_annotations={RECORD_ANNOTATION: text,
                                          SIGNATURE_ANNOTATION: signature}, quiet=True)
        self.note(f"cache: pushed {kind} {key[:12]} to {self.url}")


def origin_of(entry_path: Path) -> dict[str, str] | None:
    """Where a pulled entry came from (its ORIGIN file), or None for one built here."""
    try:
        origin = json.loads((entry_path / ORIGIN).read_text())
    except (OSError, ValueError):
        return None
    return origin if isinstance(origin, dict) else None


def with_options(config: Config, remote: str | None, push: bool) -> Config:
    """`config` with `invoke image --remote URL --push-cache` applied (each checked as
    the cache.* key it overrides)."""
    if remote is None and not push:
        return config
    section = config.project.cache.model_dump()
    section.update({k: v for k, v in (("remote", remote), ("push", push or None)) if v})
    try:
        cache = CacheSection.model_validate(section)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        option = "--remote" if "remote" in first["loc"] else "--push-cache"
        raise GoldboxError(f"{option}: {first['msg'].removeprefix('Value error, ')}"
                           f"{f' (got {remote!r})' if option == '--remote' else ''}") from None
    project = config.project.model_copy(update={"cache": cache})
    return config.model_copy(update={"project": project})


def open_remote(config: Config, note: Note = print,
                environ: Mapping[str, str] | None = None) -> Remote | None:
    """The remote of cache.remote, or None when unset. One line for a key that cannot
    work (push without a signing key, a missing key or CA file)."""
    section, catalog = config.project.cache, config.project.catalog
    if section.remote is None:
        return None
    match = OCI_REMOTE.fullmatch(section.remote)
    assert match is not None  # the config model checked it
    registry = match.group("host") + (f":{match.group('port')}" if match.group("port") else "")
    signers = section.allowed_signers or catalog.allowed_signers
    key = section.signing_key or catalog.signing_key
    if section.push and key is None:
        raise GoldboxError("goldbox.toml: cache.push = true needs cache.signing_key (or "
                           "catalog.signing_key): teammates use only signed entries")
    signing_key = config.host_file(key) if section.push and key else None
    cacert = config.host_file(section.cacert) if section.cacert else None
    for label, path in (("signing_key", signing_key), ("cacert", cacert)):
        if path is not None and not path.is_file():
            raise GoldboxError(f"goldbox.toml: cache.{label}: {path}: no such file")
    return Remote(section.remote, registry, match.group("repository"),
                  config.host_file(signers) if signers else DEFAULT_SIGNERS.expanduser(),
                  signing_key, cacert, dict(os.environ if environ is None else environ), note)


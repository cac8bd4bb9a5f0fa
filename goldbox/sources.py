"""Where a platform's CPython tarball can come from, and who vouches for its sha256.

A platform pins one tarball by sha256. Several places serve the same bytes, tried in
order until one answers: python.org (`python.url`), the Debian archive's upstream
("orig") tarball of the same release on the platform's own mirror, then any URL the user
lists in `python.mirrors`. Whatever serves it, the cache keeps the file only when its
sha256 is the pinned one, so a source is a convenience, never a trust anchor.

The trust anchors are what `invoke pin-python` reads to learn a new release's sha256:
python.org's published digest, or the Debian archive's signed index (InRelease, checked
with gpgv against Debian's keyring, then its Suite/Codename against the suite asked for
and its Valid-Until/Date against this host's clock, so a mirror cannot replay another
suite's or an expired index -> main/source/Sources.xz, whose sha256 InRelease lists ->
the orig tarball's Checksums-Sha256 entry)."""

from __future__ import annotations

import contextlib
import lzma
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

import requests

from goldbox import proc
from goldbox.artifacts import DEBIAN_MIRROR, ArtifactCache, sha256_file
from goldbox.config import DebootstrapSource, Platform
from goldbox.errors import GoldboxError

PYTHON_ORG = "https://www.python.org"
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
# Suites whose index is searched for an upstream release: released ones first (their
# files are the most widely mirrored), then testing and unstable.
DEBIAN_SUITES = ("bookworm", "trixie", "forky", "sid")
_TIMEOUT = (15, 120)
# How far an index's Date may be ahead of this host's clock (clocks drift).
CLOCK_SKEW = timedelta(minutes=10)
RELEASE_FIELD = re.compile(r"[A-Z][A-Za-z0-9-]*")


@dataclass(frozen=True)
class TarballSource:
    """One place that may serve the pinned tarball."""

    name: str  # what the phase note and errors call it: "python.org", "Debian archive"
    url: str


def python_org_url(version: str) -> str:
    return f"{PYTHON_ORG}/ftp/python/{version}/Python-{version}.tar.xz"


def debian_orig(version: str) -> tuple[str, str]:
    """Debian's source package and orig tarball name for CPython `version`:
    3.13.5 -> ("python3.13", "python3.13_3.13.5.orig.tar.xz")."""
    major, minor = version.split(".")[:2]
    package = f"python{major}.{minor}"
    return package, f"{package}_{version}.orig.tar.xz"


def debian_pool_url(mirror: str, version: str) -> str:
    """Where the archive keeps the orig tarball: the pool path follows from the source
    package's name alone, whichever suite lists it."""
    package, orig = debian_orig(version)
    return f"{mirror.rstrip('/')}/pool/main/{package[0]}/{package}/{orig}"


def platform_mirror(platform: Platform) -> str:
    """The Debian mirror the platform already uses (debootstrap), else Debian's own."""
    if isinstance(platform.source, DebootstrapSource):
        return platform.source.mirror
    return DEBIAN_MIRROR


def tarball_sources(platform: Platform) -> list[TarballSource]:
    python = platform.python
    sources = [TarballSource("python.org" if python.url.startswith(PYTHON_ORG) else "python.url",
                             python.url)]
    # Debian's orig tarballs of CPython are the release's .tar.xz; a pin of another
    # format (CentOS's .tgz) cannot match them.
    if python.url.endswith(".tar.xz"):
        sources.append(TarballSource("Debian archive",
                                     debian_pool_url(platform_mirror(platform), python.version)))
    sources += [TarballSource(f"python.mirrors[{i}]", url) for i, url in enumerate(python.mirrors)]
    return sources


def fetch_tarball(cache: ArtifactCache, platform: Platform,
                  filename: str) -> tuple[Path, str]:
    """The pinned tarball from the verified cache, else from the first source that serves
    bytes with the pinned sha256; return its path and which source served it."""
    sha256 = platform.python.sha256
    if found := cache.cached(sha256, filename):
        return found, "cache"
    failures = []
    for source in tarball_sources(platform):
        try:
            return cache.ensure(source.url, sha256, filename), source.name
        except GoldboxError as exc:
            failures.append(f"{source.name}: {exc}")
    raise GoldboxError(
        f"no source served {filename} with sha256 {sha256} (tried {'; '.join(failures)}); "
        f"add a URL that serves it to python.mirrors in platforms/{platform.name}.toml, or "
        f"import a copy: invoke artifacts --platform {platform.name} --import PATH")


# ---- who vouches for a release's sha256 ------------------------------------------------


@dataclass(frozen=True)
class Vouched:
    """A release's tarball, its sha256 and who vouched for that sha256."""

    version: str
    url: str
    sha256: str
    voucher: str


def _get(url: str) -> requests.Response:
    try:
        response = requests.get(url, timeout=_TIMEOUT)
        response.raise_for_status()
    except requests.RequestException as exc:
        raise GoldboxError(f"cannot download {url}: {exc}") from exc
    return response


def python_org_digest(version: str) -> Vouched:
    """python.org's published sha256 of Python-<version>.tar.xz (its downloads API)."""
    name = f"Python-{version}.tar.xz"
    releases = _get(f"{PYTHON_ORG}/api/v2/downloads/release/?name=Python%20{version}").json()
    if not releases:
        raise GoldboxError(f"python.org lists no release Python {version}")
    release_id = releases[0]["resource_uri"].rstrip("/").rsplit("/", 1)[-1]
    files = _get(f"{PYTHON_ORG}/api/v2/downloads/release_file/?release={release_id}").json()
    for entry in files:
        if entry["url"].endswith("/" + name) and entry.get("sha256_sum"):
            return Vouched(version, entry["url"], entry["sha256_sum"].lower(), "python.org")
    raise GoldboxError(f"python.org publishes no sha256 for {name}")


class IndexRefused(GoldboxError):
    """A suite's InRelease failed a check (signature, suite, freshness): it vouches for
    nothing."""


def verified_inrelease(mirror: str, suite: str, scratch: Path) -> str:
    """The suite's InRelease, its signature checked by gpgv against Debian's keyring, then
    its fields by `check_release` at this host's clock; return only the signed text."""
    if not DEBIAN_KEYRING.is_file():
        raise GoldboxError(f"{DEBIAN_KEYRING} is missing: apt-get install debian-archive-keyring")
    url = f"{mirror.rstrip('/')}/dists/{suite}/InRelease"
    signed = scratch / f"{suite}.InRelease"
    signed.write_bytes(_get(url).content)
    release = signed_text(signed, scratch / f"{suite}.Release", url)
    check_release(release, suite, url, datetime.now(UTC))
    return release


def signed_text(signed: Path, output: Path, url: str) -> str:
    """The text an InRelease signs, once gpgv has checked its signature against
    Debian's keyring; nothing of the file outside the signature is returned."""
    result = proc.capture(["gpgv", "--keyring", DEBIAN_KEYRING, "--output", output, signed],
                          check=False)
    if result.returncode != 0:
        stderr = " ".join(result.stderr.split())
        raise IndexRefused(f"{url}: bad signature (gpgv against {DEBIAN_KEYRING}): {stderr}")
    return output.read_text()


def release_fields(release: str) -> dict[str, str]:
    """A Release text's header fields ("Suite" -> "stable"); the checksum lists' entries
    (indented lines) are not fields."""
    fields: dict[str, str] = {}
    for line in release.splitlines():
        key, colon, value = line.partition(":")
        if colon and RELEASE_FIELD.fullmatch(key):
            fields.setdefault(key, value.strip())
    return fields


def check_release(release: str, suite: str, url: str, now: datetime) -> None:
    """A signature proves who made an index, not that it is the one asked for, nor that
    it is current: a mirror can answer with another suite's index, or replay an old one
    (with the fixes since missing). As apt does, `Suite` or `Codename` must name `suite`,
    `Valid-Until` (where the archive sets one) must be ahead of `now`, and `Date` not
    ahead of it by more than CLOCK_SKEW. Otherwise IndexRefused, one line."""
    fields = release_fields(release)
    if suite not in (fields.get("Suite"), fields.get("Codename")):
        raise IndexRefused(
            f"{url}: Suite = {fields.get('Suite')!r}, Codename = {fields.get('Codename')!r}: "
            f"expected {suite!r} in either (another suite's index: refused as a replay)")
    date = _release_date(fields, "Date", url)
    if date > now + CLOCK_SKEW:
        raise IndexRefused(
            f"{url}: Date = {fields['Date']!r}: expected no later than {_http_date(now)} "
            f"(this host's clock) plus {CLOCK_SKEW.seconds // 60} min: an index from the "
            "future (or this host's clock is wrong)")
    if "Valid-Until" in fields and _release_date(fields, "Valid-Until", url) <= now:
        raise IndexRefused(
            f"{url}: Valid-Until = {fields['Valid-Until']!r}: expected a time after "
            f"{_http_date(now)} (this host's clock): the index expired (a replayed old "
            "index, or a mirror that stopped syncing)")


def _release_date(fields: dict[str, str], key: str, url: str) -> datetime:
    """A Release date field ("Sat, 11 Jul 2026 10:16:37 UTC") as an aware datetime."""
    value = fields.get(key)
    try:
        date = parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError):
        date = None
    if date is None or date.tzinfo is None:
        raise IndexRefused(f"{url}: {key} = {value!r}: expected a date such as "
                           "'Sat, 11 Jul 2026 10:16:37 UTC'")
    return date


def _http_date(when: datetime) -> str:
    return format_datetime(when.astimezone(UTC), usegmt=True)


def _listed_sha256(release: str, path: str) -> str:
    """sha256 of `path` in a Release file's SHA256 section."""
    section = release.split("\nSHA256:\n", 1)[-1]
    for line in section.splitlines():
        if not line.startswith(" "):
            break
        digest, _size, name = line.split()
        if name == path:
            return digest
    raise GoldboxError(f"the signed Release lists no {path}")


def source_index(mirror: str, suite: str, scratch: Path) -> str:
    """main/source/Sources of `suite`, checked against the sha256 its signed InRelease
    gives, as text."""
    expected = _listed_sha256(verified_inrelease(mirror, suite, scratch), "main/source/Sources.xz")
    packed = scratch / f"{suite}.Sources.xz"
    packed.write_bytes(_get(f"{mirror.rstrip('/')}/dists/{suite}/main/source/Sources.xz").content)
    if sha256_file(packed) != expected:
        raise IndexRefused(f"{mirror}/dists/{suite}/main/source/Sources.xz does not match the "
                           "sha256 its signed InRelease lists")
    return lzma.decompress(packed.read_bytes()).decode()


def orig_checksums(sources: str, package: str) -> dict[str, str]:
    """{orig tarball name: sha256} of every upstream tarball `package` has in a Sources
    index (a suite may list several versions)."""
    found = {}
    for stanza in sources.split("\n\n"):
        if not stanza.startswith(f"Package: {package}\n"):
            continue
        block = re.search(r"^Checksums-Sha256:\n((?: .*\n?)+)", stanza, re.MULTILINE)
        for line in (block.group(1).splitlines() if block else []):
            digest, _size, name = line.split()
            if name.endswith(".orig.tar.xz"):
                found[name] = digest
    return found


@contextlib.contextmanager
def debian_index(mirror: str) -> Iterator[Callable[[str], str]]:
    """A reader of suites' verified source indices, each fetched at most once."""
    indices: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="goldbox-index-") as scratch:
        def read(suite: str) -> str:
            if suite not in indices:
                indices[suite] = source_index(mirror, suite, Path(scratch))
            return indices[suite]
        yield read


def debian_releases(mirror: str, series: str, suites=DEBIAN_SUITES) -> list[Vouched]:
    """Every release of CPython `series` (e.g. "3.13", or one version "3.13.5") whose orig
    tarball a suite's signed index lists, newest first, with that sha256. A suite whose
    index is refused (signature, replay, expiry) vouches for nothing and the others are
    still read; if none vouches, the refusals are the error."""
    package = debian_orig(series)[0]
    releases: dict[str, Vouched] = {}
    refused: list[str] = []
    pattern = re.compile(rf"{re.escape(package)}_([0-9]+\.[0-9]+\.[0-9]+)\.orig\.tar\.xz")
    with debian_index(mirror) as read:
        for suite in suites:
            try:
                sources = read(suite)
            except IndexRefused as exc:
                refused.append(str(exc))
                continue
            for name, digest in orig_checksums(sources, package).items():
                match = pattern.fullmatch(name)
                if not match or not (match.group(1) + ".").startswith(series + "."):
                    continue
                version = match.group(1)
                releases.setdefault(version, Vouched(
                    version, debian_pool_url(mirror, version), digest,
                    f"Debian archive's signed index ({suite})"))
    if refused and not releases:
        raise IndexRefused("; ".join(refused))
    return sorted(releases.values(), key=lambda r: tuple(map(int, r.version.split("."))),
                  reverse=True)

"""CPython tarball sources and `invoke pin-python`, against the real Debian mirror and
local HTTP servers on 127.0.0.1 (python.org is not reachable here, so a `python.url`
that answers 404 stands in for it)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from goldbox.artifacts import DEBIAN_MIRROR, ArtifactCache, sha256_file
from goldbox.config import load_config
from goldbox.errors import GoldboxError
from goldbox.pin import set_toml_keys
from goldbox.sources import (
    IndexRefused,
    check_release,
    debian_releases,
    fetch_tarball,
    signed_text,
    verified_inrelease,
)
from tests.conftest import run_invoke

CONFIG = load_config()
PY3135_SHA256 = "93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640"
# forky's InRelease as deb.debian.org served it on 2026-11-28, signed by Debian's archive
# key: Date 2026-10-30 08:08:01 UTC, Valid-Until 2026-11-06 08:08:01 UTC (the mirror had
# stopped syncing testing; the index was already expired when recorded).
EXPIRED_FORKY = Path(__file__).parent / "data" / "debian-forky-expired.InRelease"


@contextlib.contextmanager
def serving(folder: Path):
    """An HTTP server for `folder` on 127.0.0.1; yields its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _with_python(platform, **changes):
    return platform.model_copy(update={"python": platform.python.model_copy(update=changes)})


def test_debian_signed_index_vouches_for_a_release():
    (release,) = debian_releases(DEBIAN_MIRROR, "3.13.5")
    assert release.sha256 == PY3135_SHA256
    assert release.voucher.startswith("Debian archive's signed index")
    assert release.url.endswith("/pool/main/p/python3.13/python3.13_3.13.5.orig.tar.xz")


def test_a_tampered_inrelease_is_refused(tmp_path):
    real = verified_inrelease(DEBIAN_MIRROR, "trixie", tmp_path)
    assert "main/source/Sources.xz" in real
    signed = (tmp_path / "trixie.InRelease").read_text()
    forged = tmp_path / "mirror" / "dists" / "trixie" / "InRelease"
    forged.parent.mkdir(parents=True)
    forged.write_text(signed.replace(" main/source/Sources.xz", " main/source/Sources.gz", 1))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with serving(tmp_path / "mirror") as mirror, \
            pytest.raises(GoldboxError, match="bad signature"):
        verified_inrelease(mirror, "trixie", scratch)


def _forky_release(tmp_path: Path) -> str:
    """The recorded forky index's signed text, through the real gpgv check."""
    return signed_text(EXPIRED_FORKY, tmp_path / "forky.Release", str(EXPIRED_FORKY))


@pytest.mark.parametrize(("suite", "now", "refusal"), [
    ("forky", datetime(2026, 11, 1, tzinfo=UTC), None),
    ("testing", datetime(2026, 11, 6, 8, 8, tzinfo=UTC), None),
    ("trixie", datetime(2026, 11, 1, tzinfo=UTC),
     "url: Suite = 'testing', Codename = 'forky': expected 'trixie' in either (another "
     "suite's index: refused as a replay)"),
    ("forky", datetime(2026, 11, 6, 8, 8, 1, tzinfo=UTC),
     "url: Valid-Until = 'Fri, 06 Nov 2026 08:08:01 UTC': expected a time after Fri, 06 Nov "
     "2026 08:08:01 GMT (this host's clock): the index expired"),
    ("forky", datetime(2026, 10, 30, 7, 58, tzinfo=UTC),
     "url: Date = 'Fri, 30 Oct 2026 08:08:01 UTC': expected no later than Fri, 30 Oct 2026 "
     "07:58:00 GMT (this host's clock) plus 10 min"),
], ids=["codename", "suite", "another suite", "expired", "from the future"])
def test_release_fields_are_checked(tmp_path, suite, now, refusal):
    release = _forky_release(tmp_path)
    if refusal is None:
        check_release(release, suite, "url", now)
        return
    with pytest.raises(IndexRefused) as refused:
        check_release(release, suite, "url", now)
    assert str(refused.value).startswith(refusal), refused.value
    assert "\n" not in str(refused.value)


def test_an_expired_index_is_refused(tmp_path):
    """A validly signed but expired index, served by a mirror: gpgv accepts it, its
    Valid-Until (2026-11-06) refuses it at this host's clock."""
    dists = tmp_path / "mirror" / "dists" / "forky"
    dists.mkdir(parents=True)
    shutil.copy(EXPIRED_FORKY, dists / "InRelease")
    with serving(tmp_path / "mirror") as mirror, pytest.raises(IndexRefused) as refused:
        verified_inrelease(mirror, "forky", tmp_path)
    message = str(refused.value)
    assert message.startswith(f"{mirror}/dists/forky/InRelease: Valid-Until = "
                              "'Fri, 06 Nov 2026 08:08:01 UTC': expected a time after ")
    assert "\n" not in message


def test_another_suites_index_is_refused(tmp_path):
    """A mirror answers bookworm's request with trixie's (real, validly signed) index."""
    verified_inrelease(DEBIAN_MIRROR, "trixie", tmp_path)
    dists = tmp_path / "mirror" / "dists" / "bookworm"
    dists.mkdir(parents=True)
    shutil.copy(tmp_path / "trixie.InRelease", dists / "InRelease")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with serving(tmp_path / "mirror") as mirror, pytest.raises(IndexRefused) as refused:
        verified_inrelease(mirror, "bookworm", scratch)
    assert str(refused.value) == (
        f"{mirror}/dists/bookworm/InRelease: Suite = 'stable', Codename = 'trixie': expected "
        "'bookworm' in either (another suite's index: refused as a replay)")


def test_a_refused_suite_vouches_for_nothing_the_others_still_do(tmp_path):
    """forky's index is expired on this mirror, trixie's is current: trixie vouches; with
    forky alone, its refusal is the error."""
    mirror_dir = tmp_path / "mirror" / "dists"
    (mirror_dir / "forky").mkdir(parents=True)
    shutil.copy(EXPIRED_FORKY, mirror_dir / "forky" / "InRelease")
    sources = mirror_dir / "trixie" / "main" / "source"
    sources.mkdir(parents=True)
    for path, relative in (("InRelease", "InRelease"),
                           ("main/source/Sources.xz", "main/source/Sources.xz")):
        response = requests.get(f"{DEBIAN_MIRROR}/dists/trixie/{path}", timeout=(15, 120))
        response.raise_for_status()
        (mirror_dir / "trixie" / relative).write_bytes(response.content)
    with serving(tmp_path / "mirror") as mirror:
        (release,) = debian_releases(mirror, "3.13.5", suites=("forky", "trixie"))
        assert release.sha256 == PY3135_SHA256
        assert release.voucher == "Debian archive's signed index (trixie)"
        with pytest.raises(IndexRefused, match=r"/dists/forky/InRelease: Valid-Until = "):
            debian_releases(mirror, "3.13.5", suites=("forky",))


def test_python_org_unreachable_the_debian_archive_serves(tmp_path):
    """The platform's python.url answers 404: the Debian archive's orig tarball of the
    same release, on the platform's mirror, is taken because its sha256 matches."""
    platform = _with_python(CONFIG.platform("debian-13"), version="3.13.5",
                            url="http://127.0.0.1:9/Python-3.13.5.tar.xz", sha256=PY3135_SHA256)
    path, served_by = fetch_tarball(ArtifactCache(tmp_path), platform, "Python-3.13.5.tar.xz")
    assert served_by == "Debian archive"
    assert sha256_file(path) == PY3135_SHA256
    # Found again in the cache, not downloaded.
    assert fetch_tarball(ArtifactCache(tmp_path), platform, path.name)[1] == "cache"


def test_user_mirrors_are_tried_in_order_and_checked(tmp_path):
    files = tmp_path / "www"
    (files / "bad").mkdir(parents=True)
    (files / "good").mkdir()
    (files / "bad" / "Python-3.13.99.tar.xz").write_bytes(b"not the release\n")
    (files / "good" / "Python-3.13.99.tar.xz").write_bytes(b"the release\n")
    sha256 = hashlib.sha256(b"the release\n").hexdigest()
    with serving(files) as base:
        platform = _with_python(
            CONFIG.platform("debian-13"), version="3.13.99", sha256=sha256,
            url=f"{base}/missing/Python-3.13.99.tar.xz",
            mirrors=[f"{base}/bad/Python-3.13.99.tar.xz", f"{base}/good/Python-3.13.99.tar.xz"])
        cache = ArtifactCache(tmp_path / "cache")
        path, served_by = fetch_tarball(cache, platform, "Python-3.13.99.tar.xz")
        assert served_by == "python.mirrors[1]" and path.read_bytes() == b"the release\n"

        nowhere = _with_python(platform, mirrors=[f"{base}/bad/Python-3.13.99.tar.xz"])
        with pytest.raises(GoldboxError) as error:
            fetch_tarball(ArtifactCache(tmp_path / "empty"), nowhere, "Python-3.13.99.tar.xz")
    message = str(error.value)
    assert "python.url: cannot download" in message and "404" in message
    assert "Debian archive: cannot download" in message
    assert "python.mirrors[0]: " in message and "sha256 mismatch" in message
    assert "--import PATH" in message


def test_set_toml_keys_keeps_comments_and_other_lines():
    text = ('description = "x 3.1.0"  # top\n[python]\n# why this pin\nversion = "3.1.0"  # v\n'
            'url = "u"\n[other]\nversion = "keep"\n')
    edited = set_toml_keys(text, "python", {"version": "3.2.0", "url": "w"})
    assert edited == text.replace('version = "3.1.0"', 'version = "3.2.0"').replace(
        'url = "u"', 'url = "w"')
    with pytest.raises(GoldboxError, match="no sha256"):
        set_toml_keys(text, "python", {"sha256": "0"})


def test_pin_python_rewrites_the_platform_file(project_copy):
    path = project_copy / "platforms" / "debian-13.toml"
    before = path.read_text()
    result = run_invoke(project_copy, "pin-python", "3.13.5", "--platform", "debian-13")
    assert result.returncode == 0, result.stderr
    after = path.read_text()
    assert 'version = "3.13.5"' in after and PY3135_SHA256 in after
    assert "Python-3.13.5.tar.xz" in after
    # Only the pinned lines (and the description naming the version) changed.
    changed = [line for line in after.splitlines() if line not in before.splitlines()]
    assert len(changed) == 4, changed
    assert [c for c in before.splitlines() if c.startswith("#")] == \
        [c for c in after.splitlines() if c.startswith("#")]
    assert "python.version: 3.13.15 -> 3.13.5" in result.stdout
    assert "Debian archive's signed index (trixie)" in result.stdout


def test_pin_python_names_the_sources_tried_when_none_serves(project_copy):
    path = project_copy / "platforms" / "debian-13.toml"
    before = path.read_text()
    result = run_invoke(project_copy, "pin-python", "3.99.1", "--platform", "debian-13")
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("goldbox: error: no verified source serves CPython 3.99.1; tried: ")
    assert "python.org digest" in line and "no voucher lists a release 3.99.1" in line
    assert path.read_text() == before


def test_pin_python_takes_python_orgs_digest_from_a_fake_python_org(project_copy, tmp_path,
                                                                     monkeypatch):
    """python.org cannot be reached from here, so a local server with python.org's layout
    stands in for it: its downloads API (release, then release_file with sha256_sum) and
    /ftp/python/. The pin's sha256 must come from there, and so must the bytes."""
    from goldbox import pin, sources

    version, name = "3.13.5", "Python-3.13.5.tar.xz"
    tarball = ArtifactCache(CONFIG.cache_dir).ensure(
        sources.debian_pool_url(DEBIAN_MIRROR, version), PY3135_SHA256, name)
    site = tmp_path / "python.org"
    (site / "ftp/python" / version).mkdir(parents=True)
    (site / "ftp/python" / version / name).write_bytes(tarball.read_bytes())
    with serving(site) as base:
        # SimpleHTTPRequestHandler ignores the query string: each API answer is an index.
        for endpoint, answer in (
                ("release", f'[{{"resource_uri": "{base}/api/v2/downloads/release/987/"}}]'),
                ("release_file", f'[{{"url": "{base}/ftp/python/{version}/{name}.asc"}}, '
                                 f'{{"url": "{base}/ftp/python/{version}/{name}", '
                                 f'"sha256_sum": "{PY3135_SHA256.upper()}"}}]')):
            (site / "api/v2/downloads" / endpoint).mkdir(parents=True)
            (site / "api/v2/downloads" / endpoint / "index.html").write_text(answer)
        monkeypatch.setattr(sources, "PYTHON_ORG", base)
        monkeypatch.setenv("GOLDBOX_CACHE", str(tmp_path / "cache"))  # nothing cached yet
        config = load_config(project_copy)
        pinned = pin.pin_python(config, config.platform("debian-13"), version)
    assert pinned.release.voucher == "python.org"
    assert pinned.served_by == "python.org"
    assert sha256_file(pinned.tarball) == PY3135_SHA256
    assert pinned.tarball.is_relative_to(tmp_path / "cache")
    text = (project_copy / "platforms/debian-13.toml").read_text()
    assert f'url = "{base}/ftp/python/{version}/{name}"' in text
    assert f'sha256 = "{PY3135_SHA256}"' in text

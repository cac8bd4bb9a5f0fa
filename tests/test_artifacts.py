"""The sha256-verified artifact cache and the wheelhouse, with real downloads from PyPI
and the Debian mirror (both allowed by the network rule)."""

import os
import shutil
from pathlib import Path

import pytest

from goldbox.artifacts import ArtifactCache, build_wheelhouse
from goldbox.errors import GoldboxError
from goldbox.files import sha256_file

CACHE = Path(os.environ.get("GOLDBOX_CACHE", "~/.cache/goldbox")).expanduser()

BLINKER_URL = (
    "https://files.pythonhosted.org/packages/10/cb/"
    "f2ad4230dc2eb1a74edf38f1a38b9b52277f75bef262d8908e60d957e13c/blinker-1.9.0-py3-none-any.whl"
)
BLINKER_SHA256 = "ba0efaa9080b619ff2f3459d1d500c57bddea4a6b424b60a91141db6fd2f08bc"
CPYTHON_313_SHA256 = "93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640"
CPYTHON_27_SHA256 = "da3080e3b488f648a3d7a4560ddee895284c3380b11d6de75edb986526b9a814"

# What a guest CPython 3.13 needs for the app, pinned with hashes as the real
# requirements file is.
REQUIREMENTS_PY313 = """\
blinker==1.9.0 --hash=sha256:ba0efaa9080b619ff2f3459d1d500c57bddea4a6b424b60a91141db6fd2f08bc
click==8.5.1 --hash=sha256:8bb5376d2006950386f8c6427613334a2acadc5f559cb80e638d00b4df957e37
flask==3.1.1 --hash=sha256:07aae2bb5eaf77993ef57e357491839f5fd9f4dc281593a81a9e4d79a24f295c
itsdangerous==2.2.0 --hash=sha256:c6242fc49e35958c8b15141343aa660db5fc54d4f13a1db01a3f5891b98700ef
jinja2==3.1.6 --hash=sha256:85ece4451f492d0c13c5dd7c13a64681a86afae63a5f347908daf103ce6d2f67
markupsafe==3.0.4 --hash=sha256:434139499bb20b502ed3baa1f169e618f924a97e7a777fea1a49446d80106cf6
uwsgi==2.0.28 --hash=sha256:79ca1891ef2df14508ab0471ee8c0eb94bd2d51d03f32f90c4bbe557ab1e99d0
werkzeug==3.1.9 --hash=sha256:6392e50c78460ba618e5b21f08a71f59c99ce99cdc6cf6e3dd7e6ccca8754fab
"""
MANYLINUX = ["manylinux_2_17_x86_64", "manylinux2014_x86_64"]


def test_ensure_downloads_verifies_and_reuses(tmp_path):
    cache = ArtifactCache(tmp_path)
    path = cache.ensure(BLINKER_URL, BLINKER_SHA256, "blinker-1.9.0-py3-none-any.whl")
    assert path.name == "blinker-1.9.0-py3-none-any.whl"
    assert path.parent.parent == tmp_path / "artifact"
    assert sha256_file(path) == BLINKER_SHA256
    mtime = path.stat().st_mtime_ns
    assert cache.ensure("http://127.0.0.1:9/unreachable", BLINKER_SHA256, path.name) == path
    assert path.stat().st_mtime_ns == mtime


def test_ensure_mismatch_names_url_and_both_sums_and_keeps_nothing(tmp_path):
    cache = ArtifactCache(tmp_path)
    wrong = "0" * 64
    with pytest.raises(GoldboxError) as raised:
        cache.ensure(BLINKER_URL, wrong, "blinker.whl")
    message = str(raised.value)
    assert BLINKER_URL in message and wrong in message and BLINKER_SHA256 in message
    assert not [p for p in (tmp_path / "artifact").iterdir() if not p.name.endswith(".lock")]


def test_import_accepts_matching_content_under_the_declared_name(tmp_path):
    local = tmp_path / "download.bin"
    local.write_bytes(b"hello goldbox\n")
    digest = sha256_file(local)
    cache = ArtifactCache(tmp_path / "cache")
    imported = cache.import_file(local, {"1" * 64: "other.tar.xz", digest: "Hello.tar.xz"})
    assert imported == cache.cached(digest, "Hello.tar.xz")
    assert imported.name == "Hello.tar.xz"
    assert imported.read_bytes() == b"hello goldbox\n"


def test_import_of_a_wrong_file_is_refused(tmp_path):
    wrong = tmp_path / "Python-3.13.5.tar.xz"
    wrong.write_bytes(b"not a tarball")
    cache = ArtifactCache(tmp_path / "cache")
    with pytest.raises(GoldboxError, match="matches none of the platform's artifacts") as raised:
        cache.import_file(wrong, {CPYTHON_313_SHA256: "Python-3.13.5.tar.xz"})
    assert sha256_file(wrong) in str(raised.value)
    assert "Python-3.13.5.tar.xz" in str(raised.value)
    assert not (tmp_path / "cache" / "artifact").exists()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get")
def test_debian_orig_tarballs_are_the_python_org_releases():
    cache = ArtifactCache(CACHE)
    py313 = cache.ensure_from_debian_source(
        package="python3.13", suite="trixie", orig_name="python3.13_3.13.5.orig.tar.xz",
        sha256=CPYTHON_313_SHA256, filename="Python-3.13.5.tar.xz")
    assert py313.name == "Python-3.13.5.tar.xz"
    assert sha256_file(py313) == CPYTHON_313_SHA256
    py27 = cache.ensure_from_debian_source(
        package="python2.7", suite="bullseye", orig_name="python2.7_2.7.18.orig.tar.gz",
        sha256=CPYTHON_27_SHA256, filename="Python-2.7.18.tgz")
    assert sha256_file(py27) == CPYTHON_27_SHA256


@pytest.mark.slow
def test_wheelhouse_for_guest_python_313_is_hash_checked_and_cached(tmp_path):
    requirements = tmp_path / "py313.txt"
    requirements.write_text(REQUIREMENTS_PY313)
    files = build_wheelhouse(CACHE, requirements, tmp_path / "wheelhouse",
                             python_version="3.13", platform_tags=MANYLINUX)
    names = sorted(path.name for path in files)
    assert "uwsgi-2.0.28.tar.gz" in names
    assert any(name.startswith("markupsafe-3.0.4-cp313-cp313-") for name in names)
    assert len(names) == 8 and all(n.endswith((".whl", ".tar.gz")) for n in names)
    hashes = {line.split("sha256:")[1] for line in REQUIREMENTS_PY313.splitlines()}
    assert {sha256_file(path) for path in files} == hashes

    # Again from the cache: pip is not run (with no index and no configuration it could
    # not download a thing, as the control with an empty cache shows).
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIP_CONFIG_FILE", os.devnull)
        patch.setenv("PIP_NO_INDEX", "1")
        again = build_wheelhouse(CACHE, requirements, tmp_path / "again",
                                 python_version="3.13", platform_tags=MANYLINUX)
        with pytest.raises(GoldboxError):
            build_wheelhouse(tmp_path / "empty-cache", requirements, tmp_path / "control",
                             python_version="3.13", platform_tags=MANYLINUX)
    assert [p.name for p in again] == [p.name for p in files]


def test_wheelhouse_refuses_a_tampered_pin(tmp_path):
    requirements = tmp_path / "bad.txt"
    requirements.write_text("blinker==1.9.0 --hash=sha256:" + "0" * 64 + "\n")
    with pytest.raises(GoldboxError, match="pip"):
        build_wheelhouse(tmp_path, requirements, tmp_path / "wh",
                         python_version="3.13", platform_tags=MANYLINUX)
    assert not [p for p in (tmp_path / "wheelhouse").iterdir() if p.is_dir()]


def test_unreachable_url_is_one_clear_error_and_keeps_nothing(tmp_path):
    cache = ArtifactCache(tmp_path)
    with pytest.raises(GoldboxError, match=r"cannot download http://127\.0\.0\.1:9/x\.tar\.xz"):
        cache.ensure("http://127.0.0.1:9/x.tar.xz", BLINKER_SHA256, "x.tar.xz")
    assert not [p for p in (tmp_path / "artifact").iterdir() if not p.name.endswith(".lock")]

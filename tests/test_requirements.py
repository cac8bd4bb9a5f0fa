"""The uWSGI sdist is compiled only if it is what the app's requirements file pins."""

from __future__ import annotations

import hashlib

import pytest

from goldbox.config import load_config
from goldbox.errors import GoldboxError
from goldbox.requirements import check_sdist, pinned_hashes

CONFIG = load_config()
REQUIREMENTS = CONFIG.app_dir / CONFIG.platform("debian-12").python.requirements


def test_pins_are_read_across_continuation_lines():
    pins = pinned_hashes(REQUIREMENTS)
    version = next(v for (name, v) in pins if name == "uwsgi")
    assert len(pins[("uwsgi", version)]) >= 1
    assert all(len(h) == 64 for hashes in pins.values() for h in hashes)
    assert ("flask", next(v for (n, v) in pins if n == "flask")) in pins


def test_a_tampered_sdist_is_refused_with_one_line(tmp_path):
    version = next(v for (name, v) in pinned_hashes(REQUIREMENTS) if name == "uwsgi")
    sdist = tmp_path / f"uwsgi-{version}.tar.gz"
    sdist.write_bytes(b"not the release")
    with pytest.raises(GoldboxError) as caught:
        check_sdist(REQUIREMENTS, sdist)
    message = str(caught.value)
    assert message.startswith(f"{sdist}: sha256 {hashlib.sha256(b'not the release').hexdigest()}"
                              f" is not the one {REQUIREMENTS} pins for uwsgi=={version}")
    assert "\n" not in message


def test_an_sdist_the_file_does_not_pin_is_refused(tmp_path):
    sdist = tmp_path / "uwsgi-0.0.1.tar.gz"
    sdist.write_bytes(b"x")
    with pytest.raises(GoldboxError, match=r"no hash-pinned uwsgi==0\.0\.1"):
        check_sdist(REQUIREMENTS, sdist)


def test_the_pinned_sdist_passes(tmp_path):
    sdist = tmp_path / "uWSGI-2.0.31.tar.gz"
    sdist.write_bytes(b"the release")
    digest = hashlib.sha256(b"the release").hexdigest()
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"uwsgi==2.0.31 \\\n    --hash=sha256:{'0' * 64} \\\n"
                            f"    --hash=sha256:{digest}\n")
    assert check_sdist(requirements, sdist) == digest


def test_the_wheelhouse_sdist_is_the_pinned_one(tmp_path):
    """What `invoke image` compiles: the uWSGI sdist `pip download` put in the wheelhouse."""
    from goldbox.image import prepare_wheelhouse

    files = prepare_wheelhouse(CONFIG, CONFIG.platform("debian-12"), tmp_path, log=None)
    sdist = next(path for path in files if path.name.endswith(".tar.gz"))
    assert check_sdist(REQUIREMENTS, sdist) == hashlib.sha256(sdist.read_bytes()).hexdigest()

"""`invoke catalog-import`: a box's versions copied from another Vagrant server into the
catalog. The other server is tests/hcp_standin.py, a stand-in for HCP Vagrant (a real
HTTP server in its own process, serving a recorded HCP-style box metadata and small real
boxes from tests/boxes.py); the import runs as `invoke`, the result is added with the
stock vagrant 2.3.4 and checked with `invoke catalog-check`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from goldbox.catalog import STATE_FILE
from tests.boxes import make_box
from tests.catalog_fixtures import installed, vagrant

STANDIN = Path(__file__).parent / "hcp_standin.py"
FILES = ["1.0.0-libvirt-amd64", "1.0.0-virtualbox-amd64", "1.0.0-virtualbox-arm64",
         "1.1.0-libvirt-amd64"]
LABELS = ["base 1.0.0 libvirt/amd64", "base 1.0.0 virtualbox/amd64",
          "base 1.0.0 virtualbox/arm64", "base 1.1.0 libvirt/amd64"]


@pytest.fixture(scope="module")
def box_files(tmp_path_factory) -> Path:
    """The boxes the stand-in serves, `<version>-<provider>-<architecture>.box` (real
    small boxes, each with bytes of its own)."""
    files = tmp_path_factory.mktemp("hcp-files")
    for name in FILES:
        built = make_box(files / "build" / name, name.split("-")[0], box_name="base",
                         padding_mib=1 if name == "1.0.0-libvirt-amd64" else 0)
        shutil.move(built.parent / json.loads(built.read_text())["box_file"],
                    files / f"{name}.box")
    shutil.rmtree(files / "build")
    return files


@contextlib.contextmanager
def standin(box_files: Path, log: Path, *options: str) -> Iterator[int]:
    """tests/hcp_standin.py on a free port of 127.0.0.1; yields the port."""
    server = subprocess.Popen([sys.executable, str(STANDIN), "--files", str(box_files),
                               "--log", str(log), *options],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = server.stdout.readline()
        assert first.startswith("serving on "), first + server.stderr.read()
        yield int(first.split()[-1])
    finally:
        server.terminate()
        server.wait(timeout=30)
        server.stdout.close()
        server.stderr.close()


def catalog_import(project: Path, *args: str,
                   env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`invoke catalog-import ARGS` with none of this host's Vagrant token settings."""
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("VAGRANT_CLOUD_TOKEN", "VAGRANT_SERVER_URL")}
    invoke = Path(sys.executable).parent / "invoke"
    return subprocess.run([str(invoke), "catalog-import", *args], cwd=project,
                          env={**full_env, **(env or {})}, capture_output=True, text=True,
                          timeout=600, check=False)


def requests_for_boxes(log: Path) -> list[dict]:
    if not log.exists():
        return []
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    return [line for line in lines if line["path"].endswith("/vagrant.box")]


def state(catalog: Path) -> dict:
    return json.loads((catalog / "base" / STATE_FILE).read_text())


def listed(catalog: Path, channel: str = "stable") -> dict[str, list[dict]]:
    path = catalog / "base" / ("metadata.json" if channel == "stable"
                               else f"channels/{channel}/metadata.json")
    return {v["version"]: v["providers"] for v in json.loads(path.read_text())["versions"]}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    path = tmp_path / "catalog"
    path.mkdir()
    return path


def test_import_copies_every_version_provider_and_architecture_with_states(
        project_copy, catalog, box_files, tmp_path):
    log = tmp_path / "requests.log"
    with standin(box_files, log) as port:
        url = f"http://127.0.0.1:{port}/acme/base"
        result = catalog_import(project_copy, url, "--catalog", str(catalog))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "base: 4 file(s) imported, 0 already in the catalog, 1 skipped, 0 failed" \
            in result.stdout
        for label in LABELS:
            assert f"{label}: downloading http://127.0.0.1:{port}/acme/boxes/" in result.stdout

        # HCP's active -> released (stable), unreleased -> candidate, revoked -> left behind
        versions = {v["version"]: v for v in state(catalog)["versions"]}
        assert {v: e["status"] for v, e in versions.items()} == {"1.0.0": "released",
                                                                 "1.1.0": "candidate"}
        assert all(e["imported_from"] == url and e["imported_at"] > 0
                   for e in versions.values())
        assert list(listed(catalog)) == ["1.0.0"]
        assert list(listed(catalog, "candidate")) == ["1.0.0", "1.1.0"]
        providers = listed(catalog)["1.0.0"]
        assert [(p["name"], p["architecture"], p["default_architecture"]) for p in providers] \
            == [("libvirt", "amd64", True), ("virtualbox", "amd64", True),
                ("virtualbox", "arm64", False)]
        for provider, name in zip(providers + listed(catalog, "candidate")["1.1.0"],
                                  FILES, strict=True):
            version, kind, arch = name.split("-")
            copy = catalog / "base" / version / kind / f"base-{version}-{kind}-{arch}.box"
            assert provider["url"] == copy.as_uri()
            assert provider["checksum_type"] == "sha256"
            assert provider["checksum"] == sha256(copy) == sha256(box_files / f"{name}.box")
        assert not any((catalog / ".goldbox-import").iterdir())

        check = subprocess.run([str(Path(sys.executable).parent / "invoke"), "catalog-check",
                                "--catalog", str(catalog)], cwd=project_copy,
                               capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr

        home = tmp_path / "vagrant.d"
        vagrant(home, "box", "add", str(catalog / "base" / "metadata.json"),
                "--provider", "libvirt")
        assert installed(home) == ["base (libvirt, 1.0.0)"]

        # A second run copies nothing: not one box file is asked for again.
        asked = len(requests_for_boxes(log))
        again = catalog_import(project_copy, url, "--catalog", str(catalog))
        assert again.returncode == 0, again.stdout + again.stderr
        assert "base: 0 file(s) imported, 4 already in the catalog" in again.stdout
        assert len(requests_for_boxes(log)) == asked


def test_a_wrong_checksum_keeps_that_provider_out_and_names_it(project_copy, catalog,
                                                              box_files, tmp_path):
    log = tmp_path / "requests.log"
    with standin(box_files, log, "--wrong-checksum", "1.0.0-virtualbox-amd64") as port:
        result = catalog_import(project_copy, f"http://127.0.0.1:{port}/acme/base",
                                "--catalog", str(catalog))
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()
    assert len(error) == 1
    assert error[0].startswith("goldbox: error: catalog-import ")
    assert "base 1.0.0 virtualbox/amd64: checksum mismatch" in error[0]
    assert "sha512 is" in result.stdout and "deleted, not listed" in result.stdout
    assert [(p["name"], p["architecture"]) for p in listed(catalog)["1.0.0"]] == [
        ("libvirt", "amd64"), ("virtualbox", "arm64")]
    assert not (catalog / "base/1.0.0/virtualbox/base-1.0.0-virtualbox-amd64.box").exists()
    assert not any((catalog / ".goldbox-import").iterdir())


def test_a_dropped_connection_fails_in_one_line_and_the_next_run_resumes(
        project_copy, catalog, box_files, tmp_path):
    log = tmp_path / "requests.log"
    name = "1.0.0-libvirt-amd64"
    size = (box_files / f"{name}.box").stat().st_size
    cut = size // 2
    with standin(box_files, log, "--drop", f"{name}:{cut}") as port:
        result = catalog_import(project_copy, f"http://127.0.0.1:{port}/acme/base",
                                "--catalog", str(catalog))
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()
    assert len(error) == 1, result.stderr
    assert f"/1.0.0/providers/libvirt/amd64/vagrant.box: the download broke off after " \
           f"{cut} of {size} bytes" in error[0]
    assert "run the import again to continue" in error[0]
    assert not (catalog / "base" / "metadata.json").exists() or \
        "1.0.0" not in listed(catalog)
    partials = list((catalog / ".goldbox-import").iterdir())
    assert [p.stat().st_size for p in partials] == [cut]

    with standin(box_files, log) as port:  # the server is fixed
        result = catalog_import(project_copy, f"http://127.0.0.1:{port}/acme/base",
                                "--catalog", str(catalog))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"continuing at byte {cut}" in result.stdout
    resumed = [r for r in requests_for_boxes(log) if "/1.0.0/providers/libvirt/" in r["path"]]
    assert [r["range"] for r in resumed] == [None, f"bytes={cut}-"]
    copy = catalog / "base/1.0.0/libvirt/base-1.0.0-libvirt-amd64.box"
    assert listed(catalog)["1.0.0"][0]["checksum"] == sha256(copy) == \
        sha256(box_files / f"{name}.box")
    assert not any((catalog / ".goldbox-import").iterdir())

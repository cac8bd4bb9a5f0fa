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
from tests.catalog_fixtures import (
    catalog_fixture,  # noqa: F401 (a fixture)
    installed,
    vagrant,
)

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

        invoke = str(Path(sys.executable).parent / "invoke")
        check = subprocess.run([invoke, "catalog-check", "--catalog", str(catalog)],
                               cwd=project_copy, capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        table = subprocess.run([invoke, "boxes", "--catalog", str(catalog)], cwd=project_copy,
                               capture_output=True, text=True, check=False)
        assert table.returncode == 0, table.stdout + table.stderr
        assert "1.0.0" in table.stdout and "virtualbox" in table.stdout

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


def test_the_token_goes_only_to_the_host_vagrant_server_url_names(project_copy, catalog,
                                                                  box_files, tmp_path):
    """HCP answers the metadata with the token and serves the boxes from another host:
    the token must not follow them there (here: metadata on `localhost`, boxes on
    127.0.0.1, two names of one stand-in)."""
    log = tmp_path / "requests.log"
    with standin(box_files, log, "--token", "s3cret") as port:
        url = f"http://localhost:{port}/acme/base"
        refused = catalog_import(project_copy, url, "--catalog", str(catalog))
        assert refused.returncode == 1
        assert refused.stderr.strip() == (f"goldbox: error: {url}: HTTP 401: set "
                                          f"VAGRANT_CLOUD_TOKEN to your token and "
                                          f"VAGRANT_SERVER_URL to the server's URL")
        result = catalog_import(project_copy, url, "--catalog", str(catalog),
                                env={"VAGRANT_CLOUD_TOKEN": "s3cret",
                                     "VAGRANT_SERVER_URL": f"http://localhost:{port}"})
    assert result.returncode == 0, result.stdout + result.stderr
    asked = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["authorization"] for r in asked if r["path"] == "/acme/base"] == [
        None, "Bearer s3cret"]
    boxes = requests_for_boxes(log)
    assert len(boxes) == 4
    assert {(r["host"], r["authorization"]) for r in boxes} == {(f"127.0.0.1:{port}", None)}


def test_metadata_served_over_http_may_not_name_a_local_file(project_copy, catalog,
                                                            box_files, tmp_path):
    template = Path(__file__).parent / "data" / "hcp-local-file.json"
    with standin(box_files, tmp_path / "requests.log", "--template", str(template)) as port:
        result = catalog_import(project_copy, f"http://127.0.0.1:{port}/acme/base",
                                "--catalog", str(catalog))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert ("base 1.0.0 libvirt/amd64: url file:///etc/passwd: a local file named by "
            "metadata served over HTTP (refused)") in result.stderr
    assert [p["name"] for p in listed(catalog)["1.0.0"]] == ["virtualbox"]
    assert not (catalog / "base" / "1.0.0" / "libvirt").exists()
    passwd = Path("/etc/passwd").read_bytes()
    assert not any(p.read_bytes() == passwd for p in catalog.rglob("*") if p.is_file())


def test_every_architecture_survives_the_next_release(project_copy, catalog, box_files,
                                                      tmp_path):
    """Two architectures of one provider share a folder: the sweep every catalog change
    makes keeps both files."""
    with standin(box_files, tmp_path / "requests.log") as port:
        result = catalog_import(project_copy, f"http://127.0.0.1:{port}/acme/base",
                                "--catalog", str(catalog))
    assert result.returncode == 0, result.stdout + result.stderr
    invoke = str(Path(sys.executable).parent / "invoke")
    released = subprocess.run([invoke, "release", "1.1.0", "--catalog", str(catalog),
                               "--box", "base"], cwd=project_copy, capture_output=True,
                              text=True, check=False)
    assert released.returncode == 0, released.stdout + released.stderr
    assert sorted(p.name for p in (catalog / "base/1.0.0/virtualbox").glob("*.box")) == [
        "base-1.0.0-virtualbox-amd64.box", "base-1.0.0-virtualbox-arm64.box"]
    assert list(listed(catalog)) == ["1.0.0", "1.1.0"]
    check = subprocess.run([invoke, "catalog-check", "--catalog", str(catalog)],
                           cwd=project_copy, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def local_source(tmp_path: Path, box: Path, **provider) -> str:
    """A static catalog's metadata.json on this disk (file://), one version, one box."""
    entry = {"name": "libvirt", "url": box.as_uri(), **provider}
    path = tmp_path / "source" / "metadata.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"name": "base", "versions": [
        {"version": "2.0.0", "providers": [entry]}]}))
    return path.as_uri()


def test_a_box_without_a_checksum_needs_allow_unchecked(project_copy, catalog, box_files,
                                                        tmp_path):
    box = box_files / "1.1.0-libvirt-amd64.box"
    url = local_source(tmp_path, box) + "?access_token=s3cret"  # HCP's deprecated way
    refused = catalog_import(project_copy, url, "--catalog", str(catalog))
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"goldbox: error: catalog-import {url}: not imported: base 2.0.0 libvirt/any: no "
        f"published checksum (pass --allow-unchecked to import it with the sha256 of what "
        f"is downloaded)")
    assert not (catalog / "base" / "metadata.json").exists()
    result = catalog_import(project_copy, url, "--catalog", str(catalog), "--allow-unchecked")
    assert result.returncode == 0, result.stdout + result.stderr
    # A static catalog's metadata has no states: what it lists is released.
    [provider] = listed(catalog)["2.0.0"]
    assert provider["checksum"] == sha256(box)
    assert provider["url"] == (catalog / "base/2.0.0/libvirt/base-2.0.0-libvirt.box").as_uri()
    assert state(catalog)["versions"][0]["imported_from"] == url.partition("?")[0]
    assert not any(b"s3cret" in p.read_bytes() for p in catalog.rglob("*") if p.is_file())


@pytest.mark.parametrize(("change", "expected"), [
    ({"name": "../evil"}, "name = '../evil': expected a box name, optionally ORG/NAME"),
    ({"status": "deleted"}, "versions[0].status = 'deleted': expected 'active', "
                            "'unreleased' or 'revoked'"),
    ({"checksum_type": "crc32", "checksum": "0" * 8},
     "checksum_type = 'crc32': expected one of md5, sha1, sha256, sha384, sha512"),
    ({"checksum_type": "sha1", "checksum": "0" * 39},
     "checksum = '" + "0" * 39 + "': expected 40 hex characters for sha1"),
    ({"url": "javascript:alert(1)"}, "versions[0].providers[0].url = 'javascript:alert(1)': "
                                     "expected an http://, https:// or file:// URL"),
    ({"name_of_provider": "virtual box"}, "versions[0].providers[0].name = 'virtual box': "
                                          "expected a Vagrant provider name"),
])
def test_untrusted_metadata_is_refused_in_one_line_before_anything_is_written(
        project_copy, catalog, box_files, tmp_path, change, expected):
    source = {"name": "acme/base", "versions": [{"version": "1.0.0", "providers": [
        {"name": "libvirt", "url": (box_files / "1.1.0-libvirt-amd64.box").as_uri(),
         "checksum_type": "sha256", "checksum": sha256(box_files / "1.1.0-libvirt-amd64.box")}
    ]}]}
    version, provider = source["versions"][0], source["versions"][0]["providers"][0]
    for key, value in change.items():
        if key == "name":
            source["name"] = value
        elif key == "status":
            version["status"] = value
        elif key == "name_of_provider":
            provider["name"] = value
        else:
            provider[key] = value
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(source))
    result = catalog_import(project_copy, path.as_uri(), "--catalog", str(catalog))
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"goldbox: error: {path.as_uri()}: ")
    assert expected in line
    assert list(catalog.iterdir()) == []


def test_files_in_place_but_not_listed_are_checked_not_fetched_again(project_copy, catalog,
                                                                    box_files, tmp_path):
    """An import killed after a file's rename and before its listing: the next run finds
    the file, checks it against the published checksum and lists it without a download."""
    log = tmp_path / "requests.log"
    with standin(box_files, log) as port:
        url = f"http://127.0.0.1:{port}/acme/base"
        assert catalog_import(project_copy, url, "--catalog", str(catalog)).returncode == 0
        for listing in (catalog / "base" / STATE_FILE, catalog / "base" / "metadata.json",
                        catalog / "base/channels/candidate/metadata.json"):
            listing.unlink()
        asked = len(requests_for_boxes(log))
        result = catalog_import(project_copy, url, "--catalog", str(catalog))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("already in place and checked") == 4
    assert len(requests_for_boxes(log)) == asked
    assert list(listed(catalog, "candidate")) == ["1.0.0", "1.1.0"]


def test_a_download_folder_that_is_a_link_is_refused(project_copy, catalog, box_files,
                                                     tmp_path):
    """Whoever can write the catalog could point its download folder anywhere."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (catalog / ".goldbox-import").symlink_to(elsewhere)
    box = box_files / "1.1.0-libvirt-amd64.box"
    result = catalog_import(project_copy, local_source(tmp_path, box, checksum_type="sha256",
                                                       checksum=sha256(box)),
                            "--catalog", str(catalog))
    assert result.returncode == 1
    assert result.stderr.strip() == (f"goldbox: error: {catalog / '.goldbox-import'}: a "
                                     f"symbolic link in the catalog; refused (goldbox never "
                                     f"follows a link in a catalog: whoever can write the "
                                     f"catalog could point it anywhere); remove the link")
    assert list(elsewhere.iterdir()) == []
    assert not (catalog / "base").exists()

"""The catalog as a team registry, on real parts: nginx serving it (content types, range
requests, hidden dot files also percent-encoded, no listings), per-teammate tokens the
way stock vagrant 2.3.4 sends them, the release life cycle and channels as
`vagrant box outdated` sees them, and `invoke catalog-check` catching each defect."""

from __future__ import annotations

import http.client
import json
import os
import stat
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from goldbox.catalog import (
    LOCK_FILE,
    PARTIAL_PREFIX,
    STATE_FILE,
    prune,
    publish,
    release,
    revoke,
)
from goldbox.catalog.tokens import TOKENS_FILE
from tests.boxes import BOX_NAME
from tests.catalog_fixtures import (
    QUIET,
    boxes_dir_fixture,  # noqa: F401 (a fixture)
    catalog_fixture,  # noqa: F401 (a fixture)
    installed,
    nginx_accepts,
    serving,
    vagrant,
)
from tests.conftest import run_invoke


def raw_get(base: str, path: str, method: str = "GET",
            headers: dict | None = None) -> http.client.HTTPResponse:
    """A request with `path` sent exactly as written (no client-side normalising)."""
    where = urlsplit(base)
    connection = http.client.HTTPConnection(where.hostname, where.port, timeout=10)
    connection.request(method, path, headers=headers or {})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def stable_versions(catalog: Path) -> list[str]:
    meta = json.loads((catalog / BOX_NAME / "metadata.json").read_text())
    return [v["version"] for v in meta["versions"]]


# ---- nginx --------------------------------------------------------------------------------


def test_nginx_serves_json_ranges_and_never_dot_files_or_listings(project_copy, catalog,
                                                                 boxes_dir, tmp_path):
    published = publish(boxes_dir("0.1.0"), catalog, release=True, progress=QUIET)
    (catalog / BOX_NAME / f"{PARTIAL_PREFIX}upload").write_bytes(b"unfinished")
    (catalog / ".hidden").mkdir()
    (catalog / ".hidden" / "secret.json").write_text("{}")
    box_relative = published.box_path.relative_to(catalog).as_posix()
    data = published.box_path.read_bytes()
    with serving(project_copy, catalog) as base:
        for method in ("GET", "HEAD"):
            response = requests.request(method, f"{base}{BOX_NAME}/metadata.json", timeout=10)
            assert response.status_code == 200
            assert response.headers["Content-Type"] == "application/json"
            assert "nginx/" not in response.headers.get("Server", "")  # no version shown
        ranged = requests.get(base + box_relative, headers={"Range": "bytes=100-199"},
                              timeout=10)
        assert ranged.status_code == 206 and ranged.content == data[100:200]
        assert ranged.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
        assert requests.get(base + box_relative, timeout=10).content == data

        hidden = [f"/{LOCK_FILE}", "/%2egoldbox.lock", "/%2Egoldbox.lock",
                  f"/{BOX_NAME}/{STATE_FILE}", f"/{BOX_NAME}/%2egoldbox-state.json",
                  f"/{BOX_NAME}/{PARTIAL_PREFIX}upload",
                  f"/{BOX_NAME}/%2e{PARTIAL_PREFIX[1:]}upload",
                  f"/{BOX_NAME}/./{STATE_FILE}", f"/x/../{LOCK_FILE}",
                  f"/{BOX_NAME}/%2e%2e/{LOCK_FILE}", "/.hidden/secret.json",
                  "/%2ehidden/secret.json", "/", f"/{BOX_NAME}/", f"/{BOX_NAME}/0.1.0/"]
        for path in hidden:
            for method in ("GET", "HEAD"):
                assert raw_get(base, path, method).status == 404, (method, path)
        # What the last two would have been without the rules: a real file, a folder.
        assert raw_get(base, f"/{BOX_NAME}/%6detadata.json").status == 200
        runtime = next((project_copy / "build" / "catalog-serve").iterdir())
        assert (runtime / "nginx.pid").is_file() and (runtime / "access.log").is_file()
    assert not (runtime / "nginx.pid").exists()  # stopped with catalog-serve


def test_render_only_writes_a_site_a_host_nginx_accepts(project_copy, catalog, boxes_dir,
                                                        tmp_path):
    publish(boxes_dir("0.1.0"), catalog, release=True, progress=QUIET)
    out = tmp_path / "site"
    result = run_invoke(project_copy, "catalog-serve", "--catalog", str(catalog),
                        "--render-only", str(out), "--listen", "127.0.0.1:8181",
                        "--server-name", "boxes.example.org", "--insecure-http")
    assert result.returncode == 0, result.stderr
    site = out / "goldbox-catalog.conf"
    text = site.read_text()
    assert f'root "{catalog}";' in text and "listen 127.0.0.1:8181;" in text
    assert "server_name boxes.example.org;" in text and "map " not in text
    assert stat.S_IMODE(site.stat().st_mode) == 0o644
    # nginx -t of a host config that includes it, as /etc/nginx/conf.d/ would.
    nginx_accepts(tmp_path / "host", site)

    token = run_invoke(project_copy, "catalog-token", "add", "alice", "--catalog", str(catalog))
    assert token.returncode == 0, token.stderr
    # catalog-token rendered the recorded site again: it includes a token map now.
    tokens_map = out / "goldbox-catalog.tokens"
    assert f'include "{tokens_map}";' in site.read_text()
    assert stat.S_IMODE(tokens_map.stat().st_mode) == 0o600  # it holds the tokens
    assert token.stdout.strip() in tokens_map.read_text()
    assert token.stdout.strip() not in site.read_text()


# ---- tokens, as vagrant 2.3.4 sends them --------------------------------------------------


def test_tokens_per_teammate_with_vagrant_add_outdated_update(project_copy, catalog,
                                                             boxes_dir, tmp_path):
    with serving(project_copy, catalog) as base:
        def publish_cli(version: str) -> None:
            result = run_invoke(project_copy, "publish", "--release", "--manifest",
                                str(boxes_dir(version)), "--catalog", str(catalog),
                                "--base-url", base)
            assert result.returncode == 0, result.stderr

        publish_cli("0.1.0")
        tokens = {}
        for name in ("alice", "bob"):
            result = run_invoke(project_copy, "catalog-token", "add", name,
                                "--catalog", str(catalog))
            assert result.returncode == 0, result.stderr
            tokens[name] = result.stdout.strip()
            assert "reloaded the nginx" in result.stderr
        assert stat.S_IMODE((catalog / TOKENS_FILE).stat().st_mode) == 0o600
        metadata_url = f"{base}{BOX_NAME}/metadata.json"
        # catalog-token waits for nginx's reload: the new tokens count at once.
        for method in ("GET", "HEAD"):
            for headers, params, status in (
                    ({}, {}, 401),
                    ({"Authorization": "Bearer wrong"}, {}, 401),
                    ({"Authorization": f"Bearer {tokens['alice']}"}, {}, 200),
                    ({}, {"access_token": tokens["bob"]}, 200),
                    ({"Authorization": tokens["bob"]}, {}, 401)):  # without "Bearer "
                response = requests.request(method, metadata_url, headers=headers,
                                            params=params, timeout=10)
                assert response.status_code == status, (method, headers, params)

        # No token: Vagrant's error names the 401.
        denied = vagrant(tmp_path / "nobody.d", "box", "add", metadata_url, check=False)
        assert denied.returncode != 0
        assert "401" in denied.stderr, denied.stderr

        header = {"VAGRANT_CLOUD_TOKEN": tokens["alice"], "VAGRANT_SERVER_URL": base}
        query = {"VAGRANT_CLOUD_TOKEN": tokens["bob"], "VAGRANT_SERVER_URL": base,
                 "VAGRANT_SERVER_ACCESS_TOKEN_BY_URL": "1"}
        homes = {"alice": tmp_path / "alice.d", "bob": tmp_path / "bob.d"}
        for name, env in (("alice", header), ("bob", query)):
            added = vagrant(homes[name], "box", "add", metadata_url, env=env)
            assert f"Successfully added box '{BOX_NAME}' (v0.1.0)" in added.stdout
        publish_cli("0.2.0")
        for name, env in (("alice", header), ("bob", query)):
            outdated = vagrant(homes[name], "box", "outdated", "--global", env=env).stdout
            assert "is outdated! Current: 0.1.0. Latest: 0.2.0" in outdated, (name, outdated)
        updated = vagrant(homes["alice"], "box", "update", "--box", BOX_NAME, env=header)
        assert f"Successfully added box '{BOX_NAME}' (v0.2.0)" in updated.stdout
        assert f"{BOX_NAME} (libvirt, 0.2.0)" in installed(homes["alice"])

        # Revoking bob leaves alice working.
        result = run_invoke(project_copy, "catalog-token", "revoke", "bob",
                            "--catalog", str(catalog))
        assert result.returncode == 0, result.stderr
        assert requests.get(metadata_url, params={"access_token": tokens["bob"]},
                            timeout=10).status_code == 401
        refused = vagrant(homes["bob"], "box", "update", "--box", BOX_NAME, env=query,
                          check=False)
        assert refused.returncode != 0 and "401" in refused.stderr, refused.stderr
        outdated = vagrant(homes["bob"], "box", "outdated", "--global", env=query,
                           check=False)
        assert (f"* '{BOX_NAME}' for 'libvirt': Error loading metadata: The requested URL "
                f"returned error: 401") in outdated.stdout + outdated.stderr
        outdated = vagrant(homes["alice"], "box", "outdated", "--global", env=header).stdout
        assert "(v0.2.0) is up to date" in outdated

        check = run_invoke(project_copy, "catalog-check", "--catalog", base, "--box", BOX_NAME,
                           "--token", tokens["alice"])
        assert check.returncode == 0, check.stdout + check.stderr
        check = run_invoke(project_copy, "catalog-check", "--catalog", base, "--box", BOX_NAME)
        assert check.returncode == 1 and "HTTP 401" in check.stderr


# ---- life cycle ---------------------------------------------------------------------------


def test_release_revoke_and_channels_as_vagrant_sees_them(project_copy, catalog, boxes_dir,
                                                         tmp_path):
    def cli(*args: str) -> subprocess.CompletedProcess:
        result = run_invoke(project_copy, *args, "--catalog", str(catalog))
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    cli("publish", "--manifest", str(boxes_dir("0.1.0")))
    stable = catalog / BOX_NAME / "metadata.json"
    candidate = catalog / BOX_NAME / "channels" / "candidate" / "metadata.json"
    assert stable_versions(catalog) == []
    cli("release", "0.1.0", "--box", BOX_NAME)
    home = tmp_path / "team.d"
    vagrant(home, "box", "add", str(stable))

    cli("publish", "--manifest", str(boxes_dir("0.2.0")))  # a candidate: not offered yet
    outdated = vagrant(home, "box", "outdated", "--global").stdout
    assert "(v0.1.0) is up to date" in outdated
    tester = tmp_path / "tester.d"  # the candidate channel: same box files
    added = vagrant(tester, "box", "add", str(candidate))
    assert f"Successfully added box '{BOX_NAME}' (v0.2.0)" in added.stdout
    cand = json.loads(candidate.read_text())
    assert [v["version"] for v in cand["versions"]] == ["0.1.0", "0.2.0"]

    cli("release", "0.2.0", "--box", BOX_NAME)
    outdated = vagrant(home, "box", "outdated", "--global").stdout
    assert "is outdated! Current: 0.1.0. Latest: 0.2.0" in outdated

    revoked = cli("revoke", "0.2.0", "--box", BOX_NAME)
    assert "hidden from every channel" in revoked.stdout
    assert stable_versions(catalog) == ["0.1.0"]
    assert "(v0.1.0) is up to date" in vagrant(home, "box", "outdated", "--global").stdout
    pinned = vagrant(tmp_path / "pinned.d", "box", "add", str(stable), "--box-version",
                     "0.2.0", check=False)
    assert pinned.returncode != 0
    assert "has no available version that\nmatches the constraints" in pinned.stderr
    assert "Constraints: 0.2.0\nAvailable versions: 0.1.0" in pinned.stderr
    files = catalog / BOX_NAME / "0.2.0" / "libvirt"
    assert any(files.glob("*.box"))  # kept for downloads under way


def test_revoked_files_are_kept_through_the_grace_period_and_gone_after(catalog, boxes_dir):
    for version in ("0.1.0", "0.2.0"):
        publish(boxes_dir(version), catalog, release=True, progress=QUIET)
    revoked_at = 1_800_000_000.0
    revoke(catalog, BOX_NAME, "0.2.0", grace_hours=24, now=revoked_at, progress=QUIET)
    folder = catalog / BOX_NAME / "0.2.0" / "libvirt"
    assert stable_versions(catalog) == ["0.1.0"] and any(folder.glob("*.box"))
    # 23 h later: still there, through publish and prune.
    publish(boxes_dir("0.3.0"), catalog, grace_hours=24, now=revoked_at + 23 * 3600,
            progress=QUIET)
    assert prune(catalog, BOX_NAME, keep=5, grace_hours=24, now=revoked_at + 23 * 3600,
                 progress=QUIET) == []
    assert any(folder.glob("*.box"))
    with pytest.raises(Exception, match="revoked versions stay revoked"):
        release(catalog, BOX_NAME, "0.2.0", progress=QUIET)
    # 24 h later: the next prune deletes them and forgets the version.
    assert prune(catalog, BOX_NAME, keep=5, grace_hours=24, now=revoked_at + 24 * 3600,
                 progress=QUIET) == ["0.2.0"]
    assert not (catalog / BOX_NAME / "0.2.0").exists()
    state = json.loads((catalog / BOX_NAME / STATE_FILE).read_text())
    assert [(v["version"], v["status"]) for v in state["versions"]] == [
        ("0.1.0", "released"), ("0.3.0", "candidate")]


def test_release_can_require_a_verified_sha256(catalog, boxes_dir):
    from goldbox.catalog import record_verified
    from goldbox.errors import GoldboxError

    published = publish(boxes_dir("0.1.0"), catalog, progress=QUIET)
    with pytest.raises(GoldboxError, match=r"0.1.0 \(libvirt, sha256 .*not verified; run "
                                           r"`invoke verify --from-catalog"):
        release(catalog, BOX_NAME, "0.1.0", require_verified=True, progress=QUIET)
    assert stable_versions(catalog) == []
    sha = json.loads((published.box_path.parent / "manifest.json").read_text())["box_sha256"]
    with pytest.raises(GoldboxError, match="is not this version's box"):
        record_verified(catalog, BOX_NAME, "0.1.0", "0" * 64, progress=QUIET)
    record_verified(catalog, BOX_NAME, "0.1.0", sha, progress=QUIET)
    release(catalog, BOX_NAME, "0.1.0", require_verified=True, progress=QUIET)
    assert stable_versions(catalog) == ["0.1.0"]


# ---- catalog-check ------------------------------------------------------------------------


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_metadata(catalog: Path, change) -> None:
    path = catalog / BOX_NAME / "metadata.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def _uppercase(meta: dict) -> None:
    meta["versions"][0]["providers"][0]["checksum_type"] = "SHA256"


def _unordered(meta: dict) -> None:
    meta["versions"].reverse()


def _duplicate_provider(meta: dict) -> None:
    meta["versions"][0]["providers"].append(dict(meta["versions"][0]["providers"][0]))


def _rename(meta: dict) -> None:
    meta["name"] = "other"


DEFECTS = {
    "flipped byte": (lambda c: _flip_byte(next((c / BOX_NAME / "0.2.0").rglob("*.box"))),
                     "0.2.0/libvirt/goldbox-test-0.2.0-libvirt.box has sha256"),
    "uppercase checksum type": (lambda c: _edit_metadata(c, _uppercase),
                                "checksum_type = 'SHA256': expected 'sha256' (lowercase)"),
    "unordered versions": (lambda c: _edit_metadata(c, _unordered),
                           "versions out of Vagrant's order: 0.10.0, 0.2.0"),
    "two entries per provider": (lambda c: _edit_metadata(c, _duplicate_provider),
                                 "more than one entry for architecture amd64"),
    "box name": (lambda c: _edit_metadata(c, _rename),
                 "name = 'other', but it lies in the folder of box"),
    "dangling file": (lambda c: (c / BOX_NAME / "0.2.0" / "libvirt" / "old.box")
                      .write_bytes(b"x"), "old.box: dangling"),
    "dangling entry": (lambda c: next((c / BOX_NAME / "0.10.0").rglob("*.box")).unlink(),
                       "no such box (a dangling entry)"),
    "missing plan": (lambda c: (c / BOX_NAME / "0.2.0" / "libvirt" / "plan.json").unlink(),
                     "0.2.0/libvirt/plan.json: missing (publish copies the build's plan"),
    "broken plan": (lambda c: (c / BOX_NAME / "0.2.0" / "libvirt" / "plan.json")
                    .write_text("{not json"), "0.2.0/libvirt/plan.json: not valid JSON"),
    "not a plan": (lambda c: (c / BOX_NAME / "0.2.0" / "libvirt" / "plan.json")
                   .write_text("{}"), "0.2.0/libvirt/plan.json: missing key 'format'"),
}


@pytest.mark.parametrize("defect", DEFECTS)
def test_catalog_check_catches_each_defect(defect, project_copy, catalog, boxes_dir):
    for version in ("0.2.0", "0.10.0"):
        publish(boxes_dir(version), catalog, release=True, progress=QUIET)
    clean = run_invoke(project_copy, "catalog-check", "--catalog", str(catalog))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "1 box(es), no problem" in clean.stdout
    inject, expected = DEFECTS[defect]
    inject(catalog)
    result = run_invoke(project_copy, "catalog-check", "--catalog", str(catalog))
    assert result.returncode == 1
    assert any(expected in line for line in result.stdout.splitlines()), result.stdout
    assert result.stderr.startswith("goldbox: error: catalog-check ")


def test_catalog_check_over_http_content_type_and_checksums(project_copy, catalog,
                                                           boxes_dir, tmp_path):
    with serving(project_copy, catalog) as base:
        for version in ("0.1.0", "0.2.0"):
            publish(boxes_dir(version), catalog, base_url=base, release=True, progress=QUIET)
        clean = run_invoke(project_copy, "catalog-check", "--catalog", base, "--box", BOX_NAME)
        assert clean.returncode == 0, clean.stdout + clean.stderr
        _flip_byte(next((catalog / BOX_NAME / "0.1.0").rglob("*.box")))
        result = run_invoke(project_copy, "catalog-check", "--catalog", base, "--box", BOX_NAME)
        assert result.returncode == 1
        assert "goldbox-test-0.1.0-libvirt.box has sha256" in result.stdout

    # A host whose nginx serves .json as text/plain: Vagrant would take it for a box.
    plain = tmp_path / "plain-site"
    plain.mkdir()
    _serve_with_type(project_copy, catalog, plain)


def _serve_with_type(project_copy: Path, catalog: Path, work: Path) -> None:
    """nginx serving the catalog with the wrong type for .json: catalog-check says so."""
    from goldbox.catalog.serve import free_port
    from goldbox.catalog.sites import Site, render_site

    port = free_port()
    site = render_site(catalog, Site(directory=str(work), listen=f"127.0.0.1:{port}",
                                     access_log=str(work / "access.log"),
                                     error_log=str(work / "error.log")), private=False)
    site = site.replace("application/json json;", "text/plain json;")
    (work / "site.conf").write_text(site)
    (work / "nginx.conf").write_text(
        f"daemon off;\npid {work}/nginx.pid;\nerror_log {work}/error.log;\n"
        f"{'user root root;' if os.geteuid() == 0 else ''}\nevents {{}}\n"
        f"http {{\n include {work}/site.conf;\n}}\n")
    nginx = subprocess.Popen(["nginx", "-p", f"{work}/", "-c", str(work / "nginx.conf"),
                              "-e", str(work / "error.log")])
    try:
        base = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 10
        while True:
            try:
                requests.get(base, timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        result = run_invoke(project_copy, "catalog-check", "--catalog", base, "--box", BOX_NAME)
        assert result.returncode == 1
        assert "metadata.json: served as 'text/plain', not application/json" in result.stdout
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)

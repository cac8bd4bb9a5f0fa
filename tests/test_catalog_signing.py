"""Boxes signed by the team, checked by every teammate (issue 21 §2): publish and release
sign every metadata.json, manifest.json and plan.json they write (catalog.signing_key,
real ssh-keygen), `catalog-check --signers` names each file whose signature fails, and
`invoke add` verifies the metadata before stock vagrant 2.3.4 adds the box against the
signed sha256: a swapped box, a swapped metadata.json, a removed signature and a foreign
one each stop it in one line, over plain http too. Real nginx (catalog-serve)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from goldbox.catalog import prune, publish, release
from goldbox.signing import sign
from tests.boxes import BOX_NAME, make_box
from tests.catalog_fixtures import (
    QUIET,
    issue_token,
    make_test_ca,
    one_line_error,
    serving,
    set_catalog_keys,
    team_folder,
    vagrant,
)
from tests.test_signing import allowed_signers, make_key

SIGNED = ["metadata.json", "channels/candidate/metadata.json", "0.1.0/libvirt/manifest.json",
          "0.1.0/libvirt/plan.json"]


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "keys"
    folder.mkdir()
    return {name: make_key(folder, name) for name in ("alice", "mallory")}


@pytest.fixture
def signers(tmp_path: Path, keys) -> Path:
    return allowed_signers(tmp_path / "allowed_signers", ("alice@team", keys["alice"]))


def invoke(project: Path, *args: str, env: dict[str, str] | None = None):
    """`invoke ARGS` in `project`, with none of the host's Vagrant server settings."""
    clean = {key: value for key, value in os.environ.items()
             if key not in ("VAGRANT_SERVER_URL", "VAGRANT_CLOUD_TOKEN", "VAGRANT_HOME")}
    return subprocess.run([str(Path(sys.executable).parent / "invoke"), *args], cwd=project,
                          capture_output=True, text=True, timeout=600, check=False,
                          env={**clean, **(env or {})})


def signed_catalog(tmp_path: Path, key: Path, base: str | None = None) -> Path:
    catalog = tmp_path / "catalog"
    catalog.mkdir(exist_ok=True)
    publish(make_box(tmp_path / "dist" / "0.1.0", "0.1.0"), catalog_dir=catalog,
            base_url=base, signing_key=key, progress=QUIET)
    release(catalog, BOX_NAME, "0.1.0", signing_key=key, progress=QUIET)
    return catalog


# ---- publish and release sign; catalog-check verifies ------------------------------------


def test_publish_with_the_configured_key_signs_and_catalog_check_verifies(
        project_copy, tmp_path, keys, signers):
    set_catalog_keys(project_copy, signing_key=str(keys["alice"]))
    catalog = tmp_path / "catalog"
    dist = make_box(tmp_path / "dist" / "0.1.0", "0.1.0")
    published = invoke(project_copy, "publish", "--manifest", str(dist), "--catalog",
                       str(catalog))
    assert published.returncode == 0, published.stderr
    assert "not signed" not in published.stdout
    assert invoke(project_copy, "release", "0.1.0", "--catalog", str(catalog), "--box",
                  BOX_NAME).returncode == 0
    for relative in SIGNED:
        assert (catalog / BOX_NAME / f"{relative}.sig").read_text().startswith(
            "-----BEGIN SSH SIGNATURE-----"), relative
    checked = invoke(project_copy, "catalog-check", "--catalog", str(catalog),
                     "--signers", str(signers))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_catalog_check_names_each_file_whose_signature_fails(project_copy, tmp_path, keys,
                                                             signers):
    catalog = signed_catalog(tmp_path, keys["alice"])
    box_dir = catalog / BOX_NAME
    metadata = box_dir / "metadata.json"
    tampered = json.loads(metadata.read_text())
    tampered["description"] = "changed"
    metadata.write_text(json.dumps(tampered))
    (box_dir / "0.1.0/libvirt/manifest.json.sig").unlink()
    plan = box_dir / "0.1.0/libvirt/plan.json"
    (box_dir / "0.1.0/libvirt/plan.json.sig").write_text(
        sign(plan.read_text(), keys["mallory"], "plan"))
    result = invoke(project_copy, "catalog-check", "--catalog", str(catalog),
                    "--signers", str(signers))
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert lines == [
        f"{metadata}: the signature does not match its content (changed after alice@team "
        f"signed it)",
        f"{box_dir}/0.1.0/libvirt/manifest.json: not signed (no {box_dir}/0.1.0/libvirt/"
        f"manifest.json.sig); a catalog that signs its files has one beside each",
        f"{plan}: signed by a key that {signers} does not list (a foreign or a removed "
        f"maintainer's key)",
    ], result.stdout
    assert "3 problem(s)" in result.stderr


def test_without_a_key_nothing_is_signed_and_publish_says_so_once(tmp_path, keys):
    said: list[str] = []
    catalog = tmp_path / "catalog"
    publish(make_box(tmp_path / "dist" / "0.1.0", "0.1.0"), catalog_dir=catalog,
            signing_key=None, progress=said.append)
    assert len([line for line in said if "not signed" in line]) == 1, said
    assert not list(catalog.rglob("*.sig"))


def test_an_unsigned_write_leaves_no_signature_of_older_content(tmp_path, keys, signers):
    catalog = tmp_path / "catalog"
    publish(make_box(tmp_path / "dist" / "0.1.0", "0.1.0"), catalog_dir=catalog,
            signing_key=keys["alice"], progress=QUIET)
    assert (catalog / BOX_NAME / "metadata.json.sig").is_file()
    release(catalog, BOX_NAME, "0.1.0", signing_key=None, progress=QUIET)
    assert not (catalog / BOX_NAME / "metadata.json.sig").exists()


def test_a_signature_left_stale_by_a_crash_is_replaced_by_the_next_change(
        project_copy, tmp_path, keys, signers):
    """Killed between write_signed's two renames (the signature first), the old file
    lies beside a signature of the new content: catalog-check says so, and the next
    change signs and writes both again."""
    catalog = tmp_path / "catalog"
    publish(make_box(tmp_path / "dist" / "0.1.0", "0.1.0"), catalog_dir=catalog,
            signing_key=keys["alice"], progress=QUIET)
    stable = catalog / BOX_NAME / "metadata.json"
    released = json.loads(stable.read_text())
    released["versions"] = [{"version": "0.1.0", "providers": []}]
    (catalog / BOX_NAME / "metadata.json.sig").write_text(
        sign(json.dumps(released), keys["alice"], "crash"))
    assert invoke(project_copy, "catalog-check", "--catalog", str(catalog), "--signers",
                  str(signers)).returncode == 1
    release(catalog, BOX_NAME, "0.1.0", signing_key=keys["alice"], progress=QUIET)
    checked = invoke(project_copy, "catalog-check", "--catalog", str(catalog),
                     "--signers", str(signers))
    assert checked.returncode == 0, checked.stdout


def test_revoke_and_prune_sign_the_channels_they_change(project_copy, tmp_path, keys,
                                                       signers):
    set_catalog_keys(project_copy, signing_key=str(keys["alice"]))
    catalog = signed_catalog(tmp_path, keys["alice"])
    for version in ("0.2.0", "0.3.0"):
        publish(make_box(tmp_path / "dist" / version, version), catalog_dir=catalog,
                signing_key=keys["alice"], release=True, progress=QUIET)
    candidate = catalog / BOX_NAME / "channels/candidate/metadata.json"
    before = candidate.read_text()
    assert invoke(project_copy, "revoke", "0.3.0", "--catalog", str(catalog), "--box",
                  BOX_NAME).returncode == 0
    # The function, not the task: the task also purges this host's libvirt pool.
    prune(catalog, BOX_NAME, 1, signing_key=keys["alice"], progress=QUIET)
    assert candidate.read_text() != before
    checked = invoke(project_copy, "catalog-check", "--catalog", str(catalog),
                     "--signers", str(signers))
    assert checked.returncode == 0, checked.stdout + checked.stderr


# ---- invoke add ----------------------------------------------------------------------------


def add(project: Path, home: Path, target: str, signers: Path | None, *options: str,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`invoke add TARGET` (with --signers unless None) into the VAGRANT_HOME `home`."""
    home.mkdir(parents=True, exist_ok=True)
    trust = [] if signers is None else ["--signers", str(signers)]
    return invoke(project, "add", target, *trust, *options,
                  env={"VAGRANT_HOME": str(home), "VAGRANT_CHECKPOINT_DISABLE": "1",
                       **(env or {})})


def test_add_by_short_name_over_https_verifies_then_vagrant_adds_and_outdated_works(
        project_copy, tmp_path, keys, signers):
    tls = make_test_ca(tmp_path / "pki")
    set_catalog_keys(project_copy, org="acme")
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    team = team_folder(tmp_path, f"acme/{BOX_NAME}", tls["ca"])
    with serving(project_copy, catalog, "--cert", str(tls["cert"]),
                 "--key", str(tls["key"])) as base:
        for version in ("0.1.0", "0.2.0"):
            publish(make_box(tmp_path / "dist" / version, version), catalog_dir=catalog,
                    base_url=base, org="acme", signing_key=keys["alice"], progress=QUIET)
        release(catalog, BOX_NAME, "0.1.0", signing_key=keys["alice"], progress=QUIET)
        token = issue_token(project_copy, catalog, "alice")
        server = {"VAGRANT_SERVER_URL": base.rstrip("/"), "VAGRANT_CLOUD_TOKEN": token}
        home = team / "vagrant.d"

        no_token = add(project_copy, home, f"acme/{BOX_NAME}", signers, "--cacert",
                       str(tls["ca"]), env={"VAGRANT_SERVER_URL": server["VAGRANT_SERVER_URL"]})
        assert "HTTP 401" in one_line_error(no_token)
        elsewhere = add(project_copy, home, f"{base}{BOX_NAME}/metadata.json", signers,
                        "--cacert", str(tls["ca"]),
                        env={**server, "VAGRANT_SERVER_URL": "https://boxes.example.org"})
        assert "HTTP 401" in one_line_error(elsewhere)  # the token goes to its server only
        added = add(project_copy, home, f"acme/{BOX_NAME}", signers, "--cacert",
                    str(tls["ca"]), env=server)
        assert added.returncode == 0, added.stderr
        assert added.stdout.strip() == (
            f"added acme/{BOX_NAME} 0.1.0 (libvirt) from {base}acme/{BOX_NAME}; its "
            f"metadata is signed by alice@team")
        box_dir = home / "boxes" / f"acme-VAGRANTSLASH-{BOX_NAME}"
        assert (box_dir / "metadata_url").read_text() == f"{base}acme/{BOX_NAME}"

        release(catalog, BOX_NAME, "0.2.0", signing_key=keys["alice"], progress=QUIET)
        outdated = vagrant(home, "box", "outdated", "--force",
                           env={**server, "VAGRANT_DEFAULT_PROVIDER": "libvirt"})
        assert "The latest is version '0.2.0'" in " ".join(outdated.stdout.split()), (
            outdated.stdout)
        again = add(project_copy, home, f"acme/{BOX_NAME}", signers, "--cacert",
                    str(tls["ca"]), env=server)
        assert f"added acme/{BOX_NAME} 0.2.0 (libvirt)" in again.stdout, again.stderr


@pytest.fixture
def over_http(project_copy, tmp_path, keys):
    """A catalog signed by alice, served over plain http (no token): what an attacker
    who can change the catalog or the connection could serve."""
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    with serving(project_copy, catalog) as base:
        signed_catalog(tmp_path, keys["alice"], base)
        yield catalog, f"{base}{BOX_NAME}/metadata.json"


def _swap_box(tmp_path: Path, catalog: Path) -> None:
    evil = make_box(tmp_path / "evil", "0.1.0")
    box = catalog / BOX_NAME / "0.1.0" / "libvirt" / f"{BOX_NAME}-0.1.0-libvirt.box"
    box.write_bytes((evil.parent / box.name).read_bytes())


def test_add_over_plain_http_adds_a_signed_box(project_copy, tmp_path, signers, over_http):
    _, url = over_http
    unset = add(project_copy, tmp_path / "home", url, None, env={"HOME": str(tmp_path)})
    assert (f"--signers {tmp_path}/.config/goldbox/allowed_signers: no such file"
            in one_line_error(unset))
    (project_copy / "trusted").write_bytes(signers.read_bytes())
    set_catalog_keys(project_copy, allowed_signers="trusted")  # relative to the project
    added = add(project_copy, tmp_path / "home", url, None)
    assert added.returncode == 0, added.stderr
    assert "signed by alice@team" in added.stdout
    assert f"{BOX_NAME} (libvirt, 0.1.0)" in vagrant(tmp_path / "home", "box", "list").stdout


def test_add_refuses_a_swapped_box(project_copy, tmp_path, signers, over_http):
    catalog, url = over_http
    _swap_box(tmp_path, catalog)
    refused = add(project_copy, tmp_path / "home", url, signers)
    assert "does not have the sha256 that the signed metadata" in one_line_error(refused)
    assert BOX_NAME not in vagrant(tmp_path / "home", "box", "list").stdout


def test_add_refuses_a_swapped_metadata_json(project_copy, tmp_path, signers, over_http):
    catalog, url = over_http
    _swap_box(tmp_path, catalog)
    metadata = catalog / BOX_NAME / "metadata.json"
    evil_sha = json.loads((tmp_path / "evil" / "manifest.json").read_text())["box_sha256"]
    data = json.loads(metadata.read_text())
    data["versions"][0]["providers"][0]["checksum"] = evil_sha  # matches the swapped box
    metadata.write_text(json.dumps(data))
    refused = add(project_copy, tmp_path / "home", url, signers)
    assert one_line_error(refused) == (f"goldbox: error: {url}: the signature does not match "
                                       f"its content (changed after alice@team signed it)")


def test_add_refuses_a_removed_signature(project_copy, tmp_path, signers, over_http):
    catalog, url = over_http
    (catalog / BOX_NAME / "metadata.json.sig").unlink()
    refused = add(project_copy, tmp_path / "home", url, signers)
    assert one_line_error(refused).startswith(f"goldbox: error: {url}: not signed")
    checked = invoke(project_copy, "catalog-check", "--catalog", url.rsplit("/", 2)[0] + "/",
                     "--box", BOX_NAME, "--signers", str(signers))  # over HTTP too
    assert checked.returncode == 1
    assert checked.stdout.strip().splitlines() == [
        f"{url}: not signed (no {url}.sig); a catalog that signs its files has one beside "
        f"each"], checked.stdout


def test_add_refuses_a_foreign_signature(project_copy, tmp_path, keys, signers, over_http):
    catalog, url = over_http
    metadata = catalog / BOX_NAME / "metadata.json"
    (catalog / BOX_NAME / "metadata.json.sig").write_text(
        sign(metadata.read_text(), keys["mallory"], "mallory"))
    refused = add(project_copy, tmp_path / "home", url, signers)
    assert f"{url}: signed by a key that {signers} does not list" in one_line_error(refused)

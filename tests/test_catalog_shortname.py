"""Vagrantfiles that say `config.vm.box = "acme/goldbox-test"` keep working after HCP
Vagrant (issue 21 §1): with catalog.org the catalog names the box ORG/BOX and answers
Vagrant's short-name request `$VAGRANT_SERVER_URL/ORG/BOX`. Real nginx (catalog-serve),
a test CA made with openssl, stock vagrant 2.3.4 and, opt-in, Vagrant 2.4 (`box add`,
`box outdated` and `box update` boot nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from goldbox.catalog import publish, release
from goldbox.errors import GoldboxError
from tests.boxes import BOX_NAME, make_box
from tests.catalog_fixtures import (
    QUIET,
    issue_token,
    serving,
    set_catalog_keys,
    team_folder,
    vagrant,
    vagrant_2_4,
)
from tests.conftest import run_invoke

SHORT = f"acme/{BOX_NAME}"


def publish_version(tmp_path: Path, catalog: Path, base: str, version: str,
                    released: bool = True) -> None:
    publish(make_box(tmp_path / "dist" / version, version), catalog_dir=catalog,
            base_url=base, release=released, org="acme", progress=QUIET)


@pytest.mark.parametrize("release_of_vagrant", ["2.3.4", "2.4"])
def test_a_short_name_with_stock_vagrant_over_https_with_a_token(project_copy, tmp_path,
                                                                 tls, release_of_vagrant):
    """Debian's vagrant 2.3.4, and Vagrant 2.4 (what a teammate on a Mac runs; opt-in:
    its source tree, see vagrant_2_4)."""
    command = vagrant_2_4() if release_of_vagrant == "2.4" else ("vagrant",)
    # 2.4 lists each box's architectures too: `(libvirt, 0.1.0, (amd64))`.
    listed_as = ", (amd64))" if release_of_vagrant == "2.4" else ")"
    provider = "libvirt (amd64)" if release_of_vagrant == "2.4" else "libvirt"
    set_catalog_keys(project_copy, org="acme")
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    team = team_folder(tmp_path, SHORT, tls["ca"])
    home = team / "vagrant.d"
    with serving(project_copy, catalog, "--cert", str(tls["cert"]),
                 "--key", str(tls["key"])) as base:
        publish_version(tmp_path, catalog, base, "0.1.0")
        token = issue_token(project_copy, catalog, "alice")
        server = {"VAGRANT_SERVER_URL": base.rstrip("/"), "VAGRANT_DEFAULT_PROVIDER": "libvirt"}
        env = {**server, "VAGRANT_CLOUD_TOKEN": token}

        denied = vagrant(home, "box", "add", "--cacert", str(tls["ca"]), SHORT, env=server,
                         check=False, command=command)
        assert denied.returncode != 0 and "401" in denied.stderr, denied.stderr
        added = vagrant(home, "box", "add", "--cacert", str(tls["ca"]), SHORT, env=env,
                        command=command)
        assert f"Successfully added box '{SHORT}' (v0.1.0) for '{provider}'!" in added.stdout

        publish_version(tmp_path, catalog, base, "0.2.0", released=False)
        # In the teammate's folder: its Vagrantfile's box. Vagrant 2.4 here has no libvirt
        # provider to load that machine with (Debian's vagrant-libvirt is a plugin of its
        # 2.3.4), so it checks and updates the installed box by name.
        # (--global reads no Vagrantfile, so not its box_download_ca_cert: curl is given
        # the team's CA as a teammate's system trust store would hold it.)
        mine = ("--global",) if release_of_vagrant == "2.4" else ("--force",)
        if release_of_vagrant == "2.4":
            env["CURL_CA_BUNDLE"] = str(tls["ca"])
        current = vagrant(home, "box", "outdated", *mine, env=env, command=command)
        assert (f"'{SHORT}' for 'libvirt' (v0.1.0) is up to date" if release_of_vagrant == "2.4"
                else f"Checking if box '{SHORT}' version '0.1.0' is up to date") in current.stdout
        assert "newer version" not in current.stdout, current.stdout  # a candidate is not
        assert "error" not in current.stdout.lower(), current.stdout   # offered
        release(catalog, BOX_NAME, "0.2.0", progress=QUIET)
        outdated = vagrant(home, "box", "outdated", *mine, env=env, command=command)
        assert ("Current: 0.1.0. Latest: 0.2.0" if release_of_vagrant == "2.4"
                else "The latest is version '0.2.0'") in " ".join(outdated.stdout.split()), (
            outdated.stdout)
        by_name = ("--box", SHORT) if release_of_vagrant == "2.4" else ()
        vagrant(home, "box", "update", *by_name, env=env, command=command)
        listed = vagrant(home, "box", "list", command=command).stdout
        assert f"{SHORT} (libvirt, 0.2.0{listed_as}" in listed, listed
        assert f"{SHORT} (libvirt, 0.1.0{listed_as}" in listed, listed


def test_the_short_name_url_serves_metadata_json_and_its_signature(project_copy, tmp_path,
                                                                    tls):
    set_catalog_keys(project_copy, org="acme")
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    with serving(project_copy, catalog, "--cert", str(tls["cert"]),
                 "--key", str(tls["key"])) as base:
        publish_version(tmp_path, catalog, base, "0.1.0")
        (catalog / BOX_NAME / "metadata.json.sig").write_text("a signature\n")
        token = issue_token(project_copy, catalog, "alice")
        auth = {"headers": {"Authorization": f"Bearer {token}"}, "verify": str(tls["ca"]),
                "timeout": 10}
        head = requests.head(f"{base}{SHORT}", **auth)
        assert head.status_code == 200
        assert head.headers["Content-Type"] == "application/json"
        body = requests.get(f"{base}{SHORT}", **auth)
        assert body.content == (catalog / BOX_NAME / "metadata.json").read_bytes()
        assert body.json()["name"] == SHORT
        assert requests.get(f"{base}{SHORT}.sig", **auth).text == "a signature\n"
        assert requests.get(f"{base}{BOX_NAME}/metadata.json", **auth).status_code == 200
        for elsewhere in (f"other/{BOX_NAME}", f"{SHORT}/", f"{SHORT}%0a", f"{SHORT}x.sig"):
            assert requests.get(f"{base}{elsewhere}", **auth).status_code == 404, elsewhere
        assert requests.get(f"{base}{SHORT}", verify=str(tls["ca"]),
                            timeout=10).status_code == 401
        assert requests.get(f"{base}{SHORT}.sig", verify=str(tls["ca"]),
                            timeout=10).status_code == 401


@pytest.mark.parametrize("org", ["Acme", "acme.corp", "acme/x", "acme\n", "-acme"])
def test_an_org_outside_the_allow_list_is_refused_in_one_line(project_copy, org):
    toml = project_copy / "goldbox.toml"
    toml.write_text(toml.read_text().replace("[catalog]\n", f"[catalog]\norg = {org!r}\n"))
    result = run_invoke(project_copy, "boxes")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "catalog.org" in lines[0], result.stderr
    assert "an organisation" in lines[0]


def test_publish_names_the_box_org_slash_box_and_keeps_its_folder(project_copy, tmp_path):
    catalog = tmp_path / "catalog"
    said: list[str] = []
    publish(make_box(tmp_path / "dist", "0.1.0"), catalog_dir=catalog, release=True,
            base_url="https://boxes.example.org/", org="acme", progress=said.append)
    assert '"name": "acme/goldbox-test"' in (catalog / BOX_NAME / "metadata.json").read_text()
    assert (f"teammates: VAGRANT_SERVER_URL=https://boxes.example.org vagrant box add {SHORT} "
            f"(or `invoke add {SHORT}`)") in said, said
    check = run_invoke(project_copy, "catalog-check", "--catalog", str(catalog))
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_box_named_like_a_signature_is_refused_with_an_org(tmp_path):
    catalog = tmp_path / "catalog"
    manifest = make_box(tmp_path / "dist", "0.1.0", box_name="flask.sig")
    with pytest.raises(GoldboxError, match=r"box_name = 'flask.sig': /acme/flask.sig is where "
                                           r"the catalog serves a signature"):
        publish(manifest, catalog_dir=catalog, org="acme", progress=QUIET)
    assert not catalog.exists()


def test_a_rendered_site_answers_the_org_s_short_names(project_copy, tmp_path):
    set_catalog_keys(project_copy, org="acme")
    catalog = tmp_path / "catalog"
    publish(make_box(tmp_path / "dist", "0.1.0"), catalog_dir=catalog, release=True,
            org="acme", progress=QUIET)
    site = tmp_path / "site"
    rendered = run_invoke(project_copy, "catalog-serve", "--catalog", str(catalog),
                          "--render-only", str(site), "--insecure-http")
    assert rendered.returncode == 0, rendered.stderr
    text = (site / "goldbox-catalog.conf").read_text()
    assert 'location ~ "^/acme/(?<goldbox_box>[a-z0-9][a-z0-9._-]*)\\z"' in text
    assert "try_files /$goldbox_box/metadata.json =404;" in text
    assert "try_files /$goldbox_box/metadata.json.sig =404;" in text

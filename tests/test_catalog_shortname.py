"""Vagrantfiles that say `config.vm.box = "acme/goldbox-test"` keep working after HCP
Vagrant (issue 21 §1): with catalog.org the catalog names the box ORG/BOX and answers
Vagrant's short-name request `$VAGRANT_SERVER_URL/ORG/BOX`. Real nginx (catalog-serve),
a test CA made with openssl, stock vagrant 2.3.4 (`box add`, `box outdated` and `box
update` boot nothing)."""

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
)
from tests.conftest import run_invoke

SHORT = f"acme/{BOX_NAME}"


def publish_version(tmp_path: Path, catalog: Path, base: str, version: str,
                    released: bool = True) -> None:
    publish(make_box(tmp_path / "dist" / version, version), catalog_dir=catalog,
            base_url=base, release=released, org="acme", progress=QUIET)


def test_a_short_name_with_stock_vagrant_over_https_with_a_token(project_copy, tmp_path,
                                                                 tls):
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
                         check=False)
        assert denied.returncode != 0 and "401" in denied.stderr, denied.stderr
        added = vagrant(home, "box", "add", "--cacert", str(tls["ca"]), SHORT, env=env)
        assert f"Successfully added box '{SHORT}' (v0.1.0) for 'libvirt'!" in added.stdout

        publish_version(tmp_path, catalog, base, "0.2.0", released=False)
        current = vagrant(home, "box", "outdated", "--force", env=env)
        assert f"Checking if box '{SHORT}' version '0.1.0' is up to date" in current.stdout
        assert "newer version" not in current.stdout, current.stdout  # a candidate is not
        assert "error" not in current.stdout.lower(), current.stdout   # offered
        release(catalog, BOX_NAME, "0.2.0", progress=QUIET)
        outdated = vagrant(home, "box", "outdated", "--force", env=env)
        assert "The latest is version '0.2.0'" in " ".join(outdated.stdout.split()), (
            outdated.stdout)
        vagrant(home, "box", "update", env=env)
        listed = vagrant(home, "box", "list").stdout
        assert f"{SHORT} (libvirt, 0.2.0)" in listed and f"{SHORT} (libvirt, 0.1.0)" in listed


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

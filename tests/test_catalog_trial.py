"""`invoke verify --from-catalog`, everything it does before its first vagrant command,
for real: a real nginx serves a private catalog, the channel's metadata, the manifest
and the plan published with the box are read through their typed models with the token
the way Vagrant sends it, the box is checked against its sha256, and what the catalog
says is refused in one line before anything is rendered or run when it is not what
goldbox would publish. The boot and the suite run, with no fakes, in
tests/test_e2e.py::test_verify_from_catalog_then_release."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from goldbox.catalog import publish
from goldbox.catalog.tokens import add_token
from goldbox.catalog.trial import (
    Candidate,
    Reader,
    Target,
    choose,
    fetch_plan,
    parse_target,
    read_published_manifest,
    trial_config,
)
from goldbox.config import load_config
from goldbox.errors import GoldboxError
from goldbox.manifest import Manifest
from goldbox.render import render_platform
from tests.boxes import BOX_NAME, make_box
from tests.catalog_fixtures import QUIET, serving
from tests.conftest import run_invoke

HOSTILE_NAMES = ['x"; system("id"); "', "#{system('id')}", "goldbox-test\n"]


def test_parse_target():
    assert parse_target("http://h/b/metadata.json@1.2.3") == Target("http://h/b/metadata.json",
                                                                    "1.2.3")
    assert parse_target("http://u@h/b/metadata.json") == Target("http://u@h/b/metadata.json",
                                                                None)
    assert parse_target("http://h/m.json@1.2.3\n") == Target("http://h/m.json@1.2.3\n", None)


def _built_box(project: Path, dest: Path, version: str) -> Path:
    """A box with the plan.json its build rendered beside its manifest (as dist/<p>/ holds
    them), from `project`'s config; returns the manifest's path."""
    manifest = make_box(dest, version)
    config = load_config(project)
    rendered = render_platform(config, config.platform("debian-12"), dest / "render")
    shutil.copy(rendered.plan, dest / "plan.json")
    return manifest


def test_the_box_its_manifest_and_its_own_plan_come_typed_from_a_private_catalog(
        project_copy, tmp_path, monkeypatch):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    token = add_token(catalog, "ci", progress=QUIET)
    # The box's build had another app user than today's checkout: the trial must use
    # the plan published with the box, not one rendered now.
    then = tmp_path / "then"
    shutil.copytree(project_copy, then)
    toml = then / "goldbox.toml"
    toml.write_text(toml.read_text().replace('user = "goldbox"', 'user = "boxbuilder"'))
    with serving(project_copy, catalog) as base:
        publish(_built_box(then, tmp_path / "0.1.0", "0.1.0"), catalog, base_url=base,
                progress=QUIET)
        publish(_built_box(project_copy, tmp_path / "0.2.0", "0.2.0"), catalog,
                base_url=base, progress=QUIET)
        url = f"{base}{BOX_NAME}/channels/candidate/metadata.json"
        with pytest.raises(GoldboxError, match="HTTP 401: set VAGRANT_CLOUD_TOKEN"):
            choose(Target(url, None), Reader())
        monkeypatch.setenv("VAGRANT_CLOUD_TOKEN", token)
        monkeypatch.setenv("VAGRANT_SERVER_URL", base)
        assert choose(Target(url, None), Reader()).version == "0.2.0"  # the newest
        candidate = choose(parse_target(f"{url}@0.1.0"), Reader())
        manifest = read_published_manifest(candidate, Reader())
        plan = fetch_plan(candidate, Reader(), tmp_path)
    published = json.loads((tmp_path / "0.1.0" / "manifest.json").read_text())
    assert candidate == Candidate(BOX_NAME, "0.1.0",
                                  f"{base}{BOX_NAME}/0.1.0/libvirt/{published['box_file']}",
                                  published["box_sha256"], "amd64")
    assert isinstance(manifest, Manifest) and manifest.created == published["created"]
    assert json.loads(plan.read_text())["app"]["user"] == "boxbuilder"


def _hand_written_catalog(tmp_path: Path, name: str) -> Path:
    """A channel's metadata.json naming `name`, beside a real box: what a catalog that
    someone else can write may say."""
    manifest = json.loads(make_box(tmp_path / "box", "0.1.0").read_text())
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps({"name": name, "versions": [{"version": "0.1.0",
        "providers": [{"name": "libvirt", "checksum_type": "sha256",
                       "checksum": manifest["box_sha256"],
                       "url": (tmp_path / "box" / manifest["box_file"]).as_uri()}]}]}))
    return metadata


def _refused(project: Path, *args: str) -> str:
    """`invoke verify ARGS` exits 1 with one line on stderr and runs no vagrant command
    (which would make VAGRANT_HOME) nor renders a Vagrantfile; returns the line."""
    result = run_invoke(project, "verify", *args)
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("goldbox: error: ")
    trial = project / "build" / "from-catalog"
    assert not (trial / "vagrant.d").exists() and not (trial / "Vagrantfile").exists()
    return line


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_box_name_in_the_catalog_is_refused_in_one_line(name, project_copy,
                                                                  tmp_path):
    metadata = _hand_written_catalog(tmp_path, name)
    line = _refused(project_copy, "--from-catalog", str(metadata))
    assert str(metadata) in line and "name" in line


@pytest.mark.parametrize("name", HOSTILE_NAMES[:2])
def test_the_trial_config_checks_the_name_as_goldbox_toml_would(name, tmp_path):
    """The second wall: the name goes into the config through its validation."""
    config = load_config()
    with pytest.raises(GoldboxError, match=r"^catalog-url: box\.name = .*: expected"):
        trial_config(config, Candidate(name, "0.1.0", "file:///b.box", "0" * 64), 40000,
                     "catalog-url")
    trial = trial_config(config, Candidate("other", "1.2.3", "file:///b.box", "0" * 64),
                         40000, "catalog-url")
    assert (trial.project.box.name, trial.project.box.version) == ("other", "1.2.3")
    assert trial.project.ports.host_http == 40000
    assert trial.project.app == config.project.app


def test_a_missing_plan_is_one_line_naming_its_url(project_copy, tmp_path):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    publish(_built_box(project_copy, tmp_path / "b", "0.1.0"), catalog, progress=QUIET)
    plan = catalog / BOX_NAME / "0.1.0" / "libvirt" / "plan.json"
    plan.unlink()
    line = _refused(project_copy, "--from-catalog",
                    str(catalog / BOX_NAME / "channels/candidate/metadata.json"))
    assert str(plan) in line


def test_a_box_whose_bytes_differ_from_the_catalog_is_not_booted(project_copy, tmp_path):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    published = publish(_built_box(project_copy, tmp_path / "b", "0.1.0"), catalog,
                        progress=QUIET)
    data = bytearray(published.box_path.read_bytes())
    data[len(data) // 2] ^= 1
    published.box_path.write_bytes(bytes(data))
    line = _refused(project_copy, "--from-catalog",
                    str(catalog / BOX_NAME / "channels/candidate/metadata.json"))
    assert "sha256" in line and "the catalog says" in line

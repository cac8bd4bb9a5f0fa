"""`invoke verify --from-catalog`: the flow around the VM, without booting one. A real
nginx serves a private catalog; the box is chosen from its metadata with the token the
way Vagrant sends it, downloaded and checked against its sha256; the vagrant commands
(recorded here instead of run) add it through the catalog URL into a private
VAGRANT_HOME, boot, destroy and remove it even when the suite fails; a pass is recorded
for that sha256 and lets `release` through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from goldbox.catalog import publish, release
from goldbox.catalog.tokens import add_token
from goldbox.catalog.trial import Target, parse_target, try_from_catalog
from goldbox.config import load_config
from goldbox.errors import GoldboxError
from goldbox.verify import Result
from tests.boxes import BOX_NAME, make_box
from tests.catalog_fixtures import serving

QUIET = lambda line: None  # noqa: E731


def test_parse_target():
    assert parse_target("http://h/b/metadata.json@1.2.3") == Target("http://h/b/metadata.json",
                                                                    "1.2.3")
    assert parse_target("http://u@h/b/metadata.json") == Target("http://u@h/b/metadata.json",
                                                                None)


class Recorder:
    def __init__(self):
        self.calls: list[tuple[list[str], Path, str]] = []

    def __call__(self, args, cwd, env):
        self.calls.append((args, cwd, env["VAGRANT_HOME"]))
        return "Host default\n  HostName 192.0.2.1\n" if args == ["ssh-config"] else ""


@pytest.mark.parametrize("passes", [True, False])
def test_verify_from_catalog_flow(passes, project_copy, tmp_path, monkeypatch):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    token = add_token(catalog, "ci", progress=QUIET)
    config = load_config(project_copy)
    with serving(project_copy, catalog) as base:
        for version in ("0.1.0", "0.2.0"):
            publish(make_box(tmp_path / version, version), catalog, base_url=base,
                    progress=QUIET)
        url = f"{base}{BOX_NAME}/channels/candidate/metadata.json"
        with pytest.raises(GoldboxError, match="HTTP 401: set VAGRANT_CLOUD_TOKEN"):
            try_from_catalog(config, config.platform(None), Target(url, "0.1.0"),
                             tmp_path / "work", lambda *a: [], run=Recorder(),
                             remove_volume=lambda *a: None, progress=QUIET)
        monkeypatch.setenv("VAGRANT_CLOUD_TOKEN", token)
        monkeypatch.setenv("VAGRANT_SERVER_URL", base)
        seen, removed, run = {}, [], Recorder()

        def suite(ssh_config, manifest, box, plan):
            seen.update(ssh=ssh_config.read_text(), manifest=manifest, box=box, plan=plan,
                        box_was_there=box.is_file())
            return [Result("infra: everything", passes, "")]

        work = tmp_path / "work"
        candidate, results = try_from_catalog(
            config, config.platform(None), parse_target(f"{url}@0.1.0"), work, suite,
            run=run, remove_volume=lambda *a: removed.append(a), progress=QUIET)
    assert candidate.version == "0.1.0" and [r.ok for r in results] == [passes]
    assert [args for args, _, _ in run.calls] == [
        ["box", "add", url, "--box-version", "0.1.0", "--provider", "libvirt"],
        ["up", "--provider", "libvirt"], ["ssh-config"], ["destroy", "--force"],
        ["box", "remove", BOX_NAME, "--box-version", "0.1.0", "--provider", "libvirt",
         "--force"]]
    assert {cwd for _, cwd, _ in run.calls} == {work}
    assert {home for _, _, home in run.calls} == {str(work / "vagrant.d")}
    assert removed == [(BOX_NAME, "0.1.0")]
    assert 'config.vm.box_version = "0.1.0"' in (work / "Vagrantfile").read_text()
    assert seen["ssh"].startswith("Host default") and seen["manifest"]["version"] == "0.1.0"
    assert seen["plan"] == work / "plan.json" and seen["box"].parent == work
    assert seen["box_was_there"] and not seen["box"].exists()  # gone after the suite

    if passes:  # what the task does after a pass
        from goldbox.catalog import record_verified

        record_verified(catalog, BOX_NAME, "0.1.0", candidate.sha256, progress=QUIET)
        release(catalog, BOX_NAME, "0.1.0", require_verified=True, progress=QUIET)
    with pytest.raises(GoldboxError, match="0.2.0 .*not verified"):
        release(catalog, BOX_NAME, "0.2.0", require_verified=True, progress=QUIET)
    released = json.loads((catalog / BOX_NAME / "metadata.json").read_text())["versions"]
    assert [v["version"] for v in released] == (["0.1.0"] if passes else [])


def test_a_box_whose_bytes_differ_from_the_catalog_is_not_booted(project_copy, tmp_path):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    published = publish(make_box(tmp_path / "b", "0.1.0"), catalog, progress=QUIET)
    data = bytearray(published.box_path.read_bytes())
    data[len(data) // 2] ^= 1
    published.box_path.write_bytes(bytes(data))
    config = load_config(project_copy)
    run = Recorder()
    with pytest.raises(GoldboxError, match="sha256 .* the catalog says"):
        try_from_catalog(config, config.platform(None),
                         Target(str(catalog / BOX_NAME / "channels/candidate/metadata.json"),
                                None), tmp_path / "work", lambda *a: [], run=run,
                         remove_volume=lambda *a: None, progress=QUIET)
    assert run.calls == []

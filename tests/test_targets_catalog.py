"""One catalog for every target: `invoke publish` lists all built targets of a version as
one version (provider x architecture, `architecture` and `default_architecture` for
Vagrant >= 2.4), in an order that still gives Debian's vagrant 2.3.4 (installed here:
it ignores `architecture` and keeps the last entry of a provider name) the amd64 box,
and Vagrant 2.4 (opt-in: see tests/catalog_fixtures.vagrant_2_4) the box of the host's
architecture or of the one asked for.

The real arm64 build takes an hour cold here (docs/platforms.md), so the arm64 libvirt
box is a small real box made by the test (tests/boxes.py), published from a manifest that
says arm64; the VirtualBox box is made by the real goldbox/vbox.py from a small real
libvirt box."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from goldbox.catalog import publish_builds
from goldbox.config import load_config
from goldbox.context import Context
from goldbox.errors import GoldboxError
from goldbox.manifest import read_manifest
from goldbox.targets import built_manifests
from goldbox.vbox import build_virtualbox_box
from tests.boxes import make_box
from tests.catalog_fixtures import installed, vagrant, vagrant_2_4
from tests.conftest import run_invoke

QUIET = lambda _line: None  # noqa: E731


def _with_architecture(manifest: Path, architecture: str) -> Path:
    data = json.loads(manifest.read_text())
    data["architecture"] = architecture
    manifest.write_text(json.dumps(data))
    return manifest


def _built(project: Path) -> tuple[Context, list[Path]]:
    """dist/<default platform>/ of a project copy as `invoke image --target libvirt/amd64
    --target virtualbox/amd64` leaves it: the libvirt box (small, real) and the
    VirtualBox box made from it by goldbox/vbox.py, each with its manifest."""
    config = load_config(project)
    ctx = Context(config, config.platform(None))
    golden = make_box(ctx.dist, config.project.box.version, box_name=config.project.box.name,
                      padding_mib=1)
    build_virtualbox_box(ctx, read_manifest(golden), {})
    return ctx, built_manifests(ctx.dist)


def _arm64_box(project: Path, tmp_path: Path) -> Path:
    """A libvirt arm64 box of the same version (its own bytes: random padding)."""
    config = load_config(project)
    manifest = make_box(tmp_path / "arm64", config.project.box.version,
                        box_name=config.project.box.name, padding_mib=1)
    return _with_architecture(manifest, "arm64")


def _members(box: Path) -> dict[str, str]:
    with tarfile.open(box) as tar:
        return {m.name: hashlib.sha256(tar.extractfile(m).read()).hexdigest()
                for m in tar.getmembers() if m.isfile()}


def _stored(home: Path, box: str, version: str, provider: str,
            architecture: str | None = None) -> dict[str, str]:
    """The files Vagrant stored for a box (2.4 keeps each architecture in a folder)."""
    folder = home / "boxes" / box / version / (architecture or "") / provider
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.iterdir() if p.is_file()}


def test_publish_lists_every_target_and_vagrant_2_3_4_adds_the_amd64_libvirt_box(
        project_copy, tmp_path):
    """libvirt/amd64 + libvirt/arm64 (a small stand-in box: no arm64 build yet) +
    virtualbox/amd64 published as one version; stock vagrant 2.3.4 adds the libvirt
    provider and stores the amd64 box, and the virtualbox provider's box."""
    ctx, built = _built(project_copy)
    assert [p.name for p in built] == ["manifest.json", "manifest.virtualbox-amd64.json"]
    arm64 = _arm64_box(project_copy, tmp_path)
    catalog = tmp_path / "catalog"
    # The arm64 build is published after the amd64 one: the order of the files does not
    # decide the order of the entries.
    published = publish_builds([*built, arm64], catalog, release=True, progress=QUIET)
    assert [(p.provider, p.architecture) for p in published] == [
        ("libvirt", "amd64"), ("virtualbox", "amd64"), ("libvirt", "arm64")]

    box = ctx.config.project.box
    home = tmp_path / "vagrant.d"
    source = str(catalog / box.name / "metadata.json")
    added = vagrant(home, "box", "add", source, "--provider", "libvirt")
    assert f"Successfully added box '{box.name}' (v{box.version}) for 'libvirt'" in added.stdout
    amd64_box = ctx.dist / f"{box.name}-{box.version}-libvirt.box"
    arm64_box = arm64.parent / f"{box.name}-{box.version}-libvirt.box"
    stored = _stored(home, box.name, box.version, "libvirt")
    assert stored == _members(amd64_box)
    assert stored != _members(arm64_box)

    vagrant(home, "box", "add", source, "--provider", "virtualbox")
    assert _stored(home, box.name, box.version, "virtualbox") == _members(
        ctx.dist / f"{box.name}-{box.version}-virtualbox.box")
    assert installed(home) == [f"{box.name} (libvirt, {box.version})",
                               f"{box.name} (virtualbox, {box.version})"]

    metadata = json.loads((catalog / box.name / "metadata.json").read_text())
    [version] = metadata["versions"]
    assert [(p["name"], p["architecture"], p["default_architecture"])
            for p in version["providers"]] == [
        ("libvirt", "arm64", False), ("libvirt", "amd64", True),
        ("virtualbox", "amd64", True)]
    folder = catalog / box.name / box.version / "libvirt"
    assert sorted(p.name for p in folder.iterdir()) == [
        f"{box.name}-{box.version}-libvirt-arm64.box", f"{box.name}-{box.version}-libvirt.box",
        "manifest-arm64.json", "manifest.json", "plan-arm64.json", "plan.json"]
    assert json.loads((folder / "manifest-arm64.json").read_text())["architecture"] == "arm64"


def test_vagrant_2_4_adds_the_host_s_architecture_and_the_one_asked_for(project_copy,
                                                                        tmp_path):
    """The same catalog read by Vagrant 2.4 (opt-in: its source tree, see vagrant_2_4),
    which honours `architecture`: on this amd64 host it stores the amd64 libvirt box by
    default, the arm64 one with `--architecture arm64`, and lists the box under both."""
    command = vagrant_2_4()
    ctx, built = _built(project_copy)
    arm64 = _arm64_box(project_copy, tmp_path)
    catalog = tmp_path / "catalog"
    publish_builds([*built, arm64], catalog, release=True, progress=QUIET)
    box = ctx.config.project.box
    home = tmp_path / "vagrant.d"
    source = str(catalog / box.name / "metadata.json")

    added = vagrant(home, "box", "add", source, "--provider", "libvirt", command=command)
    assert "for provider: libvirt (amd64)" in added.stdout, added.stdout
    assert _stored(home, box.name, box.version, "libvirt", "amd64") == _members(
        ctx.dist / f"{box.name}-{box.version}-libvirt.box")
    vagrant(home, "box", "add", source, "--provider", "libvirt", "--architecture", "arm64",
            command=command)
    assert _stored(home, box.name, box.version, "libvirt", "arm64") == _members(
        arm64.parent / f"{box.name}-{box.version}-libvirt.box")
    vagrant(home, "box", "add", source, "--provider", "virtualbox", command=command)
    assert _stored(home, box.name, box.version, "virtualbox", "amd64") == _members(
        ctx.dist / f"{box.name}-{box.version}-virtualbox.box")
    assert installed(home, command) == [
        f"{box.name} (libvirt, {box.version}, (amd64, arm64))",
        f"{box.name} (virtualbox, {box.version}, (amd64))"]
    # No virtualbox/arm64 build: Vagrant 2.4 refuses rather than take the amd64 box.
    refused = vagrant(home, "box", "add", source, "--provider", "virtualbox",
                      "--architecture", "arm64", "--force", command=command, check=False)
    assert refused.returncode != 0, refused.stdout


def test_invoke_publish_takes_every_built_target(project_copy, tmp_path):
    """The command line: `invoke publish` with no --manifest publishes each manifest in
    dist/<platform>/ (the libvirt box and the VirtualBox box) as one candidate version."""
    ctx, _ = _built(project_copy)
    catalog = tmp_path / "catalog"
    result = run_invoke(project_copy, "publish", "--catalog", str(catalog))
    assert result.returncode == 0, result.stdout + result.stderr
    box = ctx.config.project.box
    candidate = json.loads((catalog / box.name / "channels" / "candidate" / "metadata.json")
                           .read_text())
    assert [(p["name"], p["architecture"]) for p in candidate["versions"][0]["providers"]] \
        == [("libvirt", "amd64"), ("virtualbox", "amd64")]
    assert (catalog / box.name / box.version / "virtualbox" / "manifest.json").is_file()


def test_a_second_target_of_a_released_version_is_refused(project_copy, tmp_path):
    """`one version`: a target published later cannot join a released version."""
    ctx, built = _built(project_copy)
    catalog = tmp_path / "catalog"
    publish_builds(built[:1], catalog, release=True, progress=QUIET)
    with pytest.raises(GoldboxError, match=r"version 0\.1\.0 is released"):
        publish_builds(built[1:], catalog, progress=QUIET)


def test_builds_of_two_versions_are_not_one_version(project_copy, tmp_path):
    ctx, built = _built(project_copy)
    other = make_box(tmp_path / "other", "0.2.0", box_name=ctx.config.project.box.name)
    catalog = tmp_path / "catalog"
    with pytest.raises(GoldboxError, match=r"publish makes one version of one box"):
        publish_builds([*built, _with_architecture(other, "arm64")], catalog, progress=QUIET)
    assert not catalog.exists()


def test_an_existing_arm64_candidate_is_named_in_the_refusal(project_copy, tmp_path):
    arm64 = _arm64_box(project_copy, tmp_path)
    catalog = tmp_path / "catalog"
    publish_builds([arm64], catalog, progress=QUIET)
    with pytest.raises(GoldboxError, match=r"already has a libvirt arm64 box; pass --force"):
        publish_builds([arm64], catalog, progress=QUIET)
    publish_builds([arm64], catalog, force=True, progress=QUIET)


def test_listing_check_and_trial_read_each_architectures_own_manifest_and_plan(
        project_copy, tmp_path):
    """A version with an amd64 and an arm64 libvirt box: `invoke boxes` shows each row
    from its own manifest (manifest-arm64.json for arm64), `catalog-check --signers`
    verifies both builds' manifest and plan signatures and names a bad plan-arm64.json,
    and `verify --from-catalog` picks the box of this host's architecture (the arm64
    entry is listed first: Vagrant 2.3's order) and reads that build's manifest."""
    from goldbox.arch import host_architecture
    from goldbox.catalog.check import check_catalog
    from goldbox.catalog.listing import format_table, list_boxes
    from goldbox.catalog.trial import Reader, Target, choose, read_published_manifest
    from goldbox.signing import sign
    from tests.test_signing import allowed_signers, make_key

    ctx, built = _built(project_copy)
    arm64 = _arm64_box(project_copy, tmp_path)
    keys = tmp_path / "keys"
    keys.mkdir()
    key = make_key(keys, "alice")
    signers = allowed_signers(tmp_path / "allowed_signers", ("alice@team", key))
    data = json.loads(arm64.read_text())  # a build of another day: its own manifest
    data["created"] = "2026-11-27T03:00:00Z"
    arm64.write_text(json.dumps(data))
    catalog = tmp_path / "catalog"
    publish_builds([built[0], arm64], catalog, release=True, signing_key=key,
                   progress=QUIET)
    box = ctx.config.project.box
    created = {"amd64": read_manifest(built[0]).created, "arm64": read_manifest(arm64).created}
    assert created["amd64"] != created["arm64"]

    rows = list_boxes(catalog)
    assert [(r.provider, r.architecture, r.created) for r in rows] == [
        ("libvirt", "arm64", created["arm64"]), ("libvirt", "amd64", created["amd64"])]
    table = format_table(rows).splitlines()
    assert table[0].split()[:4] == ["BOX", "VERSION", "PROVIDER", "ARCH"]
    assert [line.split()[3] for line in table[1:]] == ["arm64", "amd64"]

    assert check_catalog(catalog, signers=signers).problems == []
    folder = catalog / box.name / box.version / "libvirt"
    plan = folder / "plan-arm64.json"
    (folder / "plan-arm64.json.sig").write_text(sign(plan.read_text(), make_key(keys, "m"),
                                                     "plan"))
    manifest_sig = folder / "manifest-arm64.json.sig"
    manifest_sig.unlink()
    problems = check_catalog(catalog, signers=signers).problems
    assert [p.split(":")[0] for p in problems] == [str(folder / "manifest-arm64.json"),
                                                   str(plan)], problems

    target = Target((catalog / box.name / "metadata.json").as_uri(), None)
    reader = Reader(None)
    here = choose(target, reader)
    assert (here.architecture, here.box_url.rsplit("/", 1)[1]) == (
        host_architecture().name, f"{box.name}-{box.version}-libvirt.box")
    assert read_published_manifest(here, reader).created == created["amd64"]
    other = choose(target, reader, "arm64")
    assert other.beside_box("manifest.json").endswith("/manifest-arm64.json")
    assert read_published_manifest(other, reader).created == created["arm64"]

"""The versioned box catalog: publish, boxes, prune and catalog-serve, proven with the
real Vagrant 2.3.4 CLI against a file:// and an HTTP (127.0.0.1) catalog, plus a
concurrent publish, a publish killed during its copy, and refusals of bad input."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from goldbox import PROJECT_ROOT
from goldbox.catalog import (
    LOCK_FILE,
    PARTIAL_PREFIX,
    STATE_FILE,
    format_table,
    list_boxes,
    prune,
    publish,
)
from goldbox.config import load_config
from goldbox.errors import GoldboxError
from tests.boxes import BOX_NAME, make_box
from tests.catalog_fixtures import (
    QUIET,
    boxes_dir_fixture,  # noqa: F401 (a fixture)
    catalog_fixture,  # noqa: F401 (a fixture)
    installed,
    serving,
    vagrant,
)
from tests.conftest import run_invoke


def publish_released(manifest: Path, catalog: Path, **options):
    """Publish and release at once: these tests are about the files, not the life cycle."""
    return publish(manifest, catalog, release=True, **options)


def tree(root: Path) -> dict[str, str]:
    """Every file below `root` (dot files too) with the sha256 of its content."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def metadata(catalog: Path, box: str = BOX_NAME) -> dict:
    return json.loads((catalog / box / "metadata.json").read_text())


def state_versions(catalog: Path, box: str = BOX_NAME) -> list[dict]:
    return json.loads((catalog / box / STATE_FILE).read_text())["versions"]


def versions(catalog: Path, box: str = BOX_NAME) -> list[str]:
    return [entry["version"] for entry in metadata(catalog, box)["versions"]]


# ---- the layout, versions and metadata ---------------------------------------------------


def test_publish_lays_out_versions_with_checksums_and_file_urls(catalog, boxes_dir,
                                                                tmp_path):
    for version in ("0.2.0", "0.10.0", "0.9.1"):  # semver order, not publish or text order
        publish_released(boxes_dir(version), catalog, description="test box", progress=QUIET)
    meta = metadata(catalog)
    assert meta["name"] == BOX_NAME and meta["description"] == "test box"
    assert versions(catalog) == ["0.2.0", "0.9.1", "0.10.0"]
    for entry in meta["versions"]:
        version = entry["version"]
        (provider,) = entry["providers"]
        folder = catalog / BOX_NAME / version / "libvirt"
        box = folder / f"{BOX_NAME}-{version}-libvirt.box"
        assert provider["name"] == "libvirt" and provider["architecture"] == "amd64"
        assert provider["url"] == box.as_uri()
        assert provider["checksum_type"] == "sha256"
        assert provider["checksum"] == hashlib.sha256(box.read_bytes()).hexdigest()
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["version"] == version and manifest["box_file"] == box.name
        built_plan = tmp_path / "dist" / version / "plan.json"  # beside the manifest
        assert (folder / "plan.json").read_bytes() == built_plan.read_bytes()
    assert not list(catalog.rglob(f"{PARTIAL_PREFIX}*"))


def test_publish_refuses_a_build_without_its_plan(catalog, boxes_dir):
    publish(boxes_dir("1.0.0"), catalog, progress=QUIET)
    before = tree(catalog)
    manifest = boxes_dir("1.1.0")
    plan = manifest.parent / "plan.json"
    plan.unlink()
    with pytest.raises(GoldboxError, match=rf"^{plan}: no such file: publish needs the "
                                           rf"build's plan beside its manifest"):
        publish(manifest, catalog, progress=QUIET)
    plan.write_text("{not json")
    with pytest.raises(GoldboxError, match=rf"^{plan}: not valid JSON"):
        publish(manifest, catalog, progress=QUIET)
    plan.write_text('{"format": 1}')  # JSON, but not a plan
    with pytest.raises(GoldboxError, match=rf"^{plan}: missing key 'platform'"):
        publish(manifest, catalog, progress=QUIET)
    assert tree(catalog) == before


def test_existing_candidate_is_refused_unless_forced(catalog, boxes_dir, tmp_path):
    publish(boxes_dir("1.0.0"), catalog, progress=QUIET)
    before = tree(catalog)
    rebuilt = make_box(tmp_path / "rebuilt", "1.0.0")  # same version, other bytes
    with pytest.raises(GoldboxError, match=r"metadata.json: version 1.0.0 already has a "
                                           r"libvirt box; pass --force"):
        publish(rebuilt, catalog, progress=QUIET)
    assert tree(catalog) == before
    publish(rebuilt, catalog, force=True, progress=QUIET)
    (entry,) = state_versions(catalog)
    assert len(entry["providers"]) == 1 and entry["status"] == "candidate"
    assert entry["providers"][0]["checksum"] == json.loads(rebuilt.read_text())["box_sha256"]


def test_a_released_version_never_changes_not_even_with_force(catalog, boxes_dir, tmp_path):
    published = publish_released(boxes_dir("1.0.0"), catalog, progress=QUIET)
    before = tree(catalog)
    rebuilt = make_box(tmp_path / "rebuilt", "1.0.0")  # same version, other bytes
    for force in (False, True):
        with pytest.raises(GoldboxError, match=r"metadata.json: version 1.0.0 is released "
                                               r"and a released version never changes "
                                               r"\(not even with --force\); publish a new "
                                               r"version"):
            publish_released(rebuilt, catalog, force=force, progress=QUIET)
    assert tree(catalog) == before
    assert published.box_path.is_file()


def test_a_box_whose_bytes_differ_from_its_manifest_is_not_published(catalog, boxes_dir):
    manifest = boxes_dir("1.0.0")
    box = manifest.parent / json.loads(manifest.read_text())["box_file"]
    with open(box, "r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(GoldboxError, match="sha256 is .* but its manifest says box_sha256"):
        publish_released(manifest, catalog, progress=QUIET)
    assert tree(catalog) == {LOCK_FILE: hashlib.sha256(b"").hexdigest()}


def test_base_url_of_an_http_catalog_and_mixing_is_refused(catalog, boxes_dir):
    publish_released(boxes_dir("1.0.0"), catalog, base_url="https://boxes.example.org/team",
            progress=QUIET)
    url = metadata(catalog)["versions"][0]["providers"][0]["url"]
    assert url == (f"https://boxes.example.org/team/{BOX_NAME}/1.0.0/libvirt/"
                   f"{BOX_NAME}-1.0.0-libvirt.box")
    before = tree(catalog)
    with pytest.raises(GoldboxError, match="is published under https://boxes.example.org/"
                                           "team/, not file://.*--base-url https://"):
        publish_released(boxes_dir("1.1.0"), catalog, progress=QUIET)
    assert tree(catalog) == before


def test_boxes_table_reads_the_manifests(catalog, boxes_dir):
    for version in ("0.1.0", "0.2.0"):
        publish_released(boxes_dir(version), catalog, progress=QUIET)
    rows = list_boxes(catalog)
    assert [(r.version, r.provider, r.platform, r.cpython) for r in rows] == [
        ("0.2.0", "libvirt", "debian-12", "3.13.5"), ("0.1.0", "libvirt", "debian-12", "3.13.5")]
    table = format_table(rows).splitlines()
    assert table[0].split() == ["BOX", "VERSION", "PROVIDER", "ARCH", "SIZE", "CREATED",
                                "PLATFORM", "CPYTHON", "OS-UPDATES"]
    assert table[1].split()[:4] == [BOX_NAME, "0.2.0", "libvirt", "amd64"]
    assert table[1].split()[-3:] == ["debian-12", "3.13.5", "2026-11-24"]
    assert "KiB" in table[1] and "2026-11-25T02:00:00Z" in table[1]


def test_prune_hides_older_releases_now_and_deletes_their_files_after_the_grace(catalog,
                                                                              boxes_dir):
    for version in ("0.1.0", "0.2.0", "0.10.0", "1.0.0"):
        publish_released(boxes_dir(version), catalog, progress=QUIET)
    pruned_at = 1_800_000_000.0
    assert prune(catalog, BOX_NAME, keep=2, grace_hours=24, now=pruned_at,
                 progress=QUIET) == ["0.1.0", "0.2.0"]
    assert versions(catalog) == ["0.10.0", "1.0.0"]
    candidate = json.loads((catalog / BOX_NAME / "channels" / "candidate" / "metadata.json")
                           .read_text())
    assert [v["version"] for v in candidate["versions"]] == ["0.10.0", "1.0.0"]
    for version in ("0.1.0", "0.2.0"):  # kept for downloads under way
        assert any((catalog / BOX_NAME / version / "libvirt").glob("*.box"))
    assert prune(catalog, BOX_NAME, keep=2, grace_hours=24, now=pruned_at + 24 * 3600,
                 progress=QUIET) == ["0.1.0", "0.2.0"]
    assert sorted(p.name for p in (catalog / BOX_NAME).iterdir()) == [
        STATE_FILE, "0.10.0", "1.0.0", "channels", "metadata.json"]
    assert prune(catalog, BOX_NAME, keep=2, grace_hours=24, now=pruned_at + 25 * 3600,
                 progress=QUIET) == []


def test_prune_counts_released_versions_only_and_keeps_a_newer_candidate(catalog,
                                                                         boxes_dir):
    publish_released(boxes_dir("1.0.0"), catalog, progress=QUIET)
    publish(boxes_dir("1.1.0"), catalog, progress=QUIET)  # on trial
    assert prune(catalog, BOX_NAME, keep=1, grace_hours=0, progress=QUIET) == []
    assert versions(catalog) == ["1.0.0"]  # the stable channel is not emptied
    for version in ("1.0.0", "1.1.0"):
        assert any((catalog / BOX_NAME / version / "libvirt").glob("*.box"))
    assert [(v["version"], v["status"]) for v in state_versions(catalog)] == [
        ("1.0.0", "released"), ("1.1.0", "candidate")]
    # A candidate older than the newest release was passed over: it goes.
    publish(boxes_dir("0.9.0"), catalog, progress=QUIET)
    assert prune(catalog, BOX_NAME, keep=1, grace_hours=0, progress=QUIET) == ["0.9.0"]
    assert not (catalog / BOX_NAME / "0.9.0").exists()
    assert [v["version"] for v in state_versions(catalog)] == ["1.0.0", "1.1.0"]


def test_invoke_publish_defaults_to_the_built_box_and_the_configured_catalog(project_copy):
    default = load_config(project_copy).project.box.default_platform
    make_box(project_copy / "dist" / default, "0.1.0")  # where `invoke image` puts it
    result = run_invoke(project_copy, "publish", "--release")
    assert result.returncode == 0, result.stdout + result.stderr
    catalog = project_copy / "dist" / "catalog"  # goldbox.toml: catalog.location
    assert versions(catalog) == ["0.1.0"]
    assert metadata(catalog)["description"].startswith("Flask behind uWSGI and nginx")
    assert f"vagrant box add {(catalog / BOX_NAME / 'metadata.json').as_uri()}" in result.stdout
    listed = run_invoke(project_copy, "boxes")
    assert listed.returncode == 0 and f"{BOX_NAME}  0.1.0" in listed.stdout


# ---- bad input: one line, non-zero, nothing changed ------------------------------------


def _refused(root: Path, catalog: Path, *args: str) -> str:
    before = tree(catalog)
    result = run_invoke(root, *args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("goldbox: error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert tree(catalog) == before
    return lines[0]


def test_bad_input_gets_one_line_and_changes_nothing(project_copy, catalog, boxes_dir,
                                                     tmp_path):
    good = boxes_dir("0.1.0")
    assert run_invoke(project_copy, "publish", "--release", "--manifest", str(good),
                      "--catalog", str(catalog)).returncode == 0

    missing = tmp_path / "no" / "such" / "catalog"
    line = _refused(project_copy, catalog, "publish", "--manifest", str(good),
                    "--catalog", str(missing))
    assert f"catalog {missing}: no such directory" in line and not missing.parent.exists()

    malformed = boxes_dir("0.2.0")
    malformed.write_text(malformed.read_text().replace('"0.2.0"', '"0.2"'))
    line = _refused(project_copy, catalog, "publish", "--manifest", str(malformed),
                    "--catalog", str(catalog))
    assert f"{malformed}: version = '0.2': expected a semantic version" in line

    orphan = boxes_dir("0.3.0")
    orphan.unlink()  # the box is there, its manifest is not
    line = _refused(project_copy, catalog, "publish", "--manifest", str(orphan),
                    "--catalog", str(catalog))
    assert f"{orphan}: no such manifest" in line

    state = catalog / BOX_NAME / STATE_FILE  # every version's record: what changes read
    state.write_text('{"name": "goldbox-test", "versions": [{"version": "one"}]}')
    for args in (["publish", "--manifest", str(boxes_dir("0.4.0"))],
                 ["prune", "--keep", "1", "--box", BOX_NAME],
                 ["release", "0.1.0", "--box", BOX_NAME],
                 ["revoke", "0.1.0", "--box", BOX_NAME]):
        line = _refused(project_copy, catalog, *args, "--catalog", str(catalog))
        assert f"{state}: versions[0].version = 'one': expected MAJOR.MINOR.PATCH" in line
    broken = catalog / BOX_NAME / "metadata.json"  # what `boxes` and teammates read
    broken.write_text("{not json")
    line = _refused(project_copy, catalog, "boxes", "--catalog", str(catalog))
    assert f"{broken}: not valid JSON" in line
    broken.write_text('{"name": "goldbox-test", "versions": [{"version": "one"}]}')
    line = _refused(project_copy, catalog, "boxes", "--catalog", str(catalog))
    assert f"{broken}: versions[0].version = 'one': expected MAJOR.MINOR.PATCH" in line
    broken.write_text(json.dumps({"name": BOX_NAME, "versions": [
        {"version": "0.1.0", "providers": [{"name": "libvirt", "url": "file:///x.box"}]}]}))
    manifest = catalog / BOX_NAME / "0.1.0" / "libvirt" / "manifest.json"
    for garbage, problem in ((b"{not json", "not valid JSON"),
                             (b"\xff\xfe{}", "cannot read")):
        manifest.write_bytes(garbage)  # a malformed per-version manifest
        line = _refused(project_copy, catalog, "boxes", "--catalog", str(catalog))
        assert f"{manifest}: {problem}" in line

    line = _refused(project_copy, catalog, "prune", "--catalog", str(catalog))
    assert "--keep 0" in line


# ---- concurrency and faults ------------------------------------------------------------


def _python(script: str, *args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", script, *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


PUBLISH = """\
import sys
from pathlib import Path
from goldbox.catalog import publish
publish(Path(sys.argv[1]), Path(sys.argv[2]), release=True)
"""


def test_two_publishes_at_once_both_end_up_listed(catalog, boxes_dir):
    manifests = [boxes_dir("1.1.0", padding_mib=4), boxes_dir("1.2.0", padding_mib=4)]
    publish_released(boxes_dir("1.0.0"), catalog, progress=QUIET)
    # Hold the catalog's lock until both publishers are waiting for it, so that they
    # really run at the same time, then let them race.
    with open(catalog / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        children = [_python(PUBLISH, str(m), str(catalog)) for m in manifests]
        for child in children:
            assert "waiting for the catalog lock" in child.stdout.readline()
    outputs = [child.communicate(timeout=60)[0] for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    assert versions(catalog) == ["1.0.0", "1.1.0", "1.2.0"]
    assert not list(catalog.rglob(f"{PARTIAL_PREFIX}*"))


KILLED_DURING_COPY = """\
import sys
from pathlib import Path
from goldbox.catalog import publish

def progress(line):
    print(line, flush=True)
    if line.startswith("copying"):
        sys.stdin.read()  # hold still, part-way through the copy, until killed

publish(Path(sys.argv[1]), Path(sys.argv[2]), release=True, progress=progress)
"""


def test_publish_killed_during_copy_leaves_valid_metadata_then_is_swept(catalog, boxes_dir):
    publish_released(boxes_dir("1.0.0"), catalog, progress=QUIET)
    before = metadata(catalog)
    child = _python(KILLED_DURING_COPY, str(boxes_dir("2.0.0", padding_mib=8)), str(catalog),
                    stdin=subprocess.PIPE)
    line = child.stdout.readline()
    assert line.startswith("copying") and "25%" in line, line
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    child.stdout.close()
    child.stdin.close()
    assert child.returncode == -signal.SIGKILL

    assert metadata(catalog) == before  # still valid JSON, no entry for 2.0.0
    (partial,) = catalog.rglob(f"{PARTIAL_PREFIX}*")
    assert partial.parent == catalog / BOX_NAME / "2.0.0" / "libvirt"
    assert partial.stat().st_size >= 2 << 20  # killed mid-copy: 25% of 8 MiB or more
    assert list_boxes(catalog)[0].version == "1.0.0"

    # The lock died with the process: the next publish runs and sweeps the leftovers.
    messages: list[str] = []
    publish_released(boxes_dir("1.1.0"), catalog, progress=messages.append)
    assert any("removed unfinished file" in m for m in messages)
    assert versions(catalog) == ["1.0.0", "1.1.0"]
    assert not list(catalog.rglob(f"{PARTIAL_PREFIX}*"))
    assert not (catalog / BOX_NAME / "2.0.0").exists()


def test_prune_also_sweeps_a_killed_publish(catalog, boxes_dir):
    publish_released(boxes_dir("1.0.0"), catalog, progress=QUIET)
    stray = catalog / BOX_NAME / "1.1.0" / "libvirt"
    stray.mkdir(parents=True)
    (stray / f"{PARTIAL_PREFIX}abc").write_bytes(b"half a box")
    assert prune(catalog, BOX_NAME, keep=3, progress=QUIET) == []
    assert sorted(p.name for p in (catalog / BOX_NAME).iterdir()) == [
        STATE_FILE, "1.0.0", "channels", "metadata.json"]


# ---- the real Vagrant client -----------------------------------------------------------


@pytest.fixture
def served_catalog(project_copy, catalog):
    with serving(project_copy, catalog) as base:
        yield base


@pytest.mark.parametrize("transport", ["file", "http"])
def test_vagrant_adds_newest_sees_outdated_and_updates(transport, request, project_copy,
                                                       catalog, boxes_dir, tmp_path):
    base = request.getfixturevalue("served_catalog") if transport == "http" else None

    if base:  # the served URL from goldbox.toml's catalog.base_url ...
        config = project_copy / "goldbox.toml"
        config.write_text(config.read_text().replace(
            'location = "dist/catalog"', f'location = "dist/catalog"\nbase_url = "{base}"'))

    def publish_cli(version: str) -> None:
        args = ["publish", "--release", "--manifest", str(boxes_dir(version)),
                "--catalog", str(catalog)]
        # ... and once from --base-url, which overrides it
        result = run_invoke(project_copy, *args,
                            *(["--base-url", base] if base and version == "0.3.0" else []))
        assert result.returncode == 0, result.stdout + result.stderr

    publish_cli("0.1.0")
    publish_cli("0.2.0")
    home = tmp_path / "vagrant.d"
    source = (f"{base}{BOX_NAME}/metadata.json" if base
              else str(catalog / BOX_NAME / "metadata.json"))
    added = vagrant(home, "box", "add", source)
    assert f"Successfully added box '{BOX_NAME}' (v0.2.0) for 'libvirt'" in added.stdout
    assert installed(home) == [f"{BOX_NAME} (libvirt, 0.2.0)"]
    outdated = vagrant(home, "box", "outdated", "--global").stdout
    assert f"'{BOX_NAME}' for 'libvirt' (v0.2.0) is up to date" in outdated

    publish_cli("0.3.0")
    outdated = vagrant(home, "box", "outdated", "--global").stdout
    assert f"'{BOX_NAME}' for 'libvirt' is outdated! Current: 0.2.0. Latest: 0.3.0" in outdated
    updated = vagrant(home, "box", "update", "--box", BOX_NAME).stdout
    assert f"Successfully added box '{BOX_NAME}' (v0.3.0) for 'libvirt'" in updated
    assert f"{BOX_NAME} (libvirt, 0.3.0)" in installed(home)

    listed = run_invoke(project_copy, "boxes", "--catalog", base or str(catalog),
                        "--box", BOX_NAME)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[1] for line in listed.stdout.splitlines()[1:]] == [
        "0.3.0", "0.2.0", "0.1.0"]


def test_vagrant_refuses_a_box_with_a_flipped_byte(catalog, boxes_dir, tmp_path):
    published = publish_released(boxes_dir("0.1.0"), catalog, progress=QUIET)
    data = bytearray(published.box_path.read_bytes())
    data[len(data) // 2] ^= 0x01
    published.box_path.write_bytes(bytes(data))
    home = tmp_path / "vagrant.d"
    result = vagrant(home, "box", "add", str(published.metadata), check=False)
    assert result.returncode != 0
    assert "The checksum of the downloaded box did not match" in result.stderr
    assert not (home / "boxes" / BOX_NAME).exists()

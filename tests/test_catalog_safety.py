"""Every byte of a catalog is untrusted input: whoever can write the catalog directory
must not get root on the host that publishes or serves it. Proven on the real CLI: a
link planted anywhere in a box's tree (or as the lock file) is refused in one line
before anything is read or removed, and the file it points at survives; as root, a
catalog or box folder others can write is refused; metadata with a payload in a name,
a version, a provider or a URL is refused by the typed model; `revoke --now` deletes a
leaked box at once."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from goldbox.catalog import LOCK_FILE, STATE_FILE, parse_metadata, publish
from goldbox.catalog.metadata import load_state
from goldbox.catalog.store import write_file_atomically
from goldbox.errors import GoldboxError
from tests.boxes import BOX_NAME
from tests.catalog_fixtures import (
    QUIET,
    boxes_dir_fixture,  # noqa: F401 (a fixture)
    catalog_fixture,  # noqa: F401 (a fixture)
)
from tests.conftest import run_invoke

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the root-only checks need root")


def tree(root: Path) -> dict[str, str]:
    """Every entry below `root`, not followed: files by content, links by target."""
    entries = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            entries[str(path.relative_to(root))] = f"-> {os.readlink(path)}"
        elif path.is_file():
            entries[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return entries


def refused(project: Path, catalog: Path, *args: str) -> str:
    """Run a CLI command that must fail in one line and change nothing in `catalog`."""
    before = tree(catalog)
    result = run_invoke(project, *args)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("goldbox: error: "), result.stderr
    assert tree(catalog) == before
    return lines[0]


def channel_versions(catalog: Path, channel: str) -> list[str]:
    path = (catalog / BOX_NAME / "metadata.json" if channel == "stable" else
            catalog / BOX_NAME / "channels" / channel / "metadata.json")
    return [v["version"] for v in json.loads(path.read_text())["versions"]]


# ---- links ----------------------------------------------------------------------------


def _precious(tmp_path: Path) -> tuple[Path, Path]:
    """A folder outside the catalog holding a file in a sub-folder (what the old sweep
    would have taken for a provider folder of a stray version and removed)."""
    outside = tmp_path / "outside"
    (outside / "libvirt").mkdir(parents=True)
    precious = outside / "libvirt" / "precious.txt"
    precious.write_text("not the catalog's\n")
    return outside, precious


def _plant_version_link(catalog: Path, outside: Path) -> Path:
    link = catalog / BOX_NAME / "9.9.9"
    link.symlink_to(outside)
    return link


def _plant_channel_link(catalog: Path, outside: Path) -> Path:
    link = catalog / BOX_NAME / "channels" / "candidate"
    for child in link.iterdir():
        child.unlink()
    link.rmdir()
    link.symlink_to(outside)
    return link


def _plant_state_link(catalog: Path, outside: Path) -> Path:
    link = catalog / BOX_NAME / STATE_FILE
    target = outside / "state.json"
    target.write_text(link.read_text())
    link.unlink()
    link.symlink_to(target)
    return link


PLANTED = {"version folder": _plant_version_link, "channel folder": _plant_channel_link,
           "state file": _plant_state_link}


@pytest.mark.parametrize("place", PLANTED)
def test_a_link_in_a_box_tree_is_refused_by_every_command(place, project_copy, catalog,
                                                          boxes_dir, tmp_path):
    publish(boxes_dir("1.0.0"), catalog, release=True, progress=QUIET)
    publish(boxes_dir("1.1.0"), catalog, progress=QUIET)
    outside, precious = _precious(tmp_path)
    link = PLANTED[place](catalog, outside)
    outside_before = tree(outside)
    expected = f"goldbox: error: {link}: a symbolic link in the catalog; refused"
    where = ("--catalog", str(catalog))
    for args in (["publish", "--manifest", str(boxes_dir("1.2.0")), *where],
                 ["publish", "--force", "--manifest", str(boxes_dir("1.1.0")), *where],
                 ["release", "1.1.0", "--box", BOX_NAME, *where],
                 ["revoke", "1.0.0", "--box", BOX_NAME, *where],
                 ["revoke", "1.0.0", "--now", "--box", BOX_NAME, *where],
                 ["prune", "--keep", "1", "--box", BOX_NAME, *where],
                 ["boxes", *where]):
        line = refused(project_copy, catalog, *args)
        assert line.startswith(expected), (args, line)
    assert precious.read_text() == "not the catalog's\n"
    assert tree(outside) == outside_before
    check = run_invoke(project_copy, "catalog-check", *where)
    assert check.returncode == 1
    assert f"{link}: a symbolic link in the catalog; refused" in check.stdout


def test_a_box_folder_that_is_a_link_is_refused(project_copy, catalog, boxes_dir, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    publish(boxes_dir("1.0.0"), elsewhere, release=True, progress=QUIET)
    (catalog / BOX_NAME).symlink_to(elsewhere / BOX_NAME)
    before = tree(elsewhere)
    for args in (["publish", "--manifest", str(boxes_dir("1.1.0"))],
                 ["prune", "--keep", "1", "--box", BOX_NAME]):
        line = refused(project_copy, catalog, *args, "--catalog", str(catalog))
        assert line.startswith(f"goldbox: error: {catalog / BOX_NAME}: a symbolic link in "
                               f"the catalog; refused"), line
    assert tree(elsewhere) == before


def test_a_lock_file_that_is_a_link_is_refused(project_copy, catalog, boxes_dir, tmp_path):
    target = tmp_path / "outside" / "created-by-root"
    target.parent.mkdir()
    (catalog / LOCK_FILE).symlink_to(target)
    line = refused(project_copy, catalog, "publish", "--manifest", str(boxes_dir("1.0.0")),
                   "--catalog", str(catalog))
    assert line.startswith(f"goldbox: error: {catalog / LOCK_FILE}: a symbolic link in the "
                           f"catalog; refused"), line
    assert not target.exists()


def test_a_fifo_planted_as_a_catalog_file_is_refused_not_waited_on(project_copy, catalog,
                                                                   boxes_dir):
    """Opening a FIFO for reading blocks until someone writes it: planted as the state
    file or the metadata, it would hang every publish or listing. It is refused in one
    line instead."""
    publish(boxes_dir("1.0.0"), catalog, release=True, progress=QUIET)
    for planted, args in ((STATE_FILE, ["publish", "--manifest", str(boxes_dir("1.1.0"))]),
                          ("metadata.json", ["boxes"])):
        fifo = catalog / BOX_NAME / planted
        fifo.unlink()
        os.mkfifo(fifo)
        line = refused(project_copy, catalog, *args, "--catalog", str(catalog))
        assert line == f"goldbox: error: {fifo}: not a regular file; expected a catalog file"


def test_an_atomic_write_into_a_linked_folder_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(GoldboxError, match=rf"^{tmp_path / 'link'}: a symbolic link"):
        write_file_atomically(tmp_path / "link" / "metadata.json", b"{}")
    assert list(real.iterdir()) == []


# ---- as root, nobody else may write the catalog ------------------------------------------


@needs_root
@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_as_root_a_catalog_others_can_write_is_refused(mode, project_copy, catalog,
                                                       boxes_dir, tmp_path):
    publish(boxes_dir("1.0.0"), catalog, release=True, progress=QUIET)
    os.chmod(catalog, mode)
    for args in (["publish", "--manifest", str(boxes_dir("1.1.0"))],
                 ["release", "1.0.0", "--box", BOX_NAME],
                 ["prune", "--keep", "1", "--box", BOX_NAME],
                 ["catalog-serve", "--render-only", str(tmp_path / "site"), "--insecure-http"]):
        line = refused(project_copy, catalog, *args, "--catalog", str(catalog))
        assert line == (f"goldbox: error: {catalog}: writable by group or others (mode "
                        f"{mode:04o}) and goldbox runs as root: run `chmod go-w {catalog}`")
    assert not (tmp_path / "site" / "goldbox-catalog.conf").exists()
    os.chmod(catalog, 0o755)
    assert run_invoke(project_copy, "release", "1.0.0", "--box", BOX_NAME,
                      "--catalog", str(catalog)).returncode == 0


@needs_root
def test_as_root_a_box_folder_others_can_write_or_own_is_refused(project_copy, catalog,
                                                                 boxes_dir):
    publish(boxes_dir("1.0.0"), catalog, release=True, progress=QUIET)
    version_dir = catalog / BOX_NAME / "1.0.0"
    os.chmod(version_dir, 0o777)
    line = refused(project_copy, catalog, "revoke", "1.0.0", "--box", BOX_NAME,
                   "--catalog", str(catalog))
    assert line.endswith(f"{version_dir}: writable by group or others (mode 0777) and "
                         f"goldbox runs as root: run `chmod go-w {version_dir}`")
    os.chmod(version_dir, 0o755)
    os.chown(catalog / BOX_NAME, 65534, 65534)
    line = refused(project_copy, catalog, "publish", "--manifest", str(boxes_dir("1.1.0")),
                   "--catalog", str(catalog))
    assert line == (f"goldbox: error: {catalog / BOX_NAME}: owned by uid 65534, and goldbox "
                    f"runs as root: run goldbox as that user, or `chown root: "
                    f"{catalog / BOX_NAME}`")


# ---- revoke --now -----------------------------------------------------------------------


def test_revoke_now_deletes_a_leaked_box_at_once(project_copy, catalog, boxes_dir):
    for version in ("1.0.0", "1.1.0"):
        publish(boxes_dir(version), catalog, release=True, progress=QUIET)
    leaked = next((catalog / BOX_NAME / "1.1.0" / "libvirt").glob("*.box"))
    result = run_invoke(project_copy, "revoke", "1.1.0", "--now", "--box", BOX_NAME,
                        "--catalog", str(catalog))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hidden from every channel, its files deleted" in result.stdout
    assert not leaked.exists() and not (catalog / BOX_NAME / "1.1.0").exists()
    for channel in ("stable", "candidate"):
        assert channel_versions(catalog, channel) == ["1.0.0"]
    assert [v.version for v in load_state(catalog / BOX_NAME).versions] == ["1.0.0"]
    check = run_invoke(project_copy, "catalog-check", "--catalog", str(catalog))
    assert check.returncode == 0, check.stdout + check.stderr


# ---- the typed metadata model -----------------------------------------------------------


def _metadata(box: str = BOX_NAME, version: str = "1.0.0", **provider) -> str:
    entry = {"name": "libvirt", "url": "https://boxes.example.org/b/1.0.0/libvirt/b.box",
             "checksum_type": "sha256", "checksum": "a" * 64, **provider}
    return json.dumps({"name": box, "versions": [{"version": version,
                                                   "providers": [entry]}]})


BAD_METADATA = {
    "ruby in the name": (_metadata(box='x"; system("id"); "'),
                         """name = 'x"; system("id"); "': expected a box name"""),
    "newline after the name": (_metadata(box="box\n"), "name = 'box\\n': expected a box name"),
    "newline after the version": (_metadata(version="1.0.0\n"),
                                  "versions[0].version = '1.0.0\\n': expected MAJOR.MINOR.PATCH"),
    "provider name": (_metadata(name="libvirt\n"),
                      "versions[0].providers[0].name = 'libvirt\\n': expected a Vagrant "
                      "provider name"),
    "url scheme": (_metadata(url="javascript:alert(1)"),
                   "versions[0].providers[0].url = 'javascript:alert(1)': expected an "
                   "http://, https:// or file:// URL"),
    "url with a quote": (_metadata(url='https://h/a".box'),
                         "versions[0].providers[0].url = 'https://h/a\".box': expected"),
    "sha256 not hex": (_metadata(checksum="A" * 64),
                       f"versions[0].providers[0]: checksum = '{'A' * 64}': expected a "
                       f"sha256: 64 lowercase hex characters"),
    "architecture": (_metadata(architecture="amd64;"),
                     "versions[0].providers[0].architecture = 'amd64;': expected an "
                     "architecture"),
    "providers not a list": (json.dumps({"name": "b", "versions": [{"version": "1.0.0",
                                                                     "providers": {}}]}),
                             "versions[0].providers = {}: expected a valid list"),
    "not an object": ("[]", "expected a JSON object, found list"),
}


@pytest.mark.parametrize("case", BAD_METADATA)
def test_metadata_is_checked_with_allow_lists(case):
    text, expected = BAD_METADATA[case]
    with pytest.raises(GoldboxError) as caught:
        parse_metadata(text, "remote/metadata.json")
    message = str(caught.value)
    assert message.startswith(f"remote/metadata.json: {expected}"), message
    assert "\n" not in message.replace("\\n", "")


def test_metadata_keeps_only_what_it_knows():
    text = json.dumps({"name": "b", "description": "d", "extra": 1, "versions": [
        {"version": "1.0.0", "status": "active", "providers": [
            {"name": "libvirt", "url": "file:///c/b.box", "checksum_type": "sha256",
             "checksum": "0" * 64, "architecture": "amd64", "default_architecture": True}]}]})
    metadata = parse_metadata(text, "m.json")
    # default_architecture is Vagrant's (>= 2.4), kept; status is a server's, dropped.
    assert metadata.model_dump(exclude_none=True) == {
        "name": "b", "description": "d", "versions": [{"version": "1.0.0", "providers": [
            {"name": "libvirt", "url": "file:///c/b.box", "checksum_type": "sha256",
             "checksum": "0" * 64, "architecture": "amd64", "default_architecture": True}]}]}


def test_a_state_file_with_an_unknown_status_is_one_line(catalog, boxes_dir):
    publish(boxes_dir("1.0.0"), catalog, progress=QUIET)
    state_file = catalog / BOX_NAME / STATE_FILE
    state = json.loads(state_file.read_text())
    state["versions"][0]["status"] = "bogus"
    state_file.write_text(json.dumps(state))
    with pytest.raises(GoldboxError, match=rf"^{state_file}: versions\[0\].status = 'bogus': "
                                           rf"expected 'candidate', 'released' or 'revoked'$"):
        load_state(catalog / BOX_NAME)

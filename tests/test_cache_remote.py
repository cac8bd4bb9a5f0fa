"""The team cache on a real OCI registry (goldbox/cache_remote.py): Debian's
docker-registry on 127.0.0.1 with htpasswd auth and TLS from a test CA, real ssh-keygen
signatures, goldbox's own Cache. A pushed entry is pulled byte for byte and used without
a build; an entry that is tampered with, unsigned, signed by a foreign key or replayed
under another tag is skipped with one line and built here; a registry that is stopped,
refuses the password or shows a certificate of an unknown CA costs one line and a local
build."""

from __future__ import annotations

import base64
import json
import os
import shutil
import tarfile
import time
from pathlib import Path

import oras.provider
import pytest

from bench.oci_registry import PASSWORD, USER, running_registry
from goldbox import PROJECT_ROOT, cache_task
from goldbox.accel import Acceleration
from goldbox.cache import Cache, identity_key
from goldbox.cache_remote import (
    CHUNK,
    NAMESPACE,
    ORIGIN,
    RECORD_ANNOTATION,
    EntryRejected,
    Remote,
    open_remote,
    parse_record,
    tag_of,
    with_options,
)
from goldbox.config import load_config
from goldbox.context import Context
from goldbox.errors import GoldboxError
from goldbox.golden_cache import KIND as GOLDEN_KIND
from goldbox.golden_cache import golden_identity
from goldbox.image import Host, golden_phases
from goldbox.manifest import read_manifest
from goldbox.packer import packer_build
from goldbox.phase_report import Phases
from tests.conftest import run_invoke
from tests.test_signing import make_key

IDENTITY = {"inputs": "a small entry for the team-cache tests"}
CREDENTIALS = {"GOLDBOX_CACHE_USER": USER, "GOLDBOX_CACHE_PASSWORD": PASSWORD}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    with running_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture
def keys(tmp_path):
    folder = tmp_path / "keys"
    folder.mkdir()
    alice, mallory = make_key(folder, "alice"), make_key(folder, "mallory")
    signers = folder / "allowed_signers"
    signers.write_text(f'alice@team namespaces="{NAMESPACE}" '
                       f'{alice.with_suffix(".pub").read_text()}')
    return {"alice": alice, "mallory": mallory, "signers": signers}


@pytest.fixture
def repository(request):
    """A repository of its own per test, in the shared registry."""
    return "team/" + request.node.name.lower().replace("_", "-")[:60]


def remote(registry, repository: str, keys, notes: list[str], *, key: Path | None = None,
           environ: dict | None = None, cacert: Path | None = ...) -> Remote:
    return Remote(registry.url(repository), registry.host, repository, keys["signers"], key,
                  registry.ca if cacert is ... else cacert,
                  CREDENTIALS if environ is None else environ, notes.append)


def make_entry(folder: Path) -> None:
    """Two files, one in a subfolder, as a wheelhouse or a bundle has; their bytes are
    the test's own (the registry keeps one blob per content, shared by repositories,
    and some tests rewrite one)."""
    test = os.environ["PYTEST_CURRENT_TEST"].split(" ")[0]
    (folder / "wheels").mkdir()
    (folder / "wheels" / "app-1.0-py3-none-any.whl").write_bytes(
        b"PK\x03\x04" + bytes(4096) + test.encode())
    (folder / "requirements.txt").write_text(f"app==1.0  # {test}\n")


def ensure(cache: Cache, builds: list[str]):
    def make(folder: Path) -> None:
        builds.append(str(folder))
        make_entry(folder)
    return cache.ensure("wheelhouse", IDENTITY, make, name="team", summary="team test entry")


def push_entry(registry, repository, keys, tmp_path, key_name="alice"):
    notes: list[str] = []
    entry = ensure(Cache(tmp_path / "ci-cache", remote=remote(
        registry, repository, keys, notes, key=keys[key_name])), [])
    assert f"cache: pushed wheelhouse {entry.key[:12]} to {registry.url(repository)}" in notes
    return entry


def pull(registry, repository, keys, tmp_path, **options):
    notes: list[str] = []
    builds: list[str] = []
    team = remote(registry, repository, keys, notes, **options)
    entry = ensure(Cache(tmp_path / "laptop-cache", remote=team, note=notes.append), builds)
    return entry, builds, notes, team


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_a_pushed_entry_is_pulled_byte_identical_and_not_rebuilt(registry, repository, keys,
                                                                 tmp_path, monkeypatch):
    pushed = push_entry(registry, repository, keys, tmp_path)
    entry, builds, notes, team = pull(registry, repository, keys, tmp_path)
    assert builds == []
    assert notes == [f"cache: pulled wheelhouse {entry.key[:12]} (team test entry) from "
                     f"{registry.url(repository)}, signed by alice@team"]
    pulled = files_of(entry.path)
    origin = json.loads(pulled.pop(ORIGIN))
    assert pulled == files_of(pushed.path)
    assert origin["signer"] == "alice@team" and origin["remote"] == registry.url(repository)
    assert team.pulled_bytes == pushed.size
    # The next run finds it in the local cache: no remote needed any more.
    again = ensure(Cache(tmp_path / "laptop-cache"), builds)
    assert builds == [] and again.path == entry.path
    # `invoke cache` says where it came from.
    monkeypatch.setenv("GOLDBOX_CACHE", str(tmp_path / "laptop-cache"))
    listing = cache_task.format_entries(load_config())
    line = next(line for line in listing.splitlines() if line.startswith("wheelhouse"))
    assert " remote  team test entry" in line
    assert f"remote: pulled from {registry.url(repository)}, signed by alice@team" in listing


def test_a_file_of_several_upload_chunks_goes_both_ways(registry, repository, keys,
                                                       tmp_path):
    """Base disks and rootfs tarballs are hundreds of MiB: pushed in 16 MiB chunks."""
    def make(folder: Path) -> None:
        (folder / "rootfs.tar").write_bytes(os.urandom(CHUNK + 4096))
    notes: list[str] = []
    pushed = Cache(tmp_path / "ci", remote=remote(registry, repository, keys, notes,
                                                  key=keys["alice"])).ensure(
        "rootfs", IDENTITY, make, name="big", summary="big")
    assert notes == [f"cache: pushed rootfs {pushed.key[:12]} to {registry.url(repository)}"]
    pulled = Cache(tmp_path / "laptop", remote=remote(registry, repository, keys, notes),
                   note=notes.append).ensure("rootfs", IDENTITY, lambda f: 1 / 0, name="big",
                                             summary="big")
    assert (pulled.path / "rootfs.tar").read_bytes() == (pushed.path / "rootfs.tar").read_bytes()


def test_a_tampered_blob_is_skipped_and_built_here(registry, repository, keys, tmp_path):
    pushed = push_entry(registry, repository, keys, tmp_path)
    wheel = pushed.record["files"]["wheels/app-1.0-py3-none-any.whl"]
    blob = registry.blob(wheel["sha256"])
    blob.write_bytes(b"MZ" + bytes(wheel["size"] - 2))  # same size, other bytes
    entry, builds, notes, _ = pull(registry, repository, keys, tmp_path)
    assert len(builds) == 1
    assert notes[0] == (f"cache: remote {registry.url(repository)} has wheelhouse "
                        f"{entry.key[:12]} but it is not used: wheels/app-1.0-py3-none-any.whl "
                        "does not match its recorded sha256 (changed in the registry); "
                        "building it locally")
    built, expected = files_of(entry.path), files_of(pushed.path)
    built.pop("identity.json"), expected.pop("identity.json")  # their `created` may differ
    assert built == expected and ORIGIN not in built  # the same files, made here


def test_a_larger_blob_is_cut_off_at_its_signed_size(registry, repository, keys, tmp_path):
    pushed = push_entry(registry, repository, keys, tmp_path)
    requirements = pushed.record["files"]["requirements.txt"]
    blob = registry.blob(requirements["sha256"])
    blob.write_bytes(blob.read_bytes() + b"x" * 100000)
    entry, builds, notes, _ = pull(registry, repository, keys, tmp_path)
    assert len(builds) == 1
    assert (f"requirements.txt: the registry sent more than the {requirements['size']} bytes "
            "its signed record lists; building it locally") in notes[0]


def test_an_entry_signed_by_a_foreign_key_is_skipped(registry, repository, keys, tmp_path):
    push_entry(registry, repository, keys, tmp_path, key_name="mallory")
    entry, builds, notes, _ = pull(registry, repository, keys, tmp_path)
    assert len(builds) == 1 and not (entry.path / ORIGIN).exists()
    assert notes[0].startswith(f"cache: remote {registry.url(repository)} has wheelhouse "
                               f"{entry.key[:12]} but it is not used: ")
    assert "signed by a key that" in notes[0] and "does not list" in notes[0]
    assert len(notes) == 2 and notes[1].startswith("cache: building wheelhouse for team")


def oras_client(registry) -> oras.provider.Registry:
    """A registry writer's own client, outside goldbox."""
    client = oras.provider.Registry(hostname=registry.host, tls_verify=str(registry.ca),
                                    auth_backend="basic")
    client.auth.set_basic_auth(USER, PASSWORD)
    return client


def test_an_unsigned_entry_is_skipped(registry, repository, keys, tmp_path):
    built = ensure(Cache(tmp_path / "writer"), [])
    files = [str(built.path / name) for name in built.record["files"]]
    text = (built.path / "identity.json").read_text()
    oras_client(registry).push(target=f"{registry.host}/{repository}:"
                                      f"{tag_of('wheelhouse', built.key)}",
                               files=files, disable_path_validation=True,
                               manifest_annotations={RECORD_ANNOTATION: text}, quiet=True)
    entry, builds, notes, _ = pull(registry, repository, keys, tmp_path)
    assert len(builds) == 1
    assert "but it is not used: it is not signed" in notes[0]


def test_a_signed_entry_replayed_under_another_tag_is_skipped(registry, repository, keys,
                                                              tmp_path):
    """A registry writer copies a signed entry (an old CPython, say) to the tag of
    another identity: the signature is good, the identity is not the one asked for."""
    signed = push_entry(registry, repository, keys, tmp_path)
    client = oras_client(registry)
    manifest = client.get_manifest(f"{registry.host}/{repository}:"
                                   f"{tag_of('wheelhouse', signed.key)}")
    other = {"inputs": "another entry"}
    target = client.get_container(f"{registry.host}/{repository}:"
                                  f"{tag_of('wheelhouse', identity_key('wheelhouse', other))}")
    assert client.upload_manifest(manifest, target).status_code == 201
    notes: list[str] = []
    builds: list[str] = []
    cache = Cache(tmp_path / "laptop", remote=remote(registry, repository, keys, notes),
                  note=notes.append)
    entry = cache.ensure("wheelhouse", other, lambda f: (builds.append("x"), make_entry(f)),
                         name="team", summary="another entry")
    assert builds == ["x"] and not (entry.path / ORIGIN).exists()
    assert "but it is not used: its signed record names another entry" in notes[0]


def test_a_stopped_registry_is_one_line_and_a_local_build(keys, tmp_path):
    with running_registry(tmp_path / "registry") as stopped:
        stopped.stop()
        notes: list[str] = []
        team = remote(stopped, "team/cache", keys, notes)
        cache = Cache(tmp_path / "laptop", remote=team, note=notes.append)
        builds: list[str] = []
        ensure(cache, builds)
        cache.ensure("wheelhouse", {"inputs": "a second entry"}, make_entry, name="second",
                     summary="second")
    assert len(builds) == 1
    refused = [n for n in notes if n.startswith("cache: remote")]
    assert len(refused) == 1, notes  # not asked again in the same run
    assert refused[0].startswith(f"cache: remote {stopped.url('team/cache')} pulling "
                                 "wheelhouse ")
    assert "ConnectionError" in refused[0]
    assert refused[0].endswith("building locally, and not asking it again in this run")
    assert "\n" not in refused[0]


def test_a_wrong_password_is_one_line_and_a_local_build(registry, repository, keys, tmp_path):
    push_entry(registry, repository, keys, tmp_path)
    wrong = {"GOLDBOX_CACHE_USER": USER, "GOLDBOX_CACHE_PASSWORD": "not-the-password"}
    entry, builds, notes, _ = pull(registry, repository, keys, tmp_path, environ=wrong)
    assert len(builds) == 1 and not (entry.path / ORIGIN).exists()
    assert "the registry refused the credentials (HTTP 401 Unauthorized" in notes[0]
    assert len(notes) == 2


def test_no_credentials_for_a_password_registry_is_one_line(registry, repository, keys,
                                                           tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.docker/config.json
    entry, builds, notes, _ = pull(registry, repository, keys, tmp_path, environ={})
    assert len(builds) == 1
    assert "the registry asks for a password and none is set" in notes[0]


def test_credentials_come_from_a_docker_config_file(registry, repository, keys, tmp_path,
                                                     monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    push_entry(registry, repository, keys, tmp_path)
    docker = tmp_path / "docker"
    docker.mkdir()
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (docker / "config.json").write_text(json.dumps({"auths": {registry.host:
                                                              {"auth": token}}}))
    entry, builds, notes, _ = pull(registry, repository, keys, tmp_path,
                                   environ={"DOCKER_CONFIG": str(docker)})
    assert builds == [] and (entry.path / ORIGIN).is_file(), notes


def test_a_credentials_file_without_the_registry_is_one_line(registry, repository, keys,
                                                             tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    other = {"auths": {"registry.example.org": {"auth": base64.b64encode(b"u:p").decode()}}}
    (tmp_path / "auth.json").write_text(json.dumps(other))
    entry, builds, notes, _ = pull(registry, repository, keys, tmp_path,
                                   environ={"REGISTRY_AUTH_FILE": str(tmp_path / "auth.json")})
    assert len(builds) == 1
    assert f"(GoldboxError: no credentials for {registry.host} (credentials from" in notes[0]


def test_the_variables_win_over_a_credentials_file(registry, repository, keys, tmp_path,
                                                   monkeypatch):
    """~/.docker/config.json with another (stale) password for the host: the
    GOLDBOX_CACHE_* variables are the ones used."""
    monkeypatch.setenv("HOME", str(tmp_path))
    push_entry(registry, repository, keys, tmp_path)
    stale = base64.b64encode(f"{USER}:an-old-password".encode()).decode()
    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker" / "config.json").write_text(json.dumps({"auths": {registry.host:
                                                                            {"auth": stale}}}))
    entry, builds, notes, _ = pull(registry, repository, keys, tmp_path)
    assert builds == [] and (entry.path / ORIGIN).is_file(), notes


def test_a_certificate_of_an_unknown_ca_is_one_line(registry, repository, keys, tmp_path):
    """Without cache.cacert the test CA is not trusted: nothing is pulled over a
    connection that could be anybody's."""
    push_entry(registry, repository, keys, tmp_path)
    entry, builds, notes, _ = pull(registry, repository, keys, tmp_path, cacert=None)
    assert len(builds) == 1 and not (entry.path / ORIGIN).exists()
    assert "SSLError" in notes[0] and "CERTIFICATE_VERIFY_FAILED" in notes[0]


# ---- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize("url", ["oci://registry.example.org/Team/cache",
                                 "oci://registry.example.org/team/cache\n",
                                 "https://registry.example.org/team/cache",
                                 "oci://registry.example.org/team/../cache",
                                 "oci://registry.example.org"])
def test_remote_urls_outside_the_allow_list_are_one_line(url):
    with pytest.raises(GoldboxError) as error:
        with_options(load_config(), url, False)
    assert str(error.value) == (f"--remote: expected oci://HOST[:PORT]/REPOSITORY (lowercase "
                                f"repository components) (got {url!r})")


def test_push_needs_a_signing_key_and_the_remote_parses(tmp_path):
    config = with_options(load_config(), "oci://registry.example.org:5000/team/cache", True)
    with pytest.raises(GoldboxError, match=r"^goldbox.toml: cache.push = true needs "
                                           r"cache.signing_key \(or catalog.signing_key\)"):
        open_remote(config)
    pulling = open_remote(with_options(load_config(), "oci://registry.example.org:5000/t/c",
                                       False))
    assert (pulling.registry, pulling.repository, pulling.signing_key) == (
        "registry.example.org:5000", "t/c", None)
    assert "PASSWORD" not in repr(open_remote(config.model_copy(update={"project": (
        config.project.model_copy(update={"cache": config.project.cache.model_copy(
            update={"push": False})}))}), environ={"GOLDBOX_CACHE_PASSWORD": "PASSWORD"}))


def test_invoke_image_refuses_a_bad_remote_in_one_line():
    result = run_invoke(PROJECT_ROOT, "image", "--remote", "oci://registry.example.org/A")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].endswith(
        "--remote: expected oci://HOST[:PORT]/REPOSITORY (lowercase repository components) "
        "(got 'oci://registry.example.org/A')")


def test_the_image_build_uses_the_team_cache_of_the_options():
    config = with_options(load_config(), "oci://registry.example.org/team/cache", False)
    context = Context(config, config.platform(None))
    assert context.cache.remote is not None
    assert context.cache.remote.url == "oci://registry.example.org/team/cache"
    assert Context(load_config(), config.platform(None)).cache.remote is None


@pytest.mark.parametrize("name", ["../outside", "wheels/../../x", ".hidden", "-option",
                                  "identity.json", "remote.json", "a//b", "/abs", "a\nb"])
def test_a_signed_record_naming_a_file_outside_the_allow_list_is_refused(name):
    """Even a trusted signer's record cannot write outside the entry or over its
    metadata."""
    record = {"format": 1, "kind": "wheelhouse", "name": "n", "summary": "s",
              "identity": IDENTITY, "created": "2026-11-28T00:00:00+00:00",
              "files": {name: {"size": 1, "sha256": "0" * 64}}}
    with pytest.raises(EntryRejected, match="its record lists a file name that is not "
                                            "allowed"):
        parse_record(json.dumps(record), "wheelhouse", IDENTITY, 1)


# The golden build without a VM: packer's null builder writes a box where the golden
# build's post-processor would and prints what its last provisioner prints of a guest.
GOLDEN_NULL_BUILD = """
variable "box_output" {
  type = string
}
variable "metadata" {
  type    = string
  default = "{\\"provider\\": \\"libvirt\\"}"
}
source "null" "guest" {
  communicator = "none"
}
build {
  sources = ["source.null.guest"]
  provisioner "shell-local" {
    # A box as packer's vagrant post-processor writes one: a plain tar, metadata.json in it.
    inline = ["mkdir -p $(dirname ${var.box_output})/box",
              "cd $(dirname ${var.box_output})/box && echo a golden disk > box.img",
              "cd $(dirname ${var.box_output})/box && echo '${var.metadata}' > metadata.json",
              "tar -cf ${var.box_output} -C $(dirname ${var.box_output})/box metadata.json box.img",
              "rm -r $(dirname ${var.box_output})/box",
              "echo goldbox-version nginx=1.22.1", "echo goldbox-version uwsgi=2.0.31"]
  }
}
"""


def team_machine(root: Path, cache: Path, registry, repository, keys, monkeypatch, *,
                 push: bool) -> Context:
    """One machine of the team: its checkout of the project, its own local cache, the
    team cache in goldbox.toml as docs/team-cache.md sets it."""
    toml = root / "goldbox.toml"
    toml.write_text(toml.read_text().replace("[cache]\n", (
        f'[cache]\nremote = "{registry.url(repository)}"\npush = {str(push).lower()}\n'
        f'signing_key = "{keys["alice"]}"\nallowed_signers = "{keys["signers"]}"\n'
        f'cacert = "{registry.ca}"\n'), 1))
    monkeypatch.setenv("GOLDBOX_CACHE", str(cache))
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    config = load_config(root)
    ctx = Context(config, config.platform("debian-12"))
    ctx.log.parent.mkdir(parents=True, exist_ok=True)
    ctx.stage.mkdir(parents=True, exist_ok=True)
    (ctx.stage / "plan.json").write_text("{}\n")
    return ctx


def golden_run(ctx: Context, builds: list[str]) -> Phases:
    """The packer and box phases of `invoke image` for the render digest both machines
    compute, with the null golden build."""
    template = ctx.build / "golden.pkr.hcl"
    template.write_text(GOLDEN_NULL_BUILD)

    def build() -> dict[str, str]:
        builds.append(str(ctx.root))
        return packer_build(template, {"box_output": str(ctx.packer_box)}, "null.guest",
                            ctx.log, ctx.build / "console.log", None)

    phases = Phases(log=ctx.log)
    golden_phases(ctx, phases, Host(Acceleration("tcg", "test"), (1, 6, 6)), "d" * 64, build,
                  None, False)
    return phases


def test_a_golden_box_in_the_team_cache_skips_packer_on_a_second_machine(
        registry, repository, keys, project_copy, tmp_path, monkeypatch, capsys):
    second_root = tmp_path / "second"
    shutil.copytree(project_copy, second_root)
    first = team_machine(project_copy, tmp_path / "ci-cache", registry, repository, keys,
                         monkeypatch, push=True)
    builds: list[str] = []
    golden_run(first, builds)
    key = identity_key(GOLDEN_KIND, golden_identity(first, "d" * 64))
    assert builds == [str(project_copy)]
    assert f"cache: pushed golden-box {key[:12]} to {registry.url(repository)}" in (
        capsys.readouterr().out)

    second = team_machine(second_root, tmp_path / "laptop-cache", registry, repository, keys,
                          monkeypatch, push=False)
    phases = golden_run(second, builds)
    assert builds == [str(project_copy)]  # packer did not run on the second machine
    packer = next(line for line in phases.table(1.0).splitlines() if line.startswith("packer"))
    assert packer.endswith(f"skipped: golden box from cache {key[:12]} (remote)")
    with tarfile.open(second.box) as box:  # as the first machine's golden build made it
        assert [m.name for m in box.getmembers()] == ["metadata.json", "box.img"]
        assert json.loads(box.extractfile("metadata.json").read()) == {
            "provider": "libvirt", "architecture": "amd64", "ssh_key_credential": "goldbox.ssh_key"}
        assert box.extractfile("box.img").read() == b"a golden disk\n"
    manifest = read_manifest(second.manifest)
    assert manifest.components == {"cpython": second.platform.python.version,
                                   "nginx": "1.22.1", "uwsgi": "2.0.31", "packer": "1.6.6"}
    listing = cache_task.format_entries(second.config)
    assert any(line.startswith(f"golden-box    {key[:12]}") and " remote " in line
               for line in listing.splitlines())
    # With dist/ gone, the next build there finds it in its local cache.
    shutil.rmtree(second.dist)
    packer = next(line for line in golden_run(second, builds).table(1.0).splitlines()
                  if line.startswith("packer"))
    assert builds == [str(project_copy)]
    assert packer.endswith(f"skipped: golden box from cache {key[:12]} (local)")
    # The kind is swept and pruned as every other.
    leftover = tmp_path / "laptop-cache" / GOLDEN_KIND / f"{key}.partial"
    leftover.mkdir()
    assert str(leftover) in Cache(tmp_path / "laptop-cache").sweep()
    evicted = Cache(tmp_path / "laptop-cache").prune(keep=set(), older_than_days=0,
                                                     now=time.time() + 2 * 3600)
    assert [entry.kind for entry in evicted] == [GOLDEN_KIND]

"""The whole chain on debian-12, for real: `invoke image`, then `up`, `verify`, `destroy`
with vagrant-libvirt inside a network namespace this test creates, then the no-change
rebuild; and debian-13's image -> up -> verify -> destroy, sharing the namespace and the
cache. Under TCG this takes several minutes (more on a cold cache). The CPython tarball
comes from a verified source (python.org is not reachable here: the Debian archive
serves it), nothing is imported by hand.

It starts with `invoke image` killed for real in its chroot phases (SIGKILL during the
native build, SIGHUP of the whole session during the base disk): no mount and no
process may survive, the leftovers are swept, and the host's /dev is untouched. The
next `invoke image` on the same cache is the chain's own, which must then complete."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from bench import harness
from goldbox import PROJECT_ROOT, accel, pool, virt
from goldbox.cache import Cache
from goldbox.config import BOX_DISK_GIB, load_config
from goldbox.files import mounts_under, remove_tree
from goldbox.image import ensure_tarball
from tests.catalog_fixtures import make_test_ca, serving

pytestmark = pytest.mark.slow

CONFIG = load_config()
PLATFORM = CONFIG.platform("debian-12")
ON_12 = ["--platform", "debian-12"]
INVOKE = str(Path(sys.executable).parent / "invoke")


def run(argv: list[str], netns: str | None = None, env: dict | None = None,
        timeout: int = 3600, cwd: Path = PROJECT_ROOT
        ) -> tuple[subprocess.CompletedProcess, float]:
    """Run a command, its output shown live (pytest -s) and kept for the assertions."""
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    start = time.monotonic()
    completed = subprocess.run(argv, cwd=cwd, env={**os.environ, **(env or {})},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               timeout=timeout, check=False)
    seconds = time.monotonic() - start
    print(completed.stdout)
    return completed, seconds


@pytest.fixture(scope="module")
def tarball_in_cache():
    """The pinned tarball in the cache before a run is killed (so it reaches a chroot
    soon), fetched as `invoke image` does: from its first verified source."""
    return ensure_tarball(CONFIG, PLATFORM)[0]


@pytest.fixture(scope="module")
def libvirt_netns():
    with harness.libvirt_netns() as name:
        yield name


@pytest.fixture(scope="module")
def vagrant_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("vagrant-home")
    yield {"VAGRANT_HOME": str(home)}
    shutil.rmtree(home, ignore_errors=True)


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid`."""
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = status.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(status.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


def _kill_in_chroot(project: Path, how: str, platform: str, settle: float,
                    markers: tuple[str, ...] = ("goldbox-chroot",)
                    ) -> tuple[subprocess.CompletedProcess, set[int]]:
    """Start `invoke image` in `project`, wait until it runs a command in a chroot, then
    kill it `how`: "SIGKILL" (goldbox's own process only, as the OOM killer or `kill -9`
    would) or "SIGHUP" (its whole session, as a dropped SSH connection does). Returns
    the run and the processes it had below it at that moment."""
    # As from a login shell: SIGHUP's default action, even when the test run itself was
    # started with nohup (whose ignored SIGHUP every child would inherit).
    image = subprocess.Popen([INVOKE, "image", "--platform", platform], cwd=project,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    deadline = time.monotonic() + 900  # on a cold cache, debootstrap comes first
    below: set[int] = set()
    past_it = False
    while time.monotonic() < deadline and image.poll() is None:
        below = _descendants(image.pid)
        commands = [_cmdline(pid) for pid in below]
        if any(marker in command for command in commands for marker in markers):
            break
        if any("packer build" in command for command in commands):
            past_it = True  # the chroot phases are behind it: this run cannot test them
            break
        time.sleep(0.05)
    if past_it or image.poll() is not None:
        os.killpg(image.pid, signal.SIGKILL)
        image.wait()
        pytest.fail("invoke image reached packer, or ended, without a chroot command seen")
    time.sleep(settle)  # inside the chroot command (a long one) or just after it
    below = _descendants(image.pid)
    if how == "SIGKILL":
        image.send_signal(signal.SIGKILL)
    else:
        os.killpg(image.pid, signal.SIGHUP)
    output, _ = image.communicate(timeout=120)
    print(output[-3000:])
    return subprocess.CompletedProcess(image.args, image.returncode, output), below


def _assert_nothing_survives(below: set[int]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in below):
        time.sleep(0.2)
    alive = {pid: _cmdline(pid) for pid in below if Path(f"/proc/{pid}").exists()}
    assert not alive, f"processes outlived the killed goldbox: {alive}"
    assert mounts_under(CONFIG.cache_dir) == [], "a mount outlived the killed goldbox"


def _assert_swept_and_dev_intact(project: Path, dev_before: list[str]) -> None:
    leftovers = [p for p in (CONFIG.cache_dir / "work").iterdir() if p.is_dir()]
    for leftover in leftovers:  # a killed chroot's /dev is a plain folder, no bind of ours
        for dev in leftover.rglob("dev"):
            assert not os.path.ismount(dev), dev
    swept = subprocess.run([INVOKE, "cache"], cwd=project, capture_output=True, text=True,
                           timeout=600, check=True).stdout
    print(swept)
    for leftover in leftovers:
        assert f"swept a leftover of an interrupted run: {leftover}" in swept
        assert not leftover.exists()
    assert not list(CONFIG.cache_dir.glob("*/*.partial")), "a killed build's partial entry"
    assert sorted(os.listdir("/dev")) == dev_before
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_sigkill_during_the_native_build_leaves_no_mount_or_process(tarball_in_cache,
                                                                   project_copy):
    """A configure variable of this run's own (./configure takes VAR=value and ignores
    one it does not know) gives it a CPython bundle no one has built, whatever the
    shared cache holds."""
    platform = project_copy / "platforms" / "debian-12.toml"
    text = platform.read_text()
    flags = 'configure_flags = ["--prefix=/usr/local", "--disable-test-modules"]'
    assert flags in text, "test out of date: debian-12's configure flags changed"
    platform.write_text(text.replace(
        flags, 'configure_flags = ["--prefix=/usr/local", "--disable-test-modules", '
               f'"GOLDBOX_TEST_RUN={uuid.uuid4().hex}"]'))
    dev_before = sorted(os.listdir("/dev"))
    result, below = _kill_in_chroot(project_copy, "SIGKILL", "debian-12", settle=3)
    assert result.returncode == -signal.SIGKILL
    assert "==> native build" in result.stdout
    _assert_nothing_survives(below)
    _assert_swept_and_dev_intact(project_copy, dev_before)


def test_sighup_during_the_base_disk_leaves_no_mount_or_process(tarball_in_cache,
                                                               project_copy):
    """A platform file of its own (a copy of debian-12 without the native build) gives
    this run a base disk no one has built, and reaches it first."""
    # A name of its own on every run: the base disk's identity holds the platform's name,
    # and a run whose kill came late would otherwise leave a cached one for the next.
    name = f"debian-12-hup-{time.time_ns()}"
    source = project_copy / "platforms" / "debian-12.toml"
    copy = project_copy / "platforms" / f"{name}.toml"
    copy.write_text(source.read_text().replace("native_bundle = true", "native_bundle = false"))
    dev_before = sorted(os.listdir("/dev"))
    # Its chroot commands take well under a second, too short to catch every time: the
    # kill comes in whichever base disk command is seen first, the rootfs' extraction
    # into the scratch folder, a chroot command or mkfs.
    try:
        result, below = _kill_in_chroot(project_copy, "SIGHUP", name, settle=0,
                                        markers=("goldbox-chroot", "/work/basedisk-"))
        assert result.returncode != 0
        assert "==> base disk" in result.stdout and "==> native build" not in result.stdout
        _assert_nothing_survives(below)
        _assert_swept_and_dev_intact(project_copy, dev_before)
    finally:
        # A kill that came after the base disk was cached leaves an entry of this
        # run's own platform name, which no later run uses: not left to pile up.
        for entry in Cache(CONFIG.cache_dir).entries():
            if entry.record.get("identity", {}).get("platform") == name:
                remove_tree(entry.path)
        for record in CONFIG.cache_dir.glob(f"*/last-{name}.json"):
            record.unlink()


def test_image_up_verify_destroy_and_rebuild(libvirt_netns, vagrant_home, project_copy):
    figures = {}
    # --force: packer's golden build runs even when the golden box of these inputs is in
    # the cache (a cache entry since the team cache: an earlier run made it); this test
    # is the one that proves packer's boot and the guest's provisioning.
    image, figures["image"] = run([INVOKE, "image", *ON_12, "--force"])
    assert image.returncode == 0, "invoke image failed"
    manifest = json.loads((CONFIG.dist_dir / "debian-12" / "manifest.json").read_text())
    box = CONFIG.dist_dir / "debian-12" / manifest["box_file"]
    assert box.stat().st_size == manifest["box_size"]
    assert manifest["components"]["cpython"] == PLATFORM.python.version
    assert {"nginx", "uwsgi", "flask", "packer"} <= set(manifest["components"])
    # The guest unpacked the virtualenv made natively; pip did not run under TCG.
    assert "venv unpacked from the native build" in image.stdout
    # Each packer boot logs its serial console, from the kernel's first line.
    consoles = [line.split("guest console: ", 1)[1] for line in image.stdout.splitlines()
                if line.startswith("packer: guest console: ")]
    assert consoles
    assert all("Linux version" in Path(console).read_text(errors="replace")
               for console in consoles)
    # `invoke render` renders what image built: the plan baked into the box, byte for byte.
    render, _ = run([INVOKE, "render", *ON_12])
    assert render.returncode == 0 and "note:" not in render.stdout, render.stdout
    assert (CONFIG.build_dir / "debian-12" / "plan.json").read_bytes() == \
        (CONFIG.dist_dir / "debian-12" / "plan.json").read_bytes()

    try:
        up, figures["up"] = run([INVOKE, "up", *ON_12], netns=libvirt_netns, env=vagrant_home)
        assert up.returncode == 0, "invoke up failed"
        # The VM's own key (goldbox/vm.py vm_key), which the guest took from its SMBIOS
        # credential: Vagrant logged in with it and swapped no key.
        assert "Vagrant insecure key detected" not in up.stdout
        assert "Machine booted and ready!" in up.stdout
        console = (CONFIG.build_dir / "debian-12" / "console.log").resolve()
        assert f"guest console: {console}" in up.stdout
        assert "Linux version" in console.read_text(errors="replace")
        verify, figures["verify"] = run([INVOKE, "verify", *ON_12], netns=libvirt_netns,
                                        env=vagrant_home)
        assert verify.returncode == 0, "invoke verify failed"
        assert "PASS  http: GET / is exactly Hello!" in verify.stdout
        assert "PASS  box: no SSH host keys baked in" in verify.stdout
        assert "PASS  infra: test_vagrants_insecure_key_is_authorized_no_more" in verify.stdout
        assert " 0 failed" in verify.stdout
    finally:
        destroy, figures["destroy"] = run([INVOKE, "destroy", *ON_12], netns=libvirt_netns,
                                          env=vagrant_home)
    assert destroy.returncode == 0
    assert not (CONFIG.build_dir / "debian-12" / ".vagrant").exists()

    again, figures["no-change rebuild"] = run([INVOKE, "image", *ON_12])
    assert again.returncode == 0
    assert "up to date" in again.stdout
    assert "cache: building" not in again.stdout, again.stdout  # its time: a printed figure

    # An app-only change (in a copy of the project, same cache): the box is rebuilt from
    # the cached system image; the OS packages and CPython are not installed again.
    style = project_copy / "app" / "static" / "style.css"
    style.write_text(style.read_text() + "/* an app-only change */\n")
    start = time.monotonic()
    app_only = subprocess.run([INVOKE, "image", *ON_12, "--force"], cwd=project_copy,
                              capture_output=True, text=True, timeout=3600, check=False)
    figures["app-only rebuild"] = time.monotonic() - start
    print(app_only.stdout[-2500:], app_only.stderr)
    assert app_only.returncode == 0, "app-only invoke image failed"
    (system_row,) = [line for line in app_only.stdout.splitlines()
                     if line.startswith("system image ")]
    assert " cached debian-12-system.qcow2 " in system_row, system_row
    # Nothing native is made again either: not CPython, not uWSGI, not the virtualenv. The
    # one entry made is the golden build itself (a cache entry: goldbox/golden_cache.py;
    # "rebuilding" when an earlier run of this test left it, as --force asks).
    built = [line for line in app_only.stdout.splitlines()
             if line.startswith(("cache: building", "cache: rebuilding"))]
    assert [line.split(" for ")[0].split()[-1] for line in built] == ["golden-box"], built
    rebuilt = json.loads((project_copy / "dist/debian-12/manifest.json").read_text())
    assert rebuilt["input_hash"] != manifest["input_hash"]

    # --refresh: the base disk is made again though cached (the repositories' updates of
    # today), so the system image and the box are rebuilt on it; CPython is not.
    start = time.monotonic()
    refreshed = subprocess.run([INVOKE, "image", *ON_12, "--refresh"], cwd=project_copy,
                               capture_output=True, text=True, timeout=3600, check=False)
    figures["refresh rebuild"] = time.monotonic() - start
    print(refreshed.stdout[-2500:], refreshed.stderr)
    assert refreshed.returncode == 0, "invoke image --refresh failed"
    assert "cache: rebuilding basedisk for debian-12: asked to take the repositories' " \
           "updates now (--refresh)" in refreshed.stdout
    rows = {line.split("  ")[0]: line for line in refreshed.stdout.splitlines()
            if line.startswith(("base disk ", "system image "))}
    assert " built debian-12-base.qcow2 " in rows["base disk"], rows
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    assert f"updates as of {today})" in rows["base disk"], rows
    assert " built debian-12-system.qcow2 " in rows["system image"], rows
    assert "cache: building bundle" not in refreshed.stdout
    after = json.loads((project_copy / "dist/debian-12/manifest.json").read_text())
    assert after["input_hash"] != rebuilt["input_hash"]
    assert after["components"]["os-updates"] == today  # what `invoke boxes` shows
    print("\n".join(f"e2e {name:<18} {seconds:7.1f} s" for name, seconds in figures.items()))


def test_verify_from_catalog_then_release(libvirt_netns, project_copy, tmp_path):
    """What teammates get, checked before it is released, with no fakes: the debian-12 box
    the chain above built (`invoke image` finds it up to date) is published as a
    candidate with its plan.json, served by `invoke catalog-serve` (a real nginx) with a
    teammate token, and `invoke verify --from-catalog` adds it through the candidate
    channel with stock Vagrant and that token, boots it as a domain of its own on a port
    of its own, runs the whole suite and records the pass; with catalog.require_verified,
    `invoke release` refuses the version before the pass and releases it after."""
    image, _ = run([INVOKE, "image", *ON_12])
    assert image.returncode == 0, "invoke image failed"
    manifest = json.loads((CONFIG.dist_dir / "debian-12" / "manifest.json").read_text())
    box, version = manifest["box_name"], manifest["version"]
    # The pool's copy of this version: one the trial uploads is removed after it, one
    # that was there (`invoke up`'s, the same bytes) is left to its owner.
    volume = Path("/var/lib/libvirt/images") / f"{box}_vagrant_box_image_{version}_box.img"
    if volume.exists():
        # `invoke up`'s copy from the chain above holds its first build, not the box after
        # the app-only and --refresh rebuilds, so the trial would (rightly) refuse it.
        run(["virsh", "-c", "qemu:///system", "vol-delete", "--pool", "default", volume.name],
            netns=libvirt_netns)
        volume.unlink(missing_ok=True)  # a libvirtd of this run that has no pool yet
    volume_was_there = volume.exists()
    toml = project_copy / "goldbox.toml"
    toml.write_text(toml.read_text().replace("[catalog]\n",
                                             "[catalog]\nrequire_verified = true\n"))
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    in_copy = {"cwd": project_copy}
    token = subprocess.run([INVOKE, "catalog-token", "add", "ci", "--catalog", str(catalog)],
                           cwd=project_copy, capture_output=True, text=True, check=True
                           ).stdout.strip()
    pki = make_test_ca(tmp_path / "pki")  # the team's own CA
    tls = ["--cacert", str(pki["ca"])]
    wrapper = ("ip", "netns", "exec", libvirt_netns)  # where vagrant-libvirt's VM is
    with serving(project_copy, catalog, "--cert", str(pki["cert"]), "--key", str(pki["key"]),
                 wrapper=wrapper) as base:
        assert base.startswith("https://")
        published, _ = run([INVOKE, "publish", "--manifest",
                            str(CONFIG.dist_dir / "debian-12" / "manifest.json"),
                            "--catalog", str(catalog), "--base-url", base], **in_copy)
        assert published.returncode == 0, "invoke publish failed"
        assert (catalog / box / version / "libvirt" / "plan.json").read_bytes() == \
            (CONFIG.dist_dir / "debian-12" / "plan.json").read_bytes()
        early, _ = run([INVOKE, "release", version, "--catalog", str(catalog)], **in_copy)
        assert early.returncode == 1 and "not verified" in early.stdout, early.stdout

        teammate = {"VAGRANT_CLOUD_TOKEN": token, "VAGRANT_SERVER_URL": base}
        channel = f"{base}{box}/channels/candidate/metadata.json"
        trial, seconds = run([INVOKE, "verify", "--from-catalog", channel, *tls,
                              "--catalog", str(catalog)],
                             netns=libvirt_netns, env=teammate, **in_copy)
    assert trial.returncode == 0, "invoke verify --from-catalog failed"
    assert f"libvirt domain goldbox-trial-{version}-default" in trial.stdout
    console = Path(trial.stdout.split("guest console: ", 1)[1].split()[0])
    assert "Linux version" in console.read_text(errors="replace")  # the trial boot's own log
    port = int(re.search(r"HTTP on 127\.0\.0\.1:(\d+)", trial.stdout).group(1))
    assert port != CONFIG.project.ports.host_http  # never the port of `invoke up`
    assert "PASS  http: GET / is exactly Hello!" in trial.stdout
    assert "PASS  box: no SSH host keys baked in" in trial.stdout
    # A teammate's path: no key given to the VM, so Vagrant swapped its insecure key.
    assert "Vagrant insecure key detected" in trial.stdout
    assert "PASS  infra: test_vagrants_insecure_key_is_authorized_no_more" in trial.stdout
    assert " 0 failed" in trial.stdout
    assert not (project_copy / "build" / "from-catalog" / ".vagrant" / "machines" /
                "default" / "libvirt" / "id").exists(), "the trial VM was not destroyed"
    assert volume.exists() == volume_was_there

    released, _ = run([INVOKE, "release", version, "--catalog", str(catalog)], **in_copy)
    assert released.returncode == 0, "invoke release after the pass failed"
    stable = json.loads((catalog / box / "metadata.json").read_text())
    assert [v["version"] for v in stable["versions"]] == [version]
    print(f"e2e verify --from-catalog {seconds:7.1f} s")


def test_verify_without_a_vm_names_the_fix(libvirt_netns, vagrant_home):
    result, _ = run([INVOKE, "verify", *ON_12], netns=libvirt_netns, env=vagrant_home)
    assert result.returncode == 1
    assert "is not up" in result.stdout and "run `invoke up" in result.stdout


def test_packer_failure_names_phase_and_log_and_keeps_the_previous_box(project_copy):
    """A real packer build whose guest provisioning fails (the template's first shell
    step exits 3, as a broken edit would; the golden build runs it, from the natively
    made system image): non-zero exit, the failing phase and the log named, the previous
    box + manifest in dist/ untouched, no partial box or golden box left."""
    template = project_copy / "packer" / "debootstrap.pkr.hcl.j2"
    text = template.read_text()
    step = "inline = [{% filter hcl %}mkdir -p {{ stage_dir | sh }}{% endfilter %}]"
    assert step in text, "test out of date: the template's first shell step changed"
    template.write_text(text.replace(
        step, 'inline = ["echo goldbox-test: failing on purpose >&2; exit 3"]', 1))
    previous = project_copy / "dist" / "debian-12"
    previous.mkdir(parents=True)
    (previous / "goldbox-flask-0.1.0-libvirt.box").write_text("the previous box\n")
    (previous / "manifest.json").write_text('{"previous": true}\n')

    result = subprocess.run([INVOKE, "image", *ON_12], cwd=project_copy, capture_output=True,
                            text=True, timeout=3600, check=False)
    print(result.stdout[-3000:], result.stderr, sep="\n")
    assert result.returncode == 1
    (error,) = [line for line in result.stderr.splitlines()
                if line.startswith("goldbox: error: ")]
    assert error.startswith("goldbox: error: phase 'packer' failed"), error
    (log,) = [path for path in (project_copy / "build" / "debian-12" / "logs").glob("image-*.log")
              if ".console." not in path.name]  # beside it: each packer boot's console
    assert str(log) in error
    assert "goldbox-test: failing on purpose" in log.read_text()
    assert "failing on purpose" in result.stdout, "packer's output must stream live"
    assert sorted(p.name for p in previous.iterdir()) == ["goldbox-flask-0.1.0-libvirt.box",
                                                          "manifest.json"]
    assert (previous / "manifest.json").read_text() == '{"previous": true}\n'
    assert not list((project_copy / "dist").glob(".*partial*"))
    for kind in ("system-image", "golden-box"):
        assert (CONFIG.cache_dir / kind).is_dir()  # the kind's folder: the glob can fail
        assert not list((CONFIG.cache_dir / kind).glob("*.partial")), kind


def _box_member(box: Path, name: str) -> bytes:
    with tarfile.open(box) as archive:  # gzip'd or not; packer may nest it in one folder
        (member,) = [m for m in archive.getmembers() if m.name.rsplit("/", 1)[-1] == name]
        return archive.extractfile(member).read()


def _box_metadata(box: Path) -> dict:
    return json.loads(_box_member(box, "metadata.json"))


def test_debian_13_image_up_verify_destroy(libvirt_netns, vagrant_home):
    """Debian 13 (trixie), the current stable release: CPython from source built natively
    in a trixie chroot, the box, booted with a disk larger than the box's and verified
    (the testinfra suite includes the root filesystem having grown to the disk); the box
    says the disk's real size."""
    platform = CONFIG.platform("debian-13")
    on_13 = ["--platform", "debian-13"]
    figures = {}
    image, figures["image"] = run([INVOKE, "image", *on_13])
    assert image.returncode == 0, "invoke image --platform debian-13 failed"
    manifest = json.loads((CONFIG.dist_dir / "debian-13" / "manifest.json").read_text())
    box = CONFIG.dist_dir / "debian-13" / manifest["box_file"]
    assert manifest["components"]["cpython"] == platform.python.version
    metadata = _box_metadata(box)
    assert metadata["virtual_size"] == BOX_DISK_GIB
    # The box names its provider and architecture (read by Vagrant >= 2.4).
    assert (metadata["provider"], metadata["architecture"]) == ("libvirt", "amd64")
    # A teammate's stock Vagrant boots the box with KVM: the box's own Vagrantfile ends on
    # vagrant-libvirt's default driver, after packer's "qemu" (built here without KVM).
    drivers = re.findall(r'^\s*libvirt\.driver = "(\w+)"', _box_member(box, "Vagrantfile").decode(),
                         re.M)
    assert drivers[-1] == "kvm", drivers
    # A disk 2 GiB larger than the box's (vagrant-libvirt's machine_virtual_size): verify's
    # "root filesystem fills its disk" then proves the partition and ext4 grew at boot.
    disk_gib = BOX_DISK_GIB + 2
    try:
        up, figures["up"] = run([INVOKE, "up", *on_13, "--disk-gib", str(disk_gib)],
                                netns=libvirt_netns, env=vagrant_home)
        assert up.returncode == 0, "invoke up --platform debian-13 failed"
        disk = json.loads(subprocess.run(
            ["qemu-img", "info", "--force-share", "--output=json",
             "/var/lib/libvirt/images/debian-13_default.img"],
            capture_output=True, text=True, check=True).stdout)
        assert disk["virtual-size"] == disk_gib << 30, disk
        # goldbox's own Vagrantfile sets the driver its probe found (qemu where KVM is not
        # usable, as here), over the box's kvm.
        driver = accel.detect(CONFIG.cache_dir).libvirt_driver
        domain = subprocess.run(["ip", "netns", "exec", libvirt_netns, "virsh", "-c",
                                 "qemu:///system", "dumpxml", "debian-13_default"],
                                capture_output=True, text=True, check=True).stdout
        assert f"<domain type='{driver}'" in domain, domain[:200]
        verify, figures["verify"] = run([INVOKE, "verify", *on_13], netns=libvirt_netns,
                                        env=vagrant_home)
        assert verify.returncode == 0, "invoke verify --platform debian-13 failed"
        assert "PASS  http: GET / is exactly Hello!" in verify.stdout
        assert "PASS  infra: test_root_filesystem_fills_its_disk" in verify.stdout
        assert " 0 failed" in verify.stdout
    finally:
        destroy, figures["destroy"] = run([INVOKE, "destroy", *on_13], netns=libvirt_netns,
                                          env=vagrant_home)
    assert destroy.returncode == 0
    print("\n".join(f"e2e debian-13 {name:<8} {seconds:7.1f} s"
                    for name, seconds in figures.items()))


def test_a_teammate_s_stock_vagrant_gives_the_box_kvm(libvirt_netns, tmp_path):
    """A teammate's plain Vagrantfile (the box's name, nothing else) with stock Vagrant
    and vagrant-libvirt: the box's own Vagrantfile makes the domain KVM, not packer's
    emulation. Here, where KVM is not usable, that domain then fails to start, as it
    would on any host without /dev/kvm (the README says to set "qemu" there)."""
    manifest = json.loads((CONFIG.dist_dir / "debian-13" / "manifest.json").read_text())
    box = CONFIG.dist_dir / "debian-13" / manifest["box_file"]  # test_debian_13's build
    env = {"VAGRANT_HOME": str(tmp_path / "vagrant.d")}
    name = "teammate-kvm-check"
    added = run(["vagrant", "box", "add", "--name", name, str(box)], env=env)[0]
    assert added.returncode == 0
    machine = tmp_path / "machine"
    machine.mkdir()
    (machine / "Vagrantfile").write_text(
        f'Vagrant.configure("2") do |config|\n  config.vm.box = "{name}"\n'
        '  config.vm.synced_folder ".", "/vagrant", disabled: true\nend\n')
    try:
        up = run(["vagrant", "up", "--provider", "libvirt"], netns=libvirt_netns, env=env,
                 cwd=machine)[0]
        assert re.search(r"-- Domain type:\s+kvm$", up.stdout, re.M), up.stdout[-2000:]
        if accel.detect(CONFIG.cache_dir).accelerator == "kvm":
            assert up.returncode == 0
    finally:
        run(["vagrant", "destroy", "-f"], netns=libvirt_netns, env=env, cwd=machine)
        # The box's pool volume (vagrant-libvirt adds a timestamp to an unversioned
        # box's): every one of this box's goes. The namespace's daemon answers on the
        # shared /run/libvirt socket.
        for volume in pool.box_volumes():
            if volume.box == name:
                virt.virsh("vol-delete", "--pool", virt.DEFAULT_POOL, volume.name)

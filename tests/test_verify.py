"""`invoke verify`'s pieces that need no VM: the multiplexed ssh-config as OpenSSH reads
it, and the box-content check on a real (small) box, recorded once per box sha256."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import requests

from goldbox import checks, verify

VAGRANT_SSH_CONFIG = """Host default
  HostName 192.168.121.7
  User vagrant
  Port 22
  IdentityFile /root/.vagrant.d/insecure_private_key
"""


def test_ssh_config_shares_one_connection_through_the_private_folder(tmp_path):
    text = verify.multiplexed(VAGRANT_SSH_CONFIG, tmp_path)
    resolved = subprocess.run(["ssh", "-G", "-F", "/dev/stdin", "default"], input=text,
                              capture_output=True, text=True, check=True).stdout.splitlines()
    assert "controlmaster auto" in resolved
    assert "controlpersist 60" in resolved
    (control,) = [line.split(" ", 1)[1] for line in resolved if line.startswith("controlpath ")]
    assert Path(control).parent == tmp_path
    assert "hostname 192.168.121.7" in resolved and "user vagrant" in resolved


# The disk layouts goldbox's boxes have: amd64's MBR with the root file system first (at
# 1 MiB), arm64's GPT with an EFI system partition first (goldbox/efidisk.py, smaller here).
LAYOUTS = {
    "mbr": ("label: dos\nstart=2048, type=83, bootable\n", 1),
    "gpt": ("label: gpt\nstart=2048, size=2048, type=U, name=EFI\n"
            "start=4096, size=16384, type=L, name=rootfs\n", 2),
}


def make_box(folder: Path, machine_id: str, host_key: bool, layout: str = "mbr") -> Path:
    """A libvirt .box as packer makes it now: a plain tar holding a zstd-compressed qcow2
    whose Linux partition is an ext4 with /etc/ssh and /etc/machine-id."""
    root = folder / "root"
    (root / "etc/ssh").mkdir(parents=True)
    (root / "etc/ssh/sshd_config").write_text("PasswordAuthentication no\n")
    (root / "etc/machine-id").write_text(machine_id)
    if host_key:
        (root / "etc/ssh/ssh_host_ed25519_key").write_text("from the build\n")
    raw = folder / "disk.raw"
    table, offset_mib = LAYOUTS[layout]
    subprocess.run(["truncate", "-s", "12M", str(raw)], check=True)
    subprocess.run(["sfdisk", "--quiet", str(raw)], input=table, text=True, check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(root), "-E",
                    f"offset={offset_mib << 20}", str(raw), "8M"], check=True)
    image = folder / "box.img"
    subprocess.run(["qemu-img", "convert", "-c", "-o", "compression_type=zstd", "-O", "qcow2",
                    str(raw), str(image)], check=True)
    box = folder / "test.box"
    with tarfile.open(box, "w") as tar:
        tar.add(image, "box.img")
    return box


def test_box_contents_are_read_once_per_box_sha256(tmp_path, monkeypatch):
    golden = make_box(tmp_path / "golden", "", host_key=False)
    records = tmp_path / "records"
    first = verify.check_box_contents(golden, records)
    assert [(r.check, r.ok) for r in first] == [("box: no SSH host keys baked in", True),
                                               ("box: empty /etc/machine-id", True)]
    (record,) = records.iterdir()

    def not_again(box):
        raise AssertionError(f"{box} read again although its results are recorded")

    real_read = verify.read_box_contents
    monkeypatch.setattr(verify, "read_box_contents", not_again)
    assert verify.check_box_contents(golden, records) == first

    # Another box (another sha256) is read, and its failures are not recorded; a torn
    # record is read again, not trusted.
    dirty = make_box(tmp_path / "dirty", "0123456789abcdef0123456789abcdef\n", host_key=True)
    monkeypatch.setattr(verify, "read_box_contents", real_read)
    results = verify.check_box_contents(dirty, records)
    assert [r.ok for r in results] == [False, False]
    assert "ssh_host_ed25519_key" in results[0].detail
    assert list(records.iterdir()) == [record]
    record.write_text('{"box_sha256": "')
    assert verify.check_box_contents(golden, records) == first
    assert json.loads(record.read_text())["results"][0]["ok"] is True


@pytest.mark.parametrize("layout", ["mbr", "gpt"])
def test_box_contents_are_read_from_the_linux_partition_of_either_layout(tmp_path, layout):
    """An arm64 box's root file system is its GPT's second partition: read there, its
    baked-in host key and machine-id are found (reading amd64's offset found nothing, and
    an unread machine-id passed as empty)."""
    clean = make_box(tmp_path / "clean", "", host_key=False, layout=layout)
    assert [(r.ok, r.detail) for r in verify.read_box_contents(clean)] == [
        (True, "none in /etc/ssh"), (True, "empty")]
    dirty = make_box(tmp_path / "dirty", "0123456789abcdef0123456789abcdef\n", host_key=True,
                     layout=layout)
    assert [(r.ok, r.detail) for r in verify.read_box_contents(dirty)] == [
        (False, "ssh_host_ed25519_key"), (False, "33 bytes")]


def test_a_disk_whose_root_file_system_cannot_be_read_fails_both_checks(tmp_path):
    box = make_box(tmp_path, "", host_key=False, layout="gpt")
    unreadable = tmp_path / "unreadable.box"
    with tarfile.open(box) as tar, tarfile.open(unreadable, "w") as out:
        image = tmp_path / "box.img"
        image.write_bytes(tar.extractfile("box.img").read())
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(tmp_path / "r")],
                       check=True)
        raw = tmp_path / "r"
        # The ext4 superblock (1 KiB into the partition) overwritten.
        with open(raw, "r+b") as disk:
            disk.seek((4096 * 512) + 1024)
            disk.write(bytes(1024))
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(image)], check=True)
        out.add(image, "box.img")
    assert [(r.ok, r.detail) for r in verify.read_box_contents(unreadable)] == [
        (False, "no /etc/ssh/sshd_config read from the disk"),
        (False, "not read from the disk")]


@pytest.mark.parametrize("compressed", [True, False])
def test_box_is_read_whether_its_tar_is_gzipped_or_not(tmp_path, compressed):
    box = make_box(tmp_path, "", host_key=False)
    if compressed:
        subprocess.run(["gzip", "-k", str(box)], check=True)
        box = box.with_name(box.name + ".gz")
    assert all(r.ok for r in verify.read_box_contents(box))


def run_checks(folder: Path, *options: str, live: bool) -> subprocess.CompletedProcess:
    """goldbox.checks as `invoke verify` starts it, from a folder outside the repository
    (an installed goldbox has no tests/ folder and no pytest configuration of ours)."""
    env = {**os.environ, "GOLDBOX_INFRA_LIVE": "1" if live else "0"}
    env.pop("GOLDBOX_PLAN", None)
    return subprocess.run(checks.pytest_command(*options), cwd=folder, env=env,
                          capture_output=True, text=True, check=False, timeout=120)


@pytest.mark.parametrize(("live", "count"), [(True, "21 tests collected"),
                                             (False, "12/21 tests collected (9 deselected)")])
def test_checks_are_collected_from_the_goldbox_package(tmp_path, live, count):
    collected = run_checks(tmp_path, "--collect-only", "-q", live=live)
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert count in collected.stdout
    assert "/tests/" not in collected.stdout


def test_checks_without_a_plan_fail_saying_so(tmp_path):
    result = run_checks(tmp_path, "--hosts=local://", "-q", "-k", "app_user", live=False)
    assert result.returncode == 1
    assert "goldbox.checks needs the plan: set GOLDBOX_PLAN or pass --plan" in result.stdout


@pytest.mark.parametrize(("names", "passes"), [
    (["dpkg", "coreutils"], True),
    (["dpkg", "goldbox-no-such-package"], False),  # unknown to dpkg: dpkg-query exits 1
])
def test_the_batched_package_check_asks_dpkg_once_and_fails_on_a_missing_package(names, passes):
    """The check runs on this Debian host's real dpkg (testinfra's local backend), as it
    runs in a guest over SSH."""
    import testinfra

    from goldbox.checks.test_stack import test_runtime_packages_installed as check

    plan = {"packages": {"runtime": names}, "adapters": {"packages": "apt"}}
    host = testinfra.get_host("local://")
    if passes:
        check(host, plan)
    else:
        with pytest.raises(AssertionError, match="goldbox-no-such-package"):
            check(host, plan)


@pytest.fixture
def app_root(tmp_path: Path) -> Path:
    """An app root whose env/ is a real venv: this test run's own."""
    import sys

    (tmp_path / "env").symlink_to(Path(sys.prefix))
    return tmp_path


@pytest.mark.parametrize(("pins", "passes"), [
    ({"Jinja2": "jinja2", "pytest_testinfra": "pytest-testinfra"}, True),  # PEP 503 names
    ({"jinja2": "0.0.1"}, False),  # a version the venv does not hold
    ({"goldbox-no-such-dist": "1.0"}, False),
])
def test_the_venv_check_reads_its_metadata_folders(app_root, pins, passes):
    """The pinned-packages check on a real venv (testinfra's local backend, the host's
    real ls): one listing of its *.dist-info folders instead of starting pip."""
    from importlib.metadata import version

    import testinfra

    from goldbox.checks.test_stack import test_venv_has_the_pinned_packages as check

    if passes:  # the installed versions, under the names as a requirements file writes them
        pins = {name: version(dist) for name, dist in pins.items()}
    host = testinfra.get_host("local://")
    plan = {"app": {"root": str(app_root)}}
    if passes:
        check(host, plan, pins)
    else:
        with pytest.raises(AssertionError):
            check(host, plan, pins)


def _identity_on(tmp_path: Path, keys: list[str], machine_id: str) -> str:
    """verify.IDENTITY_COMMAND run by the real sh and stat, with this test's /etc/ssh and
    /etc/machine-id bind-mounted over the host's in a private mount namespace."""
    ssh = tmp_path / "ssh"
    ssh.mkdir()
    for name in keys:
        (ssh / name).write_text("key")
        os.utime(ssh / name, (1_700_000_000, 1_700_000_000))
    (ssh / "ssh_host_ed25519_key.pub").write_text("a public key: not one of the keys")
    identity = tmp_path / "machine-id"
    identity.write_text(machine_id)
    os.utime(identity, (1_800_000_000, 1_800_000_000))
    script = ('mount --bind "$1" /etc/ssh && mount --bind "$2" /etc/machine-id && '
              'exec sh -c "$3"')
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             script, "sh", ssh, identity, verify.IDENTITY_COMMAND],
                            capture_output=True, text=True, check=False)
    return result.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts over /etc need root")
def test_first_boot_identity_is_read_in_one_command(tmp_path):
    output = _identity_on(tmp_path, ["ssh_host_ed25519_key", "ssh_host_ecdsa_key"], "f" * 32)
    assert verify.parse_identity(output) == (
        {"/etc/ssh/ssh_host_ecdsa_key": 1_700_000_000,
         "/etc/ssh/ssh_host_ed25519_key": 1_700_000_000}, 1_800_000_000, "f" * 32)


@pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts over /etc need root")
def test_no_host_keys_and_an_empty_machine_id_are_read_as_such(tmp_path):
    assert verify.parse_identity(_identity_on(tmp_path, [], "")) == ({}, 1_800_000_000, "")
    assert verify.parse_identity("") == ({}, None, "")


def test_the_http_check_waits_for_a_guest_still_starting_its_services():
    """SSH answers first; nginx may still say 502 (no uWSGI yet) or the forward may find
    nothing listening. The check asks again each second, up to its limit, and a guest
    that never serves is a failure after it."""
    import http.server
    import threading

    from goldbox.verify import _get_once_serving

    answers = [502, 503, 200]

    class Starting(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            status = answers.pop(0) if answers else 200
            body = b"Hello!" if status == 200 else b"starting"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Starting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        response = _get_once_serving(f"http://127.0.0.1:{server.server_port}/", wait_s=30)
        assert (response.status_code, response.text, answers) == (200, "Hello!", [])
        answers[:] = [502] * 100
        still = _get_once_serving(f"http://127.0.0.1:{server.server_port}/", wait_s=2)
        assert still.status_code == 502  # the last answer when the wait is over
    finally:
        server.shutdown()
        server.server_close()  # nothing listens there now: each connection is refused
    with pytest.raises(requests.ConnectionError):
        _get_once_serving(f"http://127.0.0.1:{server.server_port}/", wait_s=1)

"""`invoke verify`: prove the running VM is the golden stack, and the box is golden.

1. the testinfra suite goldbox.checks over SSH (the same suite that checks a rootfs);
2. HTTP through the forwarded port: GET / is exactly "Hello!", a static file comes
   from nginx;
3. hygiene: SSH host keys and /etc/machine-id were made on this VM's first boot (and
   none is baked into the box), the services came up by themselves at boot.

Every command goes over one SSH connection (an OpenSSH ControlMaster in a private
folder, closed at the end): a new connection per command made the suite 3x slower.
The box's contents depend only on the box, so their check is recorded per box sha256.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import json
import re
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import requests
import testinfra

from goldbox import checks, proc
from goldbox.arch import AMD64, Architecture
from goldbox.config import Config, Platform
from goldbox.errors import GoldboxError
from goldbox.files import sha256_file, write_atomically
from goldbox.vm import Built, built_box, require_running
from goldbox.vm import ssh_config as vagrant_ssh_config

# Under the cache: the box-content check's results, one JSON file per box sha256.
BOX_CHECKS = "box-checks"


@dataclass(frozen=True)
class Result:
    check: str
    ok: bool
    detail: str


# Put before Vagrant's `Host default` block, so it applies to every command verify runs
# (testinfra's own `-o ControlMaster=auto -o ControlPersist=60s` agree with it).
MULTIPLEXING = """Host *
  ControlMaster auto
  ControlPath {control_dir}/%C
  ControlPersist 60
"""


def multiplexed(ssh_config: str, control_dir: Path) -> str:
    """`ssh_config` with every connection shared through a socket in `control_dir`."""
    return MULTIPLEXING.format(control_dir=control_dir) + ssh_config


def _ssh_config_of_running(config: Config, platform: Platform,
                           arch: Architecture = AMD64) -> str:
    """Vagrant's ssh-config of the VM. It fails when the VM is not up, and only then is
    Vagrant asked for the VM's state, for the error that says what to run: each vagrant
    command is seconds of Ruby starting."""
    try:
        return vagrant_ssh_config(config, platform, arch)
    except GoldboxError:
        require_running(config, platform, arch)
        raise


@contextlib.contextmanager
def ssh_session(config: Config, platform: Platform,
                arch: Architecture = AMD64) -> Iterator[Path]:
    """Vagrant's ssh-config for the VM, with one shared SSH connection for every command
    run through it. The config and the control socket live in a private (0700) folder;
    at the end the master connection is closed and the folder removed."""
    text = _ssh_config_of_running(config, platform, arch)
    with tempfile.TemporaryDirectory(prefix="goldbox-ssh-") as private:
        ssh_config = Path(private) / "ssh-config"
        ssh_config.write_text(multiplexed(text, Path(private)))
        try:
            yield ssh_config
        finally:
            proc.capture(["ssh", "-F", ssh_config, "-O", "exit", "default"], check=False,
                         timeout=30)


def run_infra_suite(ssh_config: Path, plan: Path) -> list[Result]:
    """goldbox.checks over SSH; one Result per check, read from pytest's JUnit XML. pytest
    exits non-zero when a check fails: the report, not the exit code, says which."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "infra.xml"
        command = checks.pytest_command("--hosts=ssh://default", f"--ssh-config={ssh_config}",
                                        "-q", "--durations=5",
                                        f"--junitxml={report}")
        try:
            proc.run(command, prefix="checks", cwd=Path(scratch),
                     env={"GOLDBOX_PLAN": str(plan), "GOLDBOX_INFRA_LIVE": "1"})
        except GoldboxError as exc:
            if not report.is_file():
                raise GoldboxError(f"the testinfra suite did not run: {exc}") from None
        results = []
        for case in ElementTree.parse(report).iter("testcase"):
            failure = case.find("failure")
            if failure is None:
                failure = case.find("error")
            skipped = case.find("skipped")
            name = f"infra: {case.get('name')}"
            if skipped is not None:
                results.append(Result(name, False, f"skipped: {skipped.get('message')}"))
            elif failure is not None:
                results.append(Result(name, False, (failure.get("message") or "")[:120]))
            else:
                results.append(Result(name, True, "passed"))
        if not results:
            raise GoldboxError("the testinfra suite collected no test")
        return results


# How long the HTTP check waits for the guest to serve: SSH answers as soon as sshd does,
# and under TCG (an arm64 guest above all) nginx and uWSGI may still be starting then.
HTTP_WAIT_S = 120
# What a guest whose services are still starting answers: nginx without uWSGI yet.
_STARTING = {502, 503, 504}


def _get_once_serving(url: str, wait_s: float = HTTP_WAIT_S) -> requests.Response:
    """GET `url`, again each second while the connection fails or nginx says its upstream
    is not there yet, for up to `wait_s`; then the last answer, or the last error."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            response = requests.get(url, timeout=30)
            if response.status_code not in _STARTING or time.monotonic() >= deadline:
                return response
        except requests.ConnectionError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(1)


def check_http(config: Config) -> list[Result]:
    base = f"http://127.0.0.1:{config.project.ports.host_http}"
    results = []
    try:
        home = _get_once_serving(f"{base}/")
        results.append(Result("http: GET / is exactly Hello!",
                              home.status_code == 200 and home.text == "Hello!",
                              f"{home.status_code} {home.text[:40]!r}"))
        static = sorted((config.app_dir / "static").iterdir())[0]
        asset = requests.get(f"{base}/static/{static.name}", timeout=30)
        # nginx's `expires` sets Cache-Control; a response relayed from uWSGI has none.
        from_nginx = "max-age=3600" in asset.headers.get("Cache-Control", "")
        results.append(Result(f"http: /static/{static.name} served by nginx",
                              asset.status_code == 200 and asset.content == static.read_bytes()
                              and from_nginx,
                              f"{asset.status_code}, Cache-Control "
                              f"{asset.headers.get('Cache-Control')!r}"))
    except requests.RequestException as exc:
        results.append(Result("http: reachable", False, f"{base}: {exc}"))
    return results


# Every first-boot identity fact in one command (each command is an SSH round trip
# under TCG): the mtime of each SSH host key and of /etc/machine-id, then the id itself.
# stat needs no read right on the keys, so no sudo either.
IDENTITY_COMMAND = ("stat -c '%Y %n' /etc/ssh/ssh_host_*_key /etc/machine-id; echo; "
                    "cat /etc/machine-id")


def parse_identity(output: str) -> tuple[dict[str, int], int | None, str]:
    """IDENTITY_COMMAND's output: (host key path -> mtime, machine-id's mtime or None,
    machine-id's content)."""
    stats, _, content = output.partition("\n\n")
    times = {}
    for line in stats.splitlines():
        seconds, _, path = line.partition(" ")
        if seconds.isdigit() and path:
            times[path] = int(seconds)
    machine_id = times.pop("/etc/machine-id", None)
    return times, machine_id, content.strip()


def check_first_boot(ssh_config: Path, built: Built) -> list[Result]:
    """Identity made on this VM (the suite checks that the boot started the services)."""
    host = testinfra.get_host("ssh://default", ssh_config=str(ssh_config))
    created = datetime.datetime.fromisoformat(built.manifest.created.replace("Z", "+00:00"))
    box_made = created.timestamp()
    results = []
    keys, machine_id_time, content = parse_identity(host.run(IDENTITY_COMMAND).stdout)
    if keys:
        oldest = min(keys.values())
        results.append(Result("hygiene: SSH host keys made at first boot", oldest > box_made,
                              f"{len(keys)} keys, oldest {datetime.datetime.fromtimestamp(oldest)}"
                              f" vs box built {created:%Y-%m-%d %H:%M:%S}"))
    else:
        results.append(Result("hygiene: SSH host keys made at first boot", False, "no host keys"))
    written = (datetime.datetime.fromtimestamp(machine_id_time) if machine_id_time is not None
               else None)
    results.append(Result("hygiene: machine-id made at first boot",
                          len(content) == 32 and machine_id_time is not None
                          and machine_id_time > box_made,
                          f"{content[:8]}..., written "
                          f"{f'{written:%H:%M:%S}' if written else 'never (no file)'}"))
    return results


def check_box_contents(box: Path, records: Path) -> list[Result]:
    """The box's contents checked once per box: passing results are recorded under
    `records` by the box's sha256 (a box with that sha256 holds the same disk). A
    failure is not recorded: it is checked again next time, with the host's tools then."""
    sha256 = sha256_file(box)
    record = records / f"{sha256}.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        saved = json.loads(record.read_text())
        if saved["box_sha256"] == sha256:
            return [Result(**result) for result in saved["results"]]
    results = read_box_contents(box)
    if all(result.ok for result in results):
        write_atomically(record, json.dumps({"box_sha256": sha256,
                                             "results": [asdict(r) for r in results]}) + "\n")
    return results


def read_box_contents(box: Path) -> list[Result]:
    """Read the box's disk without booting it: no host keys, an empty machine-id. The
    root file system is the disk's one Linux partition (the first of an amd64 box's MBR,
    the second of an arm64 box's GPT, after its EFI system partition)."""
    with tempfile.TemporaryDirectory(dir=box.parent) as scratch:
        work = Path(scratch)
        # -x finds out itself whether the tar is compressed (older boxes are gzipped).
        proc.capture(["tar", "-xf", box, "-C", work, "box.img"])
        raw = work / "box.raw"
        proc.capture(["qemu-img", "convert", "-O", "raw", work / "box.img", raw])
        image = f"{raw}?offset={_root_offset(box, raw)}"
        listing = proc.capture(["debugfs", "-R", "ls -l /etc/ssh", image], check=False).stdout
        machine_id = proc.capture(["debugfs", "-R", "stat /etc/machine-id", image],
                                  check=False).stdout
    baked = [word for word in listing.split() if word.startswith("ssh_host_")]
    size = re.search(r"\bSize: (\d+)", machine_id)
    return [
        Result("box: no SSH host keys baked in", "sshd_config" in listing and not baked,
               ", ".join(baked) or ("none in /etc/ssh" if "sshd_config" in listing
                                    else "no /etc/ssh/sshd_config read from the disk")),
        Result("box: empty /etc/machine-id", size is not None and size.group(1) == "0",
               "empty" if size and size.group(1) == "0" else
               f"{size.group(1)} bytes" if size else "not read from the disk"),
    ]


# The partition types of a Linux file system: MBR's and GPT's.
LINUX_PARTITION_TYPES = {"83", "0FC63DAF-8483-4772-8E79-3D69D8477DE4"}


def _root_offset(box: Path, raw: Path) -> int:
    """The byte offset of the one Linux partition of the box's disk `raw`."""
    table = json.loads(proc.capture(["sfdisk", "--json", raw]).stdout)["partitiontable"]
    linux = [part for part in table.get("partitions", [])
             if str(part.get("type", "")).upper() in LINUX_PARTITION_TYPES]
    if len(linux) != 1:
        raise GoldboxError(f"{box}: box.img has {len(linux)} Linux partitions, expected 1 "
                           f"(its {table.get('label')} table: "
                           f"{[part.get('type') for part in table.get('partitions', [])]})")
    return int(linux[0]["start"]) * int(table.get("sectorsize", 512))


def verify(config: Config, platform: Platform, arch: Architecture = AMD64) -> list[Result]:
    """Every check on the running VM of `platform`'s box of `arch` (`invoke up`'s)."""
    built = built_box(config, platform, arch)
    with ssh_session(config, platform, arch) as ssh_config:
        return run_suite(config, ssh_config, built)


def run_suite(config: Config, ssh_config: Path, built: Built) -> list[Result]:
    """Every check, on the VM that `ssh_config` reaches, booted from `built`'s box (also
    used by `invoke verify --from-catalog`)."""
    # The box's contents are read on this host (its sha256, then its disk unless that
    # box passed before), the HTTP check and the first-boot identity (one command over
    # the shared connection) run beside the suite, which mostly waits on the guest.
    with concurrent.futures.ThreadPoolExecutor(3) as beside:
        box = beside.submit(check_box_contents, built.box, config.cache_dir / BOX_CHECKS)
        http = beside.submit(check_http, config)
        first_boot = beside.submit(check_first_boot, ssh_config, built)
        results = run_infra_suite(ssh_config, built.plan)
        return results + http.result() + first_boot.result() + box.result()


def format_results(results: list[Result], seconds: float | None = None) -> str:
    width = max(len(r.check) for r in results)
    lines = [f"{'PASS' if r.ok else 'FAIL'}  {r.check:<{width}}  {r.detail}" for r in results]
    passed = sum(r.ok for r in results)
    lines.append(f"{passed} passed, {len(results) - passed} failed"
                 + (f" in {seconds:.0f} s" if seconds is not None else ""))
    return "\n".join(lines)

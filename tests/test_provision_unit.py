"""provision/ on its own: Python 2.6-compatible source, dry runs under Python 2.7 and 3,
argument errors, and step mechanics against a throwaway root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from goldbox import PROJECT_ROOT
from goldbox.config import load_config
from goldbox.render import render_platform
from tests.py27 import python27

CONFIG = load_config()


@pytest.fixture(scope="module", params=sorted(CONFIG.platforms))
def plan_path(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    return render_platform(CONFIG, CONFIG.platforms[request.param], out).plan


def provision(interpreter: list[str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*interpreter, "-m", "provision", *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, check=False, timeout=120)


def sandboxed(path: str | None = None) -> list[str]:
    """The interpreter in a private mount namespace, for steps that run for real: the
    host's /usr/local/src and /var/log (where provision builds and logs) stay untouched.
    A user namespace makes this work without root as well."""
    env = ["env", f"PATH={path}"] if path else []
    return ["unshare", "--mount", "--map-root-user", "--propagation", "private", "sh", "-c",
            'mount -t tmpfs tmpfs /usr/local/src && mount -t tmpfs tmpfs /var/log'
            ' && exec "$@"', "sandbox", *env, sys.executable]


def test_vermin_finds_nothing_newer_than_python_2_6():
    vermin = [str(Path(sys.executable).parent / "vermin"), "--no-tips", "--violations",
              "-t=2.6-", "-t=3.0-", "provision"]
    result = subprocess.run(vermin, cwd=PROJECT_ROOT, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Minimum required versions: 2.6, 3.0" in result.stdout


@pytest.mark.parametrize("interpreter", ["python2.7", "python3"])
def test_dry_run_lists_every_step_in_order(plan_path, interpreter, tmp_path):
    python = python27(CONFIG.cache_dir) if interpreter == "python2.7" else [sys.executable]
    result = provision(python, str(plan_path), "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    steps = [line[4:] for line in result.stdout.splitlines() if line.startswith("==> ")]
    assert steps == ["repositories", "packages", "python", "app", "uwsgi", "nginx",
                     "firewall", "selinux", "cleanup"]
    plan = json.loads(plan_path.read_text())
    assert f"write {plan['nginx']['files'][0]['path']}" in result.stdout
    assert f"write {plan['uwsgi']['files'][0]['path']}" in result.stdout


def test_python27_interpreter_is_really_2_7():
    result = subprocess.run([*python27(CONFIG.cache_dir), "-c",
                             "import sys; print('%d.%d' % sys.version_info[:2])"],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "2.7"


def test_only_and_skip_choose_steps(plan_path):
    result = provision([sys.executable], str(plan_path), "--dry-run", "--only", "nginx",
                       "--only", "uwsgi")
    steps = [line[4:] for line in result.stdout.splitlines() if line.startswith("==> ")]
    assert steps == ["uwsgi", "nginx"]
    result = provision([sys.executable], str(plan_path), "--dry-run", "--skip", "cleanup")
    assert "==> cleanup" not in result.stdout and "==> nginx" in result.stdout


def test_unknown_step_and_bad_plan_are_refused(plan_path, tmp_path):
    result = provision([sys.executable], str(plan_path), "--only", "coffee")
    assert result.returncode == 2
    assert "unknown step 'coffee'" in result.stderr
    bad = tmp_path / "plan.json"
    bad.write_text(json.dumps({"format": 99}))
    result = provision([sys.executable], str(bad))
    assert result.returncode == 1
    assert "plan format 99, this provision/ reads 1" in result.stderr
    result = provision([sys.executable], str(tmp_path / "missing.json"))
    assert "cannot read plan" in result.stderr


def test_write_file_is_atomic_and_idempotent(tmp_path):
    sys.path.insert(0, str(PROJECT_ROOT))
    from provision.runner import Runner

    runner = Runner(out=open("/dev/null", "w"))
    target = tmp_path / "etc" / "x.conf"
    assert runner.write_file(str(target), "a\n") is True
    mtime = target.stat().st_mtime_ns
    assert runner.write_file(str(target), "a\n") is False
    assert target.stat().st_mtime_ns == mtime
    assert runner.write_file(str(target), "a\n", 0o600) is True
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in target.parent.iterdir()] == ["x.conf"]


def test_a_failing_command_reports_step_command_code_and_tail(tmp_path):
    plan = json.loads(render_platform(CONFIG, CONFIG.platform("debian-12"), tmp_path).plan
                      .read_text())
    plan["adapters"]["packages"] = "apt"
    plan["stage_dir"] = str(tmp_path)
    plan["python"]["binary"] = str(tmp_path / "no-python")
    plan["python"]["bundle"] = None
    (tmp_path / plan["python"]["tarball"]).write_bytes(b"not a tarball")
    plan["python"]["sha256"] = __import__("hashlib").sha256(b"not a tarball").hexdigest()
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(plan))
    result = provision(sandboxed(), str(path), "--only", "python")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "provision: step python failed: `tar -xf" in result.stdout
    assert "exited with 2; last lines:" in result.stdout
    assert "  | tar: This does not look like a tar archive" in result.stdout
    assert "python  FAILED" in result.stdout


def test_nginx_configuration_refused_by_nginx_t_is_rolled_back(tmp_path):
    plan = json.loads(render_platform(CONFIG, CONFIG.platform("debian-12"), tmp_path).plan
                      .read_text())
    kept, added = tmp_path / "conf.d/goldbox.conf", tmp_path / "conf.d/extra.conf"
    kept.parent.mkdir()
    kept.write_text("# the last good one\n")
    plan["nginx"]["files"] = [{"path": str(kept), "content": "broken;\n", "mode": "0644"},
                              {"path": str(added), "content": "broken;\n", "mode": "0644"}]
    default_site = tmp_path / "sites-enabled/default"
    default_site.parent.mkdir()
    default_site.symlink_to("../sites-available/default")
    plan["nginx"]["remove"] = [str(default_site)]
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nginx").write_text("#!/bin/sh\necho 'nginx: [emerg] unknown directive \"broken\"'\n"
                                "exit 1\n")
    (fake / "nginx").chmod(0o755)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    result = provision(sandboxed(f"{fake}:/usr/bin:/bin"), str(path), "--only", "nginx")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "step nginx failed: `nginx -t` exited with 1" in result.stdout
    assert '  | nginx: [emerg] unknown directive "broken"' in result.stdout
    assert kept.read_text() == "# the last good one\n"
    assert not added.exists()
    assert str(default_site.readlink()) == "../sites-available/default"


def test_a_missing_program_is_a_failed_command_not_a_traceback():
    sys.path.insert(0, str(PROJECT_ROOT))
    from provision.runner import Runner, StepFailed

    runner = Runner(out=open("/dev/null", "w"))
    with pytest.raises(StepFailed) as failure:
        runner.run(["/nonexistent/goldbox-tool", "--flag"])
    assert (failure.value.command, failure.value.code) == ("/nonexistent/goldbox-tool --flag", 127)
    assert "No such file or directory" in failure.value.tail[0]


# Runs inside the interpreter under test (2.7 or 3): the real mechanics a dry run skips,
# writing, running and syncing, against a throwaway folder.
MECHANICS = r'''
import os, sys
from provision.steps import app
from provision.steps.common import Context
from provision.runner import Runner, StepFailed

base = sys.argv[1]
runner = Runner(out=open(os.devnull, "w"))
target = os.path.join(base, "etc", "x.conf")
assert runner.write_file(target, u"caf\u00e9\n") is True
before = os.stat(target).st_mtime
assert runner.write_file(target, u"caf\u00e9\n") is False
assert os.stat(target).st_mtime == before
assert open(target, "rb").read() == u"caf\u00e9\n".encode("utf-8")
assert os.listdir(os.path.dirname(target)) == ["x.conf"]

assert runner.run(["sh", "-c", "echo out; echo err >&2"]).split() == ["out", "err"]
assert runner.query(["sh", "-c", "exit 4"]) == (4, "")
try:
    runner.run(["sh", "-c", "for i in $(seq 1 30); do echo line$i; done; exit 3"])
    raise AssertionError("no StepFailed")
except StepFailed:
    failure = sys.exc_info()[1]
    assert (failure.code, len(failure.tail), failure.tail[-1]) == (3, 20, "line30")

source, copy = os.path.join(base, "src"), os.path.join(base, "dst")
os.makedirs(os.path.join(source, "pkg"))
open(os.path.join(source, "pkg", "a.py"), "w").write("a\n")
ctx = Context({"stage_dir": base}, runner, None, None)
assert app._sync_tree(ctx, source, copy) is True
assert app._sync_tree(ctx, source, copy) is False
open(os.path.join(copy, "pkg", "gone.py"), "w").write("x\n")
assert app._sync_tree(ctx, source, copy) is True
assert sorted(os.listdir(os.path.join(copy, "pkg"))) == ["a.py"]
print("mechanics ok under %d.%d" % sys.version_info[:2])
'''


def run_script(interpreter: str, script: str, folder: Path) -> tuple[str, str]:
    """Run `script` (folder as argv[1]) under Python 2.7 or this Python 3: its output,
    and the version it must say it ran under."""
    python = python27(CONFIG.cache_dir) if interpreter == "python2.7" else [sys.executable]
    result = subprocess.run([*python, "-c", script, str(folder)], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    expected = "2.7" if interpreter == "python2.7" else "{}.{}".format(*sys.version_info[:2])
    return result.stdout.strip(), expected


@pytest.mark.parametrize("interpreter", ["python2.7", "python3"])
def test_runner_and_tree_sync_for_real(interpreter, tmp_path):
    output, version = run_script(interpreter, MECHANICS, tmp_path)
    assert output == f"mechanics ok under {version}"


# Runs inside the interpreter under test (2.7 or 3): the uwsgi step against a throwaway
# root and a fake running service, so only what the step decides is observed.
UWSGI_RESTARTS = r'''
import os, sys
from provision.steps import nginx, uwsgi
from provision.steps.common import Context
from provision.runner import Runner

base = sys.argv[1]
uwsgi.UWSGI_SERVES = os.path.join(base, "var/lib/goldbox/uwsgi-serves.sha256")
root = os.path.join(base, "srv/app")
record = os.path.join(root, "env/lib/python3.13/site-packages/flask-3.1.1.dist-info/RECORD")
os.makedirs(os.path.dirname(record))
os.makedirs(os.path.join(root, "app/__pycache__"))
open(os.path.join(root, "app/__init__.py"), "w").write("hello\n")
open(record, "w").write("flask/__init__.py,sha256=aaa,10\n")


class Services(object):
    booted = True
    def __init__(self):
        self.calls = []
    def reload_definitions(self):
        self.calls.append("reload-definitions")
    def is_enabled(self, service):
        return True
    def is_active(self, service):
        return True
    def restart(self, service):
        self.calls.append("restart")


plan = {"app": {"root": root}, "uwsgi": {"service": "goldbox-uwsgi", "files": [
    {"path": os.path.join(base, "etc/uwsgi.ini"), "content": "[uwsgi]\n", "mode": "0644"},
    {"path": os.path.join(base, "etc/goldbox-uwsgi.service"), "content": "[Service]\n",
     "mode": "0644", "defines_service": True}]}}


def run():
    services = Services()
    changed, _ = uwsgi.run(Context(plan, Runner(out=open(os.devnull, "w")), None,
                                           services))
    return changed, services.calls

assert run() == (True, ["reload-definitions", "restart"])   # first run: files written
assert run() == (False, [])                                  # nothing changed
open(os.path.join(root, "app/__pycache__/x.pyc"), "w").write("bytecode\n")
assert run() == (False, [])                                  # bytecode is not the app
open(os.path.join(root, "app/__init__.py"), "w").write("hello, again\n")
assert run() == (True, ["restart"])                          # the app changed
assert run() == (False, [])
open(record, "a").write("flask/new.py,sha256=bbb,10\n")
assert run() == (True, ["restart"])                          # the venv changed
plan["uwsgi"]["files"][0]["content"] = "[uwsgi]\nprocesses = 3\n"
assert run() == (True, ["restart"])                          # the ini alone: no daemon-reload

# nginx: a new site is reloaded; a new sandbox drop-in needs a new process.
Services.reload = lambda self, service: self.calls.append("reload")
fake = os.path.join(base, "bin")
os.makedirs(fake)
open(os.path.join(fake, "nginx"), "w").write("#!/bin/sh\nexit 0\n")
os.chmod(os.path.join(fake, "nginx"), 0o755)
os.environ["PATH"] = fake + os.pathsep + os.environ["PATH"]
plan["nginx"] = {"service": "nginx", "remove": [], "files": [
    {"path": os.path.join(base, "etc/nginx/goldbox.conf"), "content": "a;\n", "mode": "0644"},
    {"path": os.path.join(base, "etc/nginx.service.d/goldbox.conf"), "content": "[Service]\n",
     "mode": "0644", "defines_service": True}]}


def run_nginx():
    services = Services()
    changed, _ = nginx.run(Context(plan, Runner(out=open(os.devnull, "w")), None,
                                           services))
    return changed, services.calls

assert run_nginx() == (True, ["reload-definitions", "restart"])
assert run_nginx() == (False, [])
plan["nginx"]["files"][0]["content"] = "b;\n"
assert run_nginx() == (True, ["reload"])
plan["nginx"]["files"][1]["content"] = "[Service]\nPrivateTmp=yes\n"
assert run_nginx() == (True, ["reload-definitions", "restart"])
print("uwsgi restarts ok under %d.%d" % sys.version_info[:2])
'''


@pytest.mark.parametrize("interpreter", ["python2.7", "python3"])
def test_uwsgi_restarts_when_the_app_or_its_venv_changed(interpreter, tmp_path):
    """... and nginx restarts (not reloads) when its sandbox drop-in changed."""
    output, version = run_script(interpreter, UWSGI_RESTARTS, tmp_path)
    assert output == f"uwsgi restarts ok under {version}"


# Runs inside the interpreter under test (2.7 or 3): the cleanup step against a throwaway
# tree (its paths pointed there), with package and service adapters standing in, and a
# runner that records the free-space commands instead of trimming or filling this disk.
CLEANUP = r'''
import os, sys
from provision.steps import cleanup
from provision.steps.common import Context
from provision.runner import Runner

base = sys.argv[1]
def at(path):
    return os.path.join(base, path.lstrip("/"))
def write(path, text):
    if not os.path.isdir(os.path.dirname(at(path))):
        os.makedirs(os.path.dirname(at(path)))
    open(at(path), "w").write(text)

class Recording(Runner):
    def __init__(self):
        Runner.__init__(self, out=open(os.devnull, "w"))
        self.commands = []
    def run(self, argv, cwd=None, env=None):
        self.commands.append(argv[0])
        return ""
    def query(self, argv, cwd=None):
        self.commands.append(argv[0])
        return 0, ""

class Packages(object):
    def __init__(self, runner):
        self.runner = runner
    def cached_files(self):
        folder = at("/var/cache/pkg")
        names = os.listdir(folder) if os.path.isdir(folder) else []
        return [os.path.join(folder, name) for name in names]
    def clean(self):
        for path in self.cached_files():
            self.runner.remove(path)

class Services(object):
    booted = True

cleanup.IDENTITY_AND_BUILD_FILES = [at(p) for p in cleanup.IDENTITY_AND_BUILD_FILES]
cleanup.MACHINE_ID = at("/etc/machine-id")
cleanup.LOG_DIRS = [at("/var/log")]
for path in ["/etc/ssh/ssh_host_ed25519_key", "/root/.bash_history", "/var/log/syslog.1",
             "/var/log/journal/x/system.journal", "/var/cache/pkg/nginx.deb",
             "/tmp/goldbox-stage/plan.json"]:
    write(path, "from the build\n")
write("/etc/ssh/sshd_config", "kept\n")
write("/etc/machine-id", "0123456789abcdef0123456789abcdef\n")
write("/var/log/syslog", "boot messages\n")
plan = {"stage_dir": at("/tmp/goldbox-stage"),
        "cleanup": {"enabled": True, "paths": [at("/tmp/goldbox-stage")],
                    "zero_free_space": True}}
runner = Recording()
ctx = Context(plan, runner, Packages(runner), Services())

cleanup.takes_discards = lambda mountpoint: True
changed, note = cleanup.run(ctx)
assert changed and note.endswith("; free space trimmed"), note
assert runner.commands == ["fstrim"], runner.commands
left = sorted(os.path.relpath(os.path.join(d, n), base) for d, _, ns in os.walk(base) for n in ns)
assert left == ["etc/machine-id", "etc/ssh/sshd_config", "var/log/syslog"], left
assert open(at("/etc/machine-id")).read() == ""
assert os.stat(at("/etc/machine-id")).st_mode & 0o777 == 0o444
assert os.path.getsize(at("/var/log/syslog")) == 0

# Nothing left to clean: no change reported, nothing written, the disk not trimmed again.
runner.commands = []
before = [os.stat(at(p)).st_mtime for p in ("/etc/machine-id", "/var/log/syslog")]
assert cleanup.run(ctx) == (False, "nothing to clean")
assert runner.commands == []
assert [os.stat(at(p)).st_mtime for p in ("/etc/machine-id", "/var/log/syslog")] == before

# A disk that takes no discards is zero-filled instead; a chroot is neither.
write("/var/log/syslog", "more\n")
cleanup.takes_discards = lambda mountpoint: False
changed, note = cleanup.run(ctx)
assert changed and note.endswith("; free space zero-filled"), note
assert runner.commands == ["dd", "sync"], runner.commands
write("/var/log/syslog", "more\n")
Services.booted = False
runner.commands = []
assert cleanup.run(ctx)[0] is True and runner.commands == []
print("cleanup ok under %d.%d" % sys.version_info[:2])
'''


@pytest.mark.parametrize("interpreter", ["python2.7", "python3"])
def test_cleanup_trims_once_and_reports_unchanged_with_nothing_to_clean(interpreter, tmp_path):
    output, version = run_script(interpreter, CLEANUP, tmp_path)
    assert output == f"cleanup ok under {version}"


def test_discard_support_is_read_from_the_disks_queue(tmp_path):
    """A partition has no queue of its own: its disk's discard_max_bytes decides."""
    sys.path.insert(0, str(PROJECT_ROOT))
    from provision.steps.cleanup import takes_discards

    device = os.stat(tmp_path).st_dev
    sys_root = tmp_path / "sys"
    disk = sys_root / "devices" / "vda"
    (disk / "vda1").mkdir(parents=True)
    (disk / "queue").mkdir()
    (sys_root / "dev" / "block").mkdir(parents=True)
    (sys_root / "dev" / "block" / f"{os.major(device)}:{os.minor(device)}").symlink_to(
        disk / "vda1")
    assert takes_discards(str(tmp_path), str(sys_root)) is False  # no queue file at all
    (disk / "queue" / "discard_max_bytes").write_text("0\n")
    assert takes_discards(str(tmp_path), str(sys_root)) is False
    (disk / "queue" / "discard_max_bytes").write_text("2147483136\n")
    assert takes_discards(str(tmp_path), str(sys_root)) is True
    assert takes_discards("/") in (True, False)  # this host's own /sys: read, not raised


class RecordedYum:
    """Stands in for yum, which cannot run here (no CentOS guest boots on this machine):
    answers `yum check-update` with a recorded exit code and output."""
    dry_run = False

    def __init__(self, code: int, output: str):
        self.code, self.output, self.ran = code, output, []

    def query(self, argv, cwd=None):
        self.ran.append(argv)
        return self.code, self.output

    def run(self, argv, cwd=None, env=None):
        self.ran.append(argv)
        return ""


# `yum -q check-update` on CentOS 6 with two updates; the obsoletes section's indented
# lines name what is replaced, not an update.
CHECK_UPDATE = """
kernel.x86_64                         2.6.32-358.6.1.el6                  updates
openssh-server.x86_64                 5.3p1-84.1.el6                      updates
Obsoleting Packages
    foo.x86_64                        0.9-1                               @base
"""


def test_yum_pending_updates_from_recorded_check_update_outputs_fake_yum():
    from provision.packages import Yum
    from provision.runner import StepFailed

    assert Yum(RecordedYum(100, CHECK_UPDATE)).pending_updates() == [
        ("kernel", "2.6.32-358.6.1.el6"), ("openssh-server", "5.3p1-84.1.el6")]
    assert Yum(RecordedYum(0, "\n")).pending_updates() == []
    runner = RecordedYum(1, "Error: Cannot retrieve repository metadata (repomd.xml)\n")
    with pytest.raises(StepFailed) as failed:
        Yum(runner).pending_updates()
    assert failed.value.code == 1 and "yum -q check-update" in failed.value.command
    assert failed.value.tail == ["Error: Cannot retrieve repository metadata (repomd.xml)"]
    updating = RecordedYum(0, "")
    Yum(updating).update()
    assert updating.ran == [["yum", "update", "-y"]]

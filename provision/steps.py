"""The tutorial's steps, corrected. Each one checks, acts only when needed, and
returns (changed, note). They never branch on a distribution's name: the plan and the
package/service adapters carry the differences."""

from __future__ import print_function

import glob
import hashlib
import os
import re

from provision.runner import sha256_of

LOG_DIRS = ["/var/log"]
ROTATED_OR_JOURNAL = re.compile(r"(\.journal~?|\.[0-9]+|\.gz|\.xz|-[0-9]{8})$")


class Context(object):
    def __init__(self, plan, runner, packages, services):
        self.plan = plan
        self.runner = runner
        self.packages = packages
        self.services = services

    def staged(self, relative):
        return os.path.join(self.plan["stage_dir"], relative)

    def verify_sha256(self, path, expected):
        if self.runner.dry_run:
            self.runner.say("    sha256 check %s" % path)
            return
        actual = sha256_of(path)
        if actual != expected:
            raise ValueError("%s: sha256 is %s, expected %s" % (path, actual, expected))


def _service_note(ctx):
    if ctx.services.booted or ctx.runner.dry_run:
        return ""
    return "; not started: no running init (chroot)"


# ---- 1. repositories ---------------------------------------------------------------

def repositories(ctx):
    changed = ctx.packages.configure(ctx.plan["repositories"], ctx.plan["stage_dir"])
    return changed, "repository configuration" + (" updated" if changed else " as planned")


# ---- 2. packages -------------------------------------------------------------------

def packages(ctx):
    wanted = ctx.plan["packages"]
    groups = ctx.packages.missing_groups(wanted.get("groups", []))
    missing = ctx.packages.missing(wanted.get("build", []) + wanted.get("runtime", []))
    if not groups and not missing:
        changed = False
        said = "all %d packages present" % (len(wanted["build"]) + len(wanted["runtime"]))
    else:
        ctx.packages.install(missing, groups)
        changed = True
        said = "installed %d packages, %d groups" % (len(missing), len(groups))
    if wanted.get("update"):
        pending = ctx.packages.pending_updates()
        if pending:
            ctx.packages.update()
            changed = True
            names = ", ".join("%s %s" % item for item in pending[:6])
            said += "; updated %d (%s%s)" % (len(pending), names,
                                              ", ..." if len(pending) > 6 else "")
        else:
            said += "; no updates pending"
    return changed, said


# ---- 3. python ---------------------------------------------------------------------

def _python_version(ctx, binary):
    code, out = ctx.runner.query(
        [binary, "-c", "import platform; print(platform.python_version())"])
    return out.strip() if code == 0 else None


def python(ctx):
    spec = ctx.plan["python"]
    binary, version = spec["binary"], spec["version"]
    changed = False
    if _python_version(ctx, binary) != version:
        changed = True
        if spec.get("bundle"):
            bundle = ctx.staged(spec["bundle"]["file"])
            ctx.verify_sha256(bundle, spec["bundle"]["sha256"])
            ctx.runner.run(["tar", "--no-same-owner", "-xzf", bundle, "-C", "/"])
            how = "unpacked the native build"
        else:
            tarball = ctx.staged(spec["tarball"])
            ctx.verify_sha256(tarball, spec["sha256"])
            source_root = "/usr/local/src/goldbox-python"
            ctx.runner.remove(source_root)
            ctx.runner.makedirs(source_root)
            ctx.runner.run(["tar", "-xf", tarball, "-C", source_root])
            source = os.path.join(source_root, "Python-%s" % version)
            jobs = str(max(1, _cpu_count()))
            ctx.runner.run(["./configure"] + list(spec["configure_flags"]), cwd=source)
            ctx.runner.run(["make", "-j" + jobs], cwd=source)
            ctx.runner.run(["make", "altinstall"], cwd=source)
            how = "built from source"
        found = _python_version(ctx, binary)
        if not ctx.runner.dry_run and found != version:
            raise ValueError("%s reports %r after install, expected %s" % (binary, found, version))
    else:
        how = "already installed"
    if spec.get("pip_bootstrap"):
        code, _ = ctx.runner.query([binary, "-m", "pip", "--version"])
        if code != 0:
            tools = ["pip", "setuptools"]
            if ctx.plan["app"]["venv"] == "virtualenv":
                tools.append("virtualenv")
            wheel = ctx.staged(spec["pip_bootstrap"])
            ctx.runner.run([binary, os.path.join(wheel, "pip"), "install", "--no-index",
                            "--find-links", ctx.staged(ctx.plan["app"]["wheelhouse"])] + tools)
            changed = True
    return changed, "CPython %s %s" % (version, how)


def _cpu_count():
    try:
        import multiprocessing
        return multiprocessing.cpu_count()
    except (ImportError, NotImplementedError):
        return 1


# ---- 4. app ------------------------------------------------------------------------

def _known(lookup, name):
    try:
        lookup(name)
        return True
    except KeyError:
        return False


def _ensure_user(ctx, user, group, home):
    """An unprivileged system user (and group) that uWSGI runs as."""
    import grp
    import pwd
    dry = ctx.runner.dry_run
    if not dry and _known(pwd.getpwnam, user):
        return False
    if dry or not _known(grp.getgrnam, group):
        ctx.runner.run(["groupadd", "--system", group])
    ctx.runner.run(["useradd", "--system", "--gid", group, "--home-dir", home,
                    "--no-create-home", "--shell", "/sbin/nologin", user])
    return True


def _sync_tree(ctx, source, target):
    """Copy files of `source` into `target` (0644/0755), removing files that are gone."""
    changed = ctx.runner.makedirs(target)
    wanted = set()
    for folder, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        relative = os.path.relpath(folder, source)
        destination = os.path.normpath(os.path.join(target, relative))
        changed = ctx.runner.makedirs(destination) or changed
        wanted.add(destination)
        for name in sorted(files):
            if name.endswith(".pyc"):
                continue
            path = os.path.join(destination, name)
            wanted.add(path)
            changed = ctx.runner.copy_file(os.path.join(folder, name), path) or changed
    if not ctx.runner.dry_run:
        for folder, dirs, files in os.walk(target, topdown=False):
            for name in files + dirs:
                path = os.path.join(folder, name)
                if path not in wanted and not name.endswith(".pyc") and name != "__pycache__":
                    changed = ctx.runner.remove(path) or changed
    return changed


def _normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _pinned(requirements_file, dry_run):
    if dry_run:
        return {}
    pins = {}
    for line in open(requirements_file).read().splitlines():
        match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if match:
            pins[_normalize(match.group(1))] = match.group(2)
    return pins


def _installed(ctx, pip):
    # `pip list --format=freeze` names wheels installed from a file too (freeze gives "x @ file:").
    code, out = ctx.runner.query([pip, "list", "--format=freeze"])
    found = {}
    for line in out.splitlines() if code == 0 else []:
        if "==" in line:
            name, version = line.split("==", 1)
            found[_normalize(name)] = version.strip()
    return found


def app(ctx):
    spec = ctx.plan["app"]
    root = spec["root"]
    changed = _ensure_user(ctx, spec["user"], spec["group"], root)
    source = ctx.staged(spec["source"])
    for name in ("app", "static"):
        changed = _sync_tree(ctx, os.path.join(source, name), os.path.join(root, name)) \
            or changed
    changed = ctx.runner.copy_file(os.path.join(source, "WSGI.py"),
                                   os.path.join(root, "WSGI.py")) or changed
    env = os.path.join(root, "env")
    python = ctx.plan["python"]["binary"]
    how = ""
    if not ctx.runner.exists(os.path.join(env, "bin", "python")):
        if spec.get("env_bundle"):
            # Made natively by this same step in a chroot of the release (goldbox/bundle.py):
            # unpacked here, then checked below like any other venv.
            bundle = ctx.staged(spec["env_bundle"]["file"])
            ctx.verify_sha256(bundle, spec["env_bundle"]["sha256"])
            ctx.runner.run(["tar", "--no-same-owner", "-xzf", bundle, "-C", "/"])
            how = "; venv unpacked from the native build"
        elif spec["venv"] == "virtualenv":
            ctx.runner.run([python, "-m", "virtualenv", "--no-download", env])
        else:
            ctx.runner.run([python, "-m", "venv", env])
        changed = True
    pip = os.path.join(env, "bin", "pip")
    requirements = ctx.staged(spec["requirements"])
    pins = _pinned(requirements, ctx.runner.dry_run)
    installed = _installed(ctx, pip)
    missing = sorted(name for name, version in pins.items() if installed.get(name) != version)
    if missing or ctx.runner.dry_run:
        wheelhouse = ctx.staged(spec["wheelhouse"])
        local = []
        for wheel in spec.get("local_wheels", []):
            path = ctx.staged(wheel["file"])
            ctx.verify_sha256(path, wheel["sha256"])
            local.append(path)
        if local:
            ctx.runner.run([pip, "install", "--no-index", "--no-deps"] + local)
        ctx.runner.run([pip, "install", "--no-index", "--find-links", wheelhouse,
                        "--require-hashes", "-r", requirements])
        changed = True
    note = "%s in %s; %d pinned packages%s%s" % (
        spec["user"], root, len(pins), (" installed: " + ", ".join(missing)) if missing else "",
        how)
    return changed, note


# ---- 5. uwsgi / 6. nginx -------------------------------------------------------------

def _write_files(ctx, files):
    """Write the plan's files; return the ones that changed."""
    changed = []
    for item in files:
        if ctx.runner.write_file(item["path"], item["content"], int(item.get("mode", "0644"), 8)):
            changed.append(item)
    return changed


def _defines_service(files):
    return [item for item in files if item.get("defines_service")]


def _enable_and_run(ctx, service, changed, restart):
    """Enable at boot; when booted, start if stopped, or `restart(service)` if its
    configuration changed."""
    if not ctx.services.is_enabled(service):
        ctx.services.enable(service)
        changed = True
    if ctx.services.booted or ctx.runner.dry_run:
        if not ctx.services.is_active(service):
            ctx.services.start(service)
            changed = True
        elif changed:
            restart(service)
    return changed


# What the running uWSGI serves, recorded when the step last (re)started or planned it.
UWSGI_SERVES = "/var/lib/goldbox/uwsgi-serves.sha256"


def serves_digest(app_root):
    """sha256 over what uWSGI loads at start: the app tree's files (its venv aside) and,
    for the venv, each installed distribution's RECORD (which lists every installed
    file's own hash). A change to either needs a restart to be served."""
    digest = hashlib.sha256()
    env = os.path.join(app_root, "env")
    for folder, dirs, files in os.walk(app_root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__"
                         and os.path.join(folder, d) != env)
        for name in sorted(files):
            if not name.endswith(".pyc"):
                _digest_file(digest, os.path.join(folder, name), app_root)
    records = glob.glob(os.path.join(env, "lib", "python*", "site-packages", "*.dist-info",
                                     "RECORD"))
    for path in sorted(records) + [os.path.join(env, "pyvenv.cfg")]:
        if os.path.isfile(path):
            _digest_file(digest, path, app_root)
    return digest.hexdigest()


def _digest_file(digest, path, root):
    digest.update(os.path.relpath(path, root).encode("utf-8") + b"\0")
    digest.update(sha256_of(path).encode("ascii") + b"\n")


def uwsgi(ctx):
    spec = ctx.plan["uwsgi"]
    written = _write_files(ctx, spec["files"])
    if _defines_service(written):
        ctx.services.reload_definitions()
    # The app or its venv changed since uWSGI last started: it still serves the old code.
    serves = "" if ctx.runner.dry_run else serves_digest(ctx.plan["app"]["root"])
    app_changed = ctx.runner.write_file(UWSGI_SERVES, serves + "\n", 0o644)
    changed = _enable_and_run(ctx, spec["service"], bool(written) or app_changed,
                              ctx.services.restart)
    return changed, "service %s%s" % (spec["service"], _service_note(ctx))


def nginx(ctx):
    spec = ctx.plan["nginx"]
    touched = list(spec.get("remove", [])) + [item["path"] for item in spec["files"]]
    previous = [(path, ctx.runner.snapshot(path)) for path in touched]
    changed = False
    for path in spec.get("remove", []):
        changed = ctx.runner.remove(path) or changed
    written = _write_files(ctx, spec["files"])
    changed = changed or bool(written)
    if changed:
        try:
            ctx.runner.run(["nginx", "-t"])
        except Exception:
            for path, saved in previous:  # put the last good configuration back
                ctx.runner.restore(path, saved)
            raise
    # A new sandbox (unit drop-in) takes effect at a restart only; a new site at a reload.
    apply = ctx.services.reload
    if _defines_service(written):
        ctx.services.reload_definitions()
        apply = ctx.services.restart
    changed = _enable_and_run(ctx, spec["service"], changed, apply)
    return changed, "service %s%s" % (spec["service"], _service_note(ctx))


# ---- 7. firewall, selinux -----------------------------------------------------------

def firewall(ctx):
    spec = ctx.plan["firewall"]
    if spec["kind"] == "none":
        return False, "no firewall managed on this platform"
    changed = False
    for port in spec["tcp_ports"]:
        rule = ["INPUT", "-p", "tcp", "-m", "state", "--state", "NEW", "--dport", str(port),
                "-j", "ACCEPT"]
        code, _ = ctx.runner.query(["iptables", "-C"] + rule)
        if code != 0:
            ctx.runner.run(["iptables", "-I"] + rule)
            changed = True
    if changed:
        ctx.runner.run(["service", "iptables", "save"])
    return changed, "tcp %s open" % ",".join(str(p) for p in spec["tcp_ports"])


def selinux(ctx):
    booleans = ctx.plan["selinux"]["booleans"]
    if not booleans:
        return False, "no SELinux booleans on this platform"
    code, _ = ctx.runner.query(["selinuxenabled"])
    if code != 0 and not ctx.runner.dry_run:
        return False, "SELinux is disabled here: booleans not set"
    changed = False
    for name in sorted(booleans):
        wanted = "on" if booleans[name] else "off"
        code, out = ctx.runner.query(["getsebool", name])
        if code != 0 or not out.strip().endswith(wanted):
            ctx.runner.run(["setsebool", "-P", name, wanted])
            changed = True
    return changed, "booleans " + ", ".join(sorted(booleans))


# ---- 8. cleanup -------------------------------------------------------------------

# EL6's udev pins eth0 to the build VM's MAC: a clone would come up with eth1 only.
IDENTITY_AND_BUILD_FILES = ["/etc/ssh/ssh_host_*", "/root/.bash_history",
                            "/home/*/.bash_history", "/usr/local/src/goldbox-python",
                            "/var/lib/dbus/machine-id",
                            "/etc/udev/rules.d/70-persistent-net.rules"]
MACHINE_ID = "/etc/machine-id"
ZERO_FILL = "goldbox-zero.fill"


def cleanup(ctx):
    """Golden-image hygiene: no identity, caches, logs, history or build files. Acts
    only on what is there: with nothing to clean it changes nothing, and the free
    space, released by the run that cleaned, is not trimmed or zeroed again."""
    spec = ctx.plan["cleanup"]
    if not spec.get("enabled"):
        return False, "disabled in the plan"
    runner = ctx.runner
    changed = False
    if runner.dry_run or ctx.packages.cached_files():
        ctx.packages.clean()
        changed = True
    for pattern in IDENTITY_AND_BUILD_FILES:
        for path in sorted(glob.glob(pattern)) if not runner.dry_run else [pattern]:
            if not os.path.islink(path):
                changed = runner.remove(path) or changed
    changed = runner.write_file(MACHINE_ID, "", 0o444) or changed
    for folder in LOG_DIRS:
        for path in _log_files(folder) if not runner.dry_run else [folder + "/*"]:
            if ROTATED_OR_JOURNAL.search(path):
                changed = runner.remove(path) or changed  # a truncated journal is corrupt
            elif runner.dry_run or os.path.getsize(path) > 0:
                runner.say("    truncate %s" % path)
                if not runner.dry_run:
                    open(path, "w").close()
                changed = True
    for path in spec.get("paths", []):
        changed = runner.remove(path) or changed
    if not changed:
        return False, "nothing to clean"
    note = "identity, caches, logs and build files removed"
    if spec.get("zero_free_space"):
        if ctx.services.booted or runner.dry_run:
            note += "; free space " + _release_free_space(runner, "/")
        else:
            runner.say("    zero free space: skipped (not a booted guest)")
    return True, note


def _log_files(folder):
    found = []
    for directory, _, files in os.walk(folder):
        for name in files:
            found.append(os.path.join(directory, name))
    return sorted(found)


def _release_free_space(runner, mountpoint):
    """Free blocks back to the image, so it compacts: trimmed when the disk takes
    discards (qemu with discard=unmap drops those qcow2 clusters, in seconds), else
    filled with zeros that are then deleted (a write of the whole free space)."""
    filler = os.path.join(mountpoint, ZERO_FILL)
    if runner.dry_run:
        runner.say("    $ fstrim -v %s  # if the disk takes discards, else:" % mountpoint)
        runner.say("    $ dd if=/dev/zero of=%s bs=1M; rm %s" % (filler, filler))
        return "trimmed or zero-filled"
    if takes_discards(mountpoint):
        runner.run(["fstrim", "-v", mountpoint])
        return "trimmed"
    runner.say("    zero free space (the disk takes no discards)")
    runner.query(["dd", "if=/dev/zero", "of=" + filler, "bs=1M"])  # ends at "no space"
    runner.remove(filler)
    runner.query(["sync"])
    return "zero-filled"


def takes_discards(mountpoint, sys_root="/sys"):
    """Whether the block device under `mountpoint` accepts discards (TRIM/UNMAP): its
    queue's discard_max_bytes is not 0. A partition's queue is its disk's."""
    device = os.stat(mountpoint).st_dev
    node = os.path.join(sys_root, "dev", "block",
                        "%d:%d" % (os.major(device), os.minor(device)))
    for queue in (os.path.join(node, "queue"), os.path.join(node, "..", "queue")):
        try:
            handle = open(os.path.join(queue, "discard_max_bytes"))
            try:
                return int(handle.read().strip() or 0) > 0
            finally:
                handle.close()
        except (IOError, OSError, ValueError):
            continue
    return False


STEPS = [
    ("repositories", repositories),
    ("packages", packages),
    ("python", python),
    ("app", app),
    ("uwsgi", uwsgi),
    ("nginx", nginx),
    ("firewall", firewall),
    ("selinux", selinux),
    ("cleanup", cleanup),
]

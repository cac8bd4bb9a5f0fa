"""4. app: the app's user, code and virtualenv."""

from __future__ import print_function

import os
import re


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


def run(ctx):
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

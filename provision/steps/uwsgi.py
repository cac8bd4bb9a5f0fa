"""5. uwsgi: its configuration and service, restarted when what it serves changed."""

from __future__ import print_function

import glob
import hashlib
import os

from provision.runner import sha256_of
from provision.steps.common import defines_service, enable_and_run, service_note, write_files

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


def run(ctx):
    spec = ctx.plan["uwsgi"]
    written = write_files(ctx, spec["files"])
    if defines_service(written):
        ctx.services.reload_definitions()
    # The app or its venv changed since uWSGI last started: it still serves the old code.
    serves = "" if ctx.runner.dry_run else serves_digest(ctx.plan["app"]["root"])
    app_changed = ctx.runner.write_file(UWSGI_SERVES, serves + "\n", 0o644)
    changed = enable_and_run(ctx, spec["service"], bool(written) or app_changed,
                              ctx.services.restart)
    return changed, "service %s%s" % (spec["service"], service_note(ctx))

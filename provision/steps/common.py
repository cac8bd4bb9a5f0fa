"""What the steps share: the context they run in, the note on services, and how the
uwsgi and nginx steps write their files and run their service."""

from __future__ import print_function

import os

from provision.runner import sha256_of


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


def service_note(ctx):
    if ctx.services.booted or ctx.runner.dry_run:
        return ""
    return "; not started: no running init (chroot)"


def write_files(ctx, files):
    """Write the plan's files; return the ones that changed."""
    changed = []
    for item in files:
        if ctx.runner.write_file(item["path"], item["content"], int(item.get("mode", "0644"), 8)):
            changed.append(item)
    return changed


def defines_service(files):
    return [item for item in files if item.get("defines_service")]


def enable_and_run(ctx, service, changed, restart):
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

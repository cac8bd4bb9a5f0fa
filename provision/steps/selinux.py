"""8. selinux: the plan's booleans, where SELinux is on."""

from __future__ import print_function


def run(ctx):
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

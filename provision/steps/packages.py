"""2. packages: what the plan installs (and the repositories' updates)."""

from __future__ import print_function


def run(ctx):
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

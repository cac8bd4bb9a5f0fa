"""6. nginx: its site and hardening, checked with `nginx -t` before they apply."""

from __future__ import print_function

from provision.steps.common import defines_service, enable_and_run, service_note, write_files


def run(ctx):
    spec = ctx.plan["nginx"]
    touched = list(spec.get("remove", [])) + [item["path"] for item in spec["files"]]
    previous = [(path, ctx.runner.snapshot(path)) for path in touched]
    changed = False
    for path in spec.get("remove", []):
        changed = ctx.runner.remove(path) or changed
    written = write_files(ctx, spec["files"])
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
    if defines_service(written):
        ctx.services.reload_definitions()
        apply = ctx.services.restart
    changed = enable_and_run(ctx, spec["service"], changed, apply)
    return changed, "service %s%s" % (spec["service"], service_note(ctx))

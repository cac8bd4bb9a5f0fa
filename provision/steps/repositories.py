"""1. repositories: where the package manager installs from."""

from __future__ import print_function


def run(ctx):
    changed = ctx.packages.configure(ctx.plan["repositories"], ctx.plan["stage_dir"])
    return changed, "repository configuration" + (" updated" if changed else " as planned")

"""The tutorial's steps, corrected, one module per step (goldbox keys each cache entry
by the modules of the steps that make it). Each one checks, acts only when needed, and
returns (changed, note). They never branch on a distribution's name: the plan and the
package/service adapters carry the differences."""

from __future__ import print_function

from provision.steps import (
    app,
    cleanup,
    firewall,
    nginx,
    packages,
    python,
    repositories,
    selinux,
    uwsgi,
)
from provision.steps.common import Context

STEPS = [
    ("repositories", repositories.run),
    ("packages", packages.run),
    ("python", python.run),
    ("app", app.run),
    ("uwsgi", uwsgi.run),
    ("nginx", nginx.run),
    ("firewall", firewall.run),
    ("selinux", selinux.run),
    ("cleanup", cleanup.run),
]

__all__ = ["Context", "STEPS"]

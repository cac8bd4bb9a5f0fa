"""7. firewall: the guest's HTTP port open (EL's iptables)."""

from __future__ import print_function


def run(ctx):
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

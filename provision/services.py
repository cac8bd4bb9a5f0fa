"""Service managers behind one interface: enable at boot, start, restart, reload.

In a chroot (no running init) services are enabled but never started: `booted` is
False and the steps say so."""

from __future__ import print_function

import os


def in_chroot():
    """True when / is not the root of PID 1 (or /proc is missing, as in a bare chroot)."""
    try:
        init_root = os.stat("/proc/1/root/.")
    except OSError:
        return True
    here = os.stat("/")
    return (init_root.st_dev, init_root.st_ino) != (here.st_dev, here.st_ino)


class Systemd(object):
    name = "systemd"

    def __init__(self, runner):
        self.runner = runner
        self.booted = (not runner.dry_run) and os.path.isdir("/run/systemd/system") \
            and not in_chroot()

    def reload_definitions(self):
        if self.booted or self.runner.dry_run:
            self.runner.run(["systemctl", "daemon-reload"])

    def is_enabled(self, service):
        code, out = self.runner.query(["systemctl", "is-enabled", service])
        return code == 0 and out.strip() == "enabled"

    def enable(self, service):
        self.runner.run(["systemctl", "enable", service])

    def is_active(self, service):
        code, _ = self.runner.query(["systemctl", "is-active", "--quiet", service])
        return code == 0

    def start(self, service):
        self.runner.run(["systemctl", "start", service])

    def restart(self, service):
        self.runner.run(["systemctl", "restart", service])

    def reload(self, service):
        self.runner.run(["systemctl", "reload", service])


class Sysv(object):
    name = "sysv"

    def __init__(self, runner):
        self.runner = runner
        self.booted = (not runner.dry_run) and not in_chroot()

    def reload_definitions(self):
        pass  # init scripts are read at each call

    def is_enabled(self, service):
        code, out = self.runner.query(["chkconfig", "--list", service])
        return code == 0 and "3:on" in out

    def enable(self, service):
        self.runner.run(["chkconfig", "--add", service])
        self.runner.run(["chkconfig", service, "on"])

    def is_active(self, service):
        code, _ = self.runner.query(["service", service, "status"])
        return code == 0

    def start(self, service):
        self.runner.run(["service", service, "start"])

    def restart(self, service):
        self.runner.run(["service", service, "restart"])

    def reload(self, service):
        self.runner.run(["service", service, "reload"])


ADAPTERS = {"systemd": Systemd, "sysv": Sysv}

"""Package managers behind one interface: which packages are missing, install them,
which installed ones have updates and take them, point the system at its repositories."""

from __future__ import print_function

import glob
import os
import re

from provision.runner import StepFailed, quote


class Apt(object):
    name = "apt"
    sources_list = "/etc/apt/sources.list"
    env = {"DEBIAN_FRONTEND": "noninteractive"}

    def __init__(self, runner):
        self.runner = runner
        self.lists_updated = False

    def configure(self, repositories, stage_dir):
        """Write sources.list when the plan gives one; True when it changed."""
        sources = repositories.get("apt_sources")
        if not sources:
            return False
        return self.runner.write_file(self.sources_list, sources)

    def missing(self, packages):
        absent = []
        for package in packages:
            code, out = self.runner.query(["dpkg-query", "-W", "-f=${Status}", package])
            if code != 0 or "install ok installed" not in out:
                absent.append(package)
        return absent

    def missing_groups(self, groups):
        return list(groups)  # apt has no groups; the plan lists none for Debian

    def _update_lists(self):
        # The lists on disk may be gone (cleanup) or older than the mirror (a cached
        # rootfs, an old box): install and upgrade would then fail or miss updates.
        if not self.lists_updated:
            self.runner.run(["apt-get", "update", "-q"], env=self.env)
            self.lists_updated = True

    def install(self, packages, groups=()):
        # Only reached when something is missing, so updating costs nothing on a run that
        # changes nothing.
        self._update_lists()
        self.runner.run(["apt-get", "install", "-y", "-q", "--no-install-recommends"]
                        + list(packages), env=self.env)

    # Updates that need a new package (a kernel of a new ABI, which its metapackage then
    # depends on) are taken too; nothing is removed (the superseded kernel stays).
    _UPGRADE = ["apt-get", "upgrade", "--with-new-pkgs", "--no-install-recommends", "-q"]

    def pending_updates(self):
        """The installed packages the repositories hold newer versions of (and the new
        packages those updates need), as (name, version), from fresh lists."""
        self._update_lists()
        output = self.runner.run(self._UPGRADE + ["--simulate"], env=self.env)
        # "Inst libc6 [2.36-9+deb12u9] (2.36-9+deb12u10 Debian-Security:12/... [amd64])"
        return sorted(set(re.findall(r"^Inst (\S+) (?:\[\S+\] )?\((\S+)", output, re.M)))

    def update(self):
        # A changed configuration file keeps the version on disk (the plan writes its own).
        self.runner.run(self._UPGRADE + ["-y", "-o", "Dpkg::Options::=--force-confdef",
                                         "-o", "Dpkg::Options::=--force-confold"], env=self.env)

    def cached_files(self):
        """What `clean` would remove: downloaded packages and the package lists."""
        return _files_in(["/var/cache/apt/archives", "/var/cache/apt/archives/partial",
                          "/var/lib/apt/lists"], skip=["lock"]) + glob.glob("/var/cache/apt/*.bin")

    def clean(self):
        self.runner.run(["apt-get", "clean"])
        for name in sorted(os.listdir("/var/lib/apt/lists")) if not self.runner.dry_run else []:
            path = os.path.join("/var/lib/apt/lists", name)
            if os.path.isfile(path) and name != "lock":
                os.unlink(path)


class Yum(object):
    name = "yum"
    repo_dir = "/etc/yum.repos.d"

    def __init__(self, runner):
        self.runner = runner

    def configure(self, repositories, stage_dir):
        """Move the dead mirrors' repo files aside and write goldbox's repos."""
        changed = False
        for path in repositories.get("disable_repo_files", []):
            changed = self.runner.rename(path, path + ".goldbox-disabled") or changed
        for repo in repositories.get("yum_repos", []):
            lines = ["[%s]" % repo["id"], "name=%s" % repo["name"],
                     "baseurl=%s" % repo["baseurl"], "enabled=1",
                     "gpgcheck=%d" % (1 if repo.get("gpgcheck") else 0)]
            if repo.get("gpgkey"):
                lines.append("gpgkey=%s" % repo["gpgkey"])
            path = os.path.join(self.repo_dir, "goldbox-%s.repo" % repo["id"])
            changed = self.runner.write_file(path, "\n".join(lines) + "\n") or changed
        return changed

    def missing(self, packages):
        absent = []
        for package in packages:
            code, _ = self.runner.query(["rpm", "-q", package])
            if code != 0:
                absent.append(package)
        return absent

    def missing_groups(self, groups):
        if not groups:
            return []
        code, out = self.runner.query(["yum", "grouplist"])
        installed, section = [], False
        for line in out.splitlines():
            if line.startswith("Installed Groups"):
                section = True
            elif line and not line.startswith(" "):
                section = False
            elif section:
                installed.append(line.strip().lower())
        return [group for group in groups if group.lower() not in installed]

    def install(self, packages, groups=()):
        for group in groups:
            self.runner.run(["yum", "groupinstall", "-y", group])
        if packages:
            self.runner.run(["yum", "install", "-y"] + list(packages))

    def pending_updates(self):
        """(name, new version) of each installed package with an update: `yum
        check-update` exits 100 and lists them, 0 when there is none."""
        argv = ["yum", "-q", "check-update"]
        if self.runner.dry_run:
            self.runner.run(argv)
            return []
        code, output = self.runner.query(argv)
        if code not in (0, 100):
            raise StepFailed(quote(argv), code, output.splitlines()[-20:])
        found = re.findall(r"^(\S+)\.\w+\s+(\S+)\s+\S+\s*$", output, re.M) if code else []
        return sorted(set(found))

    def update(self):
        self.runner.run(["yum", "update", "-y"])

    def cached_files(self):
        """What `clean` would remove: yum's cache of packages and metadata."""
        found = []
        for folder, _, files in os.walk("/var/cache/yum"):
            found.extend(os.path.join(folder, name) for name in files)
        return found

    def clean(self):
        self.runner.run(["yum", "clean", "all"])


def _files_in(folders, skip=()):
    """The plain files directly in `folders` (missing folders hold none)."""
    found = []
    for folder in folders:
        names = os.listdir(folder) if os.path.isdir(folder) else []
        for name in sorted(names):
            path = os.path.join(folder, name)
            if name not in skip and os.path.isfile(path):
                found.append(path)
    return found


ADAPTERS = {"apt": Apt, "yum": Yum}

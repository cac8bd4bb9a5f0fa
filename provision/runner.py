"""Runs commands and writes files for the steps, or only prints them (--dry-run).

Every change goes through here, so a step can tell "changed" from "unchanged", a dry
run can list everything in order, and a failure carries its command, exit code and
the last lines of output."""

from __future__ import print_function

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

TAIL_LINES = 20


class StepFailed(Exception):
    """A command failed; carries what the report needs."""

    def __init__(self, command, code, tail):
        Exception.__init__(self, command)
        self.command = command
        self.code = code
        self.tail = tail


def quote(argv):
    out = []
    for arg in argv:
        if arg and all(c.isalnum() or c in "@%+=:,./-_" for c in arg):
            out.append(arg)
        else:
            out.append("'" + arg.replace("'", "'\"'\"'") + "'")
    return " ".join(out)


def sha256_of(path):
    digest = hashlib.sha256()
    handle = open(path, "rb")
    try:
        while True:
            block = handle.read(1 << 20)
            if not block:
                break
            digest.update(block)
    finally:
        handle.close()
    return digest.hexdigest()


def read_bytes(path):
    handle = open(path, "rb")
    try:
        return handle.read()
    finally:
        handle.close()


class Runner(object):
    """`dry_run`: print what would be run and written, on a fresh system, and do
    nothing; queries then report "absent" so every action is listed."""

    def __init__(self, dry_run=False, log_path=None, out=None):
        self.dry_run = dry_run
        self.out = out or sys.stdout
        self.log_path = log_path
        self.env = dict(os.environ)
        self.env["LC_ALL"] = "C"

    def say(self, text):
        self.out.write(text + "\n")
        self.out.flush()

    def _log(self, text):
        if self.log_path and not self.dry_run:
            handle = open(self.log_path, "a")
            try:
                handle.write(text)
            finally:
                handle.close()

    def run(self, argv, cwd=None, env=None):
        """Run a command that changes the system; fail the step if it fails."""
        shown = quote(argv)
        if cwd:
            shown = "cd " + quote([cwd]) + " && " + shown
        self.say("    $ " + shown)
        if self.dry_run:
            return ""
        try:
            code, output = self._execute(argv, cwd, env)
        except OSError:  # no such program or folder: report it like a failed command
            error = sys.exc_info()[1]
            raise StepFailed(shown, 127, [str(error)])  # noqa: B904 (Python 2 has no "from")
        if code != 0:
            raise StepFailed(shown, code, output.splitlines()[-TAIL_LINES:])
        return output

    def query(self, argv, cwd=None):
        """Run a read-only check: (exit code, output). In a dry run: (1, "")."""
        if self.dry_run:
            return 1, ""
        try:
            return self._execute(argv, cwd, None, log=False)
        except OSError:
            return 127, ""

    def _execute(self, argv, cwd, env, log=True):
        full_env = self.env
        if env:
            full_env = dict(self.env)
            full_env.update(env)
        if log:
            self._log("$ " + quote(argv) + "\n")
        child = subprocess.Popen(argv, cwd=cwd, env=full_env, stdin=open(os.devnull),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        output = child.communicate()[0]
        if not isinstance(output, str):
            output = output.decode("utf-8", "replace")
        if log:
            self._log(output)
        return child.returncode, output

    # ---- files -------------------------------------------------------------------

    def exists(self, path):
        return (not self.dry_run) and os.path.lexists(path)

    def write_file(self, path, content, mode=0o644):
        """Write `content` atomically (temp name + rename) unless the file already has
        it and `mode`; return True when something changed."""
        if not isinstance(content, bytes):
            content = content.encode("utf-8")
        if not self.dry_run and os.path.isfile(path) and read_bytes(path) == content:
            if (os.stat(path).st_mode & 0o7777) == mode:
                return False
            os.chmod(path, mode)
            self.say("    chmod %o %s" % (mode, path))
            return True
        self.say("    write %s (%d bytes, mode %o)" % (path, len(content), mode))
        if self.dry_run:
            return True
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            os.makedirs(directory)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
        try:
            os.write(fd, content)
            os.fsync(fd)
            os.close(fd)
            os.chmod(tmp, mode)
            os.rename(tmp, path)
        except Exception:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return True

    def copy_file(self, source, path, mode=0o644):
        if self.dry_run:
            self.say("    copy %s -> %s" % (source, path))
            return True
        return self.write_file(path, read_bytes(source), mode)

    def remove(self, path):
        """Remove a file, link or tree if present; True when something was removed."""
        if not self.exists(path):
            if self.dry_run:
                self.say("    remove %s" % path)
                return True
            return False
        self.say("    remove %s" % path)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
        return True

    def snapshot(self, path):
        """What `path` is now (a link, a file with its mode, or nothing), for `restore`."""
        if self.dry_run or not os.path.lexists(path):
            return None
        if os.path.islink(path):
            return ("link", os.readlink(path))
        if os.path.isfile(path):
            return ("file", read_bytes(path), os.stat(path).st_mode & 0o7777)
        raise ValueError("%s: cannot keep a copy of a folder to restore it" % path)

    def restore(self, path, saved):
        """Put `path` back as `snapshot` found it."""
        if saved is None:
            self.remove(path)
        elif saved[0] == "file":
            self.write_file(path, saved[1], saved[2])
        elif not os.path.islink(path) or os.readlink(path) != saved[1]:
            self.remove(path)
            self.say("    link %s -> %s" % (path, saved[1]))
            if not self.dry_run:
                os.symlink(saved[1], path)

    def rename(self, source, target):
        if not self.exists(source):
            if self.dry_run:
                self.say("    move %s -> %s" % (source, target))
                return True
            return False
        self.say("    move %s -> %s" % (source, target))
        os.rename(source, target)
        return True

    def makedirs(self, path, mode=0o755):
        if self.dry_run:
            self.say("    mkdir %s" % path)
            return True
        if os.path.isdir(path):
            return False
        self.say("    mkdir %s" % path)
        os.makedirs(path, mode)
        return True

"""3. python: the pinned CPython, from its native bundle or built from source."""

from __future__ import print_function

import os


def _python_version(ctx, binary):
    code, out = ctx.runner.query(
        [binary, "-c", "import platform; print(platform.python_version())"])
    return out.strip() if code == 0 else None


def run(ctx):
    spec = ctx.plan["python"]
    binary, version = spec["binary"], spec["version"]
    changed = False
    if _python_version(ctx, binary) != version:
        changed = True
        if spec.get("bundle"):
            bundle = ctx.staged(spec["bundle"]["file"])
            ctx.verify_sha256(bundle, spec["bundle"]["sha256"])
            ctx.runner.run(["tar", "--no-same-owner", "-xzf", bundle, "-C", "/"])
            how = "unpacked the native build"
        else:
            tarball = ctx.staged(spec["tarball"])
            ctx.verify_sha256(tarball, spec["sha256"])
            source_root = "/usr/local/src/goldbox-python"
            ctx.runner.remove(source_root)
            ctx.runner.makedirs(source_root)
            ctx.runner.run(["tar", "-xf", tarball, "-C", source_root])
            source = os.path.join(source_root, "Python-%s" % version)
            jobs = str(max(1, _cpu_count()))
            ctx.runner.run(["./configure"] + list(spec["configure_flags"]), cwd=source)
            ctx.runner.run(["make", "-j" + jobs], cwd=source)
            ctx.runner.run(["make", "altinstall"], cwd=source)
            how = "built from source"
        found = _python_version(ctx, binary)
        if not ctx.runner.dry_run and found != version:
            raise ValueError("%s reports %r after install, expected %s" % (binary, found, version))
    else:
        how = "already installed"
    if spec.get("pip_bootstrap"):
        code, _ = ctx.runner.query([binary, "-m", "pip", "--version"])
        if code != 0:
            tools = ["pip", "setuptools"]
            if ctx.plan["app"]["venv"] == "virtualenv":
                tools.append("virtualenv")
            wheel = ctx.staged(spec["pip_bootstrap"])
            ctx.runner.run([binary, os.path.join(wheel, "pip"), "install", "--no-index",
                            "--find-links", ctx.staged(ctx.plan["app"]["wheelhouse"])] + tools)
            changed = True
    return changed, "CPython %s %s" % (version, how)


def _cpu_count():
    try:
        import multiprocessing
        return multiprocessing.cpu_count()
    except (ImportError, NotImplementedError):
        return 1

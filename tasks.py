"""goldbox's command line: one small Invoke task per verb. The work lives in goldbox/.

Run `invoke --list` for the tasks and `invoke --help TASK` for a task's options.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from invoke import Exit, task

from goldbox.config import load_config
from goldbox.errors import GoldboxError

# The project is the folder holding this tasks.py: goldbox.toml, platforms/, app/, templates.
ROOT = Path(__file__).resolve().parent


def reports_errors(body):
    """Turn a GoldboxError into one line on stderr and exit status 1, without a traceback."""

    @functools.wraps(body)
    def wrapper(c, *args, **kwargs):
        try:
            return body(c, *args, **kwargs)
        except GoldboxError as exc:
            print(f"goldbox: error: {exc}", file=sys.stderr)
            raise Exit(code=1) from None

    return wrapper


@task(help={"platform": "platform name from platforms/ (default: box.default_platform)"})
@reports_errors
def render(c, platform=None):
    """Render a platform's templates into build/<platform>/.

    Writes the Packer template, the answer file (ISO platforms), the Vagrantfile,
    plan.json for provision/, and the nginx and uWSGI configs."""
    from goldbox.render import render_platform

    config = load_config(ROOT)
    rendered = render_platform(config, config.platform(platform))
    for path in rendered.files():
        print(path.relative_to(config.root))


@task
@reports_errors
def doctor(c):
    """Check this host's prerequisites, one line each; non-zero if one is missing.

    packer, vagrant + vagrant-libvirt, qemu, a reachable libvirt daemon, hardware
    acceleration (probed by booting a kernel; TCG otherwise), debootstrap, disk space."""
    from goldbox.doctor import format_checks, run_checks

    checks = run_checks(load_config(ROOT).cache_dir)
    print(format_checks(checks))
    failed = [check.name for check in checks if check.required and not check.ok]
    if failed:
        raise GoldboxError(f"doctor: missing prerequisites: {', '.join(failed)}")


@task(help={"args": "extra pytest arguments, e.g. \"-k render -x\""})
def test(c, args=""):
    """Lint (ruff, vermin for provision/) and run the whole test suite with pytest.

    Needs root: the suite builds real rootfs, disks and boxes, and boots VMs."""
    venv = Path(sys.executable).parent
    with c.cd(str(ROOT)):
        c.run(f"{venv}/ruff check .", echo=True)
        if (ROOT / "provision").is_dir():
            c.run(f"{venv}/vermin --no-tips --violations -t=2.6- -t=3.0- provision", echo=True)
        c.run(f"{venv}/pytest -rA --durations=15 {args}", echo=True, pty=False)

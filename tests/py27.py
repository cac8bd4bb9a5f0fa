"""A Python 2.7 interpreter for testing provision/, from Debian bullseye's .debs.

The .debs are downloaded with a private apt configuration (the host's apt state is
neither read nor changed), unpacked with `dpkg -x` into the goldbox cache, and run with
LD_LIBRARY_PATH/PYTHONHOME pointing into that folder. Nothing is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from goldbox import proc
from goldbox.artifacts import DEBIAN_MIRROR, private_apt
from goldbox.cache import locked

PACKAGES = ["python2.7", "python2.7-minimal", "libpython2.7-minimal", "libpython2.7-stdlib",
            "libssl1.1", "libffi7"]


def python27(cache_dir: Path) -> list[str]:
    """argv prefix that runs Python 2.7 (e.g. [..., "-m", "provision", ...])."""
    root = Path(cache_dir) / "python2.7-bullseye"
    with locked(root.with_suffix(".lock")):
        if not (root / "usr/bin/python2.7").is_file():
            _unpack(root)
    return ["env", f"LD_LIBRARY_PATH={root}/usr/lib/x86_64-linux-gnu",
            f"PYTHONHOME={root}/usr", f"{root}/usr/bin/python2.7"]


def _unpack(root: Path) -> None:
    with private_apt(f"deb {DEBIAN_MIRROR} bullseye main", "python2.7 debs") as (apt, options):
        proc.run(["apt-get", *options, "download", *PACKAGES], prefix="python2.7 debs",
                 cwd=apt / "download")
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        for deb in sorted((apt / "download").glob("*.deb")):
            subprocess.run(["dpkg", "-x", str(deb), str(partial)], check=True)
        os.rename(partial, root)

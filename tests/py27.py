"""A Python 2.7 interpreter for testing provision/, from Debian bullseye's .debs.

The .debs are downloaded with a private apt configuration (the host's apt state is
neither read nor changed), unpacked with `dpkg -x` into the goldbox cache, and run with
LD_LIBRARY_PATH/PYTHONHOME pointing into that folder. Nothing is installed."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from goldbox.artifacts import cache_lock

PACKAGES = ["python2.7", "python2.7-minimal", "libpython2.7-minimal", "libpython2.7-stdlib",
            "libssl1.1", "libffi7"]
MIRROR = "http://deb.debian.org/debian"


def python27(cache_dir: Path) -> list[str]:
    """argv prefix that runs Python 2.7 (e.g. [..., "-m", "provision", ...])."""
    root = Path(cache_dir) / "python2.7-bullseye"
    with cache_lock(root.with_suffix(".lock")):
        if not (root / "usr/bin/python2.7").is_file():
            _unpack(root)
    return ["env", f"LD_LIBRARY_PATH={root}/usr/lib/x86_64-linux-gnu",
            f"PYTHONHOME={root}/usr", f"{root}/usr/bin/python2.7"]


def _unpack(root: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="goldbox-py27-") as scratch:
        apt = Path(scratch)
        (apt / "sources.list").write_text(f"deb {MIRROR} bullseye main\n")
        for folder in ("sources.list.d", "lists/partial", "cache/archives/partial", "debs"):
            (apt / folder).mkdir(parents=True)
        options = ["-o", f"Dir::Etc::SourceList={apt / 'sources.list'}",
                   "-o", f"Dir::Etc::SourceParts={apt / 'sources.list.d'}",
                   "-o", f"Dir::State::Lists={apt / 'lists'}",
                   "-o", f"Dir::Cache={apt / 'cache'}",
                   "-o", "APT::Sandbox::User=root"]
        subprocess.run(["apt-get", *options, "-q", "update"], check=True, capture_output=True)
        subprocess.run(["apt-get", *options, "download", *PACKAGES], cwd=apt / "debs",
                       check=True, capture_output=True)
        partial = root.with_name(root.name + ".partial")
        subprocess.run(["rm", "-rf", str(partial)], check=True)
        for deb in sorted((apt / "debs").glob("*.deb")):
            subprocess.run(["dpkg", "-x", str(deb), str(partial)], check=True)
        os.rename(partial, root)

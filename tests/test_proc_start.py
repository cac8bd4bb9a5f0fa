"""proc.start, the long-running child (catalog-serve's nginx): when goldbox is killed in a
way it cannot answer (SIGKILL), the kernel ends its server too, through the parent-death
signal proc sets with setpriv (no preexec_fn beside threads). Real invoke, real nginx."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from goldbox.catalog import publish
from tests.boxes import make_box
from tests.catalog_fixtures import let_workers_in

DEADLINE_S = 60  # only so that a broken test ends; nothing asserts on time


def alive(pid: int) -> bool:
    """Running: a /proc entry that is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(predicate) -> bool:
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_killed_catalog_serve_takes_its_nginx_with_it(project_copy, tmp_path):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    publish(make_box(tmp_path / "dist", "0.1.0"), catalog, release=True,
            progress=lambda line: None)
    if os.geteuid() == 0:
        let_workers_in(catalog)
    invoke = Path(sys.executable).parent / "invoke"
    server = subprocess.Popen([str(invoke), "catalog-serve", "--catalog", str(catalog),
                               "--port", "0"], cwd=project_copy, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"},
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    nginx = None
    try:
        assert server.stdout.readline().startswith(f"serving {catalog} at http://127.0.0.1:")
        runtime = next((project_copy / "build" / "catalog-serve").iterdir())
        nginx = int((runtime / "nginx.pid").read_text())
        assert alive(nginx)
        server.send_signal(signal.SIGKILL)  # no finally of catalog-serve runs
        server.wait()
        assert wait_until(lambda: not alive(nginx)), f"nginx {nginx} outlived catalog-serve"
    finally:
        if nginx is not None and alive(nginx):  # the failure: leave no nginx running
            os.kill(nginx, signal.SIGKILL)
        if server.poll() is None:
            server.kill()
        server.wait()
        server.stdout.close()

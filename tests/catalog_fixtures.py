"""Helpers shared by the catalog tests: the real Vagrant CLI in a private VAGRANT_HOME,
and `invoke catalog-serve` (a real nginx) on a free port of 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


def vagrant(home: Path, *args: str, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Stock vagrant 2.3.4 with its own VAGRANT_HOME (nothing of the host's)."""
    full_env = {**os.environ, "VAGRANT_HOME": str(home), "VAGRANT_CHECKPOINT_DISABLE": "1",
                **(env or {})}
    for inherited in ("VAGRANT_CLOUD_TOKEN", "VAGRANT_SERVER_URL",
                      "VAGRANT_SERVER_ACCESS_TOKEN_BY_URL"):
        if inherited not in (env or {}):
            full_env.pop(inherited, None)
    home.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["vagrant", *args], cwd=home.parent, env=full_env,
                            capture_output=True, text=True, timeout=300, check=False)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def installed(home: Path) -> list[str]:
    return vagrant(home, "box", "list").stdout.strip().splitlines()


@contextlib.contextmanager
def serving(project: Path, catalog: Path, wrapper: tuple[str, ...] = ()) -> Iterator[str]:
    """`invoke catalog-serve` of `catalog` on a free port; yields its base URL. `wrapper`
    runs it inside something, e.g. `ip netns exec NAME` (the e2e's network namespace)."""
    invoke = Path(sys.executable).parent / "invoke"
    server = subprocess.Popen(
        [*wrapper, str(invoke), "catalog-serve", "--catalog", str(catalog), "--port", "0"],
        cwd=project, env={**os.environ, "PYTHONUNBUFFERED": "1"}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = server.stdout.readline()
        assert first.startswith(f"serving {catalog} at http://127.0.0.1:"), (
            first + server.stderr.read() if server.poll() is not None else first)
        yield first.split(" at ")[1].split()[0]
    finally:
        server.terminate()
        server.wait(timeout=30)
        server.stdout.close()
        server.stderr.close()

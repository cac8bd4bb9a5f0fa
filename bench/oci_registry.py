"""A real OCI registry for the team-cache tests and the bench: Debian's docker-registry
(the CNCF distribution registry) on 127.0.0.1, with htpasswd basic auth (bcrypt, from
apache2-utils' htpasswd) and TLS from a CA made here with openssl; its storage in a
folder of the caller's."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from bench.testca import make_test_ca

REGISTRY = "/usr/bin/docker-registry"
USER, PASSWORD = "builder", "s3cret-for-tests"


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    ca: Path
    storage: Path
    process: subprocess.Popen

    def url(self, repository: str) -> str:
        return f"oci://{self.host}/{repository}"

    def blob(self, sha256: str) -> Path:
        """Where the registry keeps the blob of `sha256` (to tamper with it)."""
        return (self.storage / "docker/registry/v2/blobs/sha256" / sha256[:2] / sha256
                / "data")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _config(folder: Path, port: int, pki: dict[str, Path], htpasswd: Path) -> Path:
    config = folder / "config.yml"
    config.write_text(f"""version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {folder / 'storage'}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  tls:
    certificate: {pki['cert']}
    key: {pki['key']}
auth:
  htpasswd:
    realm: goldbox-test
    path: {htpasswd}
""")
    return config


def _wait_until_up(host: str, ca: Path, process: subprocess.Popen, log: Path) -> None:
    """Until /v2/ answers 401 (up, asking for the password); the registry's own log if it
    exits instead."""
    for _ in range(300):
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry exited {process.returncode}: "
                               f"{log.read_text()[-2000:]}")
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"https://{host}/v2/", verify=str(ca), timeout=5).status_code == 401:
                return
        time.sleep(0.1)
    raise RuntimeError(f"docker-registry on {host} did not answer: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def running_registry(folder: Path) -> Iterator[Registry]:
    folder.mkdir(parents=True, exist_ok=True)
    pki = make_test_ca(folder / "pki")
    htpasswd = folder / "htpasswd"
    htpasswd.write_text(subprocess.run(["htpasswd", "-nbB", USER, PASSWORD], check=True,
                                       capture_output=True, text=True).stdout)
    port = free_port()
    log = folder / "registry.log"
    with open(log, "wb") as output:
        process = subprocess.Popen([REGISTRY, "serve", str(_config(folder, port, pki, htpasswd))],
                                   stdout=output, stderr=subprocess.STDOUT)
    registry = Registry(f"127.0.0.1:{port}", pki["ca"], folder / "storage", process)
    try:
        _wait_until_up(registry.host, registry.ca, process, log)
        yield registry
    finally:
        registry.stop()

"""A test CA and a server certificate for 127.0.0.1, made with openssl: for the tests
and the benchmarks that serve TLS on loopback (a catalog, an OCI registry)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_test_ca(pki: Path) -> dict[str, Path]:
    """A CA made here, and a server certificate it signed for 127.0.0.1 and localhost."""
    pki.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=goldbox test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=pki)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", "server.key", "-out", "server.csr", cwd=pki)
    (pki / "san.ext").write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem",
             cwd=pki)
    (pki / "server.key").chmod(0o600)
    return {"ca": pki / "ca.pem", "cert": pki / "server.pem", "key": pki / "server.key"}

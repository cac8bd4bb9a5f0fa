"""Signatures a team already knows how to manage: SSH keys.

A file is signed with `ssh-keygen -Y sign` under goldbox's own namespace (so a signature
made for git commits or anything else never counts here), and trusted through an
OpenSSH `allowed_signers` file: one line per maintainer key, so several maintainers and a
key rotation work the way they do for `git verify-commit`. The key is a private key file
or, given as its `.pub`, a key held by ssh-agent (ssh-keygen asks the agent then).

The signature of `<file>` lies beside it as `<file>.sig` (ssh-keygen's own convention)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from goldbox import proc
from goldbox.errors import GoldboxError

NAMESPACE = "goldbox-catalog@goldbox"
SUFFIX = ".sig"


def signature_path(path: Path) -> Path:
    return path.with_name(path.name + SUFFIX)


def sign(data: str, key: Path, label: str, namespace: str = NAMESPACE) -> str:
    """The armored SSH signature (`-----BEGIN SSH SIGNATURE-----`) of `data`, a JSON text,
    under `namespace` (each kind of signed thing has its own, so none stands for another)."""
    if not key.is_file():
        raise GoldboxError(f"{label}: signing key {key}: no such file (catalog.signing_key: "
                           f"a private key, or the .pub of a key in ssh-agent)")
    # From stdin to stdout: ssh-keygen writes nothing beside the data, so a signature
    # reaches the catalog only through goldbox's atomic writes.
    result = proc.capture(["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", namespace],
                          input=data, check=False)
    if result.returncode != 0 or "BEGIN SSH SIGNATURE" not in result.stdout:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise GoldboxError(f"{label}: cannot sign with {key}: {detail}")
    return result.stdout


def verify(data: str, signature: str | None, allowed_signers: Path, label: str,
           namespace: str = NAMESPACE) -> str:
    """The principal (from `allowed_signers`) whose key signed `data` under `namespace`
    (goldbox's catalog namespace by default), or one GoldboxError naming `label`: no
    signature, a signature by a key not in the file, or one that does not match the data."""
    if signature is None:
        raise GoldboxError(f"{label}: not signed (no {label}{SUFFIX}); a catalog that signs "
                           f"its files has one beside each")
    if not allowed_signers.is_file():
        raise GoldboxError(f"--signers {allowed_signers}: no such file (an OpenSSH "
                           f"allowed_signers file: `PRINCIPAL namespaces=\"{namespace}\" "
                           f"KEYTYPE KEY` per line)")
    with tempfile.TemporaryDirectory(prefix="goldbox-sig-") as scratch:
        sig_file = Path(scratch) / "signature"
        sig_file.write_text(signature)
        found = proc.capture(["ssh-keygen", "-Y", "find-principals", "-s", str(sig_file),
                              "-f", str(allowed_signers)], check=False)
        principals = found.stdout.split()
        if found.returncode != 0 or not principals:
            raise GoldboxError(f"{label}: signed by a key that {allowed_signers} does not "
                               f"list (a foreign or a removed maintainer's key)")
        for principal in principals:
            checked = proc.capture(
                ["ssh-keygen", "-Y", "verify", "-f", str(allowed_signers), "-I", principal,
                 "-n", namespace, "-s", str(sig_file)],
                input=data, check=False)
            if checked.returncode == 0:
                return principal
    raise GoldboxError(f"{label}: the signature does not match its content (changed after "
                       f"{', '.join(principals)} signed it)")

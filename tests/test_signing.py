"""SSH signatures with the real ssh-keygen: a key file and an ssh-agent key sign, an
allowed_signers file with two maintainers (a key rotation) trusts both, and a changed
text, a foreign key, a missing signature or another namespace's signature are refused."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from goldbox.errors import GoldboxError
from goldbox.signing import NAMESPACE, sign, verify

TEXT = '{"name": "goldbox-flask", "versions": []}\n'


def make_key(directory: Path, name: str) -> Path:
    key = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
                   check=True)
    return key


def allowed_signers(path: Path, *entries: tuple[str, Path]) -> Path:
    lines = [f'{principal} namespaces="{NAMESPACE}" {key.with_suffix(".pub").read_text()}'
             for principal, key in entries]
    path.write_text("".join(lines))
    return path


@pytest.fixture
def keys(tmp_path):
    return {name: make_key(tmp_path, name) for name in ("alice", "bob", "mallory")}


def test_each_maintainer_in_allowed_signers_verifies(keys, tmp_path):
    trusted = allowed_signers(tmp_path / "allowed", ("alice@team", keys["alice"]),
                              ("bob@team", keys["bob"]))
    assert verify(TEXT, sign(TEXT, keys["alice"], "m"), trusted, "m") == "alice@team"
    assert verify(TEXT, sign(TEXT, keys["bob"], "m"), trusted, "m") == "bob@team"


def test_changed_text_is_refused(keys, tmp_path):
    trusted = allowed_signers(tmp_path / "allowed", ("alice@team", keys["alice"]))
    signature = sign(TEXT, keys["alice"], "metadata.json")
    with pytest.raises(GoldboxError, match=r"^metadata.json: the signature does not match "
                                           r"its content \(changed after alice@team"):
        verify(TEXT.replace("[]", '[{"version": "6.6.6"}]'), signature, trusted,
               "metadata.json")


def test_foreign_or_removed_key_is_refused(keys, tmp_path):
    trusted = allowed_signers(tmp_path / "allowed", ("alice@team", keys["alice"]))
    with pytest.raises(GoldboxError, match="signed by a key that .* does not list"):
        verify(TEXT, sign(TEXT, keys["mallory"], "m"), trusted, "metadata.json")


def test_missing_signature_is_refused(keys, tmp_path):
    trusted = allowed_signers(tmp_path / "allowed", ("alice@team", keys["alice"]))
    with pytest.raises(GoldboxError, match=r"^metadata.json: not signed \(no metadata.json.sig"):
        verify(TEXT, None, trusted, "metadata.json")


def test_signature_of_another_namespace_does_not_count(keys, tmp_path):
    """A signature the same maintainer made for something else (here: git's namespace)."""
    (tmp_path / "data").write_text(TEXT)
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(keys["alice"]), "-n", "git",
                    str(tmp_path / "data")], check=True)
    trusted = tmp_path / "allowed"
    trusted.write_text(f"alice@team {keys['alice'].with_suffix('.pub').read_text()}")
    with pytest.raises(GoldboxError, match="does not match"):
        verify(TEXT, (tmp_path / "data.sig").read_text(), trusted, "m")


def test_a_key_held_by_ssh_agent_signs(keys, tmp_path, monkeypatch):
    agent = subprocess.run(["ssh-agent", "-s", "-a", str(tmp_path / "agent.sock")],
                           capture_output=True, text=True, check=True).stdout
    pid = int(agent.split("SSH_AGENT_PID=")[1].split(";")[0])
    try:
        monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "agent.sock"))
        subprocess.run(["ssh-add", "-q", str(keys["bob"])], check=True)
        public_only = tmp_path / "agent-key.pub"
        public_only.write_text(keys["bob"].with_suffix(".pub").read_text())
        trusted = allowed_signers(tmp_path / "allowed", ("bob@team", keys["bob"]))
        assert verify(TEXT, sign(TEXT, public_only, "m"), trusted, "m") == "bob@team"
    finally:
        os.kill(pid, 15)


def test_missing_key_and_signers_files_are_named(keys, tmp_path):
    with pytest.raises(GoldboxError, match=r"signing key .*/nope: no such file"):
        sign(TEXT, tmp_path / "nope", "m")
    with pytest.raises(GoldboxError, match=r"--signers .*/absent: no such file"):
        verify(TEXT, sign(TEXT, keys["alice"], "m"), tmp_path / "absent", "m")

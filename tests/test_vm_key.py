"""The SSH key `invoke up` makes for its VM (goldbox/vm.py vm_key), with the real
ssh-keygen: a new pair for a new VM, the same pair for a VM that exists, none for a VM
created without one, and a damaged pair named."""

from __future__ import annotations

import subprocess

import pytest

from goldbox.errors import GoldboxError
from goldbox.vm import VM_KEY_DIR, vm_key


def test_a_new_vm_gets_a_new_key_and_a_vm_that_exists_keeps_its_own(tmp_path):
    first = vm_key(tmp_path, fresh=True)
    assert first is not None and first.credential == "goldbox.ssh_key"
    assert first.public.startswith("ssh-ed25519 ") and first.public.endswith(" goldbox")
    assert (first.private.stat().st_mode & 0o777) == 0o600
    # The pair is a pair: the public key is the one the private key gives.
    derived = subprocess.run(["ssh-keygen", "-y", "-f", first.private], capture_output=True,
                             text=True, check=True).stdout.split()[:2]
    assert derived == first.public.split()[:2]
    assert vm_key(tmp_path, fresh=False) == first
    second = vm_key(tmp_path, fresh=True)
    assert second is not None and second.public != first.public
    # Nothing half-made is left beside the Vagrantfile's folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == [VM_KEY_DIR]


def test_a_vm_created_without_a_key_keeps_vagrant_s(tmp_path):
    assert vm_key(tmp_path, fresh=False) is None
    assert not (tmp_path / VM_KEY_DIR).exists()


def test_a_damaged_public_key_is_named_with_what_to_do(tmp_path):
    key = vm_key(tmp_path, fresh=True)
    assert key is not None
    public = key.private.with_name("id_ed25519.pub")
    public.write_text("ssh-rsa AAAA goldbox\n")
    with pytest.raises(GoldboxError, match="id_ed25519.pub: expected one `ssh-ed25519") as e:
        vm_key(tmp_path, fresh=False)
    assert "invoke destroy" in str(e.value)

"""Vagrant's insecure key pair, as shipped with the installed vagrant.

Boxes carry the public key so `vagrant up` can log in once and replace it."""

from __future__ import annotations

import glob
from pathlib import Path

from goldbox.errors import GoldboxError

SEARCH = [
    "/usr/share/rubygems-integration/all/gems/vagrant-*/keys",  # Debian's vagrant package
    "/opt/vagrant/embedded/gems/gems/vagrant-*/keys",  # HashiCorp's packages
    "/usr/share/vagrant/gems/gems/vagrant-*/keys",  # Fedora
]


def insecure_key_dir() -> Path:
    for pattern in SEARCH:
        found = sorted(glob.glob(pattern))
        if found:
            return Path(found[-1])
    raise GoldboxError("vagrant's insecure key pair (keys/vagrant) not found: install vagrant")


def insecure_private_key() -> Path:
    return insecure_key_dir() / "vagrant"


def insecure_public_key() -> str:
    return (insecure_key_dir() / "vagrant.pub").read_text().strip()

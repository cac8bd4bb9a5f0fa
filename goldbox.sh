#!/usr/bin/env bash
# goldbox's front door: installs what goldbox needs on a Debian 12 host (once, and again
# whenever this list or pyproject.toml changes), then runs `invoke ARGS` in the venv.
#   sudo ./goldbox.sh image up verify    # build, boot and verify the default platform
#   sudo ./goldbox.sh test               # lint + the whole test suite
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

APT_PACKAGES=(
  packer vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients dnsmasq-base
  qemu-system-x86 qemu-utils debootstrap grub-pc-bin e2fsprogs fdisk zstd xz-utils
  nginx iproute2 curl dpkg-dev python3-venv ca-certificates systemd-container
  gpgv gpg debian-archive-keyring
  docker-registry apache2-utils
  qemu-system-arm qemu-efi-aarch64 qemu-user-static binfmt-support dosfstools mtools
)

stamp=.venv/.goldbox-setup
want=$(printf '%s\n' "${APT_PACKAGES[@]}" | cat - pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "goldbox.sh: installing prerequisites (apt packages, .venv)" >&2
  if [[ $(id -u) -ne 0 ]]; then
    echo "goldbox.sh: error: run as root (sudo ./goldbox.sh ...): it installs apt packages" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${APT_PACKAGES[@]}"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  echo "$want" > "$stamp"
fi
exec .venv/bin/invoke "$@"

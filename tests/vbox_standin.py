"""QEMU standing in for VirtualBox (which cannot run here): a VirtualBox box unpacked and
its VMDK booted on the hardware its box.ovf describes, as VirtualBox would give it: the
disk on an AHCI (SATA) controller, the first NIC an Intel PRO/1000 (e1000) with the OVF's
MAC on user-mode networking (VirtualBox's NAT, the same 10.0.2.0/24), and guest port 22
forwarded to a port on 127.0.0.1 as Vagrant's NAT port forward does. Plain TCG, no
libvirt: no lock is needed, one boot at a time. Also the OVF checks Vagrant's
VirtualBox importer and VirtualBox's own OVF reader rely on."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import tarfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from goldbox.keys import insecure_private_key

OVF = "http://schemas.dmtf.org/ovf/envelope/1"
RASD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
VBOX = "http://www.virtualbox.org/ovf/machine"
NS = {"ovf": OVF, "rasd": RASD, "vssd": VSSD, "vbox": VBOX}
STREAM_OPTIMIZED = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
# CIM resource types (DSP0243) VirtualBox writes for these devices.
CPU, MEMORY, ETHERNET, SATA, DISK = "3", "4", "10", "20", "17"


@dataclass(frozen=True)
class Unpacked:
    folder: Path
    disk: Path
    mac: str  # as box.ovf and config.vm.base_mac write it: 12 hex digits
    ovf: ET.Element


def unpack_box(box: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(box) as tar:
        tar.extractall(dest, filter="data")
    return dest


def _one(root: ET.Element, path: str) -> ET.Element:
    found = root.findall(path, NS)
    assert len(found) == 1, f"box.ovf: expected one {path}, found {len(found)}"
    return found[0]


def _items(hardware: ET.Element, resource_type: str) -> list[ET.Element]:
    return [item for item in hardware.findall("ovf:Item", NS)
            if item.findtext("rasd:ResourceType", namespaces=NS) == resource_type]


def check_ovf(folder: Path) -> Unpacked:
    """box.ovf as Vagrant 2.3's VirtualBox provider and VirtualBox's OVF reader take it,
    with an assert for each field they rely on; returns the disk and the MAC it names."""
    root = ET.parse(folder / "box.ovf").getroot()
    assert root.tag == f"{{{OVF}}}Envelope" and root.get(f"{{{OVF}}}version") == "1.0"
    # OVF 1.0's envelope: References, then the sections, then one VirtualSystem.
    children = [child.tag.split("}")[1] for child in root]
    assert children == ["References", "DiskSection", "NetworkSection", "VirtualSystem"]
    file = _one(root, "ovf:References/ovf:File")
    disk_file = folder / file.get(f"{{{OVF}}}href")
    assert disk_file.parent == folder and disk_file.is_file()
    assert int(file.get(f"{{{OVF}}}size")) == disk_file.stat().st_size
    disk = _one(root, "ovf:DiskSection/ovf:Disk")
    assert disk.get(f"{{{OVF}}}fileRef") == file.get(f"{{{OVF}}}id")
    assert disk.get(f"{{{OVF}}}format") == STREAM_OPTIMIZED
    info = subprocess.run(["qemu-img", "info", "--output=json", str(disk_file)],
                          capture_output=True, text=True, check=True).stdout
    assert '"create-type": "streamOptimized"' in info
    assert f'"virtual-size": {int(disk.get(f"{{{OVF}}}capacity"))}' in info
    _one(root, "ovf:NetworkSection/ovf:Network[@ovf:name='NAT']")
    system = _one(root, "ovf:VirtualSystem")
    assert system.get(f"{{{OVF}}}id")  # VirtualBox's suggested VM name (`import -n`)
    assert _one(system, "ovf:OperatingSystemSection").get(f"{{{OVF}}}id") == "96"  # Debian_64
    hardware = _one(system, "ovf:VirtualHardwareSection")
    assert _one(hardware, "ovf:System/vssd:VirtualSystemType").text == "virtualbox-2.2"
    assert len(_items(hardware, CPU)) == 1 and len(_items(hardware, MEMORY)) == 1
    [sata] = _items(hardware, SATA)
    assert sata.findtext("rasd:ResourceSubType", namespaces=NS) == "AHCI"
    [hard_disk] = _items(hardware, DISK)
    assert hard_disk.findtext("rasd:Parent", namespaces=NS) == \
        sata.findtext("rasd:InstanceID", namespaces=NS)
    disk_id = disk.get(f"{{{OVF}}}diskId")
    assert hard_disk.findtext("rasd:HostResource", namespaces=NS) in (
        f"/disk/{disk_id}", f"ovf:/disk/{disk_id}")
    [nic] = _items(hardware, ETHERNET)
    assert nic.findtext("rasd:ResourceSubType", namespaces=NS) == "E1000"
    assert nic.findtext("rasd:Connection", namespaces=NS) == "NAT"
    machine = _one(system, "vbox:Machine")
    assert machine.get("OSType") == "Debian_64"
    # VirtualBox's own settings, in the envelope's default namespace as VirtualBox writes
    # them: what it imports when it reads vbox:Machine.
    adapter = _one(machine, "ovf:Hardware/ovf:Network/ovf:Adapter[@slot='0']")
    assert adapter.get("type") == "82540EM" and adapter.find("ovf:NAT", NS) is not None
    controller = _one(machine, "ovf:Hardware/ovf:StorageControllers/ovf:StorageController")
    assert controller.get("type") == "AHCI"
    image = _one(controller, "ovf:AttachedDevice[@type='HardDisk']/ovf:Image")
    assert image.get("uuid") == disk.get(f"{{{VBOX}}}uuid")
    mac = adapter.get("MACAddress")
    assert re.fullmatch(r"080027[0-9A-F]{6}", mac), mac
    return Unpacked(folder, disk_file, mac, root)


def base_mac(vagrantfile: Path) -> str | None:
    match = re.search(r"config\.vm\.base_mac = '([0-9A-Fa-f]{12})'", vagrantfile.read_text())
    return match.group(1) if match else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def booted_as_virtualbox(unpacked: Unpacked, work: Path) -> Iterator[tuple[int, int, Path]]:
    """The box's disk booted under qemu (TCG) on VirtualBox's hardware; yields the
    127.0.0.1 ports forwarded to the guest's 22 and 80 (as Vagrant's `forwarded_port`)
    and the serial console's log. The VMDK
    stays as it is: the guest writes to a qcow2 overlay, as VirtualBox imports a copy."""
    overlay = work / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "vmdk", "-b",
                    str(unpacked.disk), str(overlay)], check=True)
    port, http, console = _free_port(), _free_port(), work / "console.log"
    mac = ":".join(unpacked.mac[i:i + 2] for i in range(0, 12, 2)).lower()
    qemu = subprocess.Popen([
        "qemu-system-x86_64", "-machine", "pc,accel=tcg", "-cpu", "qemu64,+hypervisor,+lahf_lm",
        "-smp", "2", "-m", "1024", "-display", "none", "-monitor", "none",
        "-serial", f"file:{console}",
        "-device", "ahci,id=sata0",
        "-drive", f"if=none,id=disk0,format=qcow2,file={overlay}",
        "-device", "ide-hd,drive=disk0,bus=sata0.0",
        "-netdev", f"user,id=nat0,hostfwd=tcp:127.0.0.1:{port}-:22,"
                   f"hostfwd=tcp:127.0.0.1:{http}-:80",
        "-device", f"e1000,netdev=nat0,mac={mac}",
    ], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield port, http, console
    finally:
        qemu.kill()
        qemu.wait()


def private_key_copy(work: Path) -> Path:
    """Vagrant's insecure private key, 0600 (ssh refuses a key others can read)."""
    key = work / "vagrant.key"
    shutil.copyfile(insecure_private_key(), key)
    key.chmod(0o600)
    return key


def ssh(port: int, key: Path, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", "-i", str(key), "-p", str(port), "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
         "-o", "LogLevel=ERROR", "vagrant@127.0.0.1", command],
        capture_output=True, text=True, timeout=timeout, check=False)


def wait_for_ssh(port: int, key: Path, deadline_s: float) -> float | None:
    """Seconds until `true` runs over SSH as vagrant with the insecure key, or None."""
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        try:
            if ssh(port, key, "true", timeout=30).returncode == 0:
                return time.monotonic() - started
        except subprocess.TimeoutExpired:
            pass
        time.sleep(3)
    return None

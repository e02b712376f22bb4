"""Every file name corral uses, defined in one place.

State lives under one directory ($CORRAL_HOME); each instance has a directory that holds
everything about it, so any command finds a VM without a daemon.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from corral.errors import CorralError

# A unix socket path must fit in sockaddr_un.sun_path (108 bytes, NUL included).
MAX_SOCKET_PATH = 107
_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Home:
    """The state directory."""

    root: Path

    @property
    def blobs(self) -> Path:
        return self.root / "images" / "blobs" / "sha256"

    @property
    def parents(self) -> Path:
        """One small file per layered blob, naming the blob it is backed by."""
        return self.root / "images" / "parents"

    @property
    def pulls(self) -> Path:
        """Which blob a URL with a given expected checksum produced: makes re-pulls instant."""
        return self.root / "images" / "pulls"

    @property
    def manifests(self) -> Path:
        return self.root / "images" / "manifests"

    @property
    def image_tmp(self) -> Path:
        return self.root / "images" / "tmp"

    @property
    def instances(self) -> Path:
        return self.root / "instances"

    @property
    def ssh_key(self) -> Path:
        """corral's own key pair, always authorised in guests so exec and wait work."""
        return self.root / "ssh" / "id_ed25519"

    @property
    def ports_lock(self) -> Path:
        """Held while choosing host ports and creating instance directories."""
        return self.root / "locks" / "instances.lock"

    @property
    def port_claims(self) -> Path:
        """One file per host port a VM holds (running or not), naming the VM's directory."""
        return self.root / "ports"

    @property
    def networks(self) -> Path:
        """One directory per managed network (corral.net)."""
        return self.root / "networks"

    @property
    def networks_lock(self) -> Path:
        """Held while a network, its bridge, taps, dnsmasq or corral's nftables table change."""
        return self.root / "locks" / "networks.lock"

    def network(self, name: str) -> NetworkFiles:
        return NetworkFiles(self.networks / name)

    @property
    def package_cache(self) -> Path:
        return self.root / "cache"

    def blob(self, digest: str) -> Path:
        """A blob's path; a digest that is not 64 lower-case hex (a damaged or forged
        manifest's "../x") is refused here, where every blob path is made."""
        if not _DIGEST.fullmatch(digest):
            raise CorralError(f"invalid blob digest {digest[:80]!r}: expected 64 lower-case hex")
        return self.blobs / digest

    def manifest(self, name: str) -> Path:
        return self.manifests / f"{name}.json"

    def instance(self, name: str) -> InstanceFiles:
        return InstanceFiles(self.instances / name)


@dataclass(frozen=True)
class MachineFiles:
    """The files of one VM's directory that QEMU itself uses: sockets, logs, pid, seed.

    An instance directory and a build VM's run directory both hold these.
    """

    dir: Path

    @property
    def seed(self) -> Path:
        return self.dir / "seed.iso"

    @property
    def qmp(self) -> Path:
        return self.dir / "qmp.sock"

    @property
    def serial_socket(self) -> Path:
        return self.dir / "serial.sock"

    @property
    def serial_log(self) -> Path:
        return self.dir / "serial.log"

    @property
    def pidfile(self) -> Path:
        return self.dir / "qemu.pid"

    @property
    def qemu_stderr(self) -> Path:
        return self.dir / "qemu.stderr"

    @property
    def agent(self) -> Path:
        """The guest agent's channel: QEMU listens here, corral connects (qemu-ga's protocol)."""
        return self.dir / "agent.sock"

    @property
    def sockets(self) -> tuple[Path, Path, Path]:
        return self.qmp, self.serial_socket, self.agent


@dataclass(frozen=True)
class InstanceFiles(MachineFiles):
    """The files of one instance directory: its machine's, plus its record, lock and disks."""

    @property
    def record(self) -> Path:
        return self.dir / "instance.json"

    @property
    def lock(self) -> Path:
        return self.dir / "lock"

    @property
    def disk(self) -> Path:
        return self.dir / "disk.qcow2"

    def volume(self, index: int) -> Path:
        return self.dir / f"volume{index}.qcow2"

    @property
    def kernel(self) -> Path:
        return self.dir / "kernel"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd"


@dataclass(frozen=True)
class NetworkFiles:
    """The files of one managed network's directory: its record and its dnsmasq's files."""

    dir: Path

    @property
    def record(self) -> Path:
        return self.dir / "network.json"

    @property
    def dnsmasq_conf(self) -> Path:
        return self.dir / "dnsmasq.conf"

    @property
    def dhcp_hosts(self) -> Path:
        """dnsmasq's --dhcp-hostsfile: one `mac,ip,hostname` reservation a line."""
        return self.dir / "dhcp-hosts"

    @property
    def dns_hosts(self) -> Path:
        """dnsmasq's --addn-hosts: the reserved names, answered before any lease exists."""
        return self.dir / "dns-hosts"

    @property
    def leases(self) -> Path:
        return self.dir / "leases"

    @property
    def pidfile(self) -> Path:
        """Written by dnsmasq itself."""
        return self.dir / "dnsmasq.pid"

    @property
    def dnsmasq_log(self) -> Path:
        return self.dir / "dnsmasq.log"

    @property
    def dnsmasq_record(self) -> Path:
        """dnsmasq's pid and start time, as corral saw them once it had started."""
        return self.dir / "dnsmasq.json"

    @property
    def attachments(self) -> Path:
        """One record per VM (owner) with a tap on this network."""
        return self.dir / "attached"

    def attachment(self, owner: str) -> Path:
        return self.attachments / f"{owner}.json"

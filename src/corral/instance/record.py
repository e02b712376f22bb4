"""instance.json: what corral recorded about one instance (spec, identity, ports, state)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from corral.errors import InvalidInput
from corral.image.manifest import now
from corral.machine.spec import Forward, TapNic
from corral.records import Record

State = Literal["creating", "starting", "running", "paused", "stopping", "stopped", "crashed"]
STATES: tuple[State, ...] = (
    "creating",
    "starting",
    "running",
    "paused",
    "stopping",
    "stopped",
    "crashed",
)

_HOSTNAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def check_instance_name(name: str) -> str:
    """Instance names are hostnames: lowercase letters, digits and inner hyphens, at most 63."""
    if not _HOSTNAME_RE.fullmatch(name):  # `$` would let a final newline through
        raise InvalidInput(
            f"invalid instance name {name!r}: not a valid hostname "
            "(lowercase letters, digits and inner hyphens, at most 63 characters)"
        )
    return name


@dataclass(frozen=True, kw_only=True)
class ForwardRecord(Record):
    host_port: int
    guest_port: int
    protocol: str = "tcp"
    host_addr: str = "127.0.0.1"

    @classmethod
    def of(cls, fwd: Forward) -> ForwardRecord:
        return cls(
            host_port=fwd.host_port,
            guest_port=fwd.guest_port,
            protocol=fwd.protocol,
            host_addr=fwd.host_addr,
        )

    def to_forward(self) -> Forward:
        return Forward(self.host_port, self.guest_port, self.protocol, self.host_addr)


@dataclass(frozen=True, kw_only=True)
class BootRecord(Record):
    kernel: str
    initrd: str | None = None
    cmdline: str = ""


@dataclass(frozen=True, kw_only=True)
class NicRecord(Record):
    """A NIC on a host tap (the tap exists before the VM starts and outlives it)."""

    tap: str
    mac: str
    mtu: int | None = None

    @classmethod
    def of(cls, nic: TapNic) -> NicRecord:
        return cls(tap=nic.tap, mac=nic.mac, mtu=nic.mtu)

    def to_nic(self) -> TapNic:
        return TapNic(self.tap, self.mac, self.mtu)  # checked again: the file may be edited


@dataclass(frozen=True, kw_only=True)
class NetworkNicRecord(Record):
    """A NIC on a managed network, as attached at launch: its tap (made by corral.net on the
    network's bridge, kept while the VM exists), MAC and reserved address."""

    network: str
    tap: str
    mac: str
    ipv4: str
    prefix: int
    mtu: int | None = None

    def to_nic(self) -> TapNic:
        return TapNic(self.tap, self.mac, self.mtu)  # checked again: the file may be edited


@dataclass(frozen=True, kw_only=True)
class InstanceRecord(Record):
    """One instance. Saved atomically; the live state is derived from it plus the process."""

    name: str
    instance_id: str
    image: str
    image_digest: str
    image_format: str
    cpus: int
    memory_mib: int
    disk_size: int
    volumes: tuple[int, ...] = ()
    ssh_user: str
    ssh_port: int
    forwards: tuple[ForwardRecord, ...] = ()
    nics: tuple[NicRecord, ...] = ()  # none: one user-mode NIC (the ssh port and forwards)
    # NICs on managed networks, in launch order (before `nics` in the VM); with any, no
    # user-mode NIC and no ssh forward (ssh_port 0): it is reached at `address`.
    networks: tuple[NetworkNicRecord, ...] = ()
    published: tuple[ForwardRecord, ...] = ()  # ports published to networks[0]'s address
    boot: BootRecord | None = None
    seed: bool = True
    state: State = "creating"
    reason: str | None = None
    launcher_pid: int | None = None  # the process creating or starting the instance
    launcher_start: int | None = None
    # A throwaway instance (`image warm`'s template): the process it lives for. Once that is
    # gone (killed outright), the next command that looks removes the instance.
    owner_pid: int | None = None
    owner_start: int | None = None
    created_at: datetime = field(default_factory=now)
    started_at: datetime | None = None
    # A guest agent channel (org.qemu.guest_agent.0): every instance launched since warm
    # images exist has one, so that its saved state restores with it.
    agent: bool = False
    warm: bool = False  # this run began by restoring a warm image's state (not a boot)

    @property
    def address(self) -> str | None:
        """Where the VM is reached without a forward: its first managed network's address."""
        return self.networks[0].ipv4 if self.networks else None

    @property
    def diskless(self) -> bool:
        """Booted from its kernel and initramfs alone, with no root disk (and no image)."""
        return not self.image_digest

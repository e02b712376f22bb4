"""The typed description of one QEMU machine, from which the argv is built."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from corral.errors import InvalidInput

_FORWARD_RE = re.compile(
    r"^(?:(?P<addr>[0-9.]+):)?(?P<host>\d+):(?P<guest>\d+)(?:/(?P<proto>tcp|udp))?$"
)


@dataclass(frozen=True)
class Forward:
    """A host port forwarded into the guest through user-mode networking."""

    host_port: int
    guest_port: int
    protocol: str = "tcp"
    host_addr: str = "127.0.0.1"

    def __str__(self) -> str:
        return f"{self.host_addr}:{self.host_port}->{self.guest_port}/{self.protocol}"


def parse_forward(text: str) -> Forward:
    """Parse '[ADDR:]HOSTPORT:GUESTPORT[/tcp|udp]'; the address defaults to 127.0.0.1."""
    match = _FORWARD_RE.match(text.strip())
    if not match:
        raise InvalidInput(
            f"invalid forward {text!r}: expected [ADDR:]HOSTPORT:GUESTPORT[/tcp|udp], e.g. 8080:80"
        )
    host, guest = int(match["host"]), int(match["guest"])
    for port in (host, guest):
        if not 1 <= port <= 65535:
            raise InvalidInput(f"invalid forward {text!r}: port {port} is out of range")
    addr = match["addr"] or "127.0.0.1"
    try:
        ipaddress.IPv4Address(addr)
    except ValueError:
        raise InvalidInput(f"invalid forward {text!r}: {addr!r} is not an IPv4 address") from None
    return Forward(host, guest, match["proto"] or "tcp", addr)


@dataclass(frozen=True)
class Drive:
    id: str
    path: Path
    format: str
    readonly: bool = False
    node_name: str | None = None  # for QMP commands that address the image node
    serial: str | None = None  # what the guest reads from /sys/block/vdX/serial (<= 20 chars)


@dataclass(frozen=True)
class DirectBoot:
    kernel: Path
    initrd: Path | None
    cmdline: str


_TAP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


@dataclass(frozen=True)
class TapNic:
    """A NIC on an existing host TAP device: one corral made on a managed network's bridge,
    or one the caller made (qarax's `networks[].tap`). QEMU opens it; it never runs a script."""

    tap: str  # the host interface name (IFNAMSIZ: at most 15 characters)
    mac: str  # lower-case, colon-separated
    mtu: int | None = None  # what the guest is told (virtio host_mtu); None: the default

    def __post_init__(self) -> None:
        if not _TAP_RE.fullmatch(self.tap):
            raise InvalidInput(f"invalid tap device name {self.tap!r}")
        if not _MAC_RE.fullmatch(self.mac):
            raise InvalidInput(f"invalid MAC address {self.mac!r}: expected e.g. 52:54:00:12:34:56")
        if self.mtu is not None and not 68 <= self.mtu <= 65535:
            raise InvalidInput(f"invalid MTU {self.mtu}: expected 68-65535")


@dataclass(frozen=True)
class MachineSpec:
    """Everything that decides the QEMU command line of one VM."""

    name: str
    cpus: int
    memory_mib: int
    accelerator: str  # kvm | tcg
    drives: tuple[Drive, ...]  # root disk first, then volumes, then the seed
    forwards: tuple[Forward, ...]  # the ssh forward first
    qmp_socket: Path
    serial_socket: Path
    serial_log: Path
    pidfile: Path
    boot: DirectBoot | None = None
    # Builds: the first NIC reaches only the forwards (no outside world); a second NIC, link
    # down until QMP set_link raises it, gives a step the network it asks for.
    isolated: bool = False
    # NICs on host taps, in order. A machine with taps has no user-mode NIC, so no forwards:
    # it is reached at its address on the network.
    nics: tuple[TapNic, ...] = ()
    # A virtio-serial port named org.qemu.guest_agent.0 on this unix socket (QEMU listens):
    # how a restored guest is made into its new instance without waiting for SSH.
    agent_socket: Path | None = None
    # Start waiting for a saved state (`-incoming defer`) instead of booting: warm starts.
    incoming: bool = False
    extra_args: tuple[str, ...] = field(default=())

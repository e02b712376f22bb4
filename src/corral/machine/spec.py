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
    extra_args: tuple[str, ...] = field(default=())

"""Host ports for forwards: free on 127.0.0.1 and not claimed by another VM of this host.

Every VM that forwards host ports, an instance (running or stopped: it keeps its ports) or a
build VM, claims them in one host-wide registry (`PortClaims`). Callers hold the host-wide
ports lock (Home.ports_lock) while choosing, claiming and starting QEMU, so two VMs (from one
process or many) never pick the same port.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterable
from pathlib import Path

from corral.errors import Conflict
from corral.layout import Home


def port_free(port: int, addr: str = "127.0.0.1", protocol: str = "tcp") -> bool:
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((addr, port))
        except OSError:
            return False
    return True


def wait_port_free(
    port: int, addr: str = "127.0.0.1", protocol: str = "tcp", timeout: float = 3.0
) -> bool:
    """Like port_free, but give a process that has just died a moment to let go of it."""
    end = time.monotonic() + timeout
    while not port_free(port, addr, protocol):
        if time.monotonic() >= end:
            return False
        time.sleep(0.05)
    return True


def pick_ports(
    port_range: tuple[int, int], reserved: Iterable[int], count: int, *, start: int | None = None
) -> list[int]:
    """Pick `count` ports from the range that are neither reserved nor bound right now."""
    low, high = port_range
    taken = set(reserved)
    size = high - low + 1
    offset = random.randrange(size) if start is None else (start - low) % size
    picked: list[int] = []
    for i in range(size):
        port = low + (offset + i) % size
        if port in taken or not port_free(port):
            continue
        picked.append(port)
        if len(picked) == count:
            return picked
    raise Conflict(
        f"no free port left in {low}-{high}",
        hint="remove unused instances or widen port_range in the config",
    )


class PortClaims:
    """The registry: one file per claimed port, naming the directory of the VM that holds it.

    A claim counts while its holder's directory exists: a VM frees its ports by being removed
    (whatever removed it: `rm`, a killed launch cleaned up, a build run directory swept), and
    its claims are dropped when next read. Read and change it only under Home.ports_lock.
    """

    def __init__(self, home: Home) -> None:
        self.dir = home.port_claims

    def held(self) -> dict[int, Path]:
        """Port -> holder, for every claim that still counts."""
        if not self.dir.is_dir():
            return {}
        held = {}
        for claim in self.dir.iterdir():
            try:
                holder = Path(claim.read_text())
            except (OSError, UnicodeDecodeError):
                continue
            if claim.name.isdigit() and holder.is_absolute() and holder.is_dir():
                held[int(claim.name)] = holder
            else:
                claim.unlink(missing_ok=True)
        return held

    def claim(self, holder: Path, ports: Iterable[int]) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for port in ports:
            (self.dir / str(port)).write_text(str(holder.absolute()))

    def pick(self, holder: Path, port_range: tuple[int, int], count: int = 1) -> list[int]:
        """Choose `count` free, unclaimed ports and claim them for holder."""
        ports = pick_ports(port_range, self.held(), count)
        self.claim(holder, ports)
        return ports

"""Choosing host ports for forwards: free on 127.0.0.1 and not reserved by another instance.

Callers hold the host-wide instances lock while choosing and recording, so two launches (from
one process or many) never pick the same port.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterable

from corral.errors import Conflict


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

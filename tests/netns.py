"""A network namespace per test: made with `ip netns add`, entered by the test's own thread
(setns), so everything the test starts from then on — the control plane's worker threads, node
agents, QEMU — lives in it; removed afterwards. The host's interfaces are never touched."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


class Netns:
    def __init__(self, name: str) -> None:
        self.name = name

    def ip(self, *args: str) -> str:
        """`ip` inside the namespace (tests may read its output; corral does not)."""
        argv = ["ip", "netns", "exec", self.name, "ip", *args]
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

    def link(self, name: str) -> dict[str, Any]:
        (link,) = json.loads(self.ip("-j", "-d", "link", "show", "dev", name))
        return link

    def bridge_with_tap(self, bridge: str, tap: str) -> None:
        self.ip("link", "add", bridge, "type", "bridge")
        self.ip("tuntap", "add", "dev", tap, "mode", "tap")
        self.ip("link", "set", tap, "master", bridge, "up")
        self.ip("link", "set", bridge, "up")


@contextmanager
def entered_netns() -> Iterator[Netns]:
    """A fresh namespace (loopback up), entered by the calling thread until the end."""
    name = f"corral-t{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    ns = Netns(name)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        ns.ip("link", "set", "lo", "up")
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield ns
        finally:
            _setns(home)
    finally:
        os.close(home)
        subprocess.run(["ip", "netns", "del", name], check=True)

"""A network namespace a test makes and removes: bridges, taps, dnsmasq and guest traffic stay
inside it, so the host's own interfaces, routes and firewall are never touched.

`Netns.argv` runs a program in it (`ip netns exec`); `Netns.call` runs Python in it, in a
thread of its own that has entered the namespace (setns is per thread), so an asyncio
client such as corral's SSH reaches the guests' addresses. Everything started through
`Netns.spawn` is killed before the namespace goes.
"""

from __future__ import annotations

import secrets
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pyroute2 import NetNS, netns

T = TypeVar("T")


@dataclass
class Netns:
    name: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def ipr(self) -> NetNS:
        """A pyroute2 (netlink) handle on the namespace; use it as a context manager."""
        return NetNS(self.name)

    def argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*argv), capture_output=True, text=True, timeout=timeout)

    def spawn(self, *argv: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(self.argv(*argv), **kwargs)
        self.procs.append(proc)
        return proc

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) in a fresh thread that has entered the namespace; its result or error."""
        out: list[Any] = []

        def inside() -> None:
            try:
                netns.setns(self.name, flags=0)  # flags=0: never create it
                out.append((True, fn(*args)))
            except BaseException as exc:
                out.append((False, exc))

        thread = threading.Thread(target=inside, name=f"netns-{self.name}")
        thread.start()
        thread.join()
        ok, value = out[0]
        if not ok:
            raise value
        return value


@contextmanager
def network_namespace(prefix: str = "ct") -> Iterator[Netns]:
    """A fresh namespace with its loopback up; removed, with what ran in it, at the end."""
    ns = Netns(f"{prefix}{secrets.token_hex(4)}")
    netns.create(ns.name)
    try:
        with ns.ipr() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        yield ns
    finally:
        for proc in ns.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        netns.remove(ns.name)


def bridge_with_taps(ns: Netns, bridge: str, addresses: Sequence[str], taps: Sequence[str]) -> None:
    """A bridge with `addresses` (CIDR) and the given taps on it, all up, made with netlink."""
    with ns.ipr() as ipr:
        ipr.link("add", ifname=bridge, kind="bridge")
        (index,) = ipr.link_lookup(ifname=bridge)
        for address in addresses:
            host, _, prefix = address.partition("/")
            ipr.addr("add", index=index, address=host, prefixlen=int(prefix))
        ipr.link("set", index=index, state="up")
        for tap in taps:
            ipr.link("add", ifname=tap, kind="tuntap", mode="tap")
            (tap_index,) = ipr.link_lookup(ifname=tap)
            ipr.link("set", index=tap_index, master=index, state="up")

"""Network namespaces for tests that make bridges, taps, dnsmasq or nftables rules.

Every such test runs inside a namespace made for it and removed after it, so the host's own
interfaces, routes and firewall are never touched and no traffic leaves it:

    def test_x(netns, home):
        netns.corral(home, "network", "create", "n1")        # the CLI, via `ip netns exec`
        netns.run(["ip", "-br", "link"])                      # any command in the namespace
        netns.call(some_function, arg)                        # Python, in a worker inside it

`netns.call` runs a picklable function in one long-lived worker process that has `setns`ed
into the namespace (forked from the test, so it sees the test's imports); its result or
exception comes back. `netns.call_in_thread` runs any callable (e.g. `asyncio.run` of a
coroutine using corral's SSH) in a fresh thread of this process that has entered the
namespace (setns is per thread). `network_namespace()` is the same as a context manager, and
`bridge_with_taps` builds a hand-made LAN in it with netlink. `entered_netns()` moves the
calling thread itself into a fresh namespace for the block (so the control plane's threads,
node agents and QEMU that a test starts live there). `netns.child()` makes a second
namespace, e.g. to stand in for a VM at the end of a veth pair. On teardown every process
left in the namespaces (a dnsmasq, a server) is killed and the namespaces are deleted. Names
are random, so tests run in parallel under pytest-xdist.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import json
import multiprocessing
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pyroute2 import NetNS

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")


def _enter(path: str) -> None:
    """Worker initialiser: move this process into the namespace at `path`."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns failed")
    finally:
        os.close(fd)


class Netns:
    """One network namespace (`ip netns add`), its loopback up."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = NETNS_DIR / name
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._children: list[Netns] = []
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        self.run(["ip", "link", "set", "lo", "up"])

    def argv(self, argv: Sequence[str] = ()) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def ip(self, *args: str) -> str:
        """`ip` inside the namespace (tests may read its output; corral does not)."""
        return self.run(["ip", *args]).stdout

    def link(self, name: str) -> dict[str, Any]:
        (link,) = json.loads(self.ip("-j", "-d", "link", "show", "dev", name))
        return link  # type: ignore[no-any-return]  # ip's JSON

    def bridge_with_tap(self, bridge: str, tap: str) -> None:
        self.ip("link", "add", bridge, "type", "bridge")
        self.ip("tuntap", "add", "dev", tap, "mode", "tap")
        self.ip("link", "set", tap, "master", bridge, "up")
        self.ip("link", "set", bridge, "up")

    def ipr(self) -> NetNS:
        """A pyroute2 (netlink) handle on the namespace; use it as a context manager."""
        return NetNS(self.name)

    def run(
        self, argv: list[str], *, check: bool = True, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the namespace; text output captured."""
        kwargs.setdefault("timeout", 60)
        proc = subprocess.run(self.argv(argv), capture_output=True, text=True, check=False,
                              **kwargs)  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(f"{argv} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a command in the namespace; killed (with all else in it) on close."""
        return subprocess.Popen(self.argv(argv), **kwargs)

    def spawn(self, *argv: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        return self.popen(list(argv), **kwargs)

    def corral(
        self,
        home: Path,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 120,
        prefix: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess[str]:
        """The corral CLI in the namespace on state directory `home` (prefix: e.g. setpriv)."""
        full_env = {**os.environ, "CORRAL_HOME": str(home), "CORRAL_CONFIG": "/nonexistent",
                    **(env or {})}  # fmt: skip
        full_env.pop("CORRAL_DEBUG", None)
        argv = [*prefix, sys.executable, "-m", "corral.cli.app", *args]
        return subprocess.run(self.argv(argv), capture_output=True, text=True, env=full_env,
                              timeout=timeout, check=False)  # fmt: skip

    def corral_popen(self, home: Path, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "CORRAL_HOME": str(home), "CORRAL_CONFIG": "/nonexistent"}
        argv = [sys.executable, "-m", "corral.cli.app", *args]
        return subprocess.Popen(self.argv(argv), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run fn(*args, **kwargs) in a worker process inside the namespace."""
        if self._pool is None:
            ctx = multiprocessing.get_context("fork")
            self._pool = concurrent.futures.ProcessPoolExecutor(
                1, mp_context=ctx, initializer=_enter, initargs=(str(self.path),)
            )
        return self._pool.submit(fn, *args, **kwargs).result(timeout=120)

    def call_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) in a fresh thread of this process that has entered the namespace."""
        out: list[tuple[bool, Any]] = []

        def inside() -> None:
            try:
                _enter(str(self.path))
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

    def child(self) -> Netns:
        """Another namespace, removed with this one (e.g. a stand-in VM behind a veth)."""
        ns = Netns(f"{self.name[:20]}c{len(self._children)}")
        self._children.append(ns)
        return ns

    def pids(self) -> list[int]:
        """Processes whose network namespace is this one."""
        try:
            target = self.path.stat()
        except OSError:
            return []
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                st = (entry / "ns" / "net").stat()
                if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                    out.append(int(entry.name))
        return out

    def close(self) -> None:
        for child in self._children:
            child.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        deadline = time.monotonic() + 5
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True)


@contextlib.contextmanager
def network_namespace(prefix: str = "ct") -> Iterator[Netns]:
    """A fresh namespace with its loopback up; removed, with what ran in it, at the end."""
    ns = Netns(f"{prefix}{secrets.token_hex(4)}")
    try:
        yield ns
    finally:
        ns.close()


@contextlib.contextmanager
def entered_netns(prefix: str = "corral-t") -> Iterator[Netns]:
    """A fresh namespace (loopback up), entered by the calling thread until the block ends."""
    with network_namespace(prefix) as ns:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _enter(str(ns.path))
            try:
                yield ns
            finally:
                _enter(f"/proc/self/fd/{home}")
        finally:
            os.close(home)


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

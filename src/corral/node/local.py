"""LocalNode: the node protocol in-process, on top of the core library's instance manager.

Used by the node agent (`corral node`, see app.py) and by an embedded control plane that is its
own node. The core library is synchronous and runs its own event loops, so every call into it
goes to a worker thread; nothing here blocks the caller's event loop.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import functools
import hashlib
import os
import platform
import shutil
import socket
import termios
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

from corral import confine
from corral.context import Context
from corral.errors import Conflict, InvalidInput, NotFound
from corral.image_refs import resolve_image
from corral.instance import lifecycle
from corral.instance.endpoint import check_port, vm_endpoint
from corral.instance.launch import launch
from corral.instance.options import LaunchRequest, NetworkNic, PublicKey
from corral.instance.record import check_instance_name
from corral.instance.view import instance_view
from corral.machine import console
from corral.net import manage as networks
from corral.net.caps import NeedsNetAdmin
from corral.node.protocol import (
    MAX_CONSOLE_INPUT,
    Capacity,
    NodeImage,
    NodeNetwork,
    NodeNetworkSpec,
    NodeNetworkVm,
    NodeVm,
    NodeVmSpec,
    Tunnel,
)
from corral.node.taps import network_config, tap_nics
from corral.node.tunnel import TcpTunnel
from corral.storage_roots import open_under
from corral.version import __version__

CONSOLE_TIMEOUT = 5.0  # seconds to connect to and write to a serial console socket


def _write_socket(path: Path, data: bytes) -> None:
    """Send `data` and stay connected until QEMU has read all of it: it drops what is unread
    when its client goes, and reads only as fast as the guest's UART takes bytes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(CONSOLE_TIMEOUT)
        sock.connect(str(path))
        sock.sendall(data)
        deadline = time.monotonic() + CONSOLE_TIMEOUT
        unread = array.array("i", [1])
        while time.monotonic() < deadline:
            fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, unread)  # SIOCOUTQ: not yet read
            if unread[0] == 0:
                return
            time.sleep(0.005)


class LocalNode:
    """This host as a node: VMs of `ctx`'s state directory, driven through the core library."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._locks_guard = threading.Lock()
        self._import_locks: dict[str, threading.Lock] = {}
        self._console_lock = threading.Lock()  # one console write at a time (QEMU: one client)

    # --- host -----------------------------------------------------------------------------

    async def health(self) -> dict[str, str]:
        # Unauthenticated on the wire: say that the agent answers, and little else.
        return {"status": "ok", "version": __version__}

    async def capacity(self) -> Capacity:
        return await asyncio.to_thread(self._capacity)

    def _capacity(self) -> Capacity:
        host = self.ctx.host  # probed once per context (cached per host on disk)
        return Capacity(
            cpus=os.cpu_count() or 1,
            memory_mib=_mem_total_mib(),
            disk_bytes=_free_bytes(self.ctx.home.root),
            arch=platform.machine(),
            accelerator=host.accelerator,
            versions={
                "corral": __version__,
                "qemu": host.qemu.version,
                "qemu-img": host.qemu_img.version,
            },
        )

    # --- images ---------------------------------------------------------------------------

    async def list_images(self) -> list[NodeImage]:
        return await asyncio.to_thread(self._images)

    def _images(self) -> list[NodeImage]:
        return [
            NodeImage(
                name=m.name,
                digest=m.digest,
                format=m.format,
                virtual_size=m.virtual_size,
                file_size=m.file_size,
                kernel=m.kernel is not None,
                default_user=m.default_user,
                warm=m.warm is not None,
                warm_cpus=m.warm.requirements.cpus if m.warm else None,
                warm_memory_mib=m.warm.requirements.memory_mib if m.warm else None,
                created_at=m.created_at,
                last_used_at=m.last_used_at,
            )
            for m in self.ctx.store.list()
        ]

    # --- VMs ------------------------------------------------------------------------------

    async def list_vms(self) -> list[NodeVm]:
        return await asyncio.to_thread(self._list)

    def _list(self) -> list[NodeVm]:
        home = self.ctx.home
        return [
            NodeVm.model_validate(instance_view(home, record, seen))
            for record, seen in lifecycle.list_instances(self.ctx)
        ]

    async def get_vm(self, name: str) -> NodeVm:
        return await asyncio.to_thread(self._view, name)

    def _view(self, name: str) -> NodeVm:
        record, seen = lifecycle.status(self.ctx, name)
        return NodeVm.model_validate(instance_view(self.ctx.home, record, seen))

    async def create_vm(self, spec: NodeVmSpec) -> NodeVm:
        return await asyncio.to_thread(self._create, spec)

    def _create(self, spec: NodeVmSpec) -> NodeVm:
        # Cheap checks first: a bad name must not cost the import of a large base disk.
        check_instance_name(spec.name)
        if spec.image is not None and spec.base_disk is not None:
            raise InvalidInput("give image or base_disk, not both")
        if spec.image is None and spec.base_disk is None and spec.kernel is None:
            raise InvalidInput("give image, base_disk or a kernel (a diskless VM)")
        keys = [PublicKey(line, what=f"ssh_keys[{i}]") for i, line in enumerate(spec.ssh_keys)]
        if spec.disk_size is not None and spec.disk_size <= 0:
            raise InvalidInput(
                f"disk_size must be a positive number of bytes, not {spec.disk_size}"
            )
        if self.ctx.home.instance(spec.name).dir.exists():
            raise Conflict(f"an instance named {spec.name!r} already exists")
        if spec.nics and spec.networks:
            raise InvalidInput("a VM's NICs are on existing taps or on managed networks, not both")
        nics = tap_nics(spec.nics)  # a missing tap is refused before anything is made
        with contextlib.ExitStack() as opened:
            # Files named by the control plane are opened once, confined to the storage roots,
            # and read through their descriptors: a link swapped in later is never followed.
            base_disk = self._open(opened, spec.base_disk, "base_disk")
            kernel = self._open(opened, spec.kernel, "kernel")
            initrd = self._open(opened, spec.initrd, "initrd")
            image: str | None = spec.image  # None and no base disk: diskless
            if base_disk is not None:
                image = self._base_image(base_disk, spec.base_disk or "")
            request = LaunchRequest(
                name=spec.name,
                cpus=spec.cpus,
                memory=spec.memory_mib,
                disk_size=spec.disk_size,
                volumes=[f"{-(-size // 1024)}K" for size in spec.volumes],  # KiB, rounded up
                ssh_keys=keys,
                user_data=spec.user_data,
                kernel=_fd_file(kernel) if kernel is not None else None,
                initrd=_fd_file(initrd) if initrd is not None else None,
                cmdline=spec.cmdline,
                nics=nics,
                networks=[NetworkNic(n.network, n.ip, n.mac) for n in spec.networks],
                network_config=network_config(spec.nics),
            )
            name = None if image is None else resolve_image(self.ctx, image)
            with _net_admin():
                launch(self.ctx, name, request.options(), start=spec.start)
        return self._view(spec.name)

    def _open(self, opened: contextlib.ExitStack, text: str | None, what: str) -> int | None:
        """A descriptor of a file the spec names, which must lie under a storage root."""
        if text is None:
            return None
        fd = open_under(self.ctx.config.pool_roots(), text, what)
        opened.callback(os.close, fd)
        return fd

    def _base_image(self, fd: int, path: str) -> str:
        """Import a disk file of the node into the store once; return its image name.

        The name is derived from (real path, size, mtime), so a file seen before maps to its
        image without being read again, across restarts; a changed file gets a new name (and the
        store keeps one copy of identical content whatever the name). The bytes imported are
        those of the descriptor that was checked; the store refuses anything that is not a plain
        qcow2 or raw image (a backing file, an external data file).
        """
        st = os.fstat(fd)
        key = f"{confine.fd_path(fd)}\0{st.st_size}\0{st.st_mtime_ns}"
        name = "base-" + hashlib.sha256(key.encode()).hexdigest()[:16]
        with self._locks_guard:
            lock = self._import_locks.setdefault(name, threading.Lock())
        with lock:
            if not self.ctx.store.exists(name):
                try:
                    self.ctx.store.import_image(
                        _fd_file(fd), name, origin=f"node-base-disk:{path}", label=path
                    )
                except Conflict:
                    pass  # another process on this host imported it meanwhile
        return name

    async def start_vm(self, name: str) -> NodeVm:
        return await asyncio.to_thread(self._then_view, lifecycle.start, name)

    async def stop_vm(self, name: str, *, force: bool = False) -> NodeVm:
        def stop(ctx: Context, name: str) -> object:
            return lifecycle.stop(ctx, name, force=force)

        return await asyncio.to_thread(self._then_view, stop, name)

    async def pause_vm(self, name: str) -> NodeVm:
        return await asyncio.to_thread(self._then_view, lifecycle.pause, name)

    async def resume_vm(self, name: str) -> NodeVm:
        return await asyncio.to_thread(self._then_view, lifecycle.resume, name)

    def _then_view(self, operation: Callable[[Context, str], object], name: str) -> NodeVm:
        operation(self.ctx, name)
        return self._view(name)

    async def delete_vm(self, name: str) -> None:
        """Remove a VM whatever its state: a running QEMU is ended first (the caller decides)."""
        await asyncio.to_thread(lifecycle.remove, self.ctx, name, force=True)

    # --- console --------------------------------------------------------------------------

    async def console_log(self, name: str) -> bytes:
        return await asyncio.to_thread(self._console_log, name)

    def _console_log(self, name: str) -> bytes:
        lifecycle.status(self.ctx, name)  # NotFound for an unknown VM
        try:
            return self.ctx.home.instance(name).serial_log.read_bytes()
        except FileNotFoundError:
            return b""

    async def console_stream(self, name: str) -> AsyncIterator[bytes]:
        """Yield what is appended to the serial log from now on, until the VM is not running."""
        path = self.ctx.home.instance(name).serial_log
        await asyncio.to_thread(lifecycle.status, self.ctx, name)  # NotFound before anything
        start = await asyncio.to_thread(console.size, path)
        running = functools.partial(self._running, name)
        async for chunk in console.follow_async(path, start=start, running=running):
            yield chunk

    async def console_input(self, name: str, data: bytes) -> None:
        """Write to the serial console's socket: one short connection per call, so `corral
        console` (which holds the socket while it runs) keeps working; the output goes to
        the log that console_stream follows."""
        if len(data) > MAX_CONSOLE_INPUT:
            raise InvalidInput(f"at most {MAX_CONSOLE_INPUT} bytes of console input at once")
        await asyncio.to_thread(self._console_input, name, data)

    def _console_input(self, name: str, data: bytes) -> None:
        check_instance_name(name)
        path = self.ctx.home.instance(name).serial_socket
        with self._console_lock:
            deadline = time.monotonic() + CONSOLE_TIMEOUT
            while True:
                try:
                    _write_socket(path, data)
                    return
                except FileNotFoundError:
                    lifecycle.status(self.ctx, name)  # NotFound for an unknown VM
                    raise Conflict(f"VM {name!r} is not running: no console input") from None
                except (ConnectionRefusedError, BlockingIOError):
                    # QEMU takes one client at a time: the last one may not be gone yet.
                    if time.monotonic() > deadline:
                        raise Conflict(
                            f"the console of VM {name!r} takes no input (is `corral console` "
                            "attached to it?)"
                        ) from None
                    time.sleep(0.01)
                except OSError as exc:
                    raise Conflict(f"the console of VM {name!r} takes no input: {exc}") from None

    # --- tunnels --------------------------------------------------------------------------

    async def open_tunnel(self, name: str, port: int) -> Tunnel:
        """A TCP connection to `port` of a running VM, through what exposes it on this host
        (corral.instance.endpoint): Forbidden for any other port."""
        host, host_port = await asyncio.to_thread(self._endpoint, name, port)
        return await TcpTunnel.open(host, host_port, what=f"port {port} of VM {name!r}")

    def _endpoint(self, name: str, port: int) -> tuple[str, int]:
        check_port(port)
        record, seen = lifecycle.status(self.ctx, name)
        if seen.state != "running":
            raise Conflict(f"VM {name!r} is {seen.state}, not running: no tunnel to it")
        return vm_endpoint(record, port)

    # --- managed networks -----------------------------------------------------------------

    async def list_networks(self) -> list[NodeNetwork]:
        return await asyncio.to_thread(self._networks)

    def _networks(self) -> list[NodeNetwork]:
        found = []
        for summary in networks.summary(self.ctx.home):
            with contextlib.suppress(NotFound):  # removed meanwhile
                found.append(self._network(summary["name"]))
        return found

    def _network(self, name: str) -> NodeNetwork:
        data = networks.inspect(self.ctx.home, name)
        vms = [
            NodeNetworkVm(
                name=vm["name"],
                mac=vm["mac"],
                addresses=list(dict.fromkeys(a for a in (vm["ipv4"], vm["leased"]) if a)),
            )
            for vm in data["vms"]
        ]
        return NodeNetwork.model_validate({**data, "vms": vms})

    async def create_network(self, spec: NodeNetworkSpec) -> NodeNetwork:
        return await asyncio.to_thread(self._create_network, spec)

    def _create_network(self, spec: NodeNetworkSpec) -> NodeNetwork:
        options = networks.CreateOptions(
            subnet=spec.subnet,
            ipv6=spec.ipv6,
            nat=spec.nat,
            isolated=spec.isolated,
            domain=spec.domain,
            mtu=spec.mtu,
        )
        with _net_admin():
            networks.create(self.ctx.home, spec.name, options)
        return self._network(spec.name)

    async def delete_network(self, name: str) -> None:
        def remove() -> None:
            with _net_admin():
                networks.remove(self.ctx.home, name)

        await asyncio.to_thread(remove)

    def _running(self, name: str) -> bool:
        try:
            _, seen = lifecycle.status(self.ctx, name)
        except NotFound:
            return False  # deleted while we followed it
        return seen.pid is not None or seen.state in ("creating", "starting")


@contextlib.contextmanager
def _net_admin() -> Iterator[None]:
    """A node without CAP_NET_ADMIN cannot do what was asked of it, whoever asks: net's one
    line, as a Conflict (409) rather than its CLI-minded 403."""
    try:
        yield
    except NeedsNetAdmin as exc:
        raise Conflict(
            exc.message, hint="give the node (corral serve or corral node) CAP_NET_ADMIN"
        ) from None


def _fd_file(fd: int) -> Path:
    """A path that opens the very file behind an open descriptor (not whatever has its name)."""
    return Path(f"/proc/self/fd/{fd}")


def _mem_total_mib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024  # the value is in KiB
    return 0


def _free_bytes(path: Path) -> int:
    """Free bytes on the file system of the state directory (or its nearest existing parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free

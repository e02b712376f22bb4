"""Nodes that live in memory: the NodeClient protocol with no QEMU behind it.

Used where the logic under test is the control plane's own (scheduling, over-booking,
reconciliation, jobs, events); the real nodes are exercised in test_with_real_nodes.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from corral.control.nodes import NodeAddress
from corral.errors import Conflict, CorralError, NodeUnreachable, NotFound, QemuError
from corral.node.protocol import (
    Capacity,
    NodeClient,
    NodeImage,
    NodeNetwork,
    NodeNetworkSpec,
    NodeNetworkVm,
    NodeVm,
    NodeVmNic,
    NodeVmSpec,
)


class FakeNode:
    def __init__(self, name: str = "fake", *, cpus: int = 4, memory_mib: int = 8192) -> None:
        self.name = name
        self.cpus = cpus
        self.memory_mib = memory_mib
        self.vms: dict[str, NodeVm] = {}
        self.specs: dict[str, NodeVmSpec] = {}
        self.reachable = True
        self.delay = 0.0  # seconds every call takes
        # operation -> the error it raises (a message: a QemuError)
        self.fail: dict[str, str | CorralError] = {}
        self.console: dict[str, bytes] = {}
        self.typed: dict[str, bytes] = {}
        self.networks: dict[str, NodeNetwork] = {}
        self.images: list[NodeImage] = []
        self._streams: dict[
            str, list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[bytes | None]]]
        ] = {}

    async def _enter(self, operation: str) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        if not self.reachable:
            raise NodeUnreachable(f"node {self.name}: connection refused")
        failure = self.fail.get(operation)
        if isinstance(failure, CorralError):
            raise failure
        if failure is not None:
            raise QemuError(failure)

    def _vm(self, name: str) -> NodeVm:
        try:
            return self.vms[name]
        except KeyError:
            raise NotFound(f"no instance named {name!r}") from None

    def _set(self, name: str, state: str) -> NodeVm:
        vm = self._vm(name).model_copy(update={"state": state})
        self.vms[name] = vm
        return vm

    async def health(self) -> dict[str, str]:
        await self._enter("health")
        return {"status": "ok", "hostname": self.name}

    async def capacity(self) -> Capacity:
        await self._enter("capacity")
        return Capacity(
            cpus=self.cpus,
            memory_mib=self.memory_mib,
            disk_bytes=100 << 30,
            arch="x86_64",
            accelerator="tcg",
            versions={"corral": "test", "qemu": "8.0", "qemu-img": "8.0"},
        )

    async def list_vms(self) -> list[NodeVm]:
        await self._enter("list_vms")
        return list(self.vms.values())

    async def list_images(self) -> list[NodeImage]:
        await self._enter("list_images")
        return list(self.images)

    async def get_vm(self, name: str) -> NodeVm:
        await self._enter("get_vm")
        return self._vm(name)

    async def create_vm(self, spec: NodeVmSpec) -> NodeVm:
        await self._enter("create_vm")
        if spec.name in self.vms:
            raise Conflict(f"an instance named {spec.name!r} already exists")
        self.specs[spec.name] = spec
        self.vms[spec.name] = NodeVm(
            name=spec.name,
            state="running" if spec.start else "stopped",
            cpus=spec.cpus,
            memory_mib=spec.memory_mib,
            disk_size=spec.disk_size or (1 << 30),
            ssh_port=18000 + len(self.vms),
            image=spec.image or "base",
            # A node that knows its VMs' addresses (the static ones it was given).
            nics=[NodeVmNic(mac=n.mac, addresses=n.addresses) for n in spec.nics]
            + [self._attach(spec.name, n.network, n.mac, n.ip) for n in spec.networks],
        )
        return self.vms[spec.name]

    def _attach(self, vm: str, network: str, mac: str, ip: str | None) -> NodeVmNic:
        """A NIC on one of this node's networks: the address asked for, else the next one."""
        net = self.networks.get(network)
        if net is None:
            raise NotFound(f"no network named {network!r}")
        prefix = net.gateway.rsplit(".", 1)[0]
        address = ip or f"{prefix}.{100 + len(net.vms)}"
        self.networks[network] = net.model_copy(
            update={"vms": [*net.vms, NodeNetworkVm(name=vm, mac=mac, addresses=[address])]}
        )
        return NodeVmNic(mac=mac, addresses=[address])

    async def start_vm(self, name: str) -> NodeVm:
        await self._enter("start_vm")
        if self._vm(name).state == "running":
            raise Conflict(f"{name} is already running")
        return self._set(name, "running")

    async def stop_vm(self, name: str, *, force: bool = False) -> NodeVm:
        await self._enter("stop_vm")
        return self._set(name, "stopped")

    async def pause_vm(self, name: str) -> NodeVm:
        await self._enter("pause_vm")
        return self._set(name, "paused")

    async def resume_vm(self, name: str) -> NodeVm:
        await self._enter("resume_vm")
        return self._set(name, "running")

    async def delete_vm(self, name: str) -> None:
        await self._enter("delete_vm")
        self._vm(name)
        del self.vms[name]
        for key, net in self.networks.items():
            self.networks[key] = net.model_copy(
                update={"vms": [vm for vm in net.vms if vm.name != name]}
            )

    async def list_networks(self) -> list[NodeNetwork]:
        await self._enter("list_networks")
        return list(self.networks.values())

    async def create_network(self, spec: NodeNetworkSpec) -> NodeNetwork:
        await self._enter("create_network")
        if spec.name in self.networks:
            raise Conflict(f"network {spec.name!r} already exists")
        subnet = spec.subnet or f"10.{80 + len(self.networks)}.0.0/24"
        self.networks[spec.name] = NodeNetwork(
            name=spec.name,
            bridge=f"cbr-{spec.name}"[:15],
            subnet=subnet,
            gateway=subnet.rsplit(".", 1)[0] + ".1",
            nat=spec.nat,
            isolated=spec.isolated,
            domain=spec.domain,
            mtu=spec.mtu,
            up=True,
        )
        return self.networks[spec.name]

    async def delete_network(self, name: str) -> None:
        await self._enter("delete_network")
        net = self.networks.get(name)
        if net is None:
            raise NotFound(f"no network named {name!r}")
        if net.vms:
            raise Conflict(f"network {name!r} is in use by {', '.join(v.name for v in net.vms)}")
        del self.networks[name]

    async def console_log(self, name: str) -> bytes:
        await self._enter("console_log")
        self._vm(name)
        return self.console.get(name, b"")

    async def console_stream(self, name: str) -> AsyncIterator[bytes]:
        await self._enter("console_stream")
        self._vm(name)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        entry = (asyncio.get_running_loop(), queue)
        self._streams.setdefault(name, []).append(entry)
        try:
            while (chunk := await queue.get()) is not None:
                yield chunk
        finally:
            self._streams[name].remove(entry)

    async def console_input(self, name: str, data: bytes) -> None:
        """Typed bytes are kept in `typed` and echoed, as a terminal does."""
        await self._enter("console_input")
        self._vm(name)
        self.typed[name] = self.typed.get(name, b"") + data
        self.write_console(name, data)

    def write_console(self, name: str, data: bytes, *, end: bool = False) -> None:
        """Append to a VM's console, from any thread; `end` ends the streams (VM stopped)."""
        self.console[name] = self.console.get(name, b"") + data
        for loop, queue in self._streams.get(name, []):
            loop.call_soon_threadsafe(queue.put_nowait, data)
            if end:
                loop.call_soon_threadsafe(queue.put_nowait, None)

    def streaming(self, name: str) -> int:
        return len(self._streams.get(name, []))


class Fleet:
    """A node factory: address:port -> FakeNode; unknown addresses are unreachable."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[str, int], FakeNode] = {}

    def add(self, address: str, port: int, **kw: int) -> FakeNode:
        node = FakeNode(f"{address}:{port}", **kw)
        self.nodes[(address, port)] = node
        return node

    def __call__(self, where: NodeAddress) -> NodeClient:
        node = self.nodes.get((where.address, where.port))
        if node is None:
            node = FakeNode(where.name)
            node.reachable = False
        return node

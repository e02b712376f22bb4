"""HttpNode against a real node agent (uvicorn in a thread): the whole protocol on real VMs,
errors mapped back to the same classes, and nodes that are down, silent or refuse the token."""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import Iterator

import pytest

from corral.context import Context
from corral.errors import Conflict, CorralError, InvalidInput, NodeUnreachable, NotFound
from corral.fsutil import pid_alive
from corral.instance import guestops
from corral.node.http import HttpNode
from corral.node.local import LocalNode
from corral.node.protocol import NodeClient, NodeNetworkNic, NodeNetworkSpec, NodeVmSpec
from netns import Netns, entered_netns


def spec(name: str, **fields: object) -> NodeVmSpec:
    return NodeVmSpec.model_validate({"name": name, "memory_mib": 256, **fields})


def protocol_methods() -> list[str]:
    return [n for n, v in vars(NodeClient).items() if callable(v) and not n.startswith("_")]


@pytest.mark.parametrize("impl", [LocalNode, HttpNode])
def test_both_nodes_implement_the_protocol(impl: type) -> None:
    assert len(protocol_methods()) == 18
    for name in protocol_methods():
        want = inspect.signature(getattr(NodeClient, name))
        got = inspect.signature(getattr(impl, name))
        assert list(got.parameters) == list(want.parameters), name
        is_stream = name == "console_stream"
        assert inspect.isasyncgenfunction(getattr(impl, name)) == is_stream, name
        assert inspect.iscoroutinefunction(getattr(impl, name)) == (not is_stream), name


def test_a_node_url_is_http_or_https() -> None:
    with pytest.raises(InvalidInput, match="http:// or https://"):
        HttpNode("node1:8100", "t")
    assert repr(HttpNode("https://node1:8100/", "secret")) == "HttpNode('https://node1:8100')"


@pytest.mark.asyncio
async def test_errors_come_back_as_the_same_classes(agent: str, token: str) -> None:
    async with HttpNode(agent, token) as node:
        assert (await node.health())["status"] == "ok"
        assert (await node.capacity()).versions.keys() == {"corral", "qemu", "qemu-img"}
        assert await node.list_vms() == []
        with pytest.raises(NotFound, match="no instance named 'ghost'") as caught:
            await node.get_vm("ghost")
        assert caught.value.hint == "see: corral ls"
        for call in (node.start_vm, node.stop_vm, node.pause_vm, node.resume_vm,
                     node.delete_vm, node.console_log):  # fmt: skip
            with pytest.raises(NotFound):
                await call("ghost")
        with pytest.raises(NotFound, match="no instance named 'ghost'"):
            async for _ in node.console_stream("ghost"):
                pass
        with pytest.raises(NotFound, match="no instance named 'ghost'"):
            await node.console_input("ghost", b"ls\r")
        with pytest.raises(InvalidInput, match="at most 4096 bytes"):
            await node.console_input("ghost", b"x" * 4097)
        with pytest.raises(NotFound, match="no image named 'nope'"):
            await node.create_vm(spec("v1", image="nope"))
        with pytest.raises(InvalidInput, match="not a valid hostname"):
            await node.create_vm(spec("Bad_Name", image="tiny"))
        # A spec that skipped validation on this side is refused by the node's (422).
        bad = NodeVmSpec.model_construct(name="v1", image="tiny", cpus=0, memory_mib=256)
        with pytest.raises(InvalidInput, match=r"body\.cpus"):
            await node.create_vm(bad)


@pytest.fixture
def netns() -> Iterator[Netns]:
    """Asked for before `agent`, so the agent's thread is started inside the namespace."""
    with entered_netns() as ns:
        yield ns


@pytest.mark.asyncio
async def test_networks_over_http_in_a_netns(netns: Netns, agent: str, token: str) -> None:
    """create/list/delete_network through the agent make and remove a real bridge, and the
    node's refusals come back as the same classes."""
    async with HttpNode(agent, token) as node:
        made = await node.create_network(NodeNetworkSpec(name="lab", subnet="10.94.0.0/24"))
        assert (made.subnet, made.gateway, made.up, made.vms) == (
            "10.94.0.0/24",
            "10.94.0.1",
            True,
            [],
        )
        assert netns.link(made.bridge)["ifname"] == made.bridge
        assert [n.name for n in await node.list_networks()] == ["lab"]
        with pytest.raises(Conflict, match="already exists"):
            await node.create_network(NodeNetworkSpec(name="lab"))
        with pytest.raises(Conflict, match="overlaps network lab"):
            await node.create_network(NodeNetworkSpec(name="other", subnet="10.94.0.0/16"))
        with pytest.raises(InvalidInput, match="invalid network name"):
            await node.create_network(NodeNetworkSpec(name="Lab;reboot"))
        await node.delete_network("lab")
        assert await node.list_networks() == []
        assert made.bridge not in netns.run(["ip", "-br", "link"]).stdout
        with pytest.raises(NotFound):
            await node.delete_network("lab")


@pytest.mark.asyncio
async def test_a_vm_on_a_network_over_http(
    netns: Netns, vm_ctx: Context, agent: str, token: str
) -> None:
    """NodeVmSpec.networks through the agent: the VM's NIC on the network with the MAC and
    address asked for (made, not started: the tap and reservation exist before QEMU does)."""
    mac, ip = "52:54:00:94:00:07", "10.94.0.7"
    async with HttpNode(agent, token) as node:
        await node.create_network(NodeNetworkSpec(name="lab", subnet="10.94.0.0/24"))
        nic = NodeNetworkNic(network="lab", mac=mac, ip=ip)
        with pytest.raises(NotFound, match="no network named 'nope'"):
            await node.create_vm(
                spec("v0", image="tiny", networks=[{"network": "nope", "mac": mac}])
            )
        vm = await node.create_vm(spec("v1", image="tiny", networks=[nic], start=False))
        assert [(n.mac, n.addresses) for n in vm.nics] == [(mac, [ip])]
        (net,) = await node.list_networks()
        assert [(v.name, v.mac, v.addresses) for v in net.vms] == [("v1", mac, [ip])]
        with pytest.raises(Conflict, match="in use by v1"):
            await node.delete_network("lab")
        await node.delete_vm("v1")
        await node.delete_network("lab")


@pytest.mark.asyncio
async def test_a_wrong_token_is_refused(agent: str) -> None:
    async with HttpNode(agent, "wrong") as node:
        assert (await node.health())["status"] == "ok"  # health needs no token
        with pytest.raises(NodeUnreachable, match="refused the token") as caught:
            await node.list_vms()
        assert agent in caught.value.message
        with pytest.raises(NodeUnreachable, match="refused the token"):
            async for _ in node.console_stream("ghost"):
                pass


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again: nothing listens there


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@pytest.mark.asyncio
async def test_a_node_that_is_down_is_unreachable(closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    async with HttpNode(url, "t") as node:
        calls = [node.health(), node.capacity(), node.list_vms(), node.get_vm("v1"),
                 node.create_vm(spec("v1", image="tiny")), node.stop_vm("v1", force=True),
                 node.delete_vm("v1"), node.console_log("v1")]  # fmt: skip
        for call in calls:
            with pytest.raises(NodeUnreachable) as caught:
                await call
            assert caught.value.message.startswith(f"node {url} is unreachable: ")
            assert "\n" not in caught.value.message
        with pytest.raises(NodeUnreachable, match=f"node {url} is unreachable"):
            async for _ in node.console_stream("v1"):
                pass


@pytest.mark.asyncio
async def test_a_silent_node_times_out_as_unreachable(silent_port: int) -> None:
    url = f"http://127.0.0.1:{silent_port}"
    async with HttpNode(url, "t", timeout=0.3, slow_timeout=0.3) as node:
        started = time.monotonic()
        with pytest.raises(NodeUnreachable, match=f"node {url} did not answer GET /vms within"):
            await node.list_vms()
        with pytest.raises(NodeUnreachable, match=f"node {url}"):
            async for _ in node.console_stream("v1"):
                pass
        assert time.monotonic() - started < 5


@pytest.mark.vm
@pytest.mark.asyncio
async def test_a_vm_over_http(vm_ctx: Context, agent: str, token: str) -> None:
    async with HttpNode(agent, token) as node:
        vm = await node.create_vm(spec("h1", image="tiny", cpus=1, disk_size=512 << 20))
        try:
            assert (vm.name, vm.state, vm.image, vm.cpus, vm.memory_mib, vm.disk_size) == (
                "h1", "running", "tiny", 1, 256, 512 << 20,
            )  # fmt: skip
            assert vm.pid is not None
            assert [v.name for v in await node.list_vms()] == ["h1"]
            assert (await node.get_vm("h1")).ssh_port == vm.ssh_port
            with pytest.raises(Conflict, match="already exists"):
                await node.create_vm(spec("h1", image="tiny"))
            cap = await node.capacity()
            assert cap.cpus >= 1 and cap.accelerator in ("kvm", "tcg")

            deadline = time.monotonic() + 120
            while b"corral-tiny: ready" not in (log := await node.console_log("h1")):
                assert time.monotonic() < deadline, log[-2000:]
                await asyncio.sleep(0.2)

            # The console stream over the websocket: new output, then its end when the VM stops.
            await asyncio.to_thread(guestops.wait_ready, vm_ctx, "h1", timeout=120)
            received = bytearray()

            async def follow() -> None:
                async for chunk in node.console_stream("h1"):
                    received.extend(chunk)

            # A client that goes away mid-stream is let go by the node.
            quitter = asyncio.create_task(follow())
            await asyncio.sleep(0.3)
            quitter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await quitter

            follower = asyncio.create_task(follow())
            await asyncio.sleep(0.5)
            await asyncio.to_thread(
                guestops.execute, vm_ctx, "h1", "echo corral-ws-marker > /dev/console"
            )
            deadline = time.monotonic() + 30
            while b"corral-ws-marker" not in received and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert b"corral-ws-marker" in received
            assert b"corral-tiny: ready" not in received
            # Typed on the serial console (a root shell there): the answer is in the log.
            await node.console_input("h1", b"\recho corral-typed-$((6*7))\r")
            deadline = time.monotonic() + 30
            while b"corral-typed-42" not in received and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert b"corral-typed-42" in received

            assert (await node.pause_vm("h1")).state == "paused"
            with pytest.raises(Conflict, match="paused, not running"):
                await node.pause_vm("h1")
            assert (await node.resume_vm("h1")).state == "running"
            stopped = await node.stop_vm("h1")  # ACPI powerdown
            assert (stopped.state, stopped.pid) == ("stopped", None)
            await asyncio.wait_for(follower, 10)  # the stream ended with the VM

            assert (await node.start_vm("h1")).state == "running"
            with pytest.raises(Conflict, match="already running"):
                await node.start_vm("h1")
            assert (await node.stop_vm("h1", force=True)).state == "stopped"
            assert b"corral-ws-marker" in await node.console_log("h1")
        finally:
            await node.delete_vm("h1")
        with pytest.raises(NotFound):
            await node.get_vm("h1")
        assert await node.list_vms() == []


@pytest.mark.vm
@pytest.mark.asyncio
async def test_delete_ends_a_running_vm(vm_ctx: Context, agent: str, token: str) -> None:
    async with HttpNode(agent, token) as node:
        vm = await node.create_vm(spec("h2", image="tiny", cpus=1))
        assert vm.pid is not None
        await node.delete_vm("h2")
        assert not pid_alive(vm.pid)
        assert await node.list_vms() == []
        with pytest.raises(CorralError):
            await node.delete_vm("h2")


@pytest.mark.asyncio
async def test_list_images_reads_the_store(ctx: Context, agent: str, token: str) -> None:
    """GET /images lists the store's manifests, the same through the agent and in-process;
    a warm image says so with the shape it restores to."""
    disk = ctx.home.root / "small.qcow2"
    ctx.qemu_img.create(disk, 64 << 20)
    made = ctx.store.import_image(disk, "small", default_user="alpine")
    async with HttpNode(agent, token) as node:
        (image,) = await node.list_images()
    assert image == (await LocalNode(ctx).list_images())[0]
    assert (image.name, image.digest, image.format, image.virtual_size) == (
        "small",
        made.digest,
        "qcow2",
        64 << 20,
    )
    assert image.file_size == made.file_size > 0
    assert (image.default_user, image.kernel, image.warm, image.warm_cpus) == (
        "alpine",
        False,
        False,
        None,
    )
    async with HttpNode(agent, "wrong-token") as node:
        with pytest.raises(CorralError, match="refused the token"):
            await node.list_images()

"""LocalNode on real QEMU with the tiny guest: create from an image or a base disk, keys,
lifecycle, console log and stream; and the spec checks that refuse before anything is made."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest

from corral.context import Context
from corral.errors import Conflict, InvalidInput, NotFound
from corral.instance import guestops
from corral.node.local import LocalNode
from corral.node.protocol import NodeClient, NodeVmSpec

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHNvbWUta2V5LWZvci10aGUtbm9kZS10ZXN0cw node@test"


def spec(name: str, **fields: object) -> NodeVmSpec:
    return NodeVmSpec.model_validate({"name": name, "memory_mib": 256, **fields})


async def wait_console(node: NodeClient, name: str, text: bytes, timeout: float = 120) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        log = await node.console_log(name)
        if text in log or time.monotonic() > deadline:
            return log
        await asyncio.sleep(0.2)


@pytest.mark.asyncio
async def test_capacity_and_health(ctx: Context) -> None:
    node = LocalNode(ctx)
    cap = await node.capacity()
    assert cap.cpus >= 1 and cap.memory_mib > 0 and cap.disk_bytes > 0
    assert cap.accelerator in ("kvm", "tcg")
    assert set(cap.versions) == {"corral", "qemu", "qemu-img"}
    assert (await node.health())["status"] == "ok"


@pytest.mark.parametrize(
    ("fields", "error", "match"),
    [
        ({"image": "tiny", "base_disk": "/x"}, InvalidInput, "not both"),
        ({}, InvalidInput, r"give image, base_disk or a kernel \(a diskless VM\)"),
        (
            {"image": "tiny", "nics": [{"tap": "nosuch0", "mac": "52:54:00:00:00:01"}]},
            InvalidInput,
            "no TAP device 'nosuch0'",
        ),
        (
            {"image": "tiny", "nics": [{"tap": "a/b", "mac": "52:54:00:00:00:01"}]},
            InvalidInput,
            "invalid tap device name",
        ),
        ({"base_disk": "relative.qcow2"}, InvalidInput, "absolute path"),
        ({"base_disk": "/tmp/disk.qcow2"}, InvalidInput, "not under a storage root"),
        ({"base_disk": "{root}/missing.qcow2"}, NotFound, "no such file"),
        ({"base_disk": "{root}/dir"}, InvalidInput, "not a regular file"),
        ({"image": "nope"}, NotFound, "no image named 'nope'"),
        ({"image": "tiny", "ssh_keys": ["not a key"]}, InvalidInput, r"ssh_keys\[0\]"),
        ({"image": "tiny", "disk_size": 0}, InvalidInput, "disk_size must be a positive"),
        ({"image": "tiny", "ssh_keys": [KEY + "\nssh-rsa AAAA"]}, InvalidInput, "one ssh"),
    ],
)
@pytest.mark.asyncio
async def test_bad_specs_are_refused_before_anything_is_made(
    ctx: Context, fields: dict[str, object], error: type[Exception], match: str
) -> None:
    node = LocalNode(ctx)
    root = ctx.config.pool_roots()[0]
    (root / "dir").mkdir(parents=True)
    fields = {k: v.format(root=root) if isinstance(v, str) else v for k, v in fields.items()}
    with pytest.raises(error, match=match):
        await node.create_vm(spec("v1", **fields))
    assert await node.list_vms() == []


@pytest.mark.asyncio
async def test_bad_name_and_unknown_vm(ctx: Context) -> None:
    node = LocalNode(ctx)
    for bad in ("Not_A_Host", "web1\n"):  # a final newline too: the name is matched whole
        with pytest.raises(InvalidInput, match="not a valid hostname"):
            await node.create_vm(spec(bad, image="tiny"))
    assert not ctx.home.instances.exists() or list(ctx.home.instances.iterdir()) == []
    for call in (node.get_vm, node.start_vm, node.pause_vm, node.console_log, node.delete_vm):
        with pytest.raises(NotFound, match="no instance named 'ghost'"):
            await call("ghost")
    with pytest.raises(NotFound):
        async for _ in node.console_stream("ghost"):
            pass


@pytest.mark.vm
@pytest.mark.asyncio
async def test_image_vm_lifecycle_keys_and_console(vm_ctx: Context) -> None:
    node = LocalNode(vm_ctx)
    vm = await node.create_vm(spec("n1", image="tiny", cpus=1, ssh_keys=[KEY]))
    try:
        assert (vm.name, vm.state, vm.image, vm.cpus, vm.memory_mib) == (
            "n1", "running", "tiny", 1, 256,
        )  # fmt: skip
        assert vm.pid is not None and 18000 <= vm.ssh_port <= 18999
        assert [v.name for v in await node.list_vms()] == ["n1"]
        with pytest.raises(Conflict, match="already exists"):
            await node.create_vm(spec("n1", image="tiny"))

        assert b"corral-tiny: ready" in await wait_console(node, "n1", b"corral-tiny: ready")
        await asyncio.to_thread(guestops.wait_ready, vm_ctx, "n1", timeout=120)
        keys = await asyncio.to_thread(
            guestops.execute, vm_ctx, "n1", "cat /root/.ssh/authorized_keys"
        )
        assert KEY.encode() in keys.stdout

        assert (await node.pause_vm("n1")).state == "paused"
        with pytest.raises(Conflict, match="paused, not running"):
            await node.pause_vm("n1")
        assert (await node.resume_vm("n1")).state == "running"
        with pytest.raises(Conflict, match="already running"):
            await node.start_vm("n1")

        # The stream carries new output, and ends when the VM stops.
        received = bytearray()

        async def follow() -> None:
            async for chunk in node.console_stream("n1"):
                received.extend(chunk)

        follower = asyncio.create_task(follow())
        await asyncio.sleep(0.5)
        await asyncio.to_thread(
            guestops.execute, vm_ctx, "n1", "echo corral-stream-marker > /dev/console"
        )
        deadline = time.monotonic() + 30
        while b"corral-stream-marker" not in received and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert b"corral-stream-marker" in received
        assert b"corral-tiny: ready" not in received  # only what came after the stream began
        assert (await node.stop_vm("n1", force=True)).state == "stopped"
        await asyncio.wait_for(follower, 10)

        # A stopped VM's stream ends at once; its log is still there.
        assert [c async for c in node.console_stream("n1")] == []
        assert b"corral-stream-marker" in await node.console_log("n1")
    finally:
        await node.delete_vm("n1")
    with pytest.raises(NotFound):
        await node.get_vm("n1")


@pytest.mark.vm
@pytest.mark.asyncio
async def test_base_disk_is_imported_once_and_start_false_leaves_it_stopped(
    vm_ctx: Context, tiny_guest
) -> None:
    node = LocalNode(vm_ctx)
    imports: list[str] = []
    real_import = vm_ctx.store.import_image

    def counting_import(source, name, **kwargs):  # type: ignore[no-untyped-def]
        imports.append(name)
        return real_import(source, name, **kwargs)

    vm_ctx.store.import_image = counting_import  # type: ignore[method-assign]
    root = vm_ctx.config.pool_roots()[0]  # base disks, kernels and initrds live under it
    root.mkdir()
    for file in (tiny_guest.disk, tiny_guest.kernel, tiny_guest.initrd):
        shutil.copyfile(file, root / file.name)
    boot = {
        "base_disk": str(root / tiny_guest.disk.name),
        "kernel": str(root / tiny_guest.kernel.name),
        "initrd": str(root / tiny_guest.initrd.name),
        "cmdline": tiny_guest.cmdline,
        "start": False,
    }
    try:
        first, second = await asyncio.gather(
            node.create_vm(spec("b1", **boot)), node.create_vm(spec("b2", **boot))
        )
        assert len(imports) == 1
        assert first.image == second.image == imports[0]
        assert first.image.startswith("base-")
        assert (first.state, first.pid, second.state) == ("stopped", None, "stopped")

        # A fresh LocalNode (a restarted agent) finds the import by its name: no new import.
        third = await LocalNode(vm_ctx).create_vm(spec("b3", **boot))
        assert third.image == first.image and len(imports) == 1

        vm = await node.start_vm("b1")
        assert vm.state == "running" and vm.pid is not None
        assert b"corral-tiny: ready" in await wait_console(node, "b1", b"corral-tiny: ready")
        assert (await node.stop_vm("b1")).state == "stopped"  # ACPI powerdown
    finally:
        for name in ("b1", "b2", "b3"):
            try:
                await node.delete_vm(name)
            except NotFound:
                pass
    assert await node.list_vms() == []

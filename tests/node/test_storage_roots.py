"""Issue #11, finding 3, at the node: base disks, kernels and initrds named by a control plane
must lie under the node's own storage roots and are opened without following links, on a
LocalNode and through a node agent (HttpNode). Nothing here starts QEMU."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from corral.context import Context
from corral.errors import InvalidInput
from corral.node.http import HttpNode
from corral.node.local import LocalNode
from corral.node.protocol import NodeClient, NodeVmSpec
from helpers import holds_bytes

SECRET = b"the bytes of a host file no VM may boot from\n" * 100


def spec(name: str, **fields: object) -> NodeVmSpec:
    return NodeVmSpec.model_validate({"name": name, "memory_mib": 256, "start": False, **fields})


async def refuses_files_outside_the_roots(node: NodeClient, ctx: Context, tmp_path: Path) -> None:
    root = ctx.config.pool_roots()[0]
    root.mkdir()
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    (root / "link.img").symlink_to(secret)
    (root / "linked-dir").symlink_to(tmp_path)
    for fields, words in [
        ({"base_disk": str(secret)}, f"is not under a storage root (allowed: {root})"),
        ({"base_disk": "/etc/shadow"}, "is not under a storage root"),
        ({"base_disk": f"{root}/../{tmp_path.name}/secret"}, "must not contain '..'"),
        ({"base_disk": str(root / "link.img")}, "is a symbolic link: refused"),
        ({"base_disk": str(root / "linked-dir" / "secret")}, "leads out of"),
        ({"image": "tiny", "kernel": str(secret)}, "kernel '"),
        ({"image": "tiny", "kernel": str(root / "link.img")}, "is a symbolic link"),
        ({"image": "tiny", "kernel": str(root / "k"), "initrd": str(secret)}, "initrd '"),
    ]:
        if "kernel" in fields and "initrd" in fields:
            (root / "k").write_bytes(b"kernel")
        with pytest.raises(InvalidInput) as caught:
            await node.create_vm(spec("v1", **fields))
        assert words in caught.value.message, (fields, caught.value.message)
    assert await node.list_vms() == []
    assert ctx.store.list() == []
    assert not holds_bytes(ctx.home.root, SECRET[:64])


@pytest.mark.asyncio
async def test_a_local_node_uses_only_files_under_its_roots(ctx: Context, tmp_path: Path) -> None:
    await refuses_files_outside_the_roots(LocalNode(ctx), ctx, tmp_path)


@pytest.mark.asyncio
async def test_a_node_agent_uses_only_files_under_its_roots(
    ctx: Context, agent: str, token: str, tmp_path: Path
) -> None:
    async with HttpNode(agent, token) as node:
        await refuses_files_outside_the_roots(node, ctx, tmp_path)


@pytest.mark.asyncio
async def test_the_roots_come_from_the_node_s_config(ctx: Context, tmp_path: Path) -> None:
    """A node's storage_roots replace the default; a disk under one is imported."""
    elsewhere = tmp_path / "images"
    elsewhere.mkdir()
    disk = elsewhere / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    node = LocalNode(Context(replace(ctx.config, storage_roots=(elsewhere,))))
    try:
        vm = await node.create_vm(spec("v1", base_disk=str(disk)))
        assert vm.image.startswith("base-") and vm.state == "stopped"
    finally:
        await node.delete_vm("v1")
    default = ctx.config.pool_roots()[0]
    with pytest.raises(InvalidInput, match=f"allowed: {elsewhere}"):
        await node.create_vm(spec("v2", base_disk=str(default / "base.qcow2")))

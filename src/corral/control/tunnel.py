"""Reaching a VM through the control plane: a tunnel to a port of it, opened on its host's
node (which allows only the ports the VM exposes, see corral.instance.endpoint), and whom ssh
logs in as there."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from corral.control.nodes import NodeAddress
from corral.db.repositories import HostRepository, VmRepository
from corral.errors import NotFound
from corral.node.protocol import NodeClient, Tunnel

if TYPE_CHECKING:
    from corral.control.plane import ControlPlane


async def open_tunnel(plane: ControlPlane, vm_id: uuid.UUID, port: int) -> Tunnel:
    """A byte stream to `port` of the VM, through its host's node."""
    node, name = await _node_of(plane, vm_id)
    return await node.open_tunnel(name, port)


async def ssh_user(plane: ControlPlane, vm_id: uuid.UUID) -> str | None:
    """Whom ssh logs in as on the VM (the image's default user, or its launch's)."""
    node, name = await _node_of(plane, vm_id)
    return (await node.get_vm(name)).ssh_user


async def _node_of(plane: ControlPlane, vm_id: uuid.UUID) -> tuple[NodeClient, str]:
    def find(session: Session) -> tuple[NodeAddress, str]:
        vm = VmRepository(session).get(vm_id)
        if vm is None:
            raise NotFound(f"no VM {vm_id}")
        host = HostRepository(session).get(vm.host_id)
        if host is None:
            raise NotFound(f"VM {vm.name!r} has no host")
        return NodeAddress.of(host), vm.name

    where, name = await plane.read(find)
    return plane.nodes.for_host(where), name

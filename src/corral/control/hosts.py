"""Hosts: registration, init (capacity from the node), operator status changes, reconciliation.

A host's `used_vcpus`/`used_memory` are what its VMs that are not shut down reserve. Every change
to them happens with the host's row locked (on PostgreSQL) or inside SQLite's single writer:
scheduling adds to them, everything else recounts them from the VM rows (`recount`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from corral.control.events import emit
from corral.control.networks import adopt
from corral.control.nodes import NodeAddress
from corral.control.settings import IN_PROCESS, LOCAL_HOST
from corral.control.types import MIB, HostCreate, HostUpdate
from corral.db.models import Host, Vm, utcnow
from corral.db.repositories import HostRepository, JobRepository, VmRepository
from corral.errors import Conflict, CorralError, InvalidInput, NodeUnreachable, NotFound
from corral.node.protocol import Capacity, NodeClient, NodeNetwork, NodeVm

if TYPE_CHECKING:
    from corral.control.plane import ControlPlane


def vm_status(node_state: str, current: str) -> str:
    """The control plane's status for a VM the node reports in `node_state`."""
    if node_state in ("creating", "starting"):
        return "pending"
    if node_state in ("running", "stopping"):
        return "running"
    if node_state == "paused":
        return "paused"
    if node_state == "crashed":
        return "crashed"
    # stopped: never started yet, or shut down
    return "created" if current in ("created", "pending") else "shutdown"


def host_event(session: Session, host: Host, action: str = "updated") -> None:
    data = {"name": host.name, "reason": host.status_reason}
    emit(session, "host", action, host.id, host.status, data)


def vm_event(session: Session, vm: Vm, action: str = "updated") -> None:
    data = {"name": vm.name, "host_id": str(vm.host_id), "reason": vm.status_reason}
    emit(session, "vm", action, vm.id, vm.status, data)


def lock_host(session: Session, host_id: uuid.UUID) -> Host:
    """The host row, locked until the transaction ends (PostgreSQL; SQLite has one writer)."""
    host = HostRepository(session).get(host_id, lock=True)
    if host is None:
        raise NotFound(f"no host {host_id}")
    return host


def recount(session: Session, host: Host) -> None:
    session.flush()
    host.used_vcpus, host.used_memory = HostRepository(session).usage(host.id)


def reconcile(session: Session, host: Host, seen: Sequence[NodeVm], asked_at: datetime) -> int:
    """Set the statuses of the host's VMs from what its node reports; return how many changed.

    VMs with a job under way are left to that job, and so is a VM whose row changed after
    `asked_at` (when the node was asked): the answer may predate a job that finished while it
    travelled, and the next round sees the new state. A VM the node does not know is `unknown`.
    """
    by_name = {vm.name: vm for vm in seen}
    jobs = JobRepository(session)
    changed = 0
    for vm in VmRepository(session).on_host(host.id):
        node_vm = by_name.get(vm.name)
        reason: str | None
        if node_vm is None:
            status, reason = "unknown", f"host {host.name!r} does not know this VM"
        else:
            status, reason = vm_status(node_vm.state, vm.status), node_vm.reason
        if (status, reason) == (vm.status, vm.status_reason) or jobs.active_for_vm(vm.id):
            continue
        if vm.updated_at > asked_at:
            continue
        vm.status, vm.status_reason = status, reason
        vm_event(session, vm)
        changed += 1
    recount(session, host)
    return changed


class HostService:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    async def create(self, data: HostCreate) -> Host:
        _not_in_process(data.address)

        def create(session: Session) -> Host:
            hosts = HostRepository(session)
            if hosts.name_taken(data.name):
                raise Conflict(f"a host named {data.name!r} already exists")
            host = hosts.add(Host(id=uuid.uuid4(), **data.model_dump()))
            host_event(session, host, "created")
            return host

        return await self.plane.write(create)

    async def list(self) -> list[Host]:
        return await self.plane.read(lambda s: list(HostRepository(s).list()))

    async def get(self, host_id: uuid.UUID) -> Host:
        host = await self.plane.read(lambda s: HostRepository(s).get(host_id))
        if host is None:
            raise NotFound(f"no host {host_id}")
        return host

    async def update(self, host_id: uuid.UUID, data: HostUpdate) -> Host:
        changes = data.model_dump(exclude_unset=True)
        status = changes.pop("status", None)
        if changes.get("address") is not None:
            _not_in_process(changes["address"])

        def update(session: Session) -> tuple[Host, bool]:
            host = lock_host(session, host_id)
            for key, value in changes.items():
                setattr(host, key, value)
            needs_init = status == "up" and host.cpus == 0  # never initialised
            if status is not None and not needs_init and status != host.status:
                host.status, host.status_reason, host.down_by_health = status, None, False
                host_event(session, host)
            return host, needs_init

        host, needs_init = await self.plane.write(update)
        if changes:
            self.plane.nodes.forget(host_id)
        if needs_init:  # qarax makes a host schedulable with PATCH {"status": "up"}
            return await self.init(host_id)
        return host

    async def delete(self, host_id: uuid.UUID) -> None:
        def delete(session: Session) -> None:
            host = lock_host(session, host_id)
            if HostRepository(session).has_vms(host_id):
                raise Conflict(
                    f"host {host.name!r} still has VMs",
                    hint="delete its VMs first (GET /vms?host_id=...)",
                )
            host_event(session, host, "deleted")
            HostRepository(session).delete(host)

        await self.plane.write(delete)
        self.plane.nodes.forget(host_id)

    async def init(self, host_id: uuid.UUID) -> Host:
        """Ask the node for its capacity and VMs; record them and mark the host `up`."""

        def begin(session: Session) -> NodeAddress:
            host = lock_host(session, host_id)
            host.status, host.status_reason = "initializing", None
            host_event(session, host)
            return NodeAddress.of(host)

        where = await self.plane.write(begin)
        node = self.plane.nodes.for_host(where)
        asked_at = utcnow()
        try:
            capacity = await node.capacity()
            seen = await node.list_vms()
            networks = await _networks(node)
        except CorralError as exc:
            reason = f"init failed: {exc.message}"
            await self.plane.write(mark_down, host_id, reason, False)
            raise NodeUnreachable(f"host {where.name!r} ({where.base_url}): {exc.message}") from exc

        def done(session: Session) -> Host:
            host = lock_host(session, host_id)
            _record_capacity(host, capacity)
            host.status, host.status_reason, host.down_by_health = "up", None, False
            host.last_seen_at = utcnow()
            reconcile(session, host, seen, asked_at)
            adopt(session, host, networks)
            host_event(session, host)
            return host

        return await self.plane.write(done)


def _not_in_process(address: str) -> None:
    """Only the embedded server's own host `local` is served in-process; another host at that
    address would be a second handle on this machine's VMs."""
    if address.lower().rstrip(".") == IN_PROCESS:
        raise InvalidInput(
            f"address {address!r} is reserved for the embedded host {LOCAL_HOST!r}",
            hint="register a node agent by its host name or IP address",
        )


async def _networks(node: NodeClient) -> list[NodeNetwork]:
    """The node's managed networks; none from an agent older than the network routes."""
    try:
        return await node.list_networks()
    except NotFound:
        return []


def _record_capacity(host: Host, capacity: Capacity) -> None:
    host.cpus = capacity.cpus
    host.memory = capacity.memory_mib * MIB
    host.disk = capacity.disk_bytes
    host.arch = capacity.arch[:32]
    host.accelerator = capacity.accelerator[:16]
    host.versions = dict(capacity.versions)


def mark_down(session: Session, host_id: uuid.UUID, reason: str, by_health: bool) -> None:
    host = HostRepository(session).get(host_id, lock=True)
    if host is None:
        return
    host.status, host.status_reason, host.down_by_health = "down", reason, by_health
    host_event(session, host)
    if by_health:
        for vm in VmRepository(session).on_host(host_id):
            if vm.status != "unknown":
                vm.status, vm.status_reason = "unknown", f"host {host.name!r} is down"
                vm_event(session, vm)
        recount(session, host)

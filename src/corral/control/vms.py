"""VMs: create (schedule and record in one transaction), lifecycle jobs, delete, console.

Creating a VM picks an `up` host with room for it (corral.control.scheduling) and records the
VM on that host and the host's new reservation in the same transaction, so concurrent creates
never over-book a host. The node is called afterwards, by a job, with the spec built from the
VM's row (corral.control.vmspec); what the node then says the VM is gets recorded by
corral.control.vmstate. Later operations go to the VM's host.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from corral.control import vmstate
from corral.control.events import emit
from corral.control.hosts import lock_host, recount, vm_event
from corral.control.jobs import Finish
from corral.control.nodes import NodeAddress
from corral.control.scheduling import check_room, schedule
from corral.control.settings import IN_PROCESS
from corral.control.types import NetworkInterface, VmAction, VmCreate
from corral.control.vmspec import check_roots, node_spec, read_node_spec
from corral.db.models import Job, Vm, utcnow
from corral.db.repositories import (
    BootSourceRepository,
    HostRepository,
    JobRepository,
    StorageObjectRepository,
    VmRepository,
)
from corral.errors import Conflict, CorralError, InvalidInput, NodeUnreachable, NotFound
from corral.instance.options import random_mac
from corral.node.protocol import NodeClient, NodeVm, NodeVmSpec
from corral.node.taps import check_tap_exists

if TYPE_CHECKING:
    from corral.control.plane import ControlPlane

# What each action may start from (besides `unknown`, where the node decides).
ALLOWED_FROM: dict[str, tuple[str, ...]] = {
    "start": ("created", "shutdown", "crashed"),
    "stop": ("running", "paused"),
    "force-stop": ("running", "paused", "crashed", "pending"),
    "pause": ("running",),
    "resume": ("paused",),
    "delete": ("created", "shutdown", "crashed", "running", "paused", "pending"),
}


def job_event(session: Session, job: Job, action: str = "created") -> None:
    emit(session, "job", action, job.id, job.status, {"kind": job.kind, "vm_id": str(job.vm_id)})


class VmService:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    # --- create ---------------------------------------------------------------------------

    async def create(self, data: VmCreate) -> dict[str, Any]:
        """Schedule and record the VM; its public fields and `job_id`. A job creates it."""
        vm, prepared = await self.plane.write(self._record, data)
        self._run(vm["job_id"], vm["id"], "create", start=data.start, prepared=prepared)
        return vm

    def _record(
        self, session: Session, data: VmCreate
    ) -> tuple[dict[str, Any], tuple[NodeVmSpec, NodeAddress]]:
        # The hot path of the API: Core statements, no ORM objects (see the repositories).
        settings = self.plane.settings
        image = _boot_from(session, data, settings.vm_default_image)
        host = schedule(
            session,
            settings,
            self.plane.db.is_postgresql,
            data.name,
            data.boot_vcpus,
            data.memory_size,
            [n.network for n in data.networks if n.network is not None],
        )
        host_id = host.id
        if host.address == IN_PROCESS:
            # This very host: a missing tap is refused before anything is written.
            for nic in data.networks:
                if nic.tap is not None:
                    check_tap_exists(nic.tap)
        now = utcnow()
        vm: dict[str, Any] = {
            "id": uuid.uuid4(),
            "name": data.name,
            "hypervisor": data.hypervisor,
            "status": "pending",
            "status_reason": None,
            "host_id": host_id,
            "boot_vcpus": data.boot_vcpus,
            "max_vcpus": data.max_vcpus or data.boot_vcpus,
            "memory_size": data.memory_size,
            "boot_source_id": data.boot_source_id,
            "image": image,
            "image_object_id": data.image_object_id,
            "disk_size": data.disk_size,
            "user_data": data.user_data,
            "ssh_keys": list(data.ssh_keys),
            "networks": [_interface(n) for n in data.networks],
            "volumes": list(data.volumes),
            "created_at": now,
            "updated_at": now,
        }
        # The job runs as soon as this commits: recorded running, with what the node needs.
        job_id = uuid.uuid4()
        job = {
            "id": job_id,
            "kind": "vm.create",
            "status": "running",
            "vm_id": vm["id"],
            "host_id": host_id,
            "created_at": now,
            "started_at": now,
            "process_id": self.plane.process_id,  # which runs it
        }
        VmRepository(session).insert(vm, data.tags, job)
        if data.boot_source_id is None and data.image_object_id is None:
            # All the node needs is at hand: no need to read it back.
            where = NodeAddress(host_id, host.name, host.address, host.port, host.token)
            prepared = (node_spec(vm, data.start, settings.developer_ssh_keys), where)
        else:
            prepared = read_node_spec(session, vm["id"], data.start, settings.developer_ssh_keys)
            check_roots(settings.storage_roots, prepared[0])
        emit(
            session,
            "vm",
            "created",
            vm["id"],
            "pending",
            {"name": data.name, "host_id": str(host_id), "reason": None},
        )
        emit(
            session,
            "job",
            "created",
            job_id,
            "running",
            {"kind": "vm.create", "vm_id": str(vm["id"])},
        )
        return {**vm, "tags": list(data.tags), "job_id": job_id}, prepared

    # --- reading --------------------------------------------------------------------------

    async def get(self, vm_id: uuid.UUID) -> Vm:
        vm = await self.plane.read(lambda s: VmRepository(s).get(vm_id))
        if vm is None:
            raise NotFound(f"no VM {vm_id}")
        return vm

    async def list(
        self,
        *,
        tags: list[str],
        status: str | None,
        host_id: uuid.UUID | None,
        limit: int,
        offset: int,
        name: str | None = None,
        name_prefix: str | None = None,
        after: tuple[datetime, uuid.UUID] | None = None,
    ) -> list[Vm]:
        def find(session: Session) -> list[Vm]:
            return list(
                VmRepository(session).find(
                    tags=tags,
                    status=status,
                    host_id=host_id,
                    name=name,
                    limit=limit,
                    offset=offset,
                    name_prefix=name_prefix,
                    after=after,
                )
            )

        return await self.plane.read(find)

    async def by_ref(self, ref: str) -> Vm:
        vm = await self.plane.read(lambda s: VmRepository(s).by_ref(ref))
        if vm is None:
            raise NotFound(f"no VM with id or name {ref!r}")
        return vm

    # --- lifecycle ------------------------------------------------------------------------

    async def act(self, vm_id: uuid.UUID, action: VmAction) -> Job:
        job = await self.plane.write(self._begin, vm_id, action, False)
        self._run(job.id, vm_id, action)
        return job

    async def delete(self, vm_id: uuid.UUID, *, force: bool = False) -> Job:
        job = await self.plane.write(self._begin, vm_id, "delete", force)
        self._run(job.id, vm_id, "delete", force=force)
        return job

    def _begin(self, session: Session, vm_id: uuid.UUID, action: str, force: bool) -> Job:
        vm = VmRepository(session).get(vm_id)
        if vm is None:
            raise NotFound(f"no VM {vm_id}")
        host = lock_host(session, vm.host_id)  # hosts before VMs: one lock order everywhere
        vm = VmRepository(session).get(vm_id, lock=True)
        if vm is None:
            raise NotFound(f"no VM {vm_id}")
        # A host in maintenance may still stop and delete its VMs (draining), not start them.
        draining = host.status == "maintenance" and action not in ("start", "resume")
        if host.status != "up" and not draining and not (force and action == "delete"):
            raise Conflict(
                f"VM {vm.name!r} is on host {host.name!r}, which is {host.status}",
                hint="DELETE /vms/{id}?force=true forgets a VM whose host is gone",
            )
        active = JobRepository(session).active_for_vm(vm.id)
        if active is not None and not force:
            raise Conflict(f"VM {vm.name!r} has a {active.kind} job under way ({active.id})")
        if vm.status != "unknown" and vm.status not in ALLOWED_FROM[action] and not force:
            raise Conflict(f"cannot {action} VM {vm.name!r}: it is {vm.status}")
        if action == "start":
            if vm.status == "shutdown":  # its reservation was released: take it again
                check_room(self.plane.settings, host, vm)
            vm.status, vm.status_reason = "pending", None
            recount(session, host)
            vm_event(session, vm)
        job = Job(
            id=uuid.uuid4(),
            kind=f"vm.{action}",
            status="pending",
            vm_id=vm.id,
            host_id=host.id,
            process_id=self.plane.process_id,
        )
        session.add(job)
        session.flush()
        job_event(session, job)
        return job

    # --- the node side, as jobs -----------------------------------------------------------

    def _run(
        self,
        job_id: uuid.UUID,
        vm_id: uuid.UUID,
        action: str,
        *,
        start: bool = False,
        force: bool = False,
        prepared: tuple[NodeVmSpec, NodeAddress] | None = None,
    ) -> None:
        """Hand the node side of an operation to the job runner (`prepared`: the job was
        recorded running, with its node spec, by the transaction that asked for it)."""
        plane = self.plane
        keys = plane.settings.developer_ssh_keys

        async def work(prepared: tuple[NodeVmSpec, NodeAddress]) -> Finish | None:
            spec, where = prepared
            node = plane.nodes.for_host(where)
            if action == "create":
                seen = await node.create_vm(spec)
                return lambda s: vmstate.apply(s, vm_id, seen, expected="pending")
            if action == "delete":
                try:
                    await node.delete_vm(spec.name)
                except NotFound:
                    pass  # never made it to the node, or already gone
                except NodeUnreachable:
                    if not force:
                        raise
                return lambda s: vmstate.forget(s, vm_id)
            seen = await _call(node, action, spec.name)
            return lambda s: vmstate.apply(s, vm_id, seen)

        async def on_error(exc: CorralError) -> Finish | None:
            if action == "create":
                reason = f"create failed: {exc.message}"
                return lambda s: vmstate.set_status(s, vm_id, "crashed", reason)
            # The operation failed: ask the node what the VM is now.
            try:
                spec, where = await plane.read(read_node_spec, vm_id, False, keys)
                seen = await plane.nodes.for_host(where).get_vm(spec.name)
            except CorralError:
                why = f"{action} failed: {exc.message}"
                return lambda s: vmstate.set_status(s, vm_id, "unknown", why)
            return lambda s: vmstate.apply(s, vm_id, seen, f"{action} failed: {exc.message}")

        if prepared is not None:
            plane.runner.spawn_started(job_id, prepared, work, on_error)
        else:
            plane.runner.spawn(
                job_id, work, on_error, prepare=lambda s: read_node_spec(s, vm_id, start, keys)
            )

    # --- console --------------------------------------------------------------------------

    async def console(self, vm_id: uuid.UUID) -> bytes:
        node, name = await self._node_of(vm_id)
        return await node.console_log(name)

    async def console_stream(self, vm_id: uuid.UUID) -> AsyncIterator[bytes]:
        node, name = await self._node_of(vm_id)
        return node.console_stream(name)

    async def console_input(self, vm_id: uuid.UUID, data: bytes) -> None:
        node, name = await self._node_of(vm_id)
        await node.console_input(name, data)

    async def _node_of(self, vm_id: uuid.UUID) -> tuple[NodeClient, str]:
        def find(session: Session) -> tuple[NodeAddress, str]:
            vm = VmRepository(session).get(vm_id)
            if vm is None:
                raise NotFound(f"no VM {vm_id}")
            host = HostRepository(session).get(vm.host_id)
            assert host is not None
            return NodeAddress.of(host), vm.name

        where, name = await self.plane.read(find)
        return self.plane.nodes.for_host(where), name


def _interface(nic: NetworkInterface) -> dict[str, Any]:
    """How an interface is recorded: as given, with its MAC (made up if none was given, so
    the guest's network-config can match it) and its static address as CIDR."""
    entry = nic.model_dump(exclude_none=True, exclude_defaults=True)
    entry["mac"] = nic.mac or random_mac()
    address = nic.cidr()
    if address is not None:
        entry["address"] = address
    return entry


def _boot_from(session: Session, data: VmCreate, default_image: str | None) -> str | None:
    """The image a new VM boots from (None: its disk object, or no disk at all), once its boot
    source and disk object are known to exist and be what they claim."""
    if (
        data.boot_source_id is not None
        and BootSourceRepository(session).get(data.boot_source_id) is None
    ):
        raise InvalidInput(f"boot_source_id: no boot source {data.boot_source_id}")
    if data.image_object_id is not None:
        disk = StorageObjectRepository(session).get(data.image_object_id)
        if disk is None:
            raise InvalidInput(f"image_object_id: no storage object {data.image_object_id}")
        if disk.object_type != "disk":
            raise InvalidInput(
                f"image_object_id: storage object {disk.name!r} is a {disk.object_type}, not a disk"
            )
        return data.image
    if data.image is None and default_image is None:
        if data.boot_source_id is not None:  # qarax's "Minimal": diskless, from its kernel
            if data.disk_size is not None:
                raise InvalidInput("disk_size: a VM with no image has no root disk to size")
            return None
        raise InvalidInput(
            "give image (a corral image name), image_object_id (a disk storage object) "
            "or boot_source_id (a kernel and initramfs to boot without a disk)",
            hint="or set vm_default_image in the server's configuration",
        )
    return data.image or default_image


async def _call(node: NodeClient, action: str, name: str) -> NodeVm:
    if action == "start":
        return await node.start_vm(name)
    if action == "stop":
        return await node.stop_vm(name)
    if action == "force-stop":
        return await node.stop_vm(name, force=True)
    if action == "pause":
        return await node.pause_vm(name)
    if action == "resume":
        return await node.resume_vm(name)
    raise AssertionError(action)

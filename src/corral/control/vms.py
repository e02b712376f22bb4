"""VMs: create (schedule and record in one transaction), lifecycle jobs, delete, console.

Creating a VM picks an `up` host with room for it — free vCPUs and memory after the overcommit
ratios, counting every VM on the host that is not shut down — and records the VM on that host and
the host's new reservation in the same transaction, so concurrent creates never over-book a
host. On PostgreSQL the candidate host row is locked with FOR UPDATE SKIP LOCKED (concurrent
creates spread over hosts instead of queueing on one), falling back to a waiting FOR UPDATE
when every candidate is locked, so a full answer ("no room") is only given after looking at
every host; on SQLite the write transaction (BEGIN IMMEDIATE) makes creates one at a time.
The node is called afterwards, by a job. Later operations go to the VM's host.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row
from sqlalchemy.orm import Session

from corral.control.events import emit
from corral.control.hosts import lock_host, recount, vm_event, vm_status
from corral.control.jobs import Finish
from corral.control.nodes import NodeAddress
from corral.control.types import MIB, VmAction, VmCreate
from corral.db.models import Host, Job, Vm, utcnow
from corral.db.repositories import (
    BootSourceRepository,
    HostRepository,
    JobRepository,
    StorageObjectRepository,
    VmRepository,
)
from corral.errors import Conflict, CorralError, InvalidInput, NodeUnreachable, NotFound
from corral.node.protocol import NodeClient, NodeVm, NodeVmSpec
from corral.storage_roots import under_root

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


def _gib(size: int) -> str:
    return f"{size / (1 << 30):.3g} GiB" if size >= 1 << 30 else f"{size // MIB} MiB"


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
        boot_source = data.boot_source_id
        if boot_source is not None and BootSourceRepository(session).get(boot_source) is None:
            raise InvalidInput(f"boot_source_id: no boot source {data.boot_source_id}")
        image = data.image
        if data.image_object_id is not None:
            disk = StorageObjectRepository(session).get(data.image_object_id)
            if disk is None:
                raise InvalidInput(f"image_object_id: no storage object {data.image_object_id}")
            if disk.object_type != "disk":
                raise InvalidInput(
                    f"image_object_id: storage object {disk.name!r} is a {disk.object_type}, "
                    "not a disk"
                )
        elif image is None:
            image = settings.vm_default_image
            if image is None:
                raise InvalidInput(
                    "give image (a corral image name) or image_object_id (a disk storage object)",
                    hint="or set vm_default_image in the server's configuration",
                )
        host = self._schedule(session, data.name, data.boot_vcpus, data.memory_size)
        host_id = host.id
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
            "networks": [n.model_dump(exclude_none=True) for n in data.networks],
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
        if boot_source is None and data.image_object_id is None:
            # All the node needs is at hand: no need to read it back.
            where = NodeAddress(host_id, host.name, host.address, host.port, host.token)
            prepared = (self._spec(vm, data.start), where)
        else:
            prepared = self._node_spec(session, vm["id"], data.start)
            _check_roots(settings.storage_roots, prepared[0])
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

    def _schedule(self, session: Session, name: str, vcpus: int, memory: int) -> Row[Any]:
        """Reserve room for the VM on a host: the host's (id, name, address, port, token).

        On PostgreSQL hosts other creates hold are skipped; only if that finds none are all
        `up` hosts locked (waiting for those creates), so "no room" means no room."""
        settings = self.plane.settings
        hosts = HostRepository(session)
        wanted = dict(
            vcpus=vcpus,
            memory=memory,
            cpu_ratio=settings.cpu_overcommit,
            memory_ratio=settings.memory_overcommit,
        )
        postgresql = self.plane.db.is_postgresql
        found = hosts.take(name=name, skip_locked=postgresql, **wanted)  # type: ignore[arg-type]
        if found is not None:
            return found
        if VmRepository(session).name_taken(name):
            raise Conflict(f"a VM named {name!r} already exists")
        if postgresql:
            found = hosts.pick_waiting(**wanted)  # type: ignore[arg-type]
            if found is not None:
                hosts.reserve(found.id, vcpus, memory)
                return found
        up = len(hosts.with_status("up"))
        raise InvalidInput(
            f"no up host with enough free capacity for {vcpus} vCPUs and {_gib(memory)} "
            f"({up} host{'s' if up != 1 else ''} up)",
            hint="add or init a host, delete or stop VMs, or raise the overcommit ratios",
        )

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
                self._check_room(host, vm)
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

    def _check_room(self, host: Host, vm: Vm) -> None:
        settings = self.plane.settings
        free_cpu = host.cpus * settings.cpu_overcommit - host.used_vcpus
        free_memory = host.memory * settings.memory_overcommit - host.used_memory
        if free_cpu < vm.boot_vcpus or free_memory < vm.memory_size:
            raise InvalidInput(
                f"host {host.name!r} has no room to start VM {vm.name!r} again "
                f"({vm.boot_vcpus} vCPUs, {_gib(vm.memory_size)})",
                hint="stop or delete other VMs on that host first",
            )

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

        async def work(prepared: tuple[NodeVmSpec, NodeAddress]) -> Finish | None:
            spec, where = prepared
            node = plane.nodes.for_host(where)
            if action == "create":
                seen = await node.create_vm(spec)
                return lambda s: self._apply(s, vm_id, seen, expected="pending")
            if action == "delete":
                try:
                    await node.delete_vm(spec.name)
                except NotFound:
                    pass  # never made it to the node, or already gone
                except NodeUnreachable:
                    if not force:
                        raise
                return lambda s: self._forget(s, vm_id)
            seen = await _call(node, action, spec.name)
            return lambda s: self._apply(s, vm_id, seen)

        async def on_error(exc: CorralError) -> Finish | None:
            if action == "create":
                reason = f"create failed: {exc.message}"
                return lambda s: self._set(s, vm_id, "crashed", reason)
            # The operation failed: ask the node what the VM is now.
            try:
                spec, where = await plane.read(self._node_spec, vm_id, False)
                seen = await plane.nodes.for_host(where).get_vm(spec.name)
            except CorralError:
                return lambda s: self._set(s, vm_id, "unknown", f"{action} failed: {exc.message}")
            return lambda s: self._apply(s, vm_id, seen, f"{action} failed: {exc.message}")

        if prepared is not None:
            plane.runner.spawn_started(job_id, prepared, work, on_error)
        else:
            plane.runner.spawn(
                job_id, work, on_error, prepare=lambda s: self._node_spec(s, vm_id, start)
            )

    def _node_spec(
        self, session: Session, vm_id: uuid.UUID, start: bool
    ) -> tuple[NodeVmSpec, NodeAddress]:
        row = VmRepository(session).node_spec(vm_id)
        if row is None:
            raise NotFound(f"VM {vm_id} was deleted")
        where = NodeAddress(row.host_id, row.host_name, row.address, row.port, row.token)
        return self._spec(row._mapping, start), where

    def _spec(self, vm: Mapping[str, Any], start: bool) -> NodeVmSpec:
        """What the node needs to create the VM: from a VM_NODE_SPEC row, or a new VM's
        values (which have no boot source or disk object)."""
        keys = [*vm["ssh_keys"], *self.plane.settings.developer_ssh_keys]
        base_disk = _path(vm.get("disk"))
        return NodeVmSpec(
            name=vm["name"],
            image=vm["image"] if base_disk is None else None,
            base_disk=base_disk,
            cpus=vm["boot_vcpus"],
            memory_mib=vm["memory_size"] // MIB,
            disk_size=vm["disk_size"],
            user_data=vm["user_data"],
            ssh_keys=list(dict.fromkeys(keys)),
            kernel=_path(vm.get("kernel")),
            initrd=_path(vm.get("initrd")),
            cmdline=vm.get("kernel_params"),
            start=start,
        )

    def _apply(
        self,
        session: Session,
        vm_id: uuid.UUID,
        seen: NodeVm,
        reason: str | None = None,
        *,
        expected: str | None = None,
    ) -> None:
        """Record what the node says the VM now is (`expected`: the status the VM most likely
        still has, tried first in one statement; a create's VM is `pending`)."""
        if expected is not None:
            status, why = vm_status(seen.state, expected), reason or seen.reason
            # A real change that keeps the reservation (shut down or not) needs no host lock.
            if status != expected and (status == "shutdown") == (expected == "shutdown"):
                moved = VmRepository(session).move_from(vm_id, expected, status, why)
                if moved is not None:
                    _vm_updated(session, vm_id, moved, status, why)
                    return
        row = VmRepository(session).state(vm_id)
        if row is not None:
            self._move(
                session, vm_id, row, vm_status(seen.state, row.status), reason or seen.reason
            )

    def _set(self, session: Session, vm_id: uuid.UUID, status: str, reason: str) -> None:
        row = VmRepository(session).state(vm_id)
        if row is not None:
            self._move(session, vm_id, row, status, reason)

    def _move(
        self, session: Session, vm_id: uuid.UUID, row: Any, status: str, reason: str | None
    ) -> None:
        """Change a VM's status (the hot path of every job: no ORM loads). The host is locked
        and recounted only when the VM's reservation changes (shut down or not)."""
        if (status, reason) == (row.status, row.status_reason):
            return
        host = None
        if (row.status == "shutdown") != (status == "shutdown"):
            host = lock_host(session, row.host_id)
        VmRepository(session).set_status(vm_id, status, reason)
        if host is not None:
            recount(session, host)
        _vm_updated(session, vm_id, row, status, reason)

    def _forget(self, session: Session, vm_id: uuid.UUID) -> None:
        vm = VmRepository(session).get(vm_id)
        if vm is None:
            return
        host = lock_host(session, vm.host_id)
        vm_event(session, vm, "deleted")
        VmRepository(session).delete(vm)
        recount(session, host)

    # --- console --------------------------------------------------------------------------

    async def console(self, vm_id: uuid.UUID) -> bytes:
        node, name = await self._node_of(vm_id)
        return await node.console_log(name)

    async def console_stream(self, vm_id: uuid.UUID) -> AsyncIterator[bytes]:
        node, name = await self._node_of(vm_id)
        return node.console_stream(name)

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


def _vm_updated(
    session: Session, vm_id: uuid.UUID, row: Any, status: str, reason: str | None
) -> None:
    """The event of a VM's new status; `row` has the VM's name and host_id."""
    data = {"name": row.name, "host_id": str(row.host_id), "reason": reason}
    emit(session, "vm", "updated", vm_id, status, data)


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


def _check_roots(roots: Sequence[Path], spec: NodeVmSpec) -> None:
    """Storage objects made before the roots were narrowed are refused here too (the node
    checks its own roots again, without following links, when it opens the files)."""
    for what, path in (("disk", spec.base_disk), ("kernel", spec.kernel), ("initrd", spec.initrd)):
        if path is not None:
            under_root(roots, path, f"the {what} storage object's path")


def _path(config: dict[str, Any] | None) -> str | None:
    """A storage object's path, from its config."""
    return None if config is None else str(PurePosixPath(config["path"]))

"""Repositories: queries, add and flush over one Session. They never commit or decide.

Row locks (`FOR UPDATE`) are asked for by the service, which knows why it needs them; on SQLite
they are no-ops and the write transaction (BEGIN IMMEDIATE) gives the same guarantee.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import (
    Connection,
    Row,
    and_,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
)
from sqlalchemy.orm import Session

from corral.db import hot
from corral.db import statements as sql
from corral.db.models import (
    Allocation,
    ApiToken,
    Base,
    BootSource,
    EventRecord,
    Host,
    Job,
    Network,
    NetworkHost,
    StorageObject,
    StoragePool,
    Vm,
    VmTag,
    utcnow,
)

M = TypeVar("M", bound=Base)

if TYPE_CHECKING:
    # A result row of any shape (SQLAlchemy types rows by their columns).
    AnyRow = Row[*tuple[Any, ...]]


class Repository(Generic[M]):
    model: type[M]

    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, id: uuid.UUID, *, lock: bool = False) -> M | None:
        if lock:
            stmt = select(self.model).where(self.model.id == id).with_for_update()  # type: ignore[attr-defined]  # every model has it; Base does not declare it
            return self.session.scalars(stmt).first()
        return self.session.get(self.model, id)

    def by_name(self, name: str) -> M | None:
        return self.session.scalars(select(self.model).where(self.model.name == name)).first()  # type: ignore[attr-defined]  # every model has it; Base does not declare it

    @property
    def conn(self) -> Connection:
        # Session.connection() is not free; a transaction keeps one connection throughout.
        conn = self.session.info.get("connection")
        if conn is None:
            conn = self.session.info["connection"] = self.session.connection()
        return conn

    def name_taken(self, name: str) -> bool:
        table = self.model.__table__
        stmt = select(table.c.id).where(table.c.name == name).limit(1)
        return self.conn.execute(stmt).first() is not None

    def list(self, *, limit: int | None = None, offset: int = 0) -> Sequence[M]:
        stmt = select(self.model).order_by(self.model.created_at, self.model.id)  # type: ignore[attr-defined]  # every model has it; Base does not declare it
        if limit is not None:
            stmt = stmt.limit(limit)
        return self.session.scalars(stmt.offset(offset)).all()

    def add(self, obj: M) -> M:
        self.session.add(obj)
        self.session.flush()
        return obj

    def delete(self, obj: M) -> None:
        self.session.delete(obj)
        self.session.flush()


class HostRepository(Repository[Host]):
    model = Host

    def take(
        self,
        *,
        name: str,
        vcpus: int,
        memory: int,
        cpu_ratio: float,
        memory_ratio: float,
        skip_locked: bool,
        among: Sequence[uuid.UUID] | None = None,
    ) -> AnyRow | None:
        """Reserve room for VM `name` on the `up` host with room for it and the most free
        memory, if no VM has that name yet: the host's (id, name, address, port, token).

        skip_locked: FOR UPDATE SKIP LOCKED, a host other transactions hold is passed over
        (PostgreSQL; on SQLite the transaction holds the only write lock).
        among: only these hosts (those that have the VM's networks).
        """
        params: dict[str, Any] = {
            "vm_name": name,
            "need_vcpus": vcpus,
            "need_memory": memory,
            "cpu_ratio": cpu_ratio,
            "memory_ratio": memory_ratio,
            "now": utcnow(),
        }
        if among is None:
            stmt = sql.TAKE_HOST_SKIP_LOCKED if skip_locked else sql.TAKE_HOST
            return hot.first(self.conn, stmt, params)
        stmt = sql.TAKE_HOST_AMONG_SKIP_LOCKED if skip_locked else sql.TAKE_HOST_AMONG
        return self.conn.execute(stmt, {**params, "host_ids": list(among)}).first()

    def pick_waiting(
        self,
        *,
        vcpus: int,
        memory: int,
        cpu_ratio: float,
        memory_ratio: float,
        among: Sequence[uuid.UUID] | None = None,
    ) -> AnyRow | None:
        """Like take, without reserving, after FOR UPDATE on every `up` host in id order (so
        two such transactions cannot deadlock): the choice is made on their current values."""
        params = {"cpu_ratio": cpu_ratio, "memory_ratio": memory_ratio}
        rows = self.conn.execute(sql.LOCK_UP_HOSTS, params).all()
        fits = [
            r
            for r in rows
            if r.free_cpu >= vcpus and r.free_memory >= memory and (among is None or r.id in among)
        ]
        return max(fits, key=lambda r: r.free_memory) if fits else None

    def reserve(self, host_id: uuid.UUID, vcpus: int, memory: int) -> None:
        self.conn.execute(
            sql.RESERVE, {"host_id": host_id, "add_vcpus": vcpus, "add_memory": memory}
        )

    def with_status(self, *statuses: str) -> Sequence[Host]:
        return self.session.scalars(select(Host).where(Host.status.in_(statuses))).all()

    def usage(self, host_id: uuid.UUID) -> tuple[int, int]:
        """(vcpus, memory) reserved by the host's VMs that are not shut down, summed afresh."""
        stmt = select(
            func.coalesce(func.sum(Vm.boot_vcpus), 0), func.coalesce(func.sum(Vm.memory_size), 0)
        ).where(Vm.host_id == host_id, Vm.status != "shutdown")
        vcpus, memory = self.session.execute(stmt).one()
        return int(vcpus), int(memory)

    def has_vms(self, host_id: uuid.UUID) -> bool:
        return bool(self.session.scalar(select(exists().where(Vm.host_id == host_id))))


class NetworkRepository(Repository[Network]):
    model = Network

    def hosts_with(self, names: Sequence[str]) -> dict[str, set[uuid.UUID]]:
        """For each of these names that is a `ready` network: the hosts that have it."""
        stmt = (
            select(Network.name, NetworkHost.host_id)
            .join(NetworkHost, NetworkHost.network_id == Network.id)
            .where(Network.name.in_(names), Network.state == "ready")
            # FOR SHARE (PostgreSQL): a delete, which locks the row before it looks for users,
            # waits for this VM's create to commit and then sees it.
            .with_for_update(read=True, of=Network)
        )
        found: dict[str, set[uuid.UUID]] = {}
        for name, host_id in self.session.execute(stmt):
            found.setdefault(name, set()).add(host_id)
        return found

    def users(self, network: Network) -> list[str]:
        """The VMs with an interface on this network (on any of its hosts)."""
        host_ids = [row.host_id for row in network.host_rows]
        stmt = select(Vm.name, Vm.networks).where(Vm.host_id.in_(host_ids)).order_by(Vm.name)
        return [
            name
            for name, entries in self.session.execute(stmt)
            if any(entry.get("network") == network.name for entry in entries or ())
        ]


class StoragePoolRepository(Repository[StoragePool]):
    model = StoragePool

    def has_objects(self, pool_id: uuid.UUID) -> bool:
        stmt = select(exists().where(StorageObject.storage_pool_id == pool_id))
        return bool(self.session.scalar(stmt))


class StorageObjectRepository(Repository[StorageObject]):
    model = StorageObject

    def users(self, object_id: uuid.UUID) -> list[str]:
        """Names of the boot sources and VMs that use the object ('boot source X', 'VM Y')."""
        boot = select(BootSource.name).where(
            or_(BootSource.kernel_image_id == object_id, BootSource.initrd_image_id == object_id)
        )
        vms = select(Vm.name).where(Vm.image_object_id == object_id)
        return [f"boot source {n!r}" for n in self.session.scalars(boot.limit(5))] + [
            f"VM {n!r}" for n in self.session.scalars(vms.limit(5))
        ]


class BootSourceRepository(Repository[BootSource]):
    model = BootSource

    def users(self, boot_source_id: uuid.UUID) -> list[str]:
        stmt = select(Vm.name).where(Vm.boot_source_id == boot_source_id).limit(5)
        return [f"VM {n!r}" for n in self.session.scalars(stmt)]


class VmRepository(Repository[Vm]):
    model = Vm

    def find(
        self,
        *,
        tags: Sequence[str] = (),
        status: str | None = None,
        host_id: uuid.UUID | None = None,
        name: str | None = None,
        limit: int = 100,
        offset: int = 0,
        name_prefix: str | None = None,
        after: tuple[datetime, uuid.UUID] | None = None,
    ) -> Sequence[Vm]:
        """VMs in creation order; `after` (created_at, id) of the last one seen pages by key
        on the (created_at, id) index, as fast on the hundredth page as on the first."""
        stmt = select(Vm)
        if name is not None:
            stmt = stmt.where(Vm.name == name)
        if name_prefix:
            stmt = stmt.where(Vm.name.startswith(name_prefix, autoescape=True))
        if after is not None:
            created, last_id = after
            stmt = stmt.where(
                or_(Vm.created_at > created, and_(Vm.created_at == created, Vm.id > last_id))
            )
        if status is not None:
            stmt = stmt.where(Vm.status == status)
        if host_id is not None:
            stmt = stmt.where(Vm.host_id == host_id)
        for tag in sorted(set(tags)):  # every tag must be present
            stmt = stmt.where(exists().where(and_(VmTag.vm_id == Vm.id, VmTag.tag == tag)))
        stmt = stmt.order_by(Vm.created_at, Vm.id).limit(limit).offset(offset)
        return self.session.scalars(stmt).all()

    def count_by_host(self) -> dict[uuid.UUID, int]:
        stmt = select(Vm.host_id, func.count()).group_by(Vm.host_id)
        return dict(self.conn.execute(stmt).tuples().all())

    def on_host(self, host_id: uuid.UUID) -> Sequence[Vm]:
        return self.session.scalars(select(Vm).where(Vm.host_id == host_id)).all()

    def name_taken(self, name: str) -> bool:
        return self.conn.execute(sql.VM_NAME_TAKEN, {"name": name}).first() is not None

    def insert(
        self, values: dict[str, Any], tags: Sequence[str], job: dict[str, Any] | None = None
    ) -> None:
        """A new VM (values: sql.NEW_VM_COLUMNS), its tags and the job creating it (values:
        sql.NEW_JOB_COLUMNS); in one statement on PostgreSQL."""
        if job is not None and self.session.get_bind().dialect.name == "postgresql":
            params = {f"v_{k}": values[k] for k in sql.NEW_VM_COLUMNS}
            params.update({f"j_{k}": job[k] for k in sql.NEW_JOB_COLUMNS})
            hot.run(self.conn, sql.INSERT_VM_TAGS_JOB, {**params, "tags": list(tags)})
            return
        self.conn.execute(sql.INSERT_VM, values)
        if tags:
            self.conn.execute(sql.INSERT_TAGS, [{"vm_id": values["id"], "tag": t} for t in tags])
        if job is not None:
            self.conn.execute(sql.INSERT_JOB, job)

    def state(self, vm_id: uuid.UUID) -> AnyRow | None:
        """(name, status, status_reason, host_id) of a VM, without loading the whole row."""
        return self.conn.execute(sql.VM_STATE, {"vm_id": vm_id}).first()

    def move_from(
        self, vm_id: uuid.UUID, expected: str, status: str, reason: str | None
    ) -> AnyRow | None:
        """expected -> status in one statement; the VM's (name, host_id), or None if it was
        not in the expected status (or is gone)."""
        params = {"vm_id": vm_id, "from_status": expected, "to_status": status, "to_reason": reason}
        return hot.first(self.conn, sql.VM_MOVE_FROM, {**params, "now": utcnow()})

    def set_status(self, vm_id: uuid.UUID, status: str, reason: str | None) -> None:
        params = {"vm_id": vm_id, "to_status": status, "to_reason": reason, "now": utcnow()}
        self.conn.execute(sql.VM_SET_STATUS, params)

    def node_spec(self, vm_id: uuid.UUID) -> AnyRow | None:
        """In one statement: what a node needs to create the VM, and where its host is."""
        return self.conn.execute(sql.VM_NODE_SPEC, {"vm_id": vm_id}).first()

    def by_ref(self, ref: str) -> Vm | None:
        """A VM by id or by name."""
        try:
            vm = self.get(uuid.UUID(ref))
        except ValueError:
            vm = None
        return vm if vm is not None else self.by_name(ref)


class JobRepository(Repository[Job]):
    model = Job

    def active_for_vm(self, vm_id: uuid.UUID) -> Job | None:
        stmt = select(Job).where(Job.vm_id == vm_id, Job.status.in_(("pending", "running")))
        return self.session.scalars(stmt.limit(1)).first()

    def recent(self, *, vm_id: uuid.UUID | None, limit: int, offset: int) -> Sequence[Job]:
        stmt = select(Job)
        if vm_id is not None:
            stmt = stmt.where(Job.vm_id == vm_id)
        stmt = stmt.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)
        return self.session.scalars(stmt).all()

    def insert(self, values: dict[str, Any]) -> None:
        self.conn.execute(sql.INSERT_JOB, values)

    def running(self, job_id: uuid.UUID, at: datetime) -> tuple[str, uuid.UUID | None] | None:
        """pending -> running; the job's (kind, vm_id), or None if it was not pending."""
        row = self.conn.execute(sql.JOB_RUNNING, {"job_id": job_id, "at": at}).first()
        return None if row is None else (row[0], row[1])

    def finished(
        self,
        job_id: uuid.UUID,
        status: str,
        error: str | None,
        error_status: int | None,
        at: datetime,
    ) -> tuple[str, uuid.UUID | None] | None:
        """-> completed or failed; the job's (kind, vm_id), or None if it had finished."""
        params = {"job_id": job_id, "to_status": status, "at": at}
        params.update(to_error=error, to_error_status=error_status)
        row = hot.first(self.conn, sql.JOB_FINISHED, params)
        return None if row is None else (row[0], row[1])

    def unfinished(self, *, process_id: uuid.UUID | None = None) -> Sequence[Job]:
        """Pending and running jobs (of one control-plane process), locked on PostgreSQL."""
        stmt = select(Job).where(Job.status.in_(("pending", "running")))
        if process_id is not None:
            stmt = stmt.where(Job.process_id == process_id)
        return self.session.scalars(stmt.with_for_update()).all()


class EventRepository:
    """Stored events: written many at once (one statement per transaction), read newest first."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def insert(self, rows: list[dict[str, Any]]) -> None:
        if rows:  # a bulk INSERT: one executemany, nothing read back
            self.session.execute(insert(EventRecord), rows)

    def recent(
        self, *, kinds: Sequence[str] = (), object_id: uuid.UUID | None = None, limit: int = 50
    ) -> Sequence[EventRecord]:
        """Newest first; of these kinds (all if none), about this object (any if None)."""
        stmt = select(EventRecord)
        if object_id is not None:
            stmt = stmt.where(EventRecord.object_id == object_id)  # ix_events_object_id_id
        if kinds:
            stmt = stmt.where(EventRecord.kind.in_(kinds))
        return self.session.scalars(stmt.order_by(EventRecord.id.desc()).limit(limit)).all()

    def prune(self, *, before: datetime, keep: int) -> int:
        """Delete the events older than `before`, and all but the newest `keep`; how many."""
        newest_dropped = (
            select(EventRecord.id)
            .order_by(EventRecord.id.desc())
            .limit(1)
            .offset(keep)
            .scalar_subquery()
        )
        connection = self.session.connection()
        return sum(
            connection.execute(delete(EventRecord).where(condition)).rowcount
            for condition in (EventRecord.at < before, EventRecord.id <= newest_dropped)
        )


class TokenRepository(Repository[ApiToken]):
    model = ApiToken

    def by_key(self, key: str) -> tuple[str, bool, str] | None:
        """(sha256 of the token, revoked, role) for the token with this public key."""
        row = self.conn.execute(sql.TOKEN_BY_KEY, {"key": key}).first()
        return None if row is None else (row[0], row[1] is not None, row[2])


class AllocationRepository(Repository[Allocation]):
    model = Allocation

    def vm_ids(self) -> set[uuid.UUID]:
        return set(self.session.scalars(select(Allocation.vm_id)))

    def remove(self, vm_ids: Sequence[uuid.UUID]) -> None:
        if vm_ids:
            self.session.execute(delete(Allocation).where(Allocation.vm_id.in_(vm_ids)))
            self.session.flush()

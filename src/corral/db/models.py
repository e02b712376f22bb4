"""The control plane's tables, as SQLAlchemy 2 declarative models.

Every id is a UUID; every time is UTC. A host keeps running totals of what its VMs reserve
(`used_vcpus`, `used_memory`), changed in the same transaction as the VM rows they count, so
scheduling reads one row per host instead of summing every VM.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> uuid.UUID:
    return uuid.uuid4()


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is always UTC and timezone-aware in Python (SQLite stores it naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UtcDateTime, uuid.UUID: Uuid, dict[str, Any]: JSON}


class Host(Base):
    __tablename__ = "hosts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    address: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    # The node agent's bearer token: sent to the node, so it cannot be stored hashed.
    token: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="unknown", index=True)
    status_reason: Mapped[str | None] = mapped_column(Text)
    # True when the health checker (not an operator) marked the host down: it may bring it back.
    down_by_health: Mapped[bool] = mapped_column(Boolean, default=False)
    # Capacity, as the node reported it at init.
    cpus: Mapped[int] = mapped_column(Integer, default=0)
    memory: Mapped[int] = mapped_column(BigInteger, default=0)  # bytes
    disk: Mapped[int] = mapped_column(BigInteger, default=0)  # free bytes
    arch: Mapped[str | None] = mapped_column(String(32))
    accelerator: Mapped[str | None] = mapped_column(String(16))
    versions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # What its VMs that are not shut down reserve.
    used_vcpus: Mapped[int] = mapped_column(Integer, default=0)
    used_memory: Mapped[int] = mapped_column(BigInteger, default=0)
    last_seen_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def has_token(self) -> bool:
        return self.token is not None


class StoragePool(Base):
    __tablename__ = "storage_pools"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    pool_type: Mapped[str] = mapped_column(String(16))
    config: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StorageObject(Base):
    __tablename__ = "storage_objects"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    storage_pool_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("storage_pools.id", ondelete="RESTRICT"), index=True
    )
    object_type: Mapped[str] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    config: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BootSource(Base):
    __tablename__ = "boot_sources"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    kernel_image_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("storage_objects.id", ondelete="RESTRICT"), index=True
    )
    initrd_image_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("storage_objects.id", ondelete="RESTRICT"), index=True
    )
    kernel_params: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Network(Base):
    """A managed network (corral.net) of the fleet: the same name on one or more hosts, each
    with its own bridge and subnet (NetworkHost). `state` is `creating` until every host has
    it and `removing` while it is taken down: VMs are only placed on `ready` ones."""

    __tablename__ = "networks"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    state: Mapped[str] = mapped_column(String(16), default="creating")
    # What was asked for (subnet, ipv6, nat, isolated, domain, mtu): sent to each host.
    config: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    host_rows: Mapped[list[NetworkHost]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="NetworkHost.host_id"
    )


class NetworkHost(Base):
    """A network on one host: what that host's node made of it."""

    __tablename__ = "network_hosts"

    network_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("networks.id", ondelete="CASCADE"), primary_key=True
    )
    host_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    bridge: Mapped[str] = mapped_column(String(16))
    subnet: Mapped[str] = mapped_column(String(64))
    gateway: Mapped[str] = mapped_column(String(64))


class Vm(Base):
    __tablename__ = "vms"
    __table_args__ = (Index("ix_vms_created_at_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    hypervisor: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    status_reason: Mapped[str | None] = mapped_column(Text)
    host_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("hosts.id", ondelete="RESTRICT"), index=True
    )
    boot_vcpus: Mapped[int] = mapped_column(Integer)
    max_vcpus: Mapped[int] = mapped_column(Integer)
    memory_size: Mapped[int] = mapped_column(BigInteger)  # bytes
    boot_source_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("boot_sources.id", ondelete="RESTRICT"), index=True
    )
    image: Mapped[str | None] = mapped_column(String(255))  # a corral image name on the node
    image_object_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("storage_objects.id", ondelete="RESTRICT"), index=True
    )
    disk_size: Mapped[int | None] = mapped_column(BigInteger)
    user_data: Mapped[str | None] = mapped_column(Text)
    ssh_keys: Mapped[list[str]] = mapped_column(JSON, default=list)
    networks: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    volumes: Mapped[list[int]] = mapped_column(JSON, default=list, server_default="[]")  # bytes
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    tag_rows: Mapped[list[VmTag]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="VmTag.tag"
    )

    @property
    def tags(self) -> list[str]:
        return [row.tag for row in self.tag_rows]


class VmTag(Base):
    __tablename__ = "vm_tags"

    vm_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("vms.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(63), primary_key=True, index=True)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(32))  # vm.create, vm.start, ...
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # No foreign keys: a job's record outlives the VM or host it was about.
    vm_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    host_id: Mapped[uuid.UUID | None]
    error: Mapped[str | None] = mapped_column(Text)
    error_status: Mapped[int | None]  # HTTP status of the error's kind (4xx: the request's)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # The control-plane process running it (see PlaneProcess); none for older jobs.
    process_id: Mapped[uuid.UUID | None] = mapped_column(index=True)


class PlaneProcess(Base):
    """A control-plane process sharing the database, alive while it keeps `seen_at` fresh:
    jobs run in the process that accepted them, so one that stopped answering leaves jobs
    that no one will finish."""

    __tablename__ = "plane_processes"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))  # host name and pid, for people
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """A bearer token: `corral_<key>_<secret>`; only the sha256 of the whole token is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    key: Mapped[str] = mapped_column(String(16), unique=True)  # public part, for the lookup
    token_hash: Mapped[str] = mapped_column(String(64))
    # `admin`, `user` or `metrics` (see corral.control.tokens.ROLES); tokens made before roles
    # are admin.
    role: Mapped[str] = mapped_column(String(16), default="user")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class Allocation(Base):
    """A VM that aleph-vm's allocation endpoint wants running."""

    __tablename__ = "allocations"

    vm_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("vms.id", ondelete="CASCADE"), primary_key=True
    )
    persistent: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EventRecord(Base):
    """A state change as GET /events sent it, kept for a while (corral.control.eventlog):
    written in the transaction of the change, so a change rolled back leaves none. `id`
    counts up: newest first is `id` descending."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_object_id_id", "object_id", "id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(8))  # host | vm | job
    action: Mapped[str] = mapped_column(String(16))  # created | updated | deleted
    object_id: Mapped[uuid.UUID]  # the host's, VM's or job's; no foreign key: it outlives them
    status: Mapped[str | None] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

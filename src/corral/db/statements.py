"""Core statements of the hot paths (VM creates, job steps, token checks), built once.

Those run through corral.db.hot name every value they write (see there).

Building a SQLAlchemy statement and computing its cache key costs more than running it on
SQLite; these are built at import with bind parameters and only executed afterwards. Used by the
repositories; nothing else should need them.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import (
    ARRAY,
    Float,
    String,
    Table,
    bindparam,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.sql.expression import FromClause, TableClause

from corral.db.models import ApiToken, BootSource, Host, Job, StorageObject, Vm, VmTag

HOSTS = cast(Table, Host.__table__)
VMS = cast(Table, Vm.__table__)
TAGS = cast(Table, VmTag.__table__)
JOBS = cast(Table, Job.__table__)
TOKENS = cast(Table, ApiToken.__table__)
BOOT_SOURCES = cast(Table, BootSource.__table__)
OBJECTS = cast(Table, StorageObject.__table__)

_h, _v, _j = HOSTS.c, VMS.c, JOBS.c

VM_NAME_TAKEN = select(_v.id).where(_v.name == bindparam("name")).limit(1)


def _free_cpu(hosts: FromClause) -> Any:
    """A host's free vCPUs after the overcommit ratio."""
    return hosts.c.cpus * bindparam("cpu_ratio", type_=Float) - hosts.c.used_vcpus


def _free_memory(hosts: FromClause) -> Any:
    return hosts.c.memory * bindparam("memory_ratio", type_=Float) - hosts.c.used_memory


def _pick(hosts: FromClause, among: bool = False) -> Any:
    """The `up` host with room for the VM and the most free memory (among: one of the hosts
    in the `host_ids` parameter, e.g. those with the VM's networks)."""
    fits = (
        (hosts.c.status == "up")
        & (bindparam("need_vcpus") <= _free_cpu(hosts))
        & (bindparam("need_memory") <= _free_memory(hosts))
    )
    if among:
        fits = fits & hosts.c.id.in_(bindparam("host_ids", expanding=True))
    return select(hosts.c.id).where(fits).order_by(_free_memory(hosts).desc(), hosts.c.id).limit(1)


# A picked host comes with what it takes to reach its node.
_ADDRESS = (_h.id, _h.name, _h.address, _h.port, _h.token)
LOCK_UP_HOSTS = (
    select(*_ADDRESS, _free_cpu(HOSTS).label("free_cpu"), _free_memory(HOSTS).label("free_memory"))
    .where(_h.status == "up")
    .order_by(_h.id)
    .with_for_update()
)
RESERVE = (
    update(HOSTS)
    .where(_h.id == bindparam("host_id"))
    .values(
        used_vcpus=_h.used_vcpus + bindparam("add_vcpus"),
        used_memory=_h.used_memory + bindparam("add_memory"),
    )
)


def _take(skip_locked: bool, among: bool = False) -> Any:
    """Pick a host and reserve the VM's room on it, in one statement, if no VM has its name
    (else no row: nothing changed). SKIP LOCKED passes over hosts other creates hold."""
    candidate = _pick(HOSTS.alias("candidate"), among)
    if skip_locked:
        candidate = candidate.with_for_update(skip_locked=True)
    name_free = ~exists().where(_v.name == bindparam("vm_name"))
    return (
        update(HOSTS)
        .where(_h.id == candidate.scalar_subquery(), name_free)
        .values(
            used_vcpus=_h.used_vcpus + bindparam("need_vcpus"),
            used_memory=_h.used_memory + bindparam("need_memory"),
            updated_at=bindparam("now"),
        )
        .returning(*_ADDRESS)
    )


TAKE_HOST = _take(skip_locked=False)
TAKE_HOST_SKIP_LOCKED = _take(skip_locked=True)
TAKE_HOST_AMONG = _take(skip_locked=False, among=True)
TAKE_HOST_AMONG_SKIP_LOCKED = _take(skip_locked=True, among=True)

INSERT_VM = insert(VMS)
INSERT_TAGS = insert(TAGS)
INSERT_JOB = insert(JOBS)

# What a create records besides its host's reservation (the keys of its parameters).
NEW_VM_COLUMNS = (
    "id", "name", "hypervisor", "status", "status_reason", "host_id", "boot_vcpus", "max_vcpus",
    "memory_size", "boot_source_id", "image", "image_object_id", "disk_size", "user_data",
    "ssh_keys", "networks", "volumes", "created_at", "updated_at",
)  # fmt: skip
NEW_JOB_COLUMNS = (
    "id", "kind", "status", "vm_id", "host_id", "created_at", "started_at", "process_id",
)  # fmt: skip


def _binds(table: TableClause, columns: tuple[str, ...], prefix: str) -> dict[str, Any]:
    return {c: bindparam(prefix + c, type_=table.c[c].type) for c in columns}


# PostgreSQL: a new VM, its tags and its job in one statement (data-modifying CTEs; the
# foreign keys are checked when the whole statement is done). Parameters v_*, j_* and tags.
INSERT_VM_TAGS_JOB = (
    insert(JOBS)
    .values(_binds(JOBS, NEW_JOB_COLUMNS, "j_"))
    .add_cte(insert(VMS).values(_binds(VMS, NEW_VM_COLUMNS, "v_")).cte("new_vm"))
    .add_cte(
        insert(TAGS)
        .from_select(
            ["vm_id", "tag"],
            select(
                bindparam("v_id", type_=_v.id.type),
                func.unnest(bindparam("tags", type_=ARRAY(String(63)))),
            ),
        )
        .cte("new_tags")
    )
)

VM_STATE = select(_v.name, _v.status, _v.status_reason, _v.host_id).where(
    _v.id == bindparam("vm_id")
)
# A status change expected from `from_status`: no row back if the VM has moved on meanwhile.
VM_MOVE_FROM = (
    update(VMS)
    .where(_v.id == bindparam("vm_id"), _v.status == bindparam("from_status"))
    .values(
        status=bindparam("to_status"),
        status_reason=bindparam("to_reason"),
        updated_at=bindparam("now"),
    )
    .returning(_v.name, _v.host_id)
)
VM_SET_STATUS = (
    update(VMS)
    .where(_v.id == bindparam("vm_id"))
    .values(
        status=bindparam("to_status"),
        status_reason=bindparam("to_reason"),
        updated_at=bindparam("now"),
    )
)

_kernel, _initrd, _disk = (OBJECTS.alias(f"{n}_object") for n in ("kernel", "initrd", "disk"))
VM_NODE_SPEC = (
    select(
        _v.name,
        _v.image,
        _v.boot_vcpus,
        _v.memory_size,
        _v.disk_size,
        _v.user_data,
        _v.ssh_keys,
        _v.networks,
        _v.volumes,
        _h.id.label("host_id"),
        _h.name.label("host_name"),
        _h.address,
        _h.port,
        _h.token,
        BOOT_SOURCES.c.kernel_params,
        _kernel.c.config.label("kernel"),
        _initrd.c.config.label("initrd"),
        _disk.c.config.label("disk"),
    )
    .select_from(VMS)
    .join(HOSTS, _h.id == _v.host_id)
    .outerjoin(BOOT_SOURCES, BOOT_SOURCES.c.id == _v.boot_source_id)
    .outerjoin(_kernel, _kernel.c.id == BOOT_SOURCES.c.kernel_image_id)
    .outerjoin(_initrd, _initrd.c.id == BOOT_SOURCES.c.initrd_image_id)
    .outerjoin(_disk, _disk.c.id == _v.image_object_id)
    .where(_v.id == bindparam("vm_id"))
)

JOB_RUNNING = (
    update(JOBS)
    .where(_j.id == bindparam("job_id"), _j.status == "pending")
    .values(status="running", started_at=bindparam("at"))
    .returning(_j.kind, _j.vm_id)
)
JOB_FINISHED = (
    update(JOBS)
    .where(_j.id == bindparam("job_id"), or_(_j.status == "pending", _j.status == "running"))
    .values(
        status=bindparam("to_status"),
        error=bindparam("to_error"),
        error_status=bindparam("to_error_status"),
        finished_at=bindparam("at"),
    )
    .returning(_j.kind, _j.vm_id)
)

TOKEN_BY_KEY = select(TOKENS.c.token_hash, TOKENS.c.revoked_at, TOKENS.c.role).where(
    TOKENS.c.key == bindparam("key")
)

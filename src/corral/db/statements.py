"""Core statements of the hot paths (VM creates, job steps, token checks), built once.

Building a SQLAlchemy statement and computing its cache key costs more than running it on
SQLite; these are built at import with bind parameters and only executed afterwards. Used by the
repositories; nothing else should need them.
"""

from __future__ import annotations

from sqlalchemy import Float, bindparam, insert, select, update

from corral.db.models import ApiToken, BootSource, Host, Job, StorageObject, Vm, VmTag

HOSTS = Host.__table__
VMS = Vm.__table__
TAGS = VmTag.__table__
JOBS = Job.__table__
TOKENS = ApiToken.__table__
BOOT_SOURCES = BootSource.__table__
OBJECTS = StorageObject.__table__

_h, _v, _j = HOSTS.c, VMS.c, JOBS.c

VM_NAME_TAKEN = select(_v.id).where(_v.name == bindparam("name")).limit(1)

# Free room of a host after the overcommit ratios.
_FREE_CPU = _h.cpus * bindparam("cpu_ratio", type_=Float) - _h.used_vcpus
_FREE_MEMORY = _h.memory * bindparam("memory_ratio", type_=Float) - _h.used_memory
_FITS = (
    (_h.status == "up") & (bindparam("vcpus") <= _FREE_CPU) & (bindparam("memory") <= _FREE_MEMORY)
)
# A picked host comes with what it takes to reach its node.
_ADDRESS = (_h.id, _h.name, _h.address, _h.port, _h.token)
PICK_HOST = select(*_ADDRESS).where(_FITS).order_by(_FREE_MEMORY.desc(), _h.id).limit(1)
PICK_HOST_SKIP_LOCKED = PICK_HOST.with_for_update(skip_locked=True)
LOCK_UP_HOSTS = (
    select(*_ADDRESS, _FREE_CPU.label("free_cpu"), _FREE_MEMORY.label("free_memory"))
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

INSERT_VM = insert(VMS)
INSERT_TAGS = insert(TAGS)
INSERT_JOB = insert(JOBS)

VM_STATE = select(_v.name, _v.status, _v.status_reason, _v.host_id).where(
    _v.id == bindparam("vm_id")
)
# A status change expected from `from_status`: no row back if the VM has moved on meanwhile.
VM_MOVE_FROM = (
    update(VMS)
    .where(_v.id == bindparam("vm_id"), _v.status == bindparam("from_status"))
    .values(status=bindparam("to_status"), status_reason=bindparam("to_reason"))
    .returning(_v.name, _v.host_id)
)
VM_SET_STATUS = (
    update(VMS)
    .where(_v.id == bindparam("vm_id"))
    .values(status=bindparam("to_status"), status_reason=bindparam("to_reason"))
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
    .where(_j.id == bindparam("job_id"), _j.status.in_(("pending", "running")))
    .values(status=bindparam("to_status"), error=bindparam("to_error"), finished_at=bindparam("at"))
    .returning(_j.kind, _j.vm_id)
)

TOKEN_BY_KEY = select(TOKENS.c.token_hash, TOKENS.c.revoked_at).where(
    TOKENS.c.key == bindparam("key")
)

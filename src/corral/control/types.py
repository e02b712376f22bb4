"""What the control plane's services take and give: validated inputs (the REST API's request
bodies are these very models, see corral.api.schemas for the public shapes of answers), the
statuses of hosts, VMs and jobs, events, and allocations.

Inputs forbid unknown fields and bound every value (lengths, ranges, no NUL characters), so
nothing a client sends can reach the database in a shape it would refuse: a malformed request
is a 422 naming the field, never a 500.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

HYPERVISORS = ("qemu",)  # what this fleet offers
MIB = 1 << 20
MAX_BYTES = 1 << 50  # 1 PiB: beyond any host, and far inside a signed 64-bit column

HostStatus = Literal["unknown", "down", "initializing", "up", "maintenance"]
HostSettableStatus = Literal["up", "down", "maintenance"]
PoolType = Literal["local", "nfs"]
ObjectType = Literal["disk", "kernel", "initrd", "iso", "snapshot"]
VmStatus = Literal["unknown", "pending", "created", "running", "paused", "shutdown", "crashed"]
JobStatus = Literal["pending", "running", "completed", "failed"]
VmAction = Literal["start", "stop", "force-stop", "pause", "resume"]


def _clean(value: str) -> str:
    """No NUL (PostgreSQL refuses it) and nothing that is not UTF-8 (lone surrogates)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("must be valid UTF-8 text") from None
    return value


def _one_line(value: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError("must be one line")
    return value


def _hostname_or_ip(value: str) -> str:
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not _HOST_RE.fullmatch(value):
        raise ValueError("must be a host name or an IP address")
    return value


def _absolute(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must be an absolute path")
    return value


_HOST_RE = re.compile(
    r"(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)

Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$"),
]
VM_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
VmName = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=63, pattern=VM_NAME_PATTERN
    ),  # a hostname: the node uses it as the instance name
]
Tag = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:=/-]*$")
]
Address = Annotated[
    str, StringConstraints(min_length=1, max_length=253), AfterValidator(_hostname_or_ip)
]
Secret = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")
]  # printable ASCII
AbsPath = Annotated[
    str,
    StringConstraints(min_length=1, max_length=4096),
    AfterValidator(_clean),
    AfterValidator(_absolute),
]
KernelParams = Annotated[
    str, StringConstraints(max_length=4096), AfterValidator(_clean), AfterValidator(_one_line)
]
SshKey = Annotated[
    str,
    StringConstraints(min_length=1, max_length=16384),
    AfterValidator(_clean),
    AfterValidator(_one_line),
]
UserData = Annotated[str, StringConstraints(max_length=1 << 20), AfterValidator(_clean)]
ImageName = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
]


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- hosts ---------------------------------------------------------------------------------


class HostCreate(Input):
    name: Name
    address: Address
    port: int = Field(ge=1, le=65535)
    token: Secret | None = Field(None, description="bearer token of the host's node agent")


class HostUpdate(Input):
    status: HostSettableStatus | None = None
    address: Address | None = None
    port: int | None = Field(None, ge=1, le=65535)
    token: Secret | None = None


# --- storage -------------------------------------------------------------------------------


class PoolConfig(Input):
    path: AbsPath = Field(description="directory on the host (local) or NFS mount point (nfs)")
    server: Annotated[str, StringConstraints(max_length=255), AfterValidator(_clean)] | None = None
    export: AbsPath | None = None


class StoragePoolCreate(Input):
    name: Name
    pool_type: PoolType
    config: PoolConfig


class ObjectConfig(Input):
    path: Annotated[str, StringConstraints(min_length=1, max_length=4096), AfterValidator(_clean)]


class StorageObjectCreate(Input):
    name: Name
    storage_pool_id: uuid.UUID
    object_type: ObjectType
    size_bytes: int = Field(0, ge=0, le=MAX_BYTES)
    config: ObjectConfig


# --- boot sources --------------------------------------------------------------------------


class BootSourceCreate(Input):
    name: Name
    kernel_image_id: uuid.UUID
    initrd_image_id: uuid.UUID | None = None
    kernel_params: KernelParams | None = None


# --- vms -----------------------------------------------------------------------------------


class NetworkInterface(Input):
    """qarax's interface shape. corral's VMs use user-mode networking; these are recorded."""

    id: Name
    tap: Name | None = None
    mac: (
        Annotated[str, StringConstraints(pattern=r"^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$")] | None
    ) = None
    ip: Annotated[str, StringConstraints(max_length=64), AfterValidator(_hostname_or_ip)] | None = (
        None
    )
    mask: (
        Annotated[str, StringConstraints(max_length=64), AfterValidator(_hostname_or_ip)] | None
    ) = None
    mtu: int | None = Field(None, ge=68, le=65535)
    vhost_user: bool | None = None


def _hypervisor(value: str) -> str:
    if value not in HYPERVISORS:
        raise ValueError(
            f"unknown hypervisor {value[:40]!r}: this fleet offers {', '.join(HYPERVISORS)}"
        )
    return value


class VmCreate(Input):
    name: VmName
    hypervisor: Annotated[
        str,
        StringConstraints(max_length=64),
        AfterValidator(_hypervisor),
        Field(json_schema_extra={"enum": list(HYPERVISORS)}),
    ] = "qemu"
    boot_vcpus: int = Field(1, ge=1, le=1024)
    max_vcpus: int | None = Field(None, ge=1, le=1024, description="default: boot_vcpus")
    memory_size: int = Field(ge=64 * MIB, le=MAX_BYTES, description="bytes, a multiple of 1 MiB")
    boot_source_id: uuid.UUID | None = None
    image: ImageName | None = Field(None, description="a corral image in the node's store")
    image_object_id: uuid.UUID | None = Field(
        None, description="a `disk` storage object, the base of the VM's own overlay"
    )
    disk_size: int | None = Field(None, ge=1, le=MAX_BYTES, description="bytes")
    user_data: UserData | None = None
    ssh_keys: list[SshKey] = Field(default_factory=list, max_length=64)
    networks: list[NetworkInterface] = Field(default_factory=list, max_length=16)
    tags: list[Tag] = Field(default_factory=list, max_length=64)
    start: bool = Field(False, description="start the VM once it is created")

    @model_validator(mode="after")
    def _check(self) -> VmCreate:
        if self.max_vcpus is not None and self.max_vcpus < self.boot_vcpus:
            raise ValueError("max_vcpus must be at least boot_vcpus")
        if self.memory_size % MIB:
            raise ValueError("memory_size must be a multiple of 1 MiB (1048576 bytes)")
        if self.image is not None and self.image_object_id is not None:
            raise ValueError("give image or image_object_id, not both")
        if len({n.id for n in self.networks}) != len(self.networks):
            raise ValueError("network interface ids must be distinct")
        self.tags = sorted(set(self.tags))
        return self


# --- events --------------------------------------------------------------------------------


class Event(BaseModel):
    """One state change, as sent on GET /events."""

    kind: Literal["host", "vm", "job"]
    action: Literal["created", "updated", "deleted"]
    id: uuid.UUID
    status: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


# --- aleph-vm supervisor endpoints ---------------------------------------------------------


VmRef = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
]


class AllocationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # aleph-vm sends more (on_demand_vms, jobs...)

    persistent_vms: list[VmRef] = Field(default_factory=list, max_length=1000)
    instances: list[VmRef] = Field(default_factory=list, max_length=1000)


class AllocationResult(BaseModel):
    success: bool
    started: list[str]
    stopped: list[str]
    failed: dict[str, str] = Field(description="VM reference -> why it could not be handled")

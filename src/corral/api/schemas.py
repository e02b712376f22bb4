"""The control plane's public shapes: what its answers carry, for each resource. Secrets (node
tokens, user-data) are never in them. Request bodies are the services' own inputs, defined with
their rules in corral.control.types and named here too, so the routes find every shape in one
place.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from corral.control.types import (
    VM_NAME_PATTERN,
    AllocationRequest,
    AllocationResult,
    BootSourceCreate,
    Event,
    HostCreate,
    HostStatus,
    HostUpdate,
    JobStatus,
    NetworkCreate,
    ObjectType,
    PoolType,
    StorageObjectCreate,
    StoragePoolCreate,
    VmAction,
    VmCreate,
    VmRef,
    VmStatus,
)
from corral.node.protocol import NodeImage

__all__ = [
    "VM_NAME_PATTERN",
    "AllocationRequest",
    "AllocationResult",
    "BootSourceCreate",
    "BootSourcePublic",
    "Event",
    "EventRecordPublic",
    "FleetImagePublic",
    "FleetImagesPublic",
    "HostCreate",
    "HostImagesPublic",
    "HostPublic",
    "HostUpdate",
    "ImagePublic",
    "JobPublic",
    "NetworkCreate",
    "NetworkPublic",
    "StorageObjectCreate",
    "StorageObjectPublic",
    "StoragePoolCreate",
    "StoragePoolPublic",
    "VmAction",
    "VmCreate",
    "VmCreated",
    "VmPublic",
    "VmRef",
    "VmStatus",
]


class Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --- hosts ---------------------------------------------------------------------------------


class HostPublic(Output):
    id: uuid.UUID
    name: str
    address: str
    port: int
    status: HostStatus
    status_reason: str | None
    has_token: bool
    cpus: int
    memory: int = Field(description="bytes")
    disk: int = Field(description="free bytes in the node's state directory")
    arch: str | None
    accelerator: str | None
    versions: dict[str, str]
    used_vcpus: int
    used_memory: int = Field(description="bytes reserved by VMs that are not shut down")
    last_seen_at: datetime | None
    created_at: datetime
    updated_at: datetime


# --- images ---------------------------------------------------------------------------------


class ImagePublic(NodeImage):
    """An image in a host's store (sizes in bytes)."""

    model_config = ConfigDict(extra="ignore", from_attributes=True)


class HostImagesPublic(Output):
    """One host's images; `error` says why there are none when its node did not answer."""

    host_id: uuid.UUID
    host: str
    images: list[ImagePublic]
    error: str | None


class ImageCopyPublic(Output):
    host_id: uuid.UUID
    host: str
    image: ImagePublic


class FleetImagePublic(Output):
    """An image name, and each up host that has an image by that name."""

    name: str
    copies: list[ImageCopyPublic]


class FleetImagesPublic(BaseModel):
    images: list[FleetImagePublic]
    unreachable: list[HostImagesPublic] = Field(
        description="up hosts whose node did not answer (their images are not listed)"
    )


# --- storage -------------------------------------------------------------------------------


class StoragePoolPublic(Output):
    id: uuid.UUID
    name: str
    pool_type: PoolType
    config: dict[str, Any]
    created_at: datetime


class StorageObjectPublic(Output):
    id: uuid.UUID
    name: str
    storage_pool_id: uuid.UUID
    object_type: ObjectType
    size_bytes: int
    config: dict[str, Any]
    created_at: datetime


# --- networks ------------------------------------------------------------------------------


class NetworkVmPublic(Output):
    name: str
    mac: str
    addresses: list[str]


class NetworkHostPublic(Output):
    host_id: uuid.UUID
    host_name: str
    bridge: str
    subnet: str
    gateway: str
    up: bool | None = Field(description="as its node says now (GET /networks/{id} only)")
    reason: str | None = Field(description="why `up` is unknown or false")
    vms: list[NetworkVmPublic] = Field(description="VMs on it there (GET /networks/{id} only)")


class NetworkPublic(Output):
    id: uuid.UUID
    name: str
    state: str = Field(description="creating, ready or removing")
    config: dict[str, Any] = Field(description="subnet, ipv6, nat, isolated, domain, mtu")
    hosts: list[NetworkHostPublic]
    created_at: datetime


# --- boot sources --------------------------------------------------------------------------


class BootSourcePublic(Output):
    id: uuid.UUID
    name: str
    kernel_image_id: uuid.UUID
    initrd_image_id: uuid.UUID | None
    kernel_params: str | None
    created_at: datetime


# --- vms -----------------------------------------------------------------------------------


class VmPublic(Output):
    id: uuid.UUID
    name: str
    hypervisor: str
    status: VmStatus
    status_reason: str | None
    host_id: uuid.UUID
    boot_vcpus: int
    max_vcpus: int
    memory_size: int
    boot_source_id: uuid.UUID | None
    image: str | None
    image_object_id: uuid.UUID | None
    disk_size: int | None
    ssh_keys: list[str]
    networks: list[dict[str, Any]]
    volumes: list[int]
    tags: list[str]
    created_at: datetime
    updated_at: datetime


class VmCreated(VmPublic):
    job_id: uuid.UUID = Field(description="the job that creates the VM on its host")


# --- events --------------------------------------------------------------------------------


class EventRecordPublic(Output):
    """A state change as GET /events sent it, and when it was stored."""

    id: int = Field(description="counts up: a later event has a larger id")
    at: datetime
    kind: str
    action: str
    object_id: uuid.UUID = Field(description="the host's, VM's or job's id")
    status: str | None
    data: dict[str, Any]


# --- jobs, tokens --------------------------------------------------------------------------


class JobPublic(Output):
    id: uuid.UUID
    kind: str
    status: JobStatus
    vm_id: uuid.UUID | None
    host_id: uuid.UUID | None
    error: str | None
    error_status: int | None = Field(
        None,
        description="for a failed job, the HTTP status of its error's kind: 4xx the request's "
        "own mistake (e.g. 404: its host has no such image), 5xx a failure",
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

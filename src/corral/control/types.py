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
NETWORK_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$"  # corral.net.model.NAME_RE
NetworkName = Annotated[str, StringConstraints(max_length=32, pattern=NETWORK_NAME_PATTERN)]
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


# --- networks ----------------------------------------------------------------------------


class NetworkCreate(Input):
    name: NetworkName
    host_id: uuid.UUID | None = Field(
        None, description="the host to make it on; none: every `up` host (the same name)"
    )
    subnet: Annotated[str, StringConstraints(max_length=64), AfterValidator(_clean)] | None = Field(
        None,
        description="an IPv4 subnet, e.g. 10.80.0.0/24 (the same on each host); "
        "none: a free one chosen per host",
    )
    ipv6: Annotated[str, StringConstraints(max_length=64), AfterValidator(_clean)] | None = Field(
        None, description='an fd..::/64, "auto" for a random one; none: IPv4 only'
    )
    nat: bool = Field(True, description="NAT to the host's outward route")
    isolated: bool = Field(False, description="no NAT and no route out")
    domain: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        "corral", description="VMs resolve as NAME.DOMAIN"
    )
    mtu: int = Field(1500, ge=576, le=9000)

    @model_validator(mode="after")
    def _check(self) -> NetworkCreate:
        if self.subnet is not None:
            try:
                net = ipaddress.IPv4Network(self.subnet)
            except ValueError:
                raise ValueError(f"subnet: {self.subnet[:40]!r} is not an IPv4 subnet") from None
            self.subnet = str(net)
        return self


# --- vms -----------------------------------------------------------------------------------


TAP_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$"  # an interface name (IFNAMSIZ), no path
MAC_PATTERN = r"^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$"


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError("must be an IP address") from None


IpAddress = Annotated[str, StringConstraints(max_length=64), AfterValidator(_ip)]


class NetworkInterface(Input):
    """qarax's interface shape: a NIC on an existing TAP device of the VM's host (`tap`), or
    on a corral network (`network`). `ip` with `mask` is a static address the guest is given
    through cloud-init network-config; without them the guest uses DHCP."""

    id: Name = Field(description="the interface's name in the request (qarax's virtio id)")
    tap: Annotated[str, StringConstraints(pattern=TAP_PATTERN)] | None = Field(
        None, description="an existing TAP device on the VM's host"
    )
    network: NetworkName | None = Field(
        None,
        description="a corral network (POST /networks): the VM gets a NIC on it, on a host "
        "that has it; `ip` is then an address reserved for it there (the prefix, gateway and "
        "MTU are the network's)",
    )
    mac: Annotated[str, StringConstraints(pattern=MAC_PATTERN)] | None = None
    ip: IpAddress | None = None
    mask: Annotated[str, StringConstraints(max_length=64), AfterValidator(_clean)] | None = Field(
        None, description="a netmask (255.255.255.0) or a prefix length (24)"
    )
    gateway: IpAddress | None = None
    dns: list[IpAddress] = Field(default_factory=list, max_length=8)
    mtu: int | None = Field(None, ge=68, le=65535)
    vhost_user: bool | None = None

    @model_validator(mode="after")
    def _kind(self) -> NetworkInterface:
        if self.vhost_user or (self.tap is None and self.network is None):
            kind = "vhost-user" if self.vhost_user else "macvtap"
            raise ValueError(
                f"interface {self.id!r}: the QEMU hypervisor here does not support {kind} "
                "interfaces; give `tap` (an existing TAP device on the host)"
            )
        if self.tap is not None and self.network is not None:
            raise ValueError(f"interface {self.id!r}: give tap or network, not both")
        if self.network is not None:
            self._on_network()
        elif (self.ip is None) != (self.mask is None):
            raise ValueError(f"interface {self.id!r}: give ip and mask together")
        if self.mac is not None:
            self.mac = self.mac.lower()
            if int(self.mac[:2], 16) & 1:
                raise ValueError(f"interface {self.id!r}: {self.mac} is a multicast MAC")
        if self.ip is not None:
            self.cidr()  # a mask that does not fit the address is refused here
        if self.gateway is not None and self.ip is None:
            raise ValueError(f"interface {self.id!r}: a gateway needs ip and mask")
        return self

    def _on_network(self) -> None:
        """A corral network sets the prefix, gateway, DNS and MTU itself: asking for others
        is refused, not ignored."""
        given = [f for f in ("mask", "gateway", "mtu") if getattr(self, f) is not None]
        given += ["dns"] if self.dns else []
        if given:
            raise ValueError(
                f"interface {self.id!r}: {', '.join(given)} are set by network "
                f"{self.network!r}; give only ip (and mac)"
            )
        if self.ip is not None and ipaddress.ip_address(self.ip).version != 4:
            raise ValueError(f"interface {self.id!r}: ip on a corral network must be IPv4")

    def cidr(self) -> str | None:
        """The static address as CIDR (192.168.100.10/24), or None for DHCP."""
        if self.ip is None or self.mask is None:
            return None
        try:
            return str(ipaddress.ip_interface(f"{self.ip}/{self.mask}"))
        except ValueError:
            raise ValueError(f"interface {self.id!r}: invalid mask {self.mask[:40]!r}") from None


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
    volumes: list[Annotated[int, Field(ge=MIB, le=MAX_BYTES)]] = Field(
        default_factory=list,
        max_length=16,
        description="blank data disks (bytes each), attached after the root disk",
    )
    tags: list[Tag] = Field(default_factory=list, max_length=64)
    start: bool = Field(False, description="start the VM once it is created")

    @model_validator(mode="after")
    def _check(self) -> VmCreate:
        if self.max_vcpus is not None and self.max_vcpus < self.boot_vcpus:
            raise ValueError("max_vcpus must be at least boot_vcpus")
        if self.memory_size % MIB:
            raise ValueError("memory_size must be a multiple of 1 MiB (1048576 bytes)")
        if any(size % MIB for size in self.volumes):
            raise ValueError("volume sizes must be multiples of 1 MiB (1048576 bytes)")
        if self.image is not None and self.image_object_id is not None:
            raise ValueError("give image or image_object_id, not both")
        if len({n.id for n in self.networks}) != len(self.networks):
            raise ValueError("network interface ids must be distinct")
        if any(n.tap for n in self.networks) and any(n.network for n in self.networks):
            raise ValueError("interfaces are on existing TAP devices or on networks, not both")
        names = [n.network for n in self.networks if n.network is not None]
        if len(set(names)) != len(names):
            raise ValueError("a VM has one interface per network: a network is named twice")
        taps = [n.tap for n in self.networks if n.tap is not None]
        if len(set(taps)) != len(taps):
            raise ValueError("a TAP device can carry one interface only")
        macs = [n.mac for n in self.networks if n.mac is not None]
        if len(set(macs)) != len(macs):
            raise ValueError("network interface MACs must be distinct")
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
    notes: dict[str, list[str]] = Field(
        default_factory=dict,
        description="item hash -> what of its message was not honoured (e.g. immutable volumes)",
    )

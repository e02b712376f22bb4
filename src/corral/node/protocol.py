"""The contract between the control plane and a node (a hypervisor host running corral).

Two implementations share it: `LocalNode` (in-process, for the embedded single-host server) and
`HttpNode` (a client of `corral node`, the node agent). The node agent's HTTP API is this
protocol on the wire, with the same pydantic models as bodies. A node uses the instance
manager of the core library; it never handles QEMU itself.

The core library is synchronous and runs its own event loops (asyncio.run); async code must
call it in a worker thread (e.g. `asyncio.to_thread` / starlette's `run_in_threadpool`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

VmState = Literal["creating", "starting", "running", "paused", "stopping", "stopped", "crashed"]


class NodeNic(BaseModel):
    """A NIC on a TAP device that already exists on the node (qarax's `networks[].tap`), and
    how the guest configures it (static addresses through cloud-init network-config, or DHCP
    when there are none)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tap: str  # checked by the node: a strict name, and an existing interface
    mac: str
    mtu: int | None = None
    addresses: list[str] = Field(default_factory=list)  # CIDR, e.g. 192.168.100.10/24
    gateway4: str | None = None
    nameservers: list[str] = Field(default_factory=list)


class NodeNetworkNic(BaseModel):
    """A NIC on one of the node's managed networks (corral.net): a tap made for the VM on the
    network's bridge, with this MAC and, if given, this reserved IPv4 address."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    network: str  # checked by the node (a network name; the network must exist there)
    mac: str
    ip: str | None = None


class NodeVmSpec(BaseModel):
    """What a node needs to create (and start) one VM."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str  # a valid hostname; unique on the node
    image: str | None = None  # a corral image name in the node's store
    base_disk: str | None = None  # or: a disk file on the node (imported into its store)
    cpus: int = Field(1, ge=1)
    memory_mib: int = Field(1024, ge=64)
    disk_size: int | None = None  # bytes; default the image's size
    volumes: list[int] = Field(default_factory=list)  # blank data disks, bytes each
    user_data: str | None = None
    ssh_keys: list[str] = Field(default_factory=list)  # public key lines
    kernel: str | None = None  # paths on the node (direct kernel boot)
    initrd: str | None = None
    cmdline: str | None = None
    nics: list[NodeNic] = Field(default_factory=list)  # none: a user-mode NIC
    networks: list[NodeNetworkNic] = Field(default_factory=list)  # NICs on managed networks
    start: bool = True


class NodeVmNic(BaseModel):
    """A NIC of a VM as the node sees it (the instance view's `nics`): its MAC, and the
    addresses the node knows it has (e.g. from a managed network's DHCP leases)."""

    model_config = ConfigDict(extra="ignore")

    mac: str
    addresses: list[str] = Field(default_factory=list)


class NodeVm(BaseModel):
    """One VM as the node sees it (the core library's instance view)."""

    model_config = ConfigDict(extra="ignore")

    name: str
    state: VmState
    reason: str | None = None
    cpus: int
    memory_mib: int
    disk_size: int
    ssh_port: int
    ssh_user: str | None = None  # whom ssh logs in as (None from older nodes)
    pid: int | None = None
    image: str
    nics: list[NodeVmNic] = Field(default_factory=list)  # none: a user-mode NIC


class NodeNetworkSpec(BaseModel):
    """A managed network to make on a node (corral.net.manage.CreateOptions, by name)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str  # checked by the node (corral.net.model.check_name)
    subnet: str | None = None  # None: a free 10.x.y.0/24 of the node's choosing
    ipv6: str | None = None  # fd..::/64, "auto", or None for none
    nat: bool = True
    isolated: bool = False
    domain: str = "corral"
    mtu: int = 1500


class NodeNetworkVm(BaseModel):
    """A VM attached to a network on a node: its NIC's MAC and the addresses it has there."""

    model_config = ConfigDict(extra="ignore")

    name: str
    mac: str
    addresses: list[str] = Field(default_factory=list)


class NodeNetwork(BaseModel):
    """One managed network as a node sees it (corral.net.manage.inspect)."""

    model_config = ConfigDict(extra="ignore")

    name: str
    bridge: str
    subnet: str
    gateway: str
    ipv6: str | None = None
    nat: bool
    isolated: bool
    domain: str
    mtu: int
    up: bool
    vms: list[NodeNetworkVm] = Field(default_factory=list)


class NodeImage(BaseModel):
    """One image in a node's store, from its manifest (what `corral image ls` shows): cheap
    to list, no disk is read."""

    model_config = ConfigDict(extra="ignore")

    name: str
    digest: str  # sha256 hex of the disk blob
    format: str  # qcow2 | raw
    virtual_size: int  # bytes the guest sees
    file_size: int  # bytes the blob takes in the store
    kernel: bool = False  # boots a kernel of its own (direct kernel boot)
    default_user: str = "root"
    warm: bool = False  # a saved running state: a launch restores it instead of booting
    warm_cpus: int | None = None  # the shape a warm image restores to
    warm_memory_mib: int | None = None
    created_at: datetime | None = None
    last_used_at: datetime | None = None


class Capacity(BaseModel):
    """What a node offers and what it runs."""

    cpus: int
    memory_mib: int
    disk_bytes: int  # free bytes in the node's state directory
    arch: str
    accelerator: str
    versions: dict[str, str]  # corral, qemu, qemu-img


class Tunnel(Protocol):
    """A byte stream to a port of a VM."""

    async def read(self) -> bytes:
        """The next bytes from the VM; b"" once it has closed."""
        ...

    async def write(self, data: bytes) -> None:
        """Send bytes to the VM, returning once the transport has room for more."""
        ...

    async def close(self) -> None:
        """End the stream (idempotent, never raises)."""
        ...


MAX_CONSOLE_INPUT = 4096  # bytes typed on a serial console in one call


class NodeClient(Protocol):
    """Every call raises a corral.errors type on failure (NotFound, Conflict, QemuError...);
    a node that cannot be reached raises NodeUnreachable."""

    async def health(self) -> dict[str, str]: ...
    async def capacity(self) -> Capacity: ...
    async def list_vms(self) -> list[NodeVm]: ...
    async def list_images(self) -> list[NodeImage]:
        """The images in the node's store, by name."""
        ...

    async def get_vm(self, name: str) -> NodeVm: ...
    async def create_vm(self, spec: NodeVmSpec) -> NodeVm: ...
    async def start_vm(self, name: str) -> NodeVm: ...
    async def stop_vm(self, name: str, *, force: bool = False) -> NodeVm: ...
    async def pause_vm(self, name: str) -> NodeVm: ...
    async def resume_vm(self, name: str) -> NodeVm: ...
    async def delete_vm(self, name: str) -> None: ...
    async def console_log(self, name: str) -> bytes: ...
    def console_stream(self, name: str) -> AsyncIterator[bytes]: ...
    async def console_input(self, name: str, data: bytes) -> None:
        """Type `data` on the VM's serial console (at most MAX_CONSOLE_INPUT bytes)."""
        ...

    async def open_tunnel(self, name: str, port: int) -> Tunnel:
        """A byte stream to `port` of the VM (one it exposes: else Forbidden)."""
        ...

    async def list_networks(self) -> list[NodeNetwork]: ...
    async def create_network(self, spec: NodeNetworkSpec) -> NodeNetwork:
        """Conflict when the node cannot make managed networks (no CAP_NET_ADMIN)."""
        ...

    async def delete_network(self, name: str) -> None:
        """Conflict while a VM is attached to it; NotFound for an unknown one."""
        ...

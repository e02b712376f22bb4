"""What a node needs to create a VM (a NodeVmSpec), built from the VM's row, and where to send it.

A VM booted from storage objects names files by path on its host: those paths must lie under
the storage roots (checked here, and by the node again when it opens them).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy.orm import Session

from corral.control.nodes import NodeAddress
from corral.control.types import MIB
from corral.db.repositories import VmRepository
from corral.errors import NotFound
from corral.node.protocol import NodeNetworkNic, NodeNic, NodeVmSpec
from corral.storage_roots import under_root


def node_spec(vm: Mapping[Any, Any], start: bool, developer_keys: Sequence[str]) -> NodeVmSpec:
    """From a VM_NODE_SPEC row, or a new VM's values (which have no boot source or disk
    object); the operator's developer keys are added to the VM's own."""
    keys = [*vm["ssh_keys"], *developer_keys]
    base_disk = _path(vm.get("disk"))
    return NodeVmSpec(
        name=vm["name"],
        image=vm["image"] if base_disk is None else None,
        base_disk=base_disk,
        cpus=vm["boot_vcpus"],
        memory_mib=vm["memory_size"] // MIB,
        disk_size=vm["disk_size"],
        volumes=list(vm.get("volumes") or ()),
        user_data=vm["user_data"],
        ssh_keys=list(dict.fromkeys(keys)),
        kernel=_path(vm.get("kernel")),
        initrd=_path(vm.get("initrd")),
        cmdline=vm.get("kernel_params"),
        # Rows from before interfaces were honoured have no MAC: those VMs keep user-mode NICs.
        nics=[_nic(e) for e in vm.get("networks") or () if e.get("tap") and e.get("mac")],
        networks=[
            NodeNetworkNic(network=e["network"], mac=e["mac"], ip=e.get("ip"))
            for e in vm.get("networks") or ()
            if e.get("network")
        ],
        start=start,
    )


def _nic(entry: Mapping[str, Any]) -> NodeNic:
    """A recorded TAP interface (see vms._interface)."""
    return NodeNic(
        tap=entry["tap"],
        mac=entry["mac"],
        mtu=entry.get("mtu"),
        addresses=[entry["address"]] if entry.get("address") else [],
        gateway4=entry.get("gateway"),
        nameservers=list(entry.get("dns", ())),
    )


def read_node_spec(
    session: Session, vm_id: uuid.UUID, start: bool, developer_keys: Sequence[str]
) -> tuple[NodeVmSpec, NodeAddress]:
    """The VM's spec and its host's address, read in one statement."""
    row = VmRepository(session).node_spec(vm_id)
    if row is None:
        raise NotFound(f"VM {vm_id} was deleted")
    where = NodeAddress(row.host_id, row.host_name, row.address, row.port, row.token)
    return node_spec(row._mapping, start, developer_keys), where


def check_roots(roots: Sequence[Path], spec: NodeVmSpec) -> None:
    """Storage objects made before the roots were narrowed are refused here too (the node
    checks its own roots again, without following links, when it opens the files)."""
    for what, path in (("disk", spec.base_disk), ("kernel", spec.kernel), ("initrd", spec.initrd)):
        if path is not None:
            under_root(roots, path, f"the {what} storage object's path")


def _path(config: dict[str, Any] | None) -> str | None:
    """A storage object's path, from its config."""
    return None if config is None else str(PurePosixPath(config["path"]))

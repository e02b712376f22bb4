"""Recording what a node says a VM now is, in the transaction that finishes its job.

The hot path of every job: Core statements, no ORM loads, and the host row locked (and its
reservation recounted) only when the VM's reservation changes, i.e. it shuts down or leaves
`shutdown`. Each change is also an event.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from corral.control.events import emit
from corral.control.hosts import lock_host, recount, vm_event, vm_status
from corral.db.repositories import VmRepository
from corral.node.protocol import NodeVm


def apply(
    session: Session,
    vm_id: uuid.UUID,
    seen: NodeVm,
    reason: str | None = None,
    *,
    expected: str | None = None,
) -> None:
    """Record the VM's status from what the node reports (`expected`: the status the VM most
    likely still has, tried first in one statement; a create's VM is `pending`), and the
    addresses it reports for the VM's interfaces."""
    if any(nic.addresses for nic in seen.nics):
        _addresses(session, vm_id, seen)
    if expected is not None:
        status, why = vm_status(seen.state, expected), reason or seen.reason
        # A real change that keeps the reservation (shut down or not) needs no host lock.
        if status != expected and (status == "shutdown") == (expected == "shutdown"):
            moved = VmRepository(session).move_from(vm_id, expected, status, why)
            if moved is not None:
                _updated(session, vm_id, moved, status, why)
                return
    row = VmRepository(session).state(vm_id)
    if row is not None:
        _move(session, vm_id, row, vm_status(seen.state, row.status), reason or seen.reason)


def _addresses(session: Session, vm_id: uuid.UUID, seen: NodeVm) -> None:
    """Each recorded interface (matched by MAC) gets the addresses the node sees it have."""
    vm = VmRepository(session).get(vm_id)
    if vm is None:
        return
    found = {nic.mac.lower(): nic.addresses for nic in seen.nics if nic.addresses}
    networks = [dict(entry) for entry in vm.networks]
    for entry in networks:
        addresses = found.get(str(entry.get("mac", "")).lower())
        if addresses:
            entry["addresses"] = list(addresses)
    if networks != vm.networks:
        vm.networks = networks
        session.flush()


def set_status(session: Session, vm_id: uuid.UUID, status: str, reason: str) -> None:
    """Record a status the control plane decided (e.g. `crashed` after a failed create)."""
    row = VmRepository(session).state(vm_id)
    if row is not None:
        _move(session, vm_id, row, status, reason)


def forget(session: Session, vm_id: uuid.UUID) -> None:
    """The VM is gone from its node: delete its row and give its room back."""
    vm = VmRepository(session).get(vm_id)
    if vm is None:
        return
    host = lock_host(session, vm.host_id)
    vm_event(session, vm, "deleted")
    VmRepository(session).delete(vm)
    recount(session, host)


def _move(session: Session, vm_id: uuid.UUID, row: Any, status: str, reason: str | None) -> None:
    """Change a VM's status; `row` is its current state (status, reason, name, host_id)."""
    if (status, reason) == (row.status, row.status_reason):
        return
    host = None
    if (row.status == "shutdown") != (status == "shutdown"):
        host = lock_host(session, row.host_id)
    VmRepository(session).set_status(vm_id, status, reason)
    if host is not None:
        recount(session, host)
    _updated(session, vm_id, row, status, reason)


def _updated(session: Session, vm_id: uuid.UUID, row: Any, status: str, reason: str | None) -> None:
    """The event of a VM's new status; `row` has the VM's name and host_id."""
    data = {"name": row.name, "host_id": str(row.host_id), "reason": reason}
    emit(session, "vm", "updated", vm_id, status, data)

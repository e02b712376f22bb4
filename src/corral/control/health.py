"""The health checker: asks every `up` host's node, now and then, whether it is still there.

Every `health_interval` seconds each host that is `up` (or `down` because of earlier missed
checks) is asked for its health and its VMs. A host that has not answered for `down_after`
seconds is marked `down` and its VMs `unknown`; when it answers again its VMs' statuses are
reconciled from the node and it is `up` again. Answers from hosts that stayed up are reconciled
too, so a VM that crashed or powered itself off shows as such. A host an operator marked `down`
or `maintenance` is left alone.

Each control-plane process runs its own checker; their writes are idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from corral.control.hosts import host_event, lock_host, mark_down, reconcile, vm_status
from corral.control.nodes import NodeAddress
from corral.control.periodic import Periodic
from corral.db.models import utcnow
from corral.db.repositories import HostRepository, VmRepository
from corral.errors import CorralError
from corral.node.protocol import NodeVm

if TYPE_CHECKING:
    from corral.control.plane import ControlPlane

log = logging.getLogger(__name__)


class HealthMonitor:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self._last_answer: dict[uuid.UUID, float] = {}
        self._rounds = Periodic(plane.settings.health_interval, self.check_all, "health check")

    def start(self) -> None:
        self._rounds.start()

    async def stop(self) -> None:
        await self._rounds.stop()

    async def check_all(self) -> None:
        """One round: every watched host, concurrently."""

        def watched(session: Session) -> list[tuple[NodeAddress, str]]:
            hosts = HostRepository(session).with_status("up", "down")
            return [
                (NodeAddress.of(h), h.status) for h in hosts if h.status == "up" or h.down_by_health
            ]

        hosts = await self.plane.read(watched)
        await asyncio.gather(*(self.check(where, status) for where, status in hosts))

    async def check(self, where: NodeAddress, status: str) -> None:
        timeout = self.plane.settings.node_timeout
        now = time.monotonic()
        asked_at = utcnow()  # an answer says nothing of changes made after this
        try:
            node = self.plane.nodes.for_host(where)
            async with asyncio.timeout(timeout):
                await node.health()
            async with asyncio.timeout(timeout):
                seen = await node.list_vms()
        except (CorralError, TimeoutError) as exc:
            reason = getattr(exc, "message", None) or "timed out"
            # A host first seen failing gets `down_after` from now.
            last = self._last_answer.setdefault(where.host_id, now)
            if status == "up" and now - last >= self.plane.settings.down_after:
                log.warning("host %s missed health checks for %.0fs: down", where.name, now - last)
                silent = f"no answer to health checks for {now - last:.0f}s: {reason}"
                await self.plane.write(mark_down, where.host_id, silent, True)
            return
        self._last_answer[where.host_id] = now
        if status == "down":
            log.warning("host %s answers again: reconciling its VMs", where.name)
            await self.plane.write(_back_up, where.host_id, seen, asked_at)
        elif await self.plane.read(_differs, where.host_id, seen):
            await self.plane.write(_refresh, where.host_id, seen, asked_at)


def _back_up(session: Session, host_id: uuid.UUID, seen: list[NodeVm], asked_at: datetime) -> None:
    host = lock_host(session, host_id)
    if host.status != "down" or not host.down_by_health:
        return  # an operator decided meanwhile
    reconcile(session, host, seen, asked_at)
    host.status, host.status_reason, host.down_by_health = "up", None, False
    host.last_seen_at = utcnow()
    host_event(session, host)


def _refresh(session: Session, host_id: uuid.UUID, seen: list[NodeVm], asked_at: datetime) -> None:
    host = lock_host(session, host_id)
    if host.status == "up":
        reconcile(session, host, seen, asked_at)


def _differs(session: Session, host_id: uuid.UUID, seen: list[NodeVm]) -> bool:
    """Whether a reconcile would change anything (so quiet rounds write nothing)."""
    by_name = {vm.name: vm for vm in seen}
    for vm in VmRepository(session).on_host(host_id):
        node_vm = by_name.get(vm.name)
        if node_vm is None:
            if vm.status != "unknown" and vm.status != "pending":
                return True
        elif vm_status(node_vm.state, vm.status) != vm.status:
            return True
    return False

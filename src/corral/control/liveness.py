"""Control-plane processes that share a PostgreSQL database, and the jobs of those that died.

A job runs in the process that accepted its request. Each process records itself in
`plane_processes` when it starts, refreshes its `seen_at` every `heartbeat_interval` seconds
and removes itself when it stops. A process not seen for `process_timeout` seconds has died (or
lost the database): any other process then fails its unfinished jobs, says so in each job's
error, marks a VM whose create was under way `unknown` (the node may or may not have made it;
the health checks reconcile it from the node), and forgets the process.

On SQLite one server owns the file: what it left unfinished is failed when it starts again.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from corral.control.jobs import abandon
from corral.control.periodic import Periodic
from corral.db.models import PlaneProcess, utcnow
from corral.db.repositories import JobRepository

if TYPE_CHECKING:
    from corral.control.plane import ControlPlane

log = logging.getLogger(__name__)


class Liveness:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.id = plane.process_id
        self._beats = Periodic(plane.settings.heartbeat_interval, self._beat, "heartbeat")

    async def start(self) -> None:
        await self.plane.write(_register, self.id)
        self._beats.start()

    async def stop(self) -> None:
        """After the job runner closed: this process's jobs are finished or failed."""
        await self._beats.stop()
        try:
            await self.plane.write(_forget, self.id)
        except Exception as exc:  # left behind, it is swept as dead later: no harm
            log.warning("could not remove this process's record: %s", exc)

    async def beat(self) -> int:
        """Say this process is alive; fail the jobs of processes that are not. How many."""
        await self.plane.write(_seen, self.id)
        return await self.plane.write(_sweep, self.plane.settings.process_timeout)

    async def _beat(self) -> None:
        failed = await self.beat()
        if failed:
            log.warning("failed %d jobs of control-plane processes that stopped", failed)


def _register(session: Session, process_id: uuid.UUID) -> None:
    session.add(PlaneProcess(id=process_id, name=f"{socket.gethostname()}:{os.getpid()}"))


def _seen(session: Session, process_id: uuid.UUID) -> None:
    stmt = update(PlaneProcess).where(PlaneProcess.id == process_id).values(seen_at=utcnow())
    if session.execute(stmt).rowcount == 0:  # type: ignore[attr-defined]  # an UPDATE's result is a CursorResult
        # Swept as dead after a long pause (the database was away?): alive again, though
        # the jobs it had were failed meanwhile.
        _register(session, process_id)


def _forget(session: Session, process_id: uuid.UUID) -> None:
    session.execute(delete(PlaneProcess).where(PlaneProcess.id == process_id))


def _sweep(session: Session, timeout: float) -> int:
    cutoff = utcnow() - timedelta(seconds=timeout)
    stmt = (
        select(PlaneProcess)
        .where(PlaneProcess.seen_at < cutoff)
        .with_for_update(skip_locked=True)  # another process is sweeping it
    )
    failed = 0
    for dead in session.scalars(stmt).all():
        jobs = JobRepository(session).unfinished(process_id=dead.id)
        seen = dead.seen_at.isoformat(timespec="seconds")
        reason = f"the control-plane process running it ({dead.name}) stopped; last seen {seen}"
        failed += abandon(session, list(jobs), reason)
        session.delete(dead)
    return failed

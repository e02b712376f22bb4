"""The events kept for a while: the state changes GET /events streams, stored so that a page
opened later (a VM's, the Events page) can show what happened before.

`record` runs just before a write transaction commits (the database's before-commit hook,
which the control plane sets), with the events that transaction emitted (corral.control.events):
one bulk INSERT in the same transaction, so a change rolled back leaves no event row, and the
writes of a batch (corral.db.writer) add their events in one statement. Old rows are pruned
in the background: older than KEEP_DAYS, or beyond the newest KEEP_ROWS.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic_core import to_jsonable_python
from sqlalchemy.orm import Session

from corral.control.periodic import Periodic
from corral.control.types import Event
from corral.db.models import EventRecord, utcnow
from corral.db.repositories import EventRepository

if TYPE_CHECKING:
    from corral.control.plane import ControlPlane

KEEP_DAYS = 7  # events older than this are deleted
KEEP_ROWS = 200_000  # and at most this many are kept (about 20 per VM of a 10,000-VM fleet)
PRUNE_EVERY = 600.0  # seconds between prunings


def rows(events: Sequence[Event], at: datetime) -> list[dict[str, Any]]:
    """The events as rows of the events table (their data as JSON would carry it)."""
    return [
        {
            "at": at,
            "kind": e.kind,
            "action": e.action,
            "object_id": e.id if isinstance(e.id, uuid.UUID) else uuid.UUID(str(e.id)),
            "status": e.status,
            "data": to_jsonable_python(e.data),
        }
        for e in events
    ]


def record(session: Session, events: list[Any]) -> None:
    """Store a transaction's events in it (called just before it commits)."""
    EventRepository(session).insert(rows(events, utcnow()))


def prune(session: Session, now: datetime, keep_days: float, keep_rows: int) -> int:
    before = now - timedelta(days=keep_days)
    return EventRepository(session).prune(before=before, keep=keep_rows)


class EventLog:
    def __init__(self, plane: ControlPlane, interval: float = PRUNE_EVERY) -> None:
        self.plane = plane
        self.keep_days: float = KEEP_DAYS
        self.keep_rows = KEEP_ROWS
        self._pruner = Periodic(interval, self.prune, "pruning old events")

    def start(self) -> None:
        self._pruner.start()

    async def stop(self) -> None:
        await self._pruner.stop()

    async def prune(self) -> None:
        await self.plane.write(prune, utcnow(), self.keep_days, self.keep_rows)

    async def recent(
        self, *, kinds: Sequence[str] = (), object_id: uuid.UUID | None = None, limit: int = 50
    ) -> Sequence[EventRecord]:
        """Newest first; of these kinds (all if none), about this object (any if None)."""
        return await self.plane.read(
            lambda s: EventRepository(s).recent(kinds=kinds, object_id=object_id, limit=limit)
        )

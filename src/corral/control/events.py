"""State-change events and their in-process publish/subscribe (what GET /events streams).

Services record an event in the write transaction's session (`emit`); the database hands the
list to the bus once the transaction has committed, so a subscriber never hears of a change
that was rolled back. The bus lives in one process; with several control-plane processes
sharing a PostgreSQL database, corral.control.relay brings each the events of its siblings.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from typing import Any

from sqlalchemy.orm import Session

from corral.control.types import Event

QUEUE_SIZE = 1000  # events a slow subscriber may fall behind before it is dropped

log = logging.getLogger(__name__)


def emit(
    session: Session, kind: str, action: str, id: Any, status: str | None, data: dict[str, Any]
) -> None:
    """Queue an event about a host, VM or job for after this transaction commits."""
    event = Event.model_construct(kind=kind, action=action, id=id, status=status, data=data)
    session.info.setdefault("events", []).append(event)


class Subscription:
    """Events since the moment of subscribing: (sequence number, event), or None after
    `keepalive` quiet seconds (so a stream can send a keep-alive). Ends if it fell too far
    behind (its client is not reading)."""

    def __init__(self, bus: EventBus, keepalive: float) -> None:
        self._bus = bus
        self._keepalive = keepalive
        self.queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue(QUEUE_SIZE)
        self.dropped = False

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> tuple[int, Event] | None:
        if self.dropped and self.queue.empty():
            self.close()
            raise StopAsyncIteration
        try:
            async with asyncio.timeout(self._keepalive):
                return await self.queue.get()
        except TimeoutError:
            return None

    def close(self) -> None:
        self._bus._subscribers.discard(self)


class EventBus:
    """Fan-out of events to subscribers, each with a bounded queue on the server's event loop."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: set[Subscription] = set()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def publish(self, events: list[Event]) -> None:
        """Safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed() or not events:
            return
        with self._lock:
            numbered = [(next(self._ids), e) for e in events]
        try:
            loop.call_soon_threadsafe(self._deliver, numbered)
        except RuntimeError:  # the loop closed meanwhile
            pass

    def _deliver(self, numbered: list[tuple[int, Event]]) -> None:
        for subscriber in list(self._subscribers):
            try:
                for item in numbered:
                    subscriber.queue.put_nowait(item)
            except asyncio.QueueFull:
                log.warning("dropping an event subscriber %d events behind", QUEUE_SIZE)
                subscriber.dropped = True
                self._subscribers.discard(subscriber)

    def subscribe(self, keepalive: float = 15) -> Subscription:
        """Start listening now; iterate the result (in the loop's thread), close it when done."""
        subscription = Subscription(self, keepalive)
        self._subscribers.add(subscription)
        return subscription

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

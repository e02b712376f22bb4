"""Events between control-plane processes that share one PostgreSQL database.

Each write transaction that recorded events also sends them with `pg_notify` on one channel;
PostgreSQL delivers a notification only when (and if) its transaction commits, so a sibling
never hears of a change that was rolled back. Every process listens on that channel with a
connection of its own, in a thread, and hands what its siblings sent to its own event bus
(unless nobody there is listening: then there is nothing to decode); what it sent itself it
has already published locally, so those are skipped by origin.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from corral.control.types import Event
from corral.db import hot

CHANNEL = "corral_events"
PAYLOAD_LIMIT = 7000  # bytes; PostgreSQL refuses notification payloads of 8000 or more
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")

log = logging.getLogger(__name__)


def encode(events: list[Event], origin: str) -> list[str]:
    """Payloads for these events: JSON `{"origin", "events"}`, each under PAYLOAD_LIMIT."""
    payloads: list[str] = []
    chunk: list[str] = []
    size = 0
    for event in events:
        item = _json(event, event.data)
        item_size = len(item.encode()) + 2
        if item_size > PAYLOAD_LIMIT - 100:  # one event too big to send: say what changed
            item = _json(event, {})
            item_size = len(item.encode()) + 2
        if chunk and size + item_size > PAYLOAD_LIMIT - 100:
            payloads.append(_payload(origin, chunk))
            chunk, size = [], 0
        chunk.append(item)
        size += item_size
    if chunk:
        payloads.append(_payload(origin, chunk))
    return payloads


def _json(event: Event, data: dict[str, Any]) -> str:
    """An event as JSON (what Event.model_dump_json says, for a fraction of its cost)."""
    item = {"kind": event.kind, "action": event.action, "id": str(event.id)}
    return json.dumps({**item, "status": event.status, "data": data}, default=str)


def _payload(origin: str, items: list[str]) -> str:
    # The prefix is what decode recognises as its own process's.
    return f'{{"origin": "{origin}", "events": [{", ".join(items)}]}}'


def decode(payload: str, origin: str) -> list[Event]:
    """The events of a sibling's payload; none for our own or for anything malformed."""
    if payload.startswith(f'{{"origin": "{origin}"'):  # ours (as encode writes it): no parsing
        return []
    try:
        body = json.loads(payload)
        if body.get("origin") == origin:
            return []
        return [
            Event.model_construct(
                kind=e["kind"],
                action=e["action"],
                id=uuid.UUID(e["id"]),
                status=e.get("status"),
                data=e.get("data") or {},
            )
            for e in body["events"]
        ]
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning("ignoring a malformed event notification")
        return []


class EventRelay:
    """Sends this process's events to its siblings and publishes theirs on `publish`."""

    def __init__(
        self,
        url: str,
        publish: Callable[[list[Event]], None],
        wanted: Callable[[], bool] = lambda: True,
    ) -> None:
        self.origin = uuid.uuid4().hex
        self._conninfo = make_url(url).set(drivername="postgresql").render_as_string(False)
        self._publish = publish
        self._wanted = wanted  # whether anyone in this process listens for events now
        self._stop = threading.Event()
        self.listening = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="corral-events", daemon=True)

    def send(self, session: Session, events: list[Any]) -> None:
        """Called in a write transaction before it commits (see Database.before_commit)."""
        conn = session.connection()
        for payload in encode(events, self.origin):
            hot.run(conn, _NOTIFY, {"channel": CHANNEL, "payload": payload})

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _listen(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            if not self._wanted():
                                continue
                            events = decode(note.payload, self.origin)
                            if events:
                                self._publish(events)
            except psycopg.Error as exc:
                self.listening.clear()
                log.warning("listening for sibling events failed (retrying): %s", exc)
                self._stop.wait(2)

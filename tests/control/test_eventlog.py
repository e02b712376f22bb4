"""Stored events (corral.control.eventlog): written in the transaction of the change they tell
of, read back newest first (GET /events/recent), pruned by age and by count; on SQLite and
PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from control.conftest import Api
from corral.control.eventlog import rows
from corral.control.events import emit
from corral.control.types import Event
from corral.db.models import EventRecord, utcnow
from corral.db.repositories import EventRepository
from corral.errors import Conflict


def count(api: Api) -> int:
    with api.plane.db.read() as session:
        return session.scalar(select(func.count(EventRecord.id))) or 0


def test_a_vms_changes_are_kept_newest_first(api: Api) -> None:
    api.host("h1")
    vm = api.vm("a", start=True)
    api.act(vm["id"], "stop")
    stored = api.ok("GET", f"/events/recent?kind=vm&id={vm['id']}")
    assert [(e["action"], e["status"]) for e in stored] == [
        ("updated", "shutdown"),
        ("updated", "running"),
        ("created", "pending"),
    ]
    assert stored[0]["object_id"] == vm["id"] and stored[0]["data"]["name"] == "a"
    assert stored[0]["id"] > stored[1]["id"] > stored[2]["id"]
    jobs = api.ok("GET", "/events/recent?kind=job&limit=2")
    assert len(jobs) == 2 and {e["kind"] for e in jobs} == {"job"}
    assert jobs[0]["data"]["vm_id"] == vm["id"]
    everything = api.ok("GET", "/events/recent?limit=1000")
    assert {"host", "vm", "job"} == {e["kind"] for e in everything}
    assert api.ok("GET", "/events/recent?limit=1")[0] == everything[0]
    api.ok("GET", "/events/recent?limit=0", 422)
    api.ok("GET", "/events/recent?kind=disk", 422)
    assert api.client.get("/events/recent", headers={"Authorization": ""}).status_code == 401


def test_a_rolled_back_change_leaves_no_event(api: Api) -> None:
    before = count(api)
    host_id = uuid.uuid4()

    def failing(session: Session) -> None:
        emit(session, "host", "created", host_id, "up", {"name": "ghost"})
        raise Conflict("changed my mind")

    with pytest.raises(Conflict):
        api.client.portal.call(api.plane.write, failing)  # type: ignore[union-attr]
    with pytest.raises(Conflict), api.plane.db.write() as session:
        failing(session)
    assert count(api) == before

    def kept(session: Session) -> None:
        emit(session, "host", "updated", host_id, "down", {"when": utcnow()})

    api.client.portal.call(api.plane.write, kept)  # type: ignore[union-attr]
    (row,) = api.ok("GET", f"/events/recent?id={host_id}")
    assert (row["kind"], row["status"]) == ("host", "down")
    assert isinstance(row["data"]["when"], str)  # stored as JSON carries it


def test_pruning_drops_old_events_and_keeps_at_most_the_newest(api: Api) -> None:
    now = utcnow()
    vm_id = uuid.uuid4()

    def event(status: str) -> Any:
        return Event.model_construct(kind="vm", action="updated", id=vm_id, status=status, data={})

    with api.plane.db.write() as session:
        repo = EventRepository(session)
        repo.insert(rows([event("old")] * 3, now - timedelta(days=8)))
        repo.insert(rows([event(f"s{i}") for i in range(10)], now - timedelta(days=1)))
    log = api.plane.events
    log.keep_rows = 4
    api.client.portal.call(log.prune)  # type: ignore[union-attr]
    left = api.ok("GET", f"/events/recent?id={vm_id}")
    assert [e["status"] for e in left] == ["s9", "s8", "s7", "s6"]
    log.keep_rows = 100
    api.client.portal.call(log.prune)  # type: ignore[union-attr]
    assert len(api.ok("GET", f"/events/recent?id={vm_id}")) == 4

"""GET /events: server-sent events for every state change of hosts, VMs and jobs, read from a
live uvicorn server while another client makes the changes."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import httpx
import pytest

from control.conftest import MIB, TEMPLATE
from control.fakes import Fleet
from control.livesrv import LiveServer
from control.postgres import PostgresServer
from corral.api.app import create_app
from corral.control.settings import Settings


@contextmanager
def listen(live: LiveServer, token: str, query: str = "") -> Iterator[queue.Queue[dict]]:
    """Events as dicts (with the SSE `event` and `id` added), read in a thread."""
    events: queue.Queue[dict] = queue.Queue()
    ready = threading.Event()
    stop = threading.Event()
    client = httpx.Client(timeout=None)

    def read() -> None:
        try:
            _read()
        except httpx.HTTPError:
            assert stop.is_set()  # only when we hang up

    def _read() -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with client.stream("GET", f"{live.url}/events{query}", headers=headers) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            fields: dict[str, str] = {}
            for line in r.iter_lines():
                if line == ": subscribed":
                    ready.set()
                if stop.is_set():
                    return
                if not line:
                    if "data" in fields:
                        events.put(
                            {
                                **json.loads(fields["data"]),
                                "event": fields["event"],
                                "seq": int(fields["id"]),
                            }
                        )
                    fields = {}
                elif not line.startswith(":"):
                    key, _, value = line.partition(": ")
                    fields[key] = value

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield events
    finally:
        stop.set()
        thread.join(5)  # it hangs up at the next keep-alive
        client.close()


def take(events: queue.Queue[dict], count: int, timeout: float = 10) -> list[dict]:
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        got.append(events.get(timeout=max(0.01, deadline - time.monotonic())))
    return got


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, event_keepalive=0.1)


def test_every_state_change_is_an_event(live: LiveServer, fleet: Fleet) -> None:
    token = live.token()
    client = httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {token}"})
    fleet.add("10.0.0.1", 7000)
    with listen(live, token) as events:
        host = client.post("/hosts", json={"name": "h", "address": "10.0.0.1", "port": 7000}).json()
        assert client.post(f"/hosts/{host['id']}/init").status_code == 200
        got = take(events, 3)
        assert [(e["event"], e["action"], e["status"]) for e in got] == [
            ("host", "created", "unknown"),
            ("host", "updated", "initializing"),
            ("host", "updated", "up"),
        ]
        assert got[0]["id"] == host["id"] and got[0]["data"]["name"] == "h"
        assert [e["seq"] for e in got] == sorted(e["seq"] for e in got)

        vm = client.post("/vms", json={"name": "v", "memory_size": 256 * MIB, "image": "t"}).json()
        got = take(events, 4)
        seen = [(e["event"], e["action"], e["status"]) for e in got]
        assert seen == [  # a create's job runs at once: it is created running
            ("vm", "created", "pending"),
            ("job", "created", "running"),
            ("vm", "updated", "created"),
            ("job", "updated", "completed"),
        ]
        assert got[3]["id"] == vm["job_id"] and got[2]["id"] == vm["id"]

        client.post(f"/vms/{vm['id']}/start")
        statuses = [(e["event"], e["status"]) for e in take(events, 5)]
        assert ("vm", "pending") in statuses and ("vm", "running") in statuses
        assert statuses[-1] == ("job", "completed")

        client.delete(f"/vms/{vm['id']}")
        got = take(events, 4)
        assert ("vm", "deleted") in [(e["event"], e["action"]) for e in got]

    with listen(live, token, "?kind=host") as events:
        client.patch(f"/hosts/{host['id']}", json={"status": "maintenance"})
        client.post("/vms", json={"name": "w", "memory_size": 256 * MIB, "image": "t"})  # a 422
        client.patch(f"/hosts/{host['id']}", json={"status": "up"})
        got = take(events, 2)
        assert [(e["event"], e["status"]) for e in got] == [("host", "maintenance"), ("host", "up")]
        time.sleep(0.2)
        assert events.empty()


def test_events_need_a_token(live: LiveServer) -> None:
    assert httpx.get(f"{live.url}/events").status_code == 401


def test_processes_sharing_postgresql_stream_each_others_events(postgres: PostgresServer) -> None:
    """Two control planes on one database: a subscriber of one hears what the other changed,
    and only once; a change that was rolled back is never heard of."""
    url = postgres.url(postgres.create_database(template=TEMPLATE))
    settings = Settings(database_url=url, health_interval=0, event_keepalive=0.1)
    fleet = Fleet()
    fleet.add("10.0.0.1", 7000)
    first = LiveServer(create_app(settings, node_factory=fleet)).start()
    second = LiveServer(create_app(settings, node_factory=fleet)).start()
    try:
        token = first.token()
        assert first.plane.relay.listening.wait(10) and second.plane.relay.listening.wait(10)
        client = httpx.Client(base_url=second.url, headers={"Authorization": f"Bearer {token}"})
        with listen(first, token) as heard_by_first, listen(second, token) as heard_by_second:
            body = {"name": "h", "address": "10.0.0.1", "port": 7000}
            host = client.post("/hosts", json=body).json()
            assert client.post("/hosts", json=body).status_code == 409  # rolled back
            assert client.post(f"/hosts/{host['id']}/init").status_code == 200
            expected = [
                ("host", "created", "unknown"),
                ("host", "updated", "initializing"),
                ("host", "updated", "up"),
            ]
            for events in (heard_by_first, heard_by_second):
                got = take(events, 3)
                assert [(e["event"], e["action"], e["status"]) for e in got] == expected
                assert got[0]["id"] == host["id"] and got[0]["data"]["name"] == "h"
            time.sleep(0.3)
            assert heard_by_first.empty() and heard_by_second.empty()  # each once, no more
    finally:
        second.stop()
        first.stop()


def test_event_payloads_stay_under_the_notification_limit() -> None:
    from corral.control.relay import PAYLOAD_LIMIT, decode, encode
    from corral.control.types import Event

    events = [
        Event(
            kind="vm",
            action="updated",
            id=uuid.uuid4(),
            status="running",
            data={"name": f"vm{i}", "reason": "x" * 300},
        )
        for i in range(100)
    ]
    events.append(Event(kind="job", action="updated", id=uuid.uuid4(), data={"e": "y" * 9000}))
    payloads = encode(events, "me")
    assert len(payloads) > 1 and all(len(p.encode()) < PAYLOAD_LIMIT for p in payloads)
    assert decode(payloads[0], "me") == []  # our own
    back = [e for p in payloads for e in decode(p, "sibling")]
    assert [e.id for e in back] == [e.id for e in events]
    assert back[0].data == events[0].data and back[-1].data == {}  # too big: what, not details
    assert decode("not json", "sibling") == []

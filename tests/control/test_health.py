"""Health checks: a host that stops answering is `down` after `down_after` seconds and its VMs
`unknown`; when it answers again its VMs are reconciled from the node and it is `up` again."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

from control.conftest import Api, start_client
from control.fakes import Fleet
from corral.control.health import _refresh
from corral.control.settings import Settings
from corral.db.models import utcnow


def _api(settings: Settings, fleet: Fleet, **changes: float) -> Api:
    client, _ = start_client(replace(settings, **changes), fleet)
    return Api(client, fleet)


def _round(api: Api) -> None:
    api.client.portal.call(api.plane.health.check_all)  # type: ignore[union-attr]


def test_down_after_missed_checks_then_reconciled(settings: Settings, fleet: Fleet) -> None:
    api = _api(settings, fleet, down_after=0.3)
    try:
        host = api.host()
        node = fleet.nodes[(host["address"], host["port"])]
        web = api.vm("web", start=True)
        idle = api.vm("idle")
        moved = api.vm("moved", start=True)
        other = api.host()

        node.reachable = False
        _round(api)  # one miss is not enough
        assert api.ok("GET", f"/hosts/{host['id']}")["status"] == "up"
        time.sleep(0.35)
        _round(api)
        down = api.ok("GET", f"/hosts/{host['id']}")
        assert down["status"] == "down" and "no answer to health checks" in down["status_reason"]
        for vm in (web, idle, moved):
            assert api.ok("GET", f"/vms/{vm['id']}")["status"] == "unknown"
        assert api.ok("GET", f"/hosts/{other['id']}")["status"] == "up"
        # New VMs go elsewhere.
        assert api.vm("fresh")["host_id"] == other["id"]

        # While it was away: one VM crashed, one was stopped, one vanished.
        node.vms["web"] = node.vms["web"].model_copy(update={"state": "crashed", "reason": "oom"})
        node.vms["moved"] = node.vms["moved"].model_copy(update={"state": "stopped"})
        del node.vms["idle"]
        node.reachable = True
        _round(api)
        back = api.ok("GET", f"/hosts/{host['id']}")
        assert back["status"] == "up" and back["status_reason"] is None
        assert api.ok("GET", f"/vms/{web['id']}")["status"] == "crashed"
        assert api.ok("GET", f"/vms/{web['id']}")["status_reason"] == "oom"
        assert api.ok("GET", f"/vms/{moved['id']}")["status"] == "shutdown"
        gone = api.ok("GET", f"/vms/{idle['id']}")
        assert gone["status"] == "unknown" and "does not know this VM" in gone["status_reason"]
        # The shut-down VM no longer counts against the host.
        assert back["used_memory"] == 2 * 512 << 20
    finally:
        api.client.__exit__(None, None, None)


def test_states_are_refreshed_while_a_host_stays_up(settings: Settings, fleet: Fleet) -> None:
    api = _api(settings, fleet)
    try:
        host = api.host()
        vm = api.vm("web", start=True)
        node = fleet.nodes[(host["address"], host["port"])]
        node.vms["web"] = node.vms["web"].model_copy(update={"state": "stopped"})  # powered off
        _round(api)
        assert api.ok("GET", f"/vms/{vm['id']}")["status"] == "shutdown"
    finally:
        api.client.__exit__(None, None, None)


def test_an_answer_older_than_a_change_does_not_undo_it(settings: Settings, fleet: Fleet) -> None:
    """A health check asks the node, a create job finishes while the answer travels: the stale
    answer (no such VM yet) must not mark the fresh VM `unknown` (seen once in CI)."""
    api = _api(settings, fleet)
    try:
        host = api.host()
        host_id = uuid.UUID(host["id"])
        asked_at, seen = utcnow(), []  # the node's answer, from before the create
        vm = api.vm("web", start=True)
        assert api.ok("GET", f"/vms/{vm['id']}")["status"] == "running"
        api.client.portal.call(api.plane.write, _refresh, host_id, seen, asked_at)  # type: ignore[union-attr]
        assert api.ok("GET", f"/vms/{vm['id']}")["status"] == "running"
        # The same answer, asked after the change, is news and is applied.
        api.client.portal.call(api.plane.write, _refresh, host_id, seen, utcnow())  # type: ignore[union-attr]
        assert api.ok("GET", f"/vms/{vm['id']}")["status"] == "unknown"
    finally:
        api.client.__exit__(None, None, None)


def test_a_host_an_operator_took_down_is_left_alone(settings: Settings, fleet: Fleet) -> None:
    api = _api(settings, fleet, down_after=0.1)
    try:
        host = api.host()
        api.ok("PATCH", f"/hosts/{host['id']}", json={"status": "down"})
        _round(api)
        time.sleep(0.15)
        _round(api)
        assert api.ok("GET", f"/hosts/{host['id']}")["status"] == "down"  # answers, stays down
        api.ok("PATCH", f"/hosts/{host['id']}", json={"status": "up"})
        assert api.ok("GET", f"/hosts/{host['id']}")["status"] == "up"
    finally:
        api.client.__exit__(None, None, None)


def test_the_checker_runs_on_its_own(settings: Settings, fleet: Fleet) -> None:
    api = _api(settings, fleet, health_interval=0.05, down_after=0.2)
    try:
        host = api.host()
        fleet.nodes[(host["address"], host["port"])].reachable = False
        deadline = time.monotonic() + 10
        while api.ok("GET", f"/hosts/{host['id']}")["status"] != "down":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        fleet.nodes[(host["address"], host["port"])].reachable = True
        while api.ok("GET", f"/hosts/{host['id']}")["status"] != "up":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        api.client.__exit__(None, None, None)


def test_health_tells_an_anonymous_caller_only_ok_or_degraded(postgres, fleet: Fleet) -> None:  # type: ignore[no-untyped-def]
    """Issue #11: /health showed the database's error text to anyone."""
    from control.conftest import TEMPLATE

    name = postgres.create_database(template=TEMPLATE)
    api = _api(Settings(database_url=postgres.url(name), health_interval=0), fleet)
    anonymous = {"Authorization": ""}
    try:
        assert api.client.get("/health", headers=anonymous).json() == {"status": "ok"}
        postgres.execute(f"DROP DATABASE {name} WITH (FORCE)")
        down = api.client.get("/health", headers=anonymous)
        assert (down.status_code, down.json()) == (503, {"status": "degraded"})
        assert name not in down.text
        # A token that cannot be checked now counts as none: the same answer, not a 500.
        down = api.client.get("/health")
        assert (down.status_code, down.json()) == (503, {"status": "degraded"})
    finally:
        api.client.__exit__(None, None, None)

"""Token roles: a `user` token manages VMs and reads everything else; only an `admin` token
registers, changes, initialises and deletes hosts and creates and deletes storage pools,
objects and boot sources; a `metrics` token reads GET /metrics and nothing else. Every
operation of the app is tried with a user and with a metrics token, so a new admin-only route
without its line in ADMIN_ROUTES fails here."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from control.conftest import MIB, Api, openapi_document
from control.fakes import Fleet
from control.livesrv import LiveServer
from corral.api.app import create_app
from corral.control.settings import Settings
from corral.control.tokens import TokenService, sha256_hex
from corral.db.engine import Database
from corral.db.migrate import alembic_config, upgrade

ADMIN_ROUTES = {
    ("POST", "/hosts"),
    ("PATCH", "/hosts/{host_id}"),
    ("DELETE", "/hosts/{host_id}"),
    ("POST", "/hosts/{host_id}/init"),
    ("POST", "/storage-pools"),
    ("DELETE", "/storage-pools/{pool_id}"),
    ("POST", "/storage-objects"),
    ("DELETE", "/storage-objects/{object_id}"),
    ("POST", "/boot-sources"),
    ("DELETE", "/boot-sources/{source_id}"),
    ("POST", "/networks"),
    ("DELETE", "/networks/{network_id}"),
}
METRICS_ROUTES = {("GET", "/metrics")}  # admin or metrics
SUPERVISOR_ROUTES = {("POST", "/control/allocations")}  # X-Auth-Signature, no token at all
DOCUMENT = openapi_document()
OPERATIONS = sorted(
    (method.upper(), path) for path, ops in DOCUMENT["paths"].items() for method in ops
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str, str]]:
    """A live server on SQLite with one fake host: (server, admin token, user token)."""
    fleet = Fleet()
    fleet.add("10.0.0.1", 7000)
    path = tmp_path_factory.mktemp("roles") / "cp.db"
    live = LiveServer(
        create_app(Settings(f"sqlite:///{path}", health_interval=0), node_factory=fleet)
    )
    live.start()
    try:
        live.metrics_token = live.token("prometheus", "metrics")  # type: ignore[attr-defined]
        yield live, live.token("root", "admin"), live.token("someone", "user")
    finally:
        live.stop()


def _call(live: LiveServer, token: str, method: str, template: str) -> httpx.Response:
    def value(match: re.Match[str]) -> str:
        return "web1" if match[1] == "ref" else str(uuid.uuid4())

    path = re.sub(r"\{(\w+)\}", value, template)
    body = {} if method in ("POST", "PATCH", "PUT") else None
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.stream(method, live.url + path, json=body, headers=headers, timeout=30) as response:
        if path != "/events" or response.status_code != 200:  # an endless stream: its status
            response.read()
        return response


def test_the_admin_routes_are_documented_with_their_403() -> None:
    documented = {
        (method.upper(), path)
        for path, ops in DOCUMENT["paths"].items()
        for method, op in ops.items()
        if "403" in op["responses"]
    }
    assert documented == ADMIN_ROUTES | METRICS_ROUTES
    for method, path in ADMIN_ROUTES | METRICS_ROUTES:
        assert DOCUMENT["paths"][path][method.lower()]["security"] == [{"HTTPBearer": []}]


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_a_user_token_is_refused_exactly_the_admin_routes(
    server: tuple[LiveServer, str, str], method: str, path: str
) -> None:
    live, admin, user = server
    response = _call(live, user, method, path)
    if (method, path) in ADMIN_ROUTES:
        assert response.status_code == 403, response.text
        assert response.json() == {
            "error": "forbidden",
            "detail": "this route needs an admin token, and this one is a user token",
            "hint": "corral token create NAME --role admin",
        }
        assert _call(live, admin, method, path).status_code not in (401, 403)
    elif (method, path) in METRICS_ROUTES:
        assert response.status_code == 403, response.text
        assert response.json()["detail"] == (
            "this route needs an admin or metrics token, and this one is a user token"
        )
        assert _call(live, admin, method, path).status_code == 200
    elif (method, path) in SUPERVISOR_ROUTES:
        assert response.status_code == 401
        assert "X-Auth-Signature" in response.json()["detail"]
    else:
        assert response.status_code not in (401, 403), response.text


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_a_metrics_token_reads_the_metrics_and_nothing_else(
    server: tuple[LiveServer, str, str], method: str, path: str
) -> None:
    live, _, _ = server
    response = _call(live, live.metrics_token, method, path)  # type: ignore[attr-defined]
    if (method, path) in METRICS_ROUTES:
        assert response.status_code == 200, response.text
    elif (method, path) in SUPERVISOR_ROUTES:
        assert response.status_code == 401
    elif path == "/health":  # open to all: only what an anonymous caller learns
        assert response.json() == {"status": "ok"}
    else:
        assert response.status_code == 403, response.text
        assert response.json()["detail"].endswith("and this one is a metrics token")


def test_a_metrics_token_opens_no_websocket(api: Api) -> None:
    """The console, a tunnel and aleph-vm's logs refuse a metrics token before the upgrade."""
    from starlette.websockets import WebSocketDisconnect

    api.host()
    vm = api.vm("web1")
    api.act(vm["id"], "start")
    _, token = api.plane.tokens.create("prometheus", "metrics")
    as_metrics = {"headers": {"Authorization": f"Bearer {token}"}}
    offered = {"subprotocols": ["bearer", token], "headers": {"Authorization": ""}}
    urls = (
        f"/vms/{vm['id']}/console/stream",
        f"/vms/{vm['id']}/tunnel?port=22",
        f"/control/machine/{vm['id']}/logs",
    )
    for url in urls:
        for kw in (as_metrics, offered):
            with pytest.raises(WebSocketDisconnect), api.client.websocket_connect(url, **kw):  # type: ignore[arg-type]
                pass
    assert api.ok("GET", f"/vms/{vm['id']}")["status"] == "running"


def test_a_user_token_runs_the_vm_lifecycle_and_reads_everything(api: Api, tmp_path: Path) -> None:
    host = api.host()
    body = {"name": "p", "pool_type": "local", "config": {"path": f"{tmp_path}/p"}}
    pool = api.ok("POST", "/storage-pools", 201, json=body)
    net = api.ok("POST", "/networks", 201, json={"name": "lab"})
    _, token = api.plane.tokens.create("someone")  # the default role
    user = {"Authorization": f"Bearer {token}"}

    def ok(method: str, url: str, status: int = 200, **kw: object) -> dict:
        response = api.client.request(method, url, headers=user, **kw)  # type: ignore[arg-type]
        assert response.status_code == status, (method, url, response.text)
        return response.json() if response.content else {}

    vm = ok("POST", "/vms", 201, json={"name": "web1", "memory_size": 256 * MIB, "image": "t"})
    assert _wait_job(ok, vm["job_id"])["status"] == "completed"  # created: no longer pending
    for action in ("start", "pause", "resume", "stop", "start", "force-stop"):
        job = ok("POST", f"/vms/{vm['id']}/{action}", 202)
        assert _wait_job(ok, job["id"])["status"] == "completed", action
    assert [v["name"] for v in ok("GET", "/vms")] == ["web1"]
    assert ok("GET", f"/vms/{vm['id']}")["status"] == "shutdown"
    assert api.client.get(f"/vms/{vm['id']}/console", headers=user).status_code == 200
    assert ok("GET", f"/jobs?vm_id={vm['id']}")
    assert ok("GET", f"/hosts/{host['id']}")["name"] == host["name"]
    assert ok("GET", f"/storage-pools/{pool['id']}")["name"] == "p"
    for path in ("/hosts", "/storage-pools", "/storage-objects", "/boot-sources", "/networks"):
        ok("GET", path)
    assert ok("GET", f"/networks/{net['id']}")["name"] == "lab"
    assert ok("GET", "/health")["database_status"] == "ok"  # with a token: the details
    ok("POST", f"/control/machine/{vm['id']}/stop", 409)  # authorised; already stopped
    # The websocket console, with the token as a header and as browsers' subprotocols.
    assert _wait_job(ok, ok("POST", f"/vms/{vm['id']}/start", 202)["id"])["status"] == "completed"
    node = api.fleet.nodes[(host["address"], host["port"])]
    url = f"/vms/{vm['id']}/console/stream"
    anonymous = {"Authorization": ""}  # (the client's default header holds an admin token)
    header = {"headers": user}
    offered = {"subprotocols": ["bearer", token], "headers": anonymous}
    for kw, subprotocol in ((header, None), (offered, "bearer")):
        with api.client.websocket_connect(url, **kw) as ws:  # type: ignore[arg-type]
            assert ws.accepted_subprotocol == subprotocol
            _until(lambda: node.streaming("web1") == 1)
            node.write_console("web1", b"login: ", end=True)
            assert ws.receive_bytes() == b"login: "
    job = ok("DELETE", f"/vms/{vm['id']}?force=true", 202)
    assert _wait_job(ok, job["id"])["status"] == "completed"
    # What it may not do, refused before anything changed.
    ok("DELETE", f"/hosts/{host['id']}", 403)
    ok("DELETE", f"/storage-pools/{pool['id']}", 403)
    assert api.ok("GET", f"/storage-pools/{pool['id']}")["name"] == "p"
    # Networks change the hosts' interfaces and firewall: a user token makes and removes none.
    error = ok("POST", "/networks", 403, json={"name": "mine"})
    assert "admin" in error["detail"]
    ok("DELETE", f"/networks/{net['id']}", 403)
    assert [n["name"] for n in api.ok("GET", "/networks")] == ["lab"]
    assert list(node.networks) == ["lab"]


def _until(condition, timeout: float = 5) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _wait_job(ok, job_id: str) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 20
    while (job := ok("GET", f"/jobs/{job_id}"))["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.02)
    return job  # type: ignore[no-any-return]


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/corral.db"
    server = request.getfixturevalue("postgres")
    return server.url(server.create_database())  # type: ignore[no-any-return]


def test_tokens_made_before_roles_are_admin_after_the_upgrade(empty_url: str) -> None:
    """A database at 0002 (no roles) with a token in it: after migrating, that token works
    as before, as an admin; new tokens are users unless told otherwise."""
    from alembic import command

    db = Database(empty_url)
    try:
        config = alembic_config()
        with db.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0002")
        old = "corral_0123456789ab_" + "s" * 43
        with db.engine.begin() as connection:
            connection.execute(
                text("INSERT INTO api_tokens (id, name, key, token_hash, created_at) "
                     "VALUES (:id, 'ci', '0123456789ab', :hash, :now)"),
                {"id": uuid.uuid4().hex if db.dialect == "sqlite" else uuid.uuid4(),
                 "hash": sha256_hex(old), "now": "2026-01-01 00:00:00+00:00"},
            )  # fmt: skip
        assert upgrade(db) == "0006"
        tokens = TokenService(db)
        assert tokens.lookup(old) == "admin"
        assert [(t.name, t.role) for t in tokens.list()] == [("ci", "admin")]
        assert tokens.lookup(tokens.create("new")[1]) == "user"
        assert tokens.lookup(tokens.create("boss", "admin")[1]) == "admin"
    finally:
        db.dispose()

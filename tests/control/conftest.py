"""Control-plane fixtures: a real PostgreSQL server for the session, a fresh database per test
on SQLite and on PostgreSQL, fake nodes, an API client with a token, and live uvicorn servers."""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from control.fakes import Fleet
from control.livesrv import LiveServer
from control.postgres import PostgresServer
from corral.api.app import create_app
from corral.control.settings import Settings
from corral.db.engine import Database
from corral.db.migrate import upgrade

TEMPLATE = "corral_template"
MIB = 1 << 20
GIB = 1 << 30


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        server.execute(f"CREATE DATABASE {TEMPLATE}")
        db = Database(server.url(TEMPLATE))
        upgrade(db)  # migrated once; each test copies it
        db.dispose()
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/corral.db"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.url(server.create_database(template=TEMPLATE))


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Storage pools may be made anywhere under the test's temporary directory."""
    return Settings(database_url=database_url, health_interval=0, storage_roots=(tmp_path,))


@pytest.fixture
def fleet() -> Fleet:
    return Fleet()


class Api:
    """A TestClient with a token, and the helpers most tests need."""

    def __init__(self, client: TestClient, fleet: Fleet) -> None:
        self.client = client
        self.fleet = fleet
        self.app = client.app
        self.plane = client.app.state.plane  # type: ignore[attr-defined]
        self._hosts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def ok(self, method: str, url: str, status: int = 200, **kw: Any) -> Any:
        response = self.client.request(method, url, **kw)
        assert response.status_code == status, (method, url, response.status_code, response.text)
        return response.json() if response.content else None

    def host(self, name: str | None = None, *, cpus: int = 4, memory_mib: int = 8192) -> dict:
        """A fake node, registered and initialised: an `up` host."""
        self._hosts += 1
        address, port = f"10.0.0.{self._hosts}", 7000
        self.fleet.add(address, port, cpus=cpus, memory_mib=memory_mib)
        body = {"name": name or f"h{self._hosts}", "address": address, "port": port}
        host = self.ok("POST", "/hosts", 201, json=body)
        return self.ok("POST", f"/hosts/{host['id']}/init")

    def vm(
        self, name: str, *, vcpus: int = 1, memory_mib: int = 512, wait: bool = True, **kw: Any
    ) -> dict:
        body = {
            "name": name,
            "hypervisor": "qemu",
            "boot_vcpus": vcpus,
            "max_vcpus": vcpus,
            "memory_size": memory_mib * MIB,
            "image": "tiny",
            **kw,
        }
        vm = self.ok("POST", "/vms", 201, json=body)
        if wait:
            job = self.wait_job(vm["job_id"])
            assert job["status"] == "completed", job
        return vm

    def wait_job(self, job_id: str, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.ok("GET", f"/jobs/{job_id}")
            if job["status"] in ("completed", "failed"):
                return job
            assert time.monotonic() < deadline, job
            time.sleep(0.02)

    def act(self, vm_id: str, action: str) -> dict:
        job = self.ok("POST", f"/vms/{vm_id}/{action}", 202)
        return self.wait_job(job["id"])


def start_client(settings: Settings, node_factory: Fleet | None) -> tuple[TestClient, str]:
    """A client of a new app, with an admin token (tests register hosts and storage); without
    a node factory, the app reaches nodes over HTTP as `corral serve` does."""
    app = create_app(settings, node_factory=node_factory)
    client = TestClient(app)
    client.__enter__()
    _, token = app.state.plane.tokens.create(f"t{uuid.uuid4().hex[:8]}", "admin")
    client.headers["Authorization"] = f"Bearer {token}"
    return client, token


@pytest.fixture
def api(settings: Settings, fleet: Fleet) -> Iterator[Api]:
    client, _ = start_client(settings, fleet)
    try:
        yield Api(client, fleet)
    finally:
        client.__exit__(None, None, None)


@pytest.fixture
def live(settings: Settings, fleet: Fleet) -> Iterator[LiveServer]:
    """The app served by uvicorn on a loopback port, in a thread."""
    server = LiveServer(create_app(settings, node_factory=fleet)).start()
    try:
        yield server
    finally:
        server.stop()


def with_settings(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, **changes)


def openapi_document() -> dict[str, Any]:
    """The control plane's OpenAPI document, made without a server (no database is opened)."""
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(database_url=f"sqlite:///{tmp}/schema.db"))
        try:
            return app.openapi()
        finally:
            app.state.plane.db.dispose()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Each phase's report on its item (`item.rep_call`), for fixtures that act on failure
    (the browser tests' screenshots)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]  # pluggy's result
    setattr(item, f"rep_{report.when}", report)

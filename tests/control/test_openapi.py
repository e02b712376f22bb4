"""schemathesis against /openapi.json of a live server, on SQLite and PostgreSQL: valid and
invalid requests for every operation, and not one 5xx answer."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from control.conftest import MIB
from control.fakes import Fleet
from control.livesrv import LiveServer
from corral.api.app import create_app
from corral.control.settings import Settings

MAX_EXAMPLES = 40


@pytest.fixture
def token(live: LiveServer) -> str:
    return live.token()


@pytest.fixture
def state(live: LiveServer, fleet: Fleet, token: str, tmp_path: Path) -> None:
    """Something for the generated requests to run into: an up host, a pool, an object, a VM."""
    client = httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {token}"})
    fleet.add("10.0.0.1", 7000)
    host = client.post("/hosts", json={"name": "h1", "address": "10.0.0.1", "port": 7000}).json()
    client.post(f"/hosts/{host['id']}/init").raise_for_status()
    pool = client.post(
        "/storage-pools",
        json={"name": "p", "pool_type": "local", "config": {"path": f"{tmp_path}/p"}},
    ).json()
    client.post(
        "/storage-objects",
        json={"name": "k", "storage_pool_id": pool["id"], "object_type": "kernel",
              "config": {"path": f"{tmp_path}/p/vmlinuz"}},
    ).raise_for_status()  # fmt: skip
    client.post(
        "/vms", json={"name": "v", "memory_size": 128 * MIB, "image": "t"}
    ).raise_for_status()


def _openapi() -> dict[str, Any]:
    """The app's schema, made without a server (the engine is never connected)."""
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(database_url=f"sqlite:///{tmp}/schema.db"))
        try:
            return app.openapi()
        finally:
            app.state.plane.db.dispose()


schema = schemathesis.openapi.from_dict(_openapi()).exclude(path="/events")  # endless stream
schema.config.generation.update(modes=["positive", "negative"], max_examples=MAX_EXAMPLES)


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=MAX_EXAMPLES)
def test_no_server_errors(case: Any, live: LiveServer, token: str, state: None) -> None:
    for headers in ({"Authorization": f"Bearer {token}"}, {}):
        response = case.call(base_url=live.url, headers=headers, timeout=30)
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
        )

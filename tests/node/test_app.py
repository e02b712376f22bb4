"""The node agent's HTTP API on the wire: authentication, error bodies and status codes.

No VM boots here; test_http.py drives real VMs through HttpNode.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from corral.context import Context
from corral.errors import InvalidInput
from corral.node.app import create_node_app

TOKEN = "node-test-token-0123456789"  # as in conftest.py
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GUARDED = [
    ("GET", "/capacity"),
    ("GET", "/vms"),
    ("POST", "/vms"),
    ("GET", "/vms/v1"),
    *[("POST", f"/vms/v1/{op}") for op in ("start", "stop", "force-stop", "pause", "resume")],
    ("DELETE", "/vms/v1"),
    ("GET", "/vms/v1/console"),
    ("GET", "/networks"),
    ("POST", "/networks"),
    ("DELETE", "/networks/lab"),
    ("GET", "/metrics"),
]


def test_health_needs_no_token(agent: str) -> None:
    response = httpx.get(f"{agent}/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
     {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": TOKEN}],
    ids=["none", "wrong", "basic", "longer", "no-scheme"],
)  # fmt: skip
def test_every_other_route_needs_the_token(agent: str, headers: dict[str, str]) -> None:
    for method, path in GUARDED:
        response = httpx.request(method, f"{agent}{path}", headers=headers, json={})
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"] == "unauthorized"


def test_an_empty_token_is_refused(ctx: Context) -> None:
    with pytest.raises(InvalidInput, match="must not be empty"):
        create_node_app(ctx, "")


def test_errors_are_json_with_kind_message_and_hint(agent: str) -> None:
    """The control plane's shape (corral.wire): one error dialect on corral's wire."""
    response = httpx.get(f"{agent}/vms/ghost", headers=AUTH)
    assert response.status_code == 404
    assert response.json() == {
        "error": "not_found",
        "detail": "no instance named 'ghost'",
        "hint": "see: corral ls",
    }
    response = httpx.post(f"{agent}/vms/ghost/pause", headers=AUTH)
    assert (response.status_code, response.json()["error"]) == (404, "not_found")
    response = httpx.get(f"{agent}/vms/Bad_Name", headers=AUTH)
    assert (response.status_code, response.json()["error"]) == (422, "invalid_input")
    response = httpx.get(f"{agent}/nowhere", headers=AUTH)
    assert (response.status_code, response.json()["error"]) == (404, "not_found")


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"name": "v1", "image": "tiny", "cpus": 0}, "body.cpus"),
        ({"name": "v1", "image": "tiny", "memory_mib": 1}, "body.memory_mib"),
        ({"name": "v1", "image": "tiny", "colour": "red"}, "body.colour"),
        ({"image": "tiny"}, "body.name"),
        ([], "body"),
    ],
)
def test_a_bad_spec_is_422_invalid_input(agent: str, body: object, where: str) -> None:
    response = httpx.post(f"{agent}/vms", headers=AUTH, json=body)
    assert response.status_code == 422
    error = response.json()
    assert error["error"] == "invalid_input"
    assert ".".join(map(str, error["detail"][0]["loc"])).startswith(where)


def test_a_spec_the_library_refuses_is_422(agent: str) -> None:
    body = {"name": "v1", "image": "tiny", "base_disk": "/x"}
    response = httpx.post(f"{agent}/vms", headers=AUTH, json=body)
    assert response.status_code == 422
    assert response.json()["detail"] == "give image or base_disk, not both"
    response = httpx.post(f"{agent}/vms", headers=AUTH, json={"name": "v1"})
    assert response.status_code == 422
    assert response.json()["detail"] == "give image, base_disk or a kernel (a diskless VM)"
    tap = {"name": "v1", "image": "tiny", "nics": [{"tap": "nosuch0", "mac": "52:54:00:00:00:01"}]}
    response = httpx.post(f"{agent}/vms", headers=AUTH, json=tap)
    assert response.status_code == 422 and "no TAP device 'nosuch0'" in response.json()["detail"]
    response = httpx.post(f"{agent}/vms", headers=AUTH, json={"name": "v1", "image": "nope"})
    assert (response.status_code, response.json()["error"]) == (404, "not_found")


def test_console_websocket_refuses_with_a_status(agent: str) -> None:
    url = "ws" + agent.removeprefix("http") + "/vms/ghost/console/stream"

    async def status(headers: dict[str, str]) -> tuple[int, bytes]:
        with pytest.raises(InvalidStatus) as caught:
            await connect(url, additional_headers=headers, open_timeout=5)
        return caught.value.response.status_code, caught.value.response.body or b""

    code, body = asyncio.run(status({}))
    assert code == 401 and b"unauthorized" in body
    code, body = asyncio.run(status({"Authorization": "Bearer wrong"}))
    assert code == 401
    code, body = asyncio.run(status(AUTH))
    assert code == 404 and b"no instance named 'ghost'" in body


def test_openapi_describes_the_protocol(agent: str) -> None:
    spec = httpx.get(f"{agent}/openapi.json", headers=AUTH).json()
    assert {"/health", "/capacity", "/vms", "/vms/{name}", "/vms/{name}/console"} <= set(
        spec["paths"]
    )
    assert "NodeVmSpec" in spec["components"]["schemas"]
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert spec["paths"]["/vms"]["post"]["responses"].keys() >= {"201"}


def test_the_openapi_document_needs_the_token_and_there_is_no_swagger_ui(agent: str) -> None:
    """README: every route but /health needs the token; the docs were served to anyone."""
    for path in ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"):
        response = httpx.get(f"{agent}{path}")
        assert response.status_code == 401, path
        assert "paths" not in response.text and "swagger" not in response.text.lower()
    assert httpx.get(f"{agent}/openapi.json", headers=AUTH).status_code == 200
    for path in ("/docs", "/redoc"):
        assert httpx.get(f"{agent}{path}", headers=AUTH).status_code == 404, path


def test_malformed_json_is_422_and_405_names_every_method(agent: str) -> None:
    headers = {**AUTH, "Content-Type": "application/json"}
    for body in (b"{", b"\xff\xfe{}"):
        response = httpx.post(f"{agent}/vms", headers=headers, content=body)
        assert (response.status_code, response.json()["error"]) == (422, "invalid_input")
    response = httpx.put(f"{agent}/vms", headers=AUTH)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, OPTIONS, POST"
    response = httpx.options(f"{agent}/vms/v1", headers=AUTH)
    assert (response.status_code, response.headers["allow"]) == (204, "DELETE, GET, OPTIONS")


def test_a_body_over_the_limit_is_413_too_large(agent: str) -> None:
    response = httpx.post(f"{agent}/vms", headers=AUTH, content=b"x" * (2 << 20))
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    assert "larger than this server's limit of 1048576 bytes" in response.json()["detail"]


def test_tunnel_websocket_refuses_with_a_status(agent: str) -> None:
    """Before any VM is looked at: the token, then the port; then the VM."""
    base = "ws" + agent.removeprefix("http") + "/vms/ghost/tunnel"

    async def status(query: str, headers: dict[str, str]) -> tuple[int, bytes]:
        with pytest.raises(InvalidStatus) as caught:
            await connect(base + query, additional_headers=headers, open_timeout=5)
        return caught.value.response.status_code, caught.value.response.body or b""

    assert asyncio.run(status("?port=22", {}))[0] == 401
    assert asyncio.run(status("?port=22", {"Authorization": "Bearer wrong"}))[0] == 401
    for query in ("", "?port=0", "?port=x", "?port=99999", "?port=%C2%B2"):
        code, body = asyncio.run(status(query, AUTH))
        assert code == 422 and b"give a TCP port" in body, (query, body)
    code, body = asyncio.run(status("?port=22", AUTH))
    assert code == 404 and b"no instance named 'ghost'" in body

"""aleph-vm's supervisor endpoints: allocations with right and wrong signatures, the desired
running set, stop, console lines over a websocket, developer ssh keys."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from starlette.websockets import WebSocketDisconnect

from control.conftest import Api, start_client
from control.fakes import Fleet
from corral.control.settings import Settings

SIGNATURE = "test"  # aleph-vm's example: ALEPH_VM_ALLOCATION_TOKEN_HASH = sha256("test")
TOKEN_HASH = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
DEV_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDev developer@laptop"


@pytest.fixture
def api(settings: Settings, fleet: Fleet) -> Iterator[Api]:
    settings = replace(settings, allocation_token_hash=TOKEN_HASH, developer_ssh_keys=(DEV_KEY,))
    client, _ = start_client(settings, fleet)
    try:
        yield Api(client, fleet)
    finally:
        client.__exit__(None, None, None)


def allocate(
    api: Api, signature: str | None, instances: list[str], persistent: list[str] = ()
) -> tuple[int, dict]:
    headers = {"Authorization": ""}
    if signature is not None:
        headers["X-Auth-Signature"] = signature
    body = {"persistent_vms": list(persistent), "instances": instances}
    response = api.client.post("/control/allocations", json=body, headers=headers)
    return response.status_code, response.json()


def test_the_hash_is_aleph_vms_example() -> None:
    assert hashlib.sha256(SIGNATURE.encode()).hexdigest() == TOKEN_HASH


def test_wrong_or_missing_signature_is_401(api: Api) -> None:
    api.host()
    vm = api.vm("web1")
    for signature in (None, "", "Test", "test ", TOKEN_HASH):
        status, _body = allocate(api, signature, [vm["id"]])
        assert status == 401, signature
    # A bearer token is not an allocation signature.
    token = api.client.headers["Authorization"].split()[1]
    response = api.client.post(
        "/control/allocations",
        json={"instances": [vm["id"]]},
        headers={"X-Auth-Signature": token},
    )
    assert response.status_code == 401
    assert api.ok("GET", f"/vms/{vm['id']}")["status"] == "created"  # nothing happened


def test_allocations_start_listed_and_stop_unlisted_vms(api: Api) -> None:
    host = api.host(cpus=8, memory_mib=16384)
    a, b, c = (api.vm(name) for name in ("a", "b", "c"))
    status, body = allocate(api, SIGNATURE, [a["id"], "b"], persistent=["c"])
    assert status == 200, body
    assert body == {
        "success": True,
        "started": ["c", a["id"], "b"],
        "stopped": [],
        "failed": {},
        "notes": {},
    }
    for vm in (a, b, c):
        assert api.ok("GET", f"/vms/{vm['id']}")["status"] == "running"
    # The developer key reached every VM's cloud-init.
    node = api.fleet.nodes[(host["address"], host["port"])]
    assert all(DEV_KEY in spec.ssh_keys for spec in node.specs.values())

    # a stays (already running), b is no longer listed: stopped; d does not exist.
    status, body = allocate(api, SIGNATURE, [a["id"], "ghost"])
    assert status == 200
    assert body["success"] is False
    assert body["started"] == [a["id"]]
    assert set(body["stopped"]) == {"b", "c"}
    assert body["failed"] == {"ghost": "no VM with this id or name"}
    assert api.ok("GET", f"/vms/{b['id']}")["status"] == "shutdown"
    assert api.ok("GET", f"/vms/{a['id']}")["status"] == "running"

    # An empty allocation stops everything allocated before.
    status, body = allocate(api, SIGNATURE, [])
    assert body == {"success": True, "started": [], "stopped": ["a"], "failed": {}, "notes": {}}
    status, body = allocate(api, SIGNATURE, [])
    assert body["stopped"] == []  # forgotten once stopped


def test_failures_are_reported_per_vm(api: Api) -> None:
    host = api.host()
    api.vm("ok")
    api.vm("bad")
    node = api.fleet.nodes[(host["address"], host["port"])]
    original = node.start_vm

    async def start(name: str):  # type: ignore[no-untyped-def]
        if name == "bad":
            raise __import__("corral.errors").errors.QemuError("no accelerator")
        return await original(name)

    node.start_vm = start  # type: ignore[method-assign]
    _status, body = allocate(api, SIGNATURE, ["ok", "bad"])
    assert body["success"] is False
    assert body["started"] == ["ok"] and body["failed"] == {"bad": "no accelerator"}


def test_machine_stop(api: Api) -> None:
    api.host()
    vm = api.vm("decade", start=True)
    response = api.client.post("/control/machine/decade/stop", headers={"Authorization": ""})
    assert response.status_code == 401
    response = api.client.post(
        "/control/machine/decade/stop",
        headers={"Authorization": "", "X-Auth-Signature": SIGNATURE},
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"
    assert api.ok("GET", f"/vms/{vm['id']}")["status"] == "shutdown"
    api.act(vm["id"], "start")
    assert api.ok("POST", f"/control/machine/{vm['id']}/stop")["kind"] == "vm.stop"  # bearer
    assert api.ok("POST", "/control/machine/nothing/stop", 404)
    assert api.ok("POST", "/control/machine/decade/stop", 409)  # already stopped


def test_logs_websocket_streams_new_console_lines(api: Api) -> None:
    host = api.host()
    api.vm("decade", start=True)
    node = api.fleet.nodes[(host["address"], host["port"])]
    node.console["decade"] = b"old output, not sent\n"
    with api.client.websocket_connect(
        "/control/machine/decade/logs", headers={"Authorization": "", "X-Auth-Signature": SIGNATURE}
    ) as ws:
        deadline = time.monotonic() + 5
        while node.streaming("decade") == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        node.write_console("decade", b"Booting\nlogin: ")
        assert ws.receive_json() == {"type": "stdout", "message": "Booting\n"}
        node.write_console("decade", b"root\n", end=True)
        assert ws.receive_json() == {"type": "stdout", "message": "login: root\n"}
    with pytest.raises(WebSocketDisconnect) as info:  # noqa: SIM117
        with api.client.websocket_connect(
            "/control/machine/decade/logs", headers={"Authorization": "", "X-Auth-Signature": "x"}
        ):
            pass
    assert info.value.code == 1008

"""/networks on the embedded server with its in-process node, for real: a bridge, dnsmasq and
corral's nftables table made in a network namespace this test enters, and a tiny guest created
through POST /vms with a `network` interface, reached at the address GET /vms/{id} shows."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import TINY
from control.alephmsg import ITEM_HASH, message, write
from control.test_allocations import SIGNATURE, TOKEN_HASH
from control.test_qarax_vms import _embedded, _ok, _vm, _wait_job, boot_source
from corral.context import Context
from corral.control.aleph import vm_name
from corral.instance import lifecycle
from corral.net import manage
from netns import Netns, entered_netns

pytestmark = pytest.mark.vm

MAC, IP = "52:54:00:93:00:50", "10.93.0.50"


@pytest.fixture
def netns() -> Iterator[Netns]:
    """Asked for first, so it is entered before the VMs' context and left after it."""
    with entered_netns() as ns:
        yield ns


def _reaches_ssh(address: str, timeout: float = 240) -> None:
    """The guest answers at `address` (from this thread, which is in the namespace)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, 22), timeout=5) as conn:
                conn.settimeout(10)
                if conn.recv(64).startswith(b"SSH-2.0-"):
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"nothing answered at {address}:22"
        time.sleep(1)


def test_a_network_made_through_the_api_carries_a_vm_at_its_address(
    netns: Netns, vm_ctx: Context, tiny_guest: Any, tmp_path: Path
) -> None:
    client = _embedded(vm_ctx, tmp_path, vm_default_image=TINY)
    try:
        # A user token reads networks but makes none.
        _, token = client.app.state.plane.tokens.create("someone")  # type: ignore[attr-defined]
        user = {"Authorization": f"Bearer {token}"}
        refused = client.post("/networks", json={"name": "lab"}, headers=user)
        assert refused.status_code == 403, refused.text

        net = _ok(client.post("/networks", json={"name": "lab", "subnet": "10.93.0.0/24"}), 201)
        (host,) = net["hosts"]
        assert (host["subnet"], host["gateway"]) == ("10.93.0.0/24", "10.93.0.1")
        assert netns.link(host["bridge"])["operstate"] in ("UP", "UNKNOWN", "DOWN")
        assert [n["name"] for n in _ok(client.get("/networks", headers=user))] == ["lab"]
        (state,) = _ok(client.get(f"/networks/{net['id']}", headers=user))["hosts"]
        assert state["up"] is True and state["vms"] == []

        boot = boot_source(client, vm_ctx, tiny_guest)
        nic = {"id": "net0", "network": "lab", "ip": IP, "mac": MAC}
        vm = _ok(client.post("/vms", json={**_vm("web1", boot, [nic]), "start": True}), 201)
        assert _wait_job(client, vm["job_id"])["status"] == "completed"
        got = _ok(client.get(f"/vms/{vm['id']}"))
        assert got["status"] == "running"
        (entry,) = got["networks"]
        assert (entry["network"], entry["mac"], entry["addresses"]) == ("lab", MAC, [IP])
        _reaches_ssh(IP)  # the guest took its address (DHCP reservation and network-config)
        (state,) = _ok(client.get(f"/networks/{net['id']}"))["hosts"]
        assert [(v["name"], v["mac"], v["addresses"][0]) for v in state["vms"]] == [
            ("web1", MAC, IP)
        ]

        # In use: refused, the bridge stays.
        in_use = client.delete(f"/networks/{net['id']}")
        assert in_use.status_code == 409 and "in use by web1" in in_use.json()["detail"]
        assert _ok(client.get(f"/networks/{net['id']}"))["state"] == "ready"

        job = _ok(client.delete(f"/vms/{vm['id']}?force=true"), 202)
        assert _wait_job(client, job["id"])["status"] == "completed"
        assert lifecycle.list_instances(vm_ctx) == []
        _ok(client.delete(f"/networks/{net['id']}"), 204)
        assert _ok(client.get("/networks")) == []
        links = netns.run(["ip", "-br", "link"]).stdout
        assert host["bridge"] not in links
        assert netns.run(["nft", "list", "table", "inet", "corral"], check=False).returncode != 0
    finally:
        client.__exit__(None, None, None)


def test_an_aleph_allocation_starts_its_vm_on_the_default_network_with_its_address(
    netns: Netns, vm_ctx: Context, tmp_path: Path
) -> None:
    # Made on this host as `corral network create lab` would, before the server starts: the
    # local host's init adopts it.
    manage.create(vm_ctx.home, "lab", manage.CreateOptions(subnet="10.96.0.0/24"))
    fake = write(tmp_path / "qemu_message_from_aleph.json", message())
    client = _embedded(
        vm_ctx,
        tmp_path,
        default_network="lab",
        aleph_fake_instance_base=TINY,
        aleph_fake_instance_message=fake,
        allocation_token_hash=TOKEN_HASH,
    )
    try:
        (net,) = _ok(client.get("/networks"))
        assert (net["name"], net["hosts"][0]["subnet"]) == ("lab", "10.96.0.0/24")
        signed = {"Authorization": "", "X-Auth-Signature": SIGNATURE}
        body = {"persistent_vms": [], "instances": [ITEM_HASH]}
        answer = _ok(client.post("/control/allocations", json=body, headers=signed))
        assert answer["started"] == [ITEM_HASH], answer
        (vm,) = _ok(client.get("/vms", params={"name": vm_name(ITEM_HASH)}))
        assert vm["status"] == "running", vm
        (nic,) = vm["networks"]
        (address,) = nic["addresses"]
        assert nic["network"] == "lab" and address.startswith("10.96.0.")
        _reaches_ssh(address)
        job = _ok(client.delete(f"/vms/{vm['id']}?force=true"), 202)
        assert _wait_job(client, job["id"])["status"] == "completed"
        _ok(client.delete(f"/networks/{net['id']}"), 204)
    finally:
        client.__exit__(None, None, None)


NO_CAP = """
import asyncio, sys
from pathlib import Path
from corral.config import Config
from corral.context import Context
from corral.errors import Conflict
from corral.node.local import LocalNode
from corral.node.protocol import NodeNetworkSpec
node = LocalNode(Context(Config(home=Path(sys.argv[1]))))
try:
    asyncio.run(node.create_network(NodeNetworkSpec(name="lab")))
except Conflict as exc:
    print(exc.message)
"""


def test_a_node_without_cap_net_admin_refuses_with_nets_line(netns: Netns, tmp_path: Path) -> None:
    proc = subprocess.run(
        ["setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin",
         sys.executable, "-c", NO_CAP, str(tmp_path / "home")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("managed networks need CAP_NET_ADMIN"), proc.stdout
    assert "cbr" not in netns.run(["ip", "-br", "link"]).stdout

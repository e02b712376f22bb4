"""/networks and `network` interfaces in POST /vms: the control plane's own logic (which hosts,
all or nothing, refusals, placement), on SQLite and PostgreSQL, with nodes in memory. The real
thing (bridges, dnsmasq, a booted VM's address) is test_networks_netns.py."""

from __future__ import annotations

import uuid

from control.conftest import MIB, Api
from corral.errors import Conflict


def _node(api: Api, host: dict) -> object:
    return api.fleet.nodes[(host["address"], host["port"])]


def test_a_network_on_every_up_host_is_listed_got_and_deleted(api: Api) -> None:
    h1, h2 = api.host(), api.host()
    api.ok("PATCH", f"/hosts/{api.host()['id']}", json={"status": "maintenance"})
    net = api.ok("POST", "/networks", 201, json={"name": "lab"})
    assert net["state"] == "ready" and net["config"]["nat"] is True
    assert sorted(h["host_name"] for h in net["hosts"]) == ["h1", "h2"]  # not the one down
    for host in (h1, h2):
        assert "lab" in _node(api, host).networks  # type: ignore[attr-defined]
    assert [n["name"] for n in api.ok("GET", "/networks")] == ["lab"]
    got = api.ok("GET", f"/networks/{net['id']}")
    assert all(h["up"] is True and h["vms"] == [] for h in got["hosts"])
    assert "already exists" in api.ok("POST", "/networks", 409, json={"name": "lab"})["detail"]
    api.ok("DELETE", f"/networks/{net['id']}", 204)
    assert api.ok("GET", "/networks") == []
    assert all(not _node(api, h).networks for h in (h1, h2))  # type: ignore[attr-defined]
    api.ok("GET", f"/networks/{net['id']}", 404)


def test_a_network_on_one_host_with_its_subnet(api: Api) -> None:
    api.host()
    h2 = api.host()
    body = {"name": "lab", "host_id": h2["id"], "subnet": "10.90.0.0/24", "mtu": 1400}
    (state,) = api.ok("POST", "/networks", 201, json=body)["hosts"]
    assert (state["host_name"], state["subnet"], state["gateway"]) == (
        "h2",
        "10.90.0.0/24",
        "10.90.0.1",
    )
    assert _node(api, h2).networks["lab"].mtu == 1400  # type: ignore[attr-defined]


def test_bad_networks_are_422_and_a_failing_host_undoes_the_others(api: Api) -> None:
    h1, h2 = api.host(), api.host()
    for body, words in [
        ({"name": "Lab"}, "name"),
        ({"name": "lab;reboot"}, "name"),
        ({"name": "a" * 33}, "name"),
        ({"name": "lab", "subnet": "10.0.0.0/33"}, "not an IPv4 subnet"),
        ({"name": "lab", "host_id": str(uuid.uuid4())}, "no host"),
        ({"name": "lab", "mtu": 100}, "mtu"),
    ]:
        assert words in str(api.ok("POST", "/networks", 422, json=body)["detail"]), body
    # A node without CAP_NET_ADMIN answers a Conflict with net's line: the create is undone
    # on the host that made it, and nothing is recorded.
    _node(api, h2).fail["create_network"] = Conflict("managed networks need CAP_NET_ADMIN")  # type: ignore[attr-defined]
    error = api.ok("POST", "/networks", 409, json={"name": "lab"})
    assert error["detail"] == "host 'h2': managed networks need CAP_NET_ADMIN"
    assert api.ok("GET", "/networks") == []
    assert not _node(api, h1).networks  # type: ignore[attr-defined]
    api.ok("POST", "/networks", 201, json={"name": "lab", "host_id": h1["id"]})


def test_a_vm_on_a_network_goes_to_a_host_that_has_it_and_gets_its_address(api: Api) -> None:
    api.host(memory_mib=16384)  # the roomiest: where a VM would go without the network
    h2 = api.host()
    base = {"name": "v", "memory_size": 256 * MIB, "image": "tiny"}
    nic = {"id": "net0", "network": "lab", "ip": "10.90.0.50", "mac": "52:54:00:00:00:50"}
    error = api.ok("POST", "/vms", 422, json={**base, "networks": [nic]})
    assert "no host has a network named 'lab'" in error["detail"]
    net = api.ok(
        "POST",
        "/networks",
        201,
        json={"name": "lab", "host_id": h2["id"], "subnet": "10.90.0.0/24"},
    )
    vm = api.vm("v", memory_mib=256, networks=[nic])
    got = api.ok("GET", f"/vms/{vm['id']}")
    assert got["host_id"] == h2["id"]
    (entry,) = got["networks"]
    assert (entry["network"], entry["mac"], entry["addresses"]) == ("lab", nic["mac"], [nic["ip"]])
    (spec,) = _node(api, h2).specs["v"].networks  # type: ignore[attr-defined]
    assert (spec.network, spec.mac, spec.ip) == ("lab", nic["mac"], nic["ip"])
    # A MAC is made up when none is given; the node picks the address.
    other = api.vm("w", memory_mib=256, networks=[{"id": "net0", "network": "lab"}])
    (entry,) = api.ok("GET", f"/vms/{other['id']}")["networks"]
    assert entry["mac"].startswith("52:54:00:") and entry["addresses"]
    (on_host,) = api.ok("GET", f"/networks/{net['id']}")["hosts"]
    assert sorted(vm["name"] for vm in on_host["vms"]) == ["v", "w"]

    # In use: refused, and the network stays ready (VMs are still placed on it).
    error = api.ok("DELETE", f"/networks/{net['id']}", 409)
    assert error["detail"] == "network 'lab' is in use by v, w"
    assert api.ok("GET", f"/networks/{net['id']}")["state"] == "ready"
    for one in (vm, other):
        api.wait_job(api.ok("DELETE", f"/vms/{one['id']}", 202)["id"])
    api.ok("DELETE", f"/networks/{net['id']}", 204)


def test_network_interfaces_are_checked(api: Api) -> None:
    api.host()
    api.ok("POST", "/networks", 201, json={"name": "lab"})
    base = {"name": "v", "memory_size": 256 * MIB, "image": "tiny"}
    nic = {"id": "net0", "network": "lab"}
    for networks, words in [
        ([{**nic, "ip": "10.90.0.5", "mask": "24"}], "mask are set by network 'lab'"),
        ([{**nic, "mtu": 1400}], "mtu are set by network 'lab'"),
        ([{**nic, "dns": ["1.1.1.1"]}], "dns are set by network 'lab'"),
        ([{**nic, "ip": "fd00::5"}], "must be IPv4"),
        ([{**nic, "network": "Lab"}], "network"),
        ([nic, {**nic, "id": "net1"}], "a network is named twice"),
        ([nic, {"id": "net1", "tap": "tap0"}], "not both"),
        ([{**nic, "network": "other"}], "no host has a network named 'other'"),
    ]:
        error = api.ok("POST", "/vms", 422, json={**base, "networks": networks})
        assert words in str(error["detail"]), (networks, error)
    assert api.ok("GET", "/vms") == []


def test_a_delete_a_node_fails_leaves_the_network_ready_and_can_be_tried_again(api: Api) -> None:
    h1, h2 = api.host(), api.host()
    net = api.ok("POST", "/networks", 201, json={"name": "lab"})
    _node(api, h2).reachable = False  # type: ignore[attr-defined]
    error = api.ok("DELETE", f"/networks/{net['id']}", 502)
    assert error["error"] == "node_unreachable"
    assert api.ok("GET", f"/networks/{net['id']}")["state"] == "ready"
    (_, unreachable) = sorted(
        api.ok("GET", f"/networks/{net['id']}")["hosts"], key=lambda h: h["host_name"]
    )
    assert unreachable["up"] is None and "connection refused" in unreachable["reason"]
    _node(api, h2).reachable = True  # type: ignore[attr-defined]
    api.ok("DELETE", f"/networks/{net['id']}", 204)
    assert not _node(api, h1).networks and not _node(api, h2).networks  # type: ignore[attr-defined]


def test_a_hosts_init_adopts_the_networks_its_node_has_and_forgets_those_it_lost(
    api: Api,
) -> None:
    import asyncio

    from corral.node.protocol import NodeNetworkSpec

    h1 = api.host()
    node = _node(api, h1)
    asyncio.run(node.create_network(NodeNetworkSpec(name="cli", subnet="10.95.0.0/24")))  # type: ignore[attr-defined]
    assert api.ok("GET", "/networks") == []
    api.ok("POST", f"/hosts/{h1['id']}/init")
    (net,) = api.ok("GET", "/networks")
    assert (net["name"], net["state"], net["config"]["subnet"]) == ("cli", "ready", "10.95.0.0/24")
    assert [h["host_name"] for h in net["hosts"]] == ["h1"]
    vm = api.vm("v", memory_mib=256, networks=[{"id": "net0", "network": "cli"}])
    assert api.ok("GET", f"/vms/{vm['id']}")["host_id"] == h1["id"]
    # Gone from the node (e.g. `corral network rm` there): the next init forgets this host's
    # part, and no VM is placed there on it any more.
    api.wait_job(api.ok("DELETE", f"/vms/{vm['id']}", 202)["id"])
    asyncio.run(node.delete_network("cli"))  # type: ignore[attr-defined]
    api.ok("POST", f"/hosts/{h1['id']}/init")
    assert api.ok("GET", "/networks")[0]["hosts"] == []
    body = {"name": "w", "memory_size": 256 * MIB, "image": "tiny",
            "networks": [{"id": "net0", "network": "cli"}]}  # fmt: skip
    assert "no host has a network named 'cli'" in api.ok("POST", "/vms", 422, json=body)["detail"]


def test_a_create_whose_server_died_can_be_deleted_once_it_is_stale(api: Api) -> None:
    """A server killed during POST /networks leaves its row `creating`, without the hosts it
    had made it on: a delete refuses while a create may still be under way, then asks every up
    host, and the ones that have the network remove it."""
    from datetime import timedelta

    from corral.control.networks import STALE_CREATE
    from corral.db.models import Network, NetworkHost

    h1, h2 = api.host(), api.host()
    net = api.ok("POST", "/networks", 201, json={"name": "lab", "host_id": h1["id"]})

    def died_midway(age: timedelta) -> None:
        with api.plane.db.write() as session:
            row = session.get(Network, uuid.UUID(net["id"]))
            assert row is not None
            row.state, row.created_at = "creating", row.created_at - age
            session.query(NetworkHost).filter_by(network_id=row.id).delete()

    died_midway(timedelta(0))
    refused = api.ok("DELETE", f"/networks/{net['id']}", 409)
    assert "still being created" in refused["detail"] and "minutes" in refused["hint"]
    assert "lab" in _node(api, h1).networks  # type: ignore[attr-defined]
    died_midway(STALE_CREATE)
    api.ok("DELETE", f"/networks/{net['id']}", 204)
    assert api.ok("GET", "/networks") == []
    assert not _node(api, h1).networks and not _node(api, h2).networks  # type: ignore[attr-defined]

"""VMs through the API on fake nodes, on SQLite and PostgreSQL: create and schedule by capacity
with overcommit, list filters and pagination, lifecycle jobs, delete, console, errors."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
from starlette.websockets import WebSocketDisconnect

from control.conftest import MIB, Api, start_client
from control.fakes import Fleet
from corral.control.settings import Settings
from corral.errors import Conflict


def test_create_answers_201_with_the_vm_and_a_job_that_creates_it(api: Api) -> None:
    host = api.host()
    body = {
        "name": "my-vm",
        "hypervisor": "qemu",
        "boot_vcpus": 2,
        "max_vcpus": 2,
        "memory_size": 536870912,
        "image": "tiny",
        "tags": ["web", "prod"],
        "networks": [
            {
                "id": "net0",
                "tap": "tap0",
                "mac": "52:54:00:12:34:56",
                "ip": "192.168.100.10",
                "mask": "255.255.255.0",
                "mtu": 1500,
            }
        ],
    }
    response = api.post("/vms", json=body)
    assert response.status_code == 201, response.text
    vm = response.json()
    assert response.headers["location"] == f"/vms/{vm['id']}"
    assert vm["status"] == "pending" and vm["host_id"] == host["id"]
    assert vm["tags"] == ["prod", "web"] and vm["networks"][0]["tap"] == "tap0"
    job = api.wait_job(vm["job_id"])
    assert (job["kind"], job["status"], job["vm_id"]) == ("vm.create", "completed", vm["id"])
    assert api.ok("GET", f"/vms/{vm['id']}")["status"] == "created"
    node = api.fleet.nodes[(host["address"], host["port"])]
    spec = node.specs["my-vm"]
    assert (spec.cpus, spec.memory_mib, spec.image, spec.start) == (2, 512, "tiny", False)
    # The interface reaches the node: its tap, MAC, MTU and static address.
    (nic,) = spec.nics
    assert (nic.tap, nic.mac, nic.mtu, nic.addresses) == (
        "tap0",
        "52:54:00:12:34:56",
        1500,
        ["192.168.100.10/24"],
    )
    (entry,) = api.ok("GET", f"/vms/{vm['id']}")["networks"]
    assert entry["address"] == "192.168.100.10/24"  # asked for
    assert entry["addresses"] == ["192.168.100.10/24"]  # what the node reports it has
    host = api.ok("GET", f"/hosts/{host['id']}")
    assert (host["used_vcpus"], host["used_memory"]) == (2, 512 * MIB)


def test_lifecycle_jobs_move_the_status(api: Api) -> None:
    api.host()
    vm = api.vm("web1")
    vm_id = vm["id"]
    for action, status in [
        ("start", "running"),
        ("pause", "paused"),
        ("resume", "running"),
        ("stop", "shutdown"),
        ("start", "running"),
        ("force-stop", "shutdown"),
    ]:
        job = api.act(vm_id, action)
        assert (job["status"], job["kind"]) == ("completed", f"vm.{action}"), job
        assert api.ok("GET", f"/vms/{vm_id}")["status"] == status, action
    jobs = api.ok("GET", f"/jobs?vm_id={vm_id}")
    assert len(jobs) == 7 and jobs[-1]["kind"] == "vm.create"  # newest first
    job = api.ok("DELETE", f"/vms/{vm_id}", 202)
    assert api.wait_job(job["id"])["status"] == "completed"
    api.ok("GET", f"/vms/{vm_id}", 404)
    assert api.fleet.nodes[("10.0.0.1", 7000)].vms == {}


def test_start_true_creates_a_running_vm(api: Api) -> None:
    api.host()
    vm = api.vm("web1", start=True)
    assert api.ok("GET", f"/vms/{vm['id']}")["status"] == "running"


def test_operations_that_do_not_fit_the_state_are_409(api: Api) -> None:
    api.host()
    vm = api.vm("web1")
    for action in ("stop", "pause", "resume", "force-stop"):
        assert "it is created" in api.ok("POST", f"/vms/{vm['id']}/{action}", 409)["detail"]
    api.act(vm["id"], "start")
    assert "it is running" in api.ok("POST", f"/vms/{vm['id']}/start", 409)["detail"]
    missing = uuid.uuid4()
    for action in ("start", "stop", "force-stop", "pause", "resume"):
        api.ok("POST", f"/vms/{missing}/{action}", 404)
    api.ok("DELETE", f"/vms/{missing}", 404)
    api.ok("GET", f"/vms/{missing}", 404)
    api.ok("GET", f"/vms/{missing}/console", 404)


def test_a_second_operation_while_one_runs_is_409(api: Api) -> None:
    api.host()
    vm = api.vm("web1")
    api.fleet.nodes[("10.0.0.1", 7000)].delay = 0.5
    job = api.ok("POST", f"/vms/{vm['id']}/start", 202)
    error = api.ok("POST", f"/vms/{vm['id']}/stop", 409)
    assert "job under way" in error["detail"]
    assert api.ok("GET", f"/vms/{vm['id']}")["status"] == "pending"
    assert api.wait_job(job["id"])["status"] == "completed"


def test_failed_jobs_carry_the_error_and_the_vm_shows_it(api: Api) -> None:
    api.host()
    node = api.fleet.nodes[("10.0.0.1", 7000)]
    node.fail["create_vm"] = "qemu-system-x86_64: cannot open disk"
    vm = api.ok("POST", "/vms", 201, json={"name": "bad", "memory_size": 256 * MIB, "image": "x"})
    job = api.wait_job(vm["job_id"])
    assert job["status"] == "failed" and "cannot open disk" in job["error"]
    assert job["error_status"] == 502  # QEMU failed: not the request's fault
    vm = api.ok("GET", f"/vms/{vm['id']}")
    assert vm["status"] == "crashed" and "cannot open disk" in vm["status_reason"]
    del node.fail["create_vm"]
    ok = api.vm("good")
    node.fail["start_vm"] = "no accelerator"
    job = api.act(ok["id"], "start")
    assert job["status"] == "failed" and job["error"] == "no accelerator"
    vm = api.ok("GET", f"/vms/{ok['id']}")
    assert vm["status"] == "created"  # asked of the node after the failure
    assert "start failed: no accelerator" in vm["status_reason"]
    node.fail["start_vm"] = Conflict("instance 'good' is locked by another command")
    job = api.act(ok["id"], "start")
    assert (job["status"], job["error_status"]) == ("failed", 409)  # the request's own
    del node.fail["start_vm"]
    # A VM that never reached its node can still be deleted.
    assert api.wait_job(api.ok("DELETE", f"/vms/{vm['id']}", 202)["id"])["status"] == "completed"
    bad = api.ok("GET", "/vms")[0]
    assert api.wait_job(api.ok("DELETE", f"/vms/{bad['id']}", 202)["id"])["status"] == "completed"
    assert api.ok("GET", "/vms") == []


def test_invalid_vms_are_422_naming_the_field_or_rule(api: Api) -> None:
    api.host()
    base = {"name": "v", "boot_vcpus": 1, "memory_size": 256 * MIB, "image": "tiny"}
    error = api.ok("POST", "/vms", 422, json={**base, "hypervisor": "cloud_hv"})
    message = str(error["detail"])
    assert "cloud_hv" in message and "this fleet offers qemu" in message
    for bad, field in [
        ({**base, "name": "Not_A_Hostname"}, "name"),
        ({**base, "memory_size": 1000}, "memory_size"),
        ({**base, "memory_size": 256 * MIB + 1}, "multiple of 1 MiB"),
        ({**base, "boot_vcpus": 0}, "boot_vcpus"),
        ({**base, "boot_vcpus": 4, "max_vcpus": 2}, "max_vcpus must be at least"),
        ({**base, "memory_size": 1 << 62}, "memory_size"),
        ({**base, "ssh_keys": ["two\nlines"]}, "ssh_keys"),
        ({**base, "tags": ["bad tag"]}, "tags"),
        ({**base, "image_object_id": str(uuid.uuid4())}, "not both"),
        ({**base, "surprise": True}, "surprise"),
        (
            {**base, "networks": [{"id": "n0", "tap": "t0"}, {"id": "n0", "tap": "t1"}]},
            "distinct",
        ),
    ]:
        error = api.ok("POST", "/vms", 422, json=bad)
        assert field in str(error["detail"]), (bad, error)
    no_image = {"name": "v", "memory_size": 256 * MIB}
    assert "give image" in api.ok("POST", "/vms", 422, json=no_image)["detail"]
    assert (
        "no root disk"
        in api.ok(
            "POST",
            "/vms",
            422,
            json={**no_image, "boot_source_id": _boot(api), "disk_size": 1 << 30},
        )["detail"]
    )
    missing = {**no_image, "boot_source_id": str(uuid.uuid4()), "image": "tiny"}
    assert "no boot source" in api.ok("POST", "/vms", 422, json=missing)["detail"]
    api.vm("v")
    assert "already exists" in api.ok("POST", "/vms", 409, json=base)["detail"]


def test_network_interfaces_qemu_cannot_honour_are_422_and_nothing_is_recorded(
    api: Api,
) -> None:
    api.host()
    base = {"name": "v", "boot_vcpus": 1, "memory_size": 256 * MIB, "image": "tiny"}
    tap = {"id": "net0", "tap": "tap0"}
    for nic, message in [
        ({"id": "net0", "vhost_user": True}, "does not support vhost-user"),
        ({**tap, "vhost_user": True}, "does not support vhost-user"),
        ({"id": "net0", "mac": "52:54:00:12:34:56"}, "does not support macvtap"),
        ({"id": "net0", "network": "lab"}, "no host has a network named 'lab'"),
        ({**tap, "network": "lab"}, "not both"),
        ({"id": "net0", "tap": "../../etc"}, "tap"),
        ({"id": "net0", "tap": "a" * 16}, "tap"),
        ({"id": "net0", "tap": "tap0;reboot"}, "tap"),
        ({**tap, "ip": "192.168.100.10"}, "ip and mask together"),
        ({**tap, "ip": "192.168.100.10", "mask": "255.0.255.0"}, "invalid mask"),
        ({**tap, "ip": "my.host.name", "mask": "24"}, "IP address"),
        ({**tap, "mac": "01:00:5e:00:00:01"}, "multicast"),
        ({**tap, "mac": "52:54:00:12:34"}, "mac"),
        ({**tap, "gateway": "192.168.100.1"}, "gateway needs ip"),
    ]:
        error = api.ok("POST", "/vms", 422, json={**base, "networks": [nic]})
        assert message in str(error["detail"]), (nic, error)
    two = [tap, {**tap, "id": "net1"}]
    assert "one interface only" in str(api.ok("POST", "/vms", 422, json={**base, "networks": two}))
    assert api.ok("GET", "/vms") == []


def test_a_tap_interface_without_a_mac_gets_one_and_dhcp(api: Api) -> None:
    host = api.host()
    vm = api.vm("v", networks=[{"id": "net0", "tap": "tap0", "mtu": 9000}])
    (entry,) = api.ok("GET", f"/vms/{vm['id']}")["networks"]
    assert entry["mac"].startswith("52:54:00:") and "address" not in entry
    (nic,) = api.fleet.nodes[(host["address"], host["port"])].specs["v"].nics
    assert (nic.tap, nic.mac, nic.mtu, nic.addresses) == ("tap0", entry["mac"], 9000, [])


def test_no_up_host_is_422(api: Api) -> None:
    body = {"name": "v", "memory_size": 256 * MIB, "image": "tiny"}
    error = api.ok("POST", "/vms", 422, json=body)
    assert (
        "no up host with enough free capacity" in error["detail"]
        and "(0 hosts up)" in error["detail"]
    )
    host = api.host()
    api.ok("PATCH", f"/hosts/{host['id']}", json={"status": "maintenance"})
    api.ok("POST", "/vms", 422, json=body)
    api.ok("PATCH", f"/hosts/{host['id']}", json={"status": "up"})
    api.ok("POST", "/vms", 201, json=body)


def test_scheduling_counts_capacity_with_overcommit(settings: Settings, fleet: Fleet) -> None:
    settings = replace(settings, cpu_overcommit=2.0, memory_overcommit=1.5)
    client, _ = start_client(settings, fleet)
    try:
        api = Api(client, fleet)
        api.host("small", cpus=2, memory_mib=1024)  # room: 4 vCPUs, 1536 MiB
        for i in range(3):
            api.vm(f"v{i}", memory_mib=512)
        error = api.ok(
            "POST", "/vms", 422, json={"name": "v3", "memory_size": 512 * MIB, "image": "t"}
        )
        assert "512 MiB" in error["detail"]
        # A VM shut down frees its reservation; starting it again takes it back.
        v0 = api.ok("GET", "/vms?limit=1")[0]
        api.act(v0["id"], "start")
        api.act(v0["id"], "stop")
        assert api.ok("GET", "/hosts")[0]["used_memory"] == 1024 * MIB
        v3 = api.vm("v3", memory_mib=512)
        error = api.ok("POST", f"/vms/{v0['id']}/start", 422)
        assert "no room to start" in error["detail"]
        api.wait_job(api.ok("DELETE", f"/vms/{v3['id']}", 202)["id"])
        api.act(v0["id"], "start")
        # vCPUs count too: 4 schedulable, 3 used.
        error = api.ok(
            "POST",
            "/vms",
            422,
            json={"name": "wide", "boot_vcpus": 2, "memory_size": 64 * MIB, "image": "t"},
        )
        assert "2 vCPUs" in error["detail"]
    finally:
        client.__exit__(None, None, None)


def test_vms_spread_over_hosts_by_free_memory(api: Api) -> None:
    big = api.host("big", memory_mib=8192)
    small = api.host("small", memory_mib=4096)
    placed = [api.vm(f"v{i}", memory_mib=1024)["host_id"] for i in range(6)]
    # big has most room for the first four; then they are level and take turns.
    assert placed[:4] == [big["id"]] * 4
    assert placed.count(big["id"]) == 5 and placed.count(small["id"]) == 1


def test_list_filters_and_pagination(api: Api) -> None:
    h1 = api.host()
    for i in range(5):
        api.vm(f"a{i}", tags=["a", "even" if i % 2 == 0 else "odd"])
    h2 = api.host()
    api.ok("PATCH", f"/hosts/{h1['id']}", json={"status": "maintenance"})
    for i in range(3):
        api.vm(f"b{i}", tags=["b"])
    api.ok("PATCH", f"/hosts/{h1['id']}", json={"status": "up"})
    names = lambda query: [v["name"] for v in api.ok("GET", f"/vms{query}")]  # noqa: E731
    assert names("") == ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2"]
    assert names("?limit=3") == ["a0", "a1", "a2"]
    assert names("?limit=3&offset=3") == ["a3", "a4", "b0"]
    assert names("?offset=8") == []
    assert names("?tags=a&tags=even") == ["a0", "a2", "a4"]
    assert names("?tags=b") == ["b0", "b1", "b2"]
    assert names("?tags=a&tags=b") == []
    assert names(f"?host_id={h2['id']}") == ["b0", "b1", "b2"]
    assert names("?name=b1") == ["b1"]
    assert names("?name=b") == []  # exact, not a prefix
    api.ok("GET", "/vms?name=a%00b", 422)  # never a name: PostgreSQL cannot even compare it
    first = api.ok("GET", "/vms?limit=1")[0]
    api.act(first["id"], "start")
    assert names("?status=running") == ["a0"]
    assert names(f"?status=created&host_id={h1['id']}") == ["a1", "a2", "a3", "a4"]
    api.ok("GET", "/vms?status=sleeping", 422)
    api.ok("GET", "/vms?limit=0", 422)
    api.ok("GET", "/vms?limit=1001", 422)
    api.ok("GET", "/vms?offset=-1", 422)
    api.ok("GET", "/vms?host_id=nope", 422)


def test_console_log(api: Api) -> None:
    host = api.host()
    vm = api.vm("web1", start=True)
    api.fleet.nodes[(host["address"], host["port"])].console["web1"] = b"Linux version 6.1\nlogin: "
    response = api.get(f"/vms/{vm['id']}/console")
    assert response.status_code == 200
    assert response.content == b"Linux version 6.1\nlogin: "
    assert response.headers["content-type"].startswith("text/plain")


def test_console_stream_websocket(api: Api) -> None:
    host = api.host()
    vm = api.vm("web1", start=True)
    node = api.fleet.nodes[(host["address"], host["port"])]
    token = api.client.headers["Authorization"].split()[1]
    with api.client.websocket_connect(f"/vms/{vm['id']}/console/stream?token={token}") as ws:
        _wait(lambda: node.streaming("web1") == 1)
        node.write_console("web1", b"hello\n")
        assert ws.receive_bytes() == b"hello\n"
        node.write_console("web1", b"world\n", end=True)
        assert ws.receive_bytes() == b"world\n"
    refused = {"Authorization": "Bearer corral_000000000000_nope"}
    with pytest.raises(WebSocketDisconnect) as info:  # noqa: SIM117
        with api.client.websocket_connect(f"/vms/{vm['id']}/console/stream", headers=refused):
            pass
    assert info.value.code == 1008


def test_vm_on_a_down_host_cannot_be_operated_but_can_be_forgotten(api: Api) -> None:
    host = api.host()
    vm = api.vm("web1", start=True)
    api.ok("PATCH", f"/hosts/{host['id']}", json={"status": "down"})
    error = api.ok("POST", f"/vms/{vm['id']}/stop", 409)
    assert "which is down" in error["detail"]
    api.ok("DELETE", f"/vms/{vm['id']}", 409)
    api.fleet.nodes[(host["address"], host["port"])].reachable = False
    job = api.ok("DELETE", f"/vms/{vm['id']}?force=true", 202)
    assert api.wait_job(job["id"])["status"] == "completed"
    api.ok("GET", f"/vms/{vm['id']}", 404)
    assert api.ok("GET", f"/hosts/{host['id']}")["used_memory"] == 0


def _wait(condition, timeout: float = 5) -> None:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _boot(api: Api) -> str:
    """A boot source (kernel and initramfs storage objects) under the test's storage root."""
    root = api.plane.settings.storage_roots[0]
    body = {"name": "p", "pool_type": "local", "config": {"path": str(root)}}
    pool = api.ok("POST", "/storage-pools", 201, json=body)
    ids = {}
    for kind in ("kernel", "initrd"):
        body = {"name": kind, "storage_pool_id": pool["id"], "object_type": kind,
                "config": {"path": str(root / kind)}}  # fmt: skip
        ids[kind] = api.ok("POST", "/storage-objects", 201, json=body)["id"]
    body = {"name": "b", "kernel_image_id": ids["kernel"], "initrd_image_id": ids["initrd"]}
    return str(api.ok("POST", "/boot-sources", 201, json=body)["id"])


def test_a_vm_with_only_a_boot_source_is_diskless(api: Api) -> None:
    """qarax's "Minimal" example, with no vm_default_image configured."""
    host = api.host()
    body = {"name": "v", "memory_size": 256 * MIB, "boot_source_id": _boot(api)}
    vm = api.ok("POST", "/vms", 201, json=body)
    assert api.wait_job(vm["job_id"])["status"] == "completed"
    spec = api.fleet.nodes[(host["address"], host["port"])].specs["v"]
    root = api.plane.settings.storage_roots[0]
    assert (spec.image, spec.base_disk) == (None, None)
    assert (spec.kernel, spec.initrd) == (str(root / "kernel"), str(root / "initrd"))


def test_volumes_reach_the_node_as_blank_disks(api: Api) -> None:
    host = api.host()
    vm = api.vm("v", volumes=[5 * MIB, 1 << 30])
    assert api.ok("GET", f"/vms/{vm['id']}")["volumes"] == [5 * MIB, 1 << 30]
    assert api.fleet.nodes[(host["address"], host["port"])].specs["v"].volumes == [5 * MIB, 1 << 30]
    error = api.ok("POST", "/vms", 422, json={"name": "w", "memory_size": 256 * MIB,
                                              "image": "tiny", "volumes": [MIB + 1]})  # fmt: skip
    assert "multiples of 1 MiB" in str(error["detail"])

"""Hosts, storage pools, storage objects and boot sources through the API, on SQLite and
PostgreSQL: CRUD, Location headers, and every error a client can cause (never a 500)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from control.conftest import Api
from corral.errors import InvalidInput

MISSING = str(uuid.uuid4())


def test_hosts_crud(api: Api) -> None:
    response = api.post(
        "/hosts", json={"name": "node1", "address": "10.1.0.1", "port": 7000, "token": "s3cret"}
    )
    assert response.status_code == 201
    host = response.json()
    assert response.headers["location"] == f"/hosts/{host['id']}"
    assert host["status"] == "unknown" and host["has_token"] is True
    assert "token" not in host  # a secret never comes back
    assert api.ok("GET", f"/hosts/{host['id']}")["name"] == "node1"
    assert [h["name"] for h in api.ok("GET", "/hosts")] == ["node1"]

    patched = api.ok("PATCH", f"/hosts/{host['id']}", json={"status": "maintenance"})
    assert patched["status"] == "maintenance"
    patched = api.ok("PATCH", f"/hosts/{host['id']}", json={"status": "down"})
    assert patched["status"] == "down"
    api.ok("DELETE", f"/hosts/{host['id']}", 204)
    api.ok("GET", f"/hosts/{host['id']}", 404)


def test_host_errors(api: Api) -> None:
    body = {"name": "node1", "address": "node1.example", "port": 7000}
    api.ok("POST", "/hosts", 201, json=body)
    conflict = api.ok("POST", "/hosts", 409, json=body)
    assert "already exists" in conflict["detail"]
    for bad, field in [
        ({**body, "name": "n2", "port": 0}, "port"),
        ({**body, "name": "n2", "address": "not an address"}, "address"),
        ({**body, "name": "n2", "colour": "red"}, "colour"),
        ({"name": "n2", "address": "a.b"}, "port"),
        ({**body, "name": "x" * 64}, "name"),
        ({**body, "name": "n\u00002"}, "name"),
    ]:
        detail = api.ok("POST", "/hosts", 422, json=bad)["detail"]
        assert any(field in map(str, error["loc"]) for error in detail), detail
    malformed = api.post(
        "/hosts", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 422
    api.ok("GET", f"/hosts/{MISSING}", 404)
    api.ok("PATCH", f"/hosts/{MISSING}", 404, json={"status": "down"})
    api.ok("DELETE", f"/hosts/{MISSING}", 404)
    api.ok("POST", f"/hosts/{MISSING}/init", 404)
    api.ok("GET", "/hosts/not-a-uuid", 422)
    host = api.ok("GET", "/hosts")[0]
    assert api.ok("PATCH", f"/hosts/{host['id']}", 422, json={"status": "initializing"})


def test_host_init_records_capacity_and_versions(api: Api) -> None:
    api.fleet.add("10.2.0.1", 7000, cpus=16, memory_mib=65536)
    host = api.ok("POST", "/hosts", 201, json={"name": "big", "address": "10.2.0.1", "port": 7000})
    host = api.ok("POST", f"/hosts/{host['id']}/init")
    assert host["status"] == "up"
    assert (host["cpus"], host["memory"]) == (16, 65536 << 20)
    assert host["versions"]["qemu"] == "8.0" and host["arch"] == "x86_64"
    assert host["last_seen_at"] is not None


def test_host_init_of_an_unreachable_node_is_a_502_with_the_reason(api: Api) -> None:
    host = api.ok("POST", "/hosts", 201, json={"name": "gone", "address": "10.9.9.9", "port": 1})
    error = api.ok("POST", f"/hosts/{host['id']}/init", 502)
    assert "connection refused" in error["detail"] and "gone" in error["detail"]
    host = api.ok("GET", f"/hosts/{host['id']}")
    assert host["status"] == "down" and "connection refused" in host["status_reason"]


def test_patch_up_initialises_a_host_never_seen(api: Api) -> None:
    """qarax makes hosts schedulable with PATCH {"status": "up"}: that must give capacity."""
    api.fleet.add("10.3.0.1", 7000, cpus=2, memory_mib=4096)
    host = api.ok("POST", "/hosts", 201, json={"name": "q", "address": "10.3.0.1", "port": 7000})
    host = api.ok("PATCH", f"/hosts/{host['id']}", json={"status": "up"})
    assert (host["status"], host["cpus"]) == ("up", 2)


def test_host_with_vms_cannot_be_deleted(api: Api) -> None:
    host = api.host()
    api.vm("web1")
    error = api.ok("DELETE", f"/hosts/{host['id']}", 409)
    assert "still has VMs" in error["detail"]


def _pool(api: Api, path: Path, name: str = "local-images") -> dict:
    body = {"name": name, "pool_type": "local", "config": {"path": str(path)}}
    response = api.post("/storage-pools", json=body)
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/storage-pools/{response.json()['id']}"
    return response.json()


def _object(
    api: Api, pool: dict, name: str, path: str, kind: str = "kernel", status: int = 201
) -> dict:
    body = {
        "name": name,
        "storage_pool_id": pool["id"],
        "object_type": kind,
        "size_bytes": 0,
        "config": {"path": path},
    }
    return api.ok("POST", "/storage-objects", status, json=body)


def test_storage_pools_objects_and_boot_sources(api: Api, tmp_path: Path) -> None:
    (tmp_path / "vmlinux").write_bytes(b"k" * 1000)
    pool = _pool(api, tmp_path)
    assert pool["config"] == {"path": str(tmp_path)}
    assert api.ok("GET", f"/storage-pools/{pool['id']}")["pool_type"] == "local"
    nfs = _pool(api, tmp_path / "mnt" / "nfs", "shared")  # not here: only the text is checked
    assert [p["name"] for p in api.ok("GET", "/storage-pools")] == ["local-images", "shared"]

    kernel = _object(api, pool, "vmlinux-6.1", str(tmp_path / "vmlinux"))
    assert kernel["size_bytes"] == 1000  # the file is here: its size is recorded
    initrd = _object(api, pool, "initramfs", "initramfs.gz", "initrd")  # relative to the pool
    assert initrd["config"]["path"] == str(tmp_path / "initramfs.gz")
    _object(api, nfs, "disk", f"{tmp_path}/mnt/nfs/disk.qcow2", "disk")
    assert len(api.ok("GET", "/storage-objects")) == 3
    assert api.ok("GET", f"/storage-objects/{kernel['id']}")["object_type"] == "kernel"

    body = {
        "name": "linux-6.1",
        "kernel_image_id": kernel["id"],
        "initrd_image_id": initrd["id"],
        "kernel_params": "console=ttyS0 reboot=k panic=1 nomodules",
    }
    response = api.post("/boot-sources", json=body)
    assert response.status_code == 201
    boot = response.json()
    assert response.headers["location"] == f"/boot-sources/{boot['id']}"
    assert api.ok("GET", f"/boot-sources/{boot['id']}")["kernel_params"].startswith("console")
    assert len(api.ok("GET", "/boot-sources")) == 1
    api.ok("POST", "/boot-sources", 409, json=body)

    # In use: 409 naming the user; then delete in order.
    assert (
        "boot source 'linux-6.1'"
        in api.ok("DELETE", f"/storage-objects/{kernel['id']}", 409)["detail"]
    )
    assert "still holds" in api.ok("DELETE", f"/storage-pools/{pool['id']}", 409)["detail"]
    api.ok("DELETE", f"/boot-sources/{boot['id']}", 204)
    api.ok("DELETE", f"/storage-objects/{kernel['id']}", 204)
    api.ok("DELETE", f"/storage-objects/{initrd['id']}", 204)
    api.ok("DELETE", f"/storage-pools/{pool['id']}", 204)
    for path in (
        f"/boot-sources/{boot['id']}",
        f"/storage-objects/{kernel['id']}",
        f"/storage-pools/{pool['id']}",
    ):
        api.ok("GET", path, 404)
        api.ok("DELETE", path, 404)


def test_storage_errors(api: Api, tmp_path: Path) -> None:
    pool = _pool(api, tmp_path)
    api.ok(
        "POST",
        "/storage-pools",
        409,
        json={"name": "local-images", "pool_type": "local", "config": {"path": f"{tmp_path}/x"}},
    )
    for bad in [
        {"name": "p", "pool_type": "ceph", "config": {"path": "/x"}},
        {"name": "p", "pool_type": "local", "config": {"path": "relative"}},
        {"name": "p", "pool_type": "local", "config": {"path": "/x", "extra": 1}},
        {"name": "p", "pool_type": "local"},
    ]:
        api.ok("POST", "/storage-pools", 422, json=bad)
    api.ok(
        "POST",
        "/storage-pools",
        422,
        json={"name": "p", "pool_type": "local", "config": {"path": f"{tmp_path}/a/../b"}},
    )
    _object(api, pool, "k", str(tmp_path / "k"))
    _object(api, pool, "k", str(tmp_path / "k2"), status=409)
    _object(api, pool, "t", str(tmp_path / "t"), kind="floppy", status=422)
    body = {
        "name": "x",
        "storage_pool_id": str(uuid.uuid4()),
        "object_type": "disk",
        "config": {"path": "/x"},
    }
    assert "no storage pool" in api.ok("POST", "/storage-objects", 422, json=body)["detail"]
    # Boot sources must point at a kernel (and an initrd).
    disk = _object(api, pool, "d", str(tmp_path / "d"), kind="disk")
    error = api.ok("POST", "/boot-sources", 422, json={"name": "b", "kernel_image_id": disk["id"]})
    assert "is a disk, not a kernel" in error["detail"]
    error = api.ok("POST", "/boot-sources", 422, json={"name": "b", "kernel_image_id": MISSING})
    assert "no storage object" in error["detail"]


@pytest.mark.parametrize(
    "path",
    [
        "{pool}/../etc/passwd",
        "/etc/passwd",
        "{pool}",
        "{pool}/a/../../x",
        "{pool}-sibling/x",
        "../outside",
    ],
)
def test_object_paths_stay_inside_their_pool(api: Api, tmp_path: Path, path: str) -> None:
    pool_dir = tmp_path / "pool"
    pool_dir.mkdir()
    pool = _pool(api, pool_dir)
    error = _object(api, pool, "k", path.format(pool=pool_dir), status=422)
    assert "'..'" in error["detail"] or "not inside" in error["detail"]


def test_object_paths_are_used_without_following_links(api: Api, tmp_path: Path) -> None:
    """Nodes open storage paths without following any link: one seen here is refused now."""
    pool_dir = tmp_path / "pool"
    (pool_dir / "sub").mkdir(parents=True)
    (pool_dir / "escape").symlink_to("/etc")
    (pool_dir / "sub" / "inside").symlink_to(pool_dir / "sub")
    pool = _pool(api, pool_dir)
    for path in (pool_dir / "escape" / "passwd", pool_dir / "sub" / "inside" / "vmlinux"):
        error = _object(api, pool, "k", str(path), status=422)
        assert "goes through a symbolic link" in error["detail"]
    (pool_dir / "sub" / "dir").mkdir()
    error = _object(api, pool, "k", str(pool_dir / "sub" / "dir"), status=422)
    assert "is not a regular file" in error["detail"]
    assert api.ok("GET", "/storage-objects") == []


def test_names_ending_in_a_newline_are_refused(api: Api, tmp_path: Path) -> None:
    """Issue #11, finding 11a: `$` matches before a final newline; names must match whole."""
    pool = _pool(api, tmp_path)
    kernel = _object(api, pool, "k", str(tmp_path / "k"))
    vm = {"name": "web1", "memory_size": 128 << 20, "image": "tiny"}
    for url, body in [
        ("/hosts", {"name": "h1\n", "address": "10.0.0.1", "port": 7000}),
        ("/hosts", {"name": "h1", "address": "node1.example\n", "port": 7000}),
        ("/hosts", {"name": "h1", "address": "10.0.0.1", "port": 7000, "token": "t\n"}),
        ("/storage-pools", {"name": "p\n", "pool_type": "local", "config": {"path": "/x"}}),
        ("/storage-objects", {"name": "o\n", "storage_pool_id": pool["id"],
                              "object_type": "disk", "config": {"path": "o"}}),
        ("/boot-sources", {"name": "b\n", "kernel_image_id": kernel["id"]}),
        ("/vms", {**vm, "name": "web1\n"}),
        ("/vms", {**vm, "image": "tiny\n"}),
        ("/vms", {**vm, "tags": ["t\n"]}),
        ("/vms", {**vm, "networks": [{"id": "net0\n"}]}),
        ("/vms", {**vm, "networks": [{"id": "net0", "tap": "tap0\n"}]}),
    ]:  # fmt: skip
        api.ok("POST", url, 422, json=body)
    api.ok("GET", "/vms", 422, params={"name": "web1\n"})
    assert [h["name"] for h in api.ok("GET", "/hosts")] == []
    assert [p["name"] for p in api.ok("GET", "/storage-pools")] == ["local-images"]
    with pytest.raises(InvalidInput, match="invalid token name"):
        api.plane.tokens.create("ops\n")


@pytest.mark.parametrize("address", ["in-process", "IN-PROCESS", "in-process."])
def test_in_process_is_reserved_for_the_embedded_host(api: Api, address: str) -> None:
    """Issue #11, finding 11b: a host at `in-process` would be a second handle on this machine's
    in-process node."""
    body = {"name": "twin", "address": address, "port": 1}
    error = api.ok("POST", "/hosts", 422, json=body)
    assert "reserved for the embedded host" in error["detail"]
    host = api.ok("POST", "/hosts", 201, json={**body, "address": "10.0.0.1"})
    error = api.ok("PATCH", f"/hosts/{host['id']}", 422, json={"address": address})
    assert "reserved for the embedded host" in error["detail"]
    assert [h["address"] for h in api.ok("GET", "/hosts")] == ["10.0.0.1"]

"""Issue #11, finding 3, replayed through the API of an embedded server (this machine is host
`local`, an in-process LocalNode on a real state directory): storage pools confined to the
storage roots, and the node opening what VMs boot from without following links.

The attack: a pool at "/", an object naming /etc/shadow (or a link to it planted later), a VM
created from it, and the node importing the file as a base disk into the store. Every VM here
fails before QEMU would start, so no guest is needed.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from corral.api.app import create_app
from corral.context import Context
from corral.control.settings import Settings
from helpers import holds_bytes

SECRET = b"root:$y$j9T$not-a-real-hash-but-a-secret:19000:0:99999:7:::\n" * 64


class Embedded:
    def __init__(self, client: TestClient, ctx: Context) -> None:
        self.client = client
        self.ctx = ctx
        self.root = ctx.config.pool_roots()[0]

    def ok(self, method: str, url: str, status: int = 200, **kw: object) -> dict:
        response = self.client.request(method, url, **kw)  # type: ignore[arg-type]
        assert response.status_code == status, (method, url, response.status_code, response.text)
        return response.json() if response.content else {}

    def pool(self, path: Path | str, name: str = "images") -> dict:
        body = {"name": name, "pool_type": "local", "config": {"path": str(path)}}
        return self.ok("POST", "/storage-pools", 201, json=body)

    def disk(self, pool: dict, path: Path | str, name: str = "disk1", status: int = 201) -> dict:
        body = {"name": name, "storage_pool_id": pool["id"], "object_type": "disk",
                "config": {"path": str(path)}}  # fmt: skip
        return self.ok("POST", "/storage-objects", status, json=body)

    def vm_from(self, disk: dict, name: str = "victim") -> dict:
        """Create a VM from a disk object and wait for its create job; the VM afterwards."""
        body = {"name": name, "memory_size": 128 << 20, "image_object_id": disk["id"]}
        vm = self.ok("POST", "/vms", 201, json=body)
        deadline = time.monotonic() + 60
        while self.ok("GET", f"/jobs/{vm['job_id']}")["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        return self.ok("GET", f"/vms/{vm['id']}")


@pytest.fixture
def embedded(ctx: Context, tmp_path: Path) -> Iterator[Embedded]:
    ctx.config.pool_roots()[0].mkdir()  # $CORRAL_HOME/pools, the default root
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/corral.db",
        local_node=True,
        config=ctx.config,
        storage_roots=ctx.config.pool_roots(),
        health_interval=0,
    )
    app = create_app(settings)
    client = TestClient(app)
    client.__enter__()
    try:
        _, token = app.state.plane.tokens.create("admin", "admin")
        client.headers["Authorization"] = f"Bearer {token}"
        yield Embedded(client, ctx)
    finally:
        client.__exit__(None, None, None)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file outside every storage root, standing for /etc/shadow."""
    path = tmp_path / "shadow"
    path.write_bytes(SECRET)
    return path


def test_a_pool_outside_the_storage_roots_is_refused_naming_them(embedded: Embedded) -> None:
    for path in ("/", "/etc", f"{embedded.root}/../..", f"{embedded.root}-sibling"):
        body = {"name": "everything", "pool_type": "local", "config": {"path": path}}
        error = embedded.ok("POST", "/storage-pools", 422, json=body)
        assert str(embedded.root) in error["detail"], error
        assert "\n" not in error["detail"]
    assert embedded.ok("GET", "/storage-pools") == []
    # Under the root is fine, the root itself too.
    embedded.pool(embedded.root / "images")
    embedded.pool(embedded.root, "all")


def test_a_link_planted_after_the_object_was_made_is_not_followed(
    embedded: Embedded, secret: Path
) -> None:
    pool_dir = embedded.root / "images"
    pool_dir.mkdir()
    pool = embedded.pool(pool_dir)
    disk = embedded.disk(pool, pool_dir / "disk.qcow2")  # not there yet: fine
    (pool_dir / "disk.qcow2").symlink_to(secret)  # planted afterwards
    vm = embedded.vm_from(disk)
    assert vm["status"] == "crashed"
    assert "is a symbolic link: refused" in vm["status_reason"], vm
    # A directory on the way swapped for a link that leads out of the root.
    other = embedded.disk(pool, pool_dir / "sub" / "shadow", "disk2")
    (pool_dir / "sub").symlink_to(secret.parent)
    vm = embedded.vm_from(other, "victim2")
    assert vm["status"] == "crashed" and "leads out of" in vm["status_reason"], vm
    assert not holds_bytes(embedded.ctx.home.root, SECRET[:64])
    assert embedded.ctx.store.list() == []


def test_size_bytes_says_nothing_about_files_outside_the_pools(
    embedded: Embedded, secret: Path
) -> None:
    pool_dir = embedded.root / "images"
    pool_dir.mkdir()
    (pool_dir / "link").symlink_to(secret)
    (pool_dir / "dir").symlink_to(secret.parent)
    pool = embedded.pool(pool_dir)
    for path in (secret, pool_dir / "link", pool_dir / "dir" / secret.name, "/etc/shadow"):
        response = embedded.client.post(
            "/storage-objects",
            json={"name": "x", "storage_pool_id": pool["id"], "object_type": "disk",
                  "config": {"path": str(path)}},
        )  # fmt: skip
        assert response.status_code == 422, response.text
        assert str(len(SECRET)) not in response.text
    assert embedded.ok("GET", "/storage-objects") == []
    # A file that is really in the pool has its size recorded.
    (pool_dir / "real.img").write_bytes(b"\0" * 4096)
    assert embedded.disk(pool, pool_dir / "real.img")["size_bytes"] == 4096


def test_a_qcow2_backed_by_a_host_file_is_refused(embedded: Embedded, secret: Path) -> None:
    pool_dir = embedded.root / "images"
    pool_dir.mkdir()
    pool = embedded.pool(pool_dir)
    backed = pool_dir / "backed.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(secret), "-F", "raw", str(backed)],
        check=True,
    )
    # An external data file outside the root (made first, then given the secret's bytes).
    data_file = secret.parent / "data"
    with_data = pool_dir / "data.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-o",
         f"data_file={data_file},data_file_raw=on", str(with_data), "64K"],
        check=True,
    )  # fmt: skip
    data_file.write_bytes(SECRET)
    for name, evil, words in [
        ("backed", backed, "backing file"),
        ("with-data", with_data, "external data file"),
    ]:
        vm = embedded.vm_from(embedded.disk(pool, evil, name), name)
        assert vm["status"] == "crashed" and words in vm["status_reason"], vm
        assert str(evil) in vm["status_reason"]  # named as the caller knows it
    assert not holds_bytes(embedded.ctx.home.root, SECRET[:64])
    assert embedded.ctx.store.list() == []


def test_objects_made_before_the_roots_were_narrowed_are_refused(
    ctx: Context, tmp_path: Path, secret: Path
) -> None:
    """A pool made under an older, wider root: its VMs are refused once the root is gone."""
    database = f"sqlite:///{tmp_path}/corral.db"
    wide = Settings(database_url=database, health_interval=0, storage_roots=(tmp_path,))
    app = create_app(wide)
    with TestClient(app) as client:
        _, token = app.state.plane.tokens.create("admin", "admin")
        auth = {"Authorization": f"Bearer {token}"}
        body: dict = {"name": "old", "pool_type": "local", "config": {"path": str(tmp_path)}}
        pool = client.post("/storage-pools", headers=auth, json=body).json()
        body = {"name": "old-disk", "storage_pool_id": pool["id"], "object_type": "disk",
                "config": {"path": str(secret)}}  # fmt: skip
        client.post("/storage-objects", headers=auth, json=body).raise_for_status()
    ctx.config.pool_roots()[0].mkdir()
    narrow = Settings(
        database_url=database,
        local_node=True,
        config=ctx.config,
        storage_roots=ctx.config.pool_roots(),
        health_interval=0,
    )
    app = create_app(narrow)
    with TestClient(app) as client:
        _, token = app.state.plane.tokens.create("admin2")
        disk = client.get("/storage-objects", headers={"Authorization": f"Bearer {token}"}).json()
        body = {"name": "v", "memory_size": 128 << 20, "image_object_id": disk[0]["id"]}
        response = client.post("/vms", headers={"Authorization": f"Bearer {token}"}, json=body)
    assert response.status_code == 422, response.text
    assert "not under a storage root" in response.json()["detail"]
    assert str(ctx.config.pool_roots()[0]) in response.json()["detail"]

"""qarax's VMs beyond the walkthrough's first form, on the embedded server and the tiny guest.

- `networks` in POST /vms, honoured: a VM whose interface names an existing TAP device runs
  with its NIC on that tap (its MAC, MTU and static address applied), and interfaces QEMU here
  cannot give are a 422. These run inside a network namespace the test makes.
- The "Minimal" example: a VM with only a boot source boots diskless from its kernel and
  initramfs.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from conftest import TINY
from corral.api.app import create_app
from corral.context import Context
from corral.control.settings import Settings
from corral.errors import InvalidInput
from corral.instance import lifecycle
from corral.machine.qmp import qmp_execute_async
from corral.node.local import LocalNode
from corral.node.protocol import NodeNic, NodeVmSpec
from netns import Netns, entered_netns
from seed.test_iso import read_seed_iso

pytestmark = pytest.mark.vm

MAC = "52:54:00:12:34:56"


@pytest.fixture
def netns() -> Iterator[Netns]:
    """Asked for first, so it is entered before the VMs' context and left after it."""
    with entered_netns() as ns:
        yield ns


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (response.request.url, response.text)
    return response.json() if response.content else None


def _wait_job(client: TestClient, job_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = _ok(client.get(f"/jobs/{job_id}"))
        if job["status"] in ("completed", "failed"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def _embedded(ctx: Context, tmp_path: Path, **settings: Any) -> TestClient:
    app = create_app(
        Settings(
            database_url=f"sqlite:///{tmp_path}/corral.db",
            local_node=True,
            config=ctx.config,
            health_interval=0,
            storage_roots=ctx.config.pool_roots(),
            **settings,
        )
    )
    client = TestClient(app)
    client.__enter__()
    _, token = app.state.plane.tokens.create("walkthrough", "admin")
    client.headers["Authorization"] = f"Bearer {token}"
    return client


def boot_source(client: TestClient, ctx: Context, tiny_guest: Any) -> str:
    """qarax's steps 1-3: a pool holding the tiny guest's kernel and initramfs, its objects and
    a boot source; the boot source's id."""
    pool_dir = ctx.home.root / "pools" / "images"
    pool_dir.mkdir(parents=True)
    shutil.copy(tiny_guest.kernel, pool_dir / "vmlinux")
    shutil.copy(tiny_guest.initrd, pool_dir / "initramfs.gz")
    body = {"name": "local-images", "pool_type": "local", "config": {"path": str(pool_dir)}}
    pool = _ok(client.post("/storage-pools", json=body), 201)
    ids = {}
    for name, kind, file in [("vmlinux-6.1", "kernel", "vmlinux"),
                             ("test-initramfs", "initrd", "initramfs.gz")]:  # fmt: skip
        body = {
            "name": name,
            "storage_pool_id": pool["id"],
            "object_type": kind,
            "size_bytes": 0,
            "config": {"path": str(pool_dir / file)},
        }
        ids[kind] = _ok(client.post("/storage-objects", json=body), 201)["id"]
    body = {
        "name": "linux-6.1",
        "kernel_image_id": ids["kernel"],
        "initrd_image_id": ids["initrd"],
        "kernel_params": "console=ttyS0 reboot=k panic=1 nomodules",
    }
    return str(_ok(client.post("/boot-sources", json=body), 201)["id"])


def _vm(name: str, boot: str, networks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "hypervisor": "qemu",
        "boot_vcpus": 1,
        "max_vcpus": 1,
        "memory_size": 256 << 20,
        "boot_source_id": boot,
        "networks": networks,
    }


def _until_booted(client: Any, vm_id: str, boots: int) -> None:
    """Wait until the VM's console shows the tiny guest come up `boots` times."""
    deadline = time.monotonic() + 120
    while client.get(f"/vms/{vm_id}/console").content.count(b"corral-tiny: ready") < boots:
        assert time.monotonic() < deadline, "the guest never came up"
        time.sleep(0.25)


def test_qarax_walkthrough_with_a_tap_interface(
    netns: Netns, vm_ctx: Context, tiny_guest: Any, tmp_path: Path
) -> None:
    netns.bridge_with_tap("qbr0", "qtap0")
    assert "NO-CARRIER" in netns.link("qtap0")["flags"]  # nobody holds the tap yet
    client = _embedded(vm_ctx, tmp_path, vm_default_image=TINY)
    try:
        boot = boot_source(client, vm_ctx, tiny_guest)
        nic = {"id": "net0", "tap": "qtap0", "mac": MAC, "ip": "192.168.100.10",
               "mask": "255.255.255.0", "mtu": 1400}  # fmt: skip

        # Interfaces this hypervisor cannot give, and a tap the host does not have: 422, and
        # nothing is recorded.
        vhost = _vm("vhost", boot, [{"id": "net0", "vhost_user": True}])
        assert "does not support vhost-user" in client.post("/vms", json=vhost).text
        macvtap = _vm("macvtap", boot, [{"id": "net0", "mac": MAC}])
        assert "does not support macvtap" in client.post("/vms", json=macvtap).text
        missing = client.post("/vms", json=_vm("missing", boot, [{**nic, "tap": "nosuch0"}]))
        assert missing.status_code == 422 and "no TAP device 'nosuch0'" in missing.text
        assert _ok(client.get("/vms")) == []
        assert lifecycle.list_instances(vm_ctx) == []

        # Step 4 — Create the VM with a TAP network interface; Step 5 — start it.
        vm = _ok(client.post("/vms", json=_vm("my-vm", boot, [nic])), 201)
        assert _wait_job(client, vm["job_id"])["status"] == "completed"
        job = _ok(client.post(f"/vms/{vm['id']}/start"), 202)
        assert _wait_job(client, job["id"])["status"] == "completed"
        # Step 6 — Check status: running, with its address and MAC.
        status = _ok(client.get(f"/vms/{vm['id']}"))
        assert status["status"] == "running"
        (entry,) = status["networks"]
        assert (entry["tap"], entry["mac"], entry["address"]) == ("qtap0", MAC, "192.168.100.10/24")

        # QEMU's NIC is on the tap, with the MAC asked for, and there is no user-mode NIC.
        _, seen = lifecycle.status(vm_ctx, "my-vm")
        assert seen.pid is not None
        argv = Path(f"/proc/{seen.pid}/cmdline").read_bytes().split(b"\0")
        assert b"tap,id=tap0,ifname=qtap0,script=no,downscript=no" in argv
        assert not any(arg.startswith(b"user,") for arg in argv)
        files = vm_ctx.home.instance("my-vm")
        filters = asyncio.run(qmp_execute_async(files.qmp, "query-rx-filter"))
        assert [f["main-mac"] for f in filters] == [MAC]
        link = netns.link("qtap0")
        assert "NO-CARRIER" not in link["flags"] and link["master"] == "qbr0"
        # The guest is told its static address and MTU (cloud-init network-config, by MAC).
        config = read_seed_iso(files.seed)["network-config"].decode()
        assert "192.168.100.10/24" in config and MAC in config and "mtu: 1400" in config

        # Lifecycle without ssh: stop, start again on the same tap, stop, delete. Each stop
        # waits for the guest to be up: a guest still booting ignores the power button, and
        # the stop would only end QEMU after the powerdown deadline.
        boots = 1
        for action, expected in [("stop", "shutdown"), ("start", "running"), ("stop", "shutdown")]:
            if action == "stop":
                _until_booted(client, vm["id"], boots)
            else:
                boots += 1
            job = _ok(client.post(f"/vms/{vm['id']}/{action}"), 202)
            assert _wait_job(client, job["id"])["status"] == "completed"
            assert _ok(client.get(f"/vms/{vm['id']}"))["status"] == expected
        assert "NO-CARRIER" in netns.link("qtap0")["flags"]  # QEMU let go of it
        job = _ok(client.delete(f"/vms/{vm['id']}"), 202)
        assert _wait_job(client, job["id"])["status"] == "completed"
        assert lifecycle.list_instances(vm_ctx) == []
        assert netns.link("qtap0")["master"] == "qbr0"  # the caller's tap is left as it was
    finally:
        client.__exit__(None, None, None)


def test_a_node_refuses_a_missing_tap_before_making_anything(netns: Netns, vm_ctx: Context) -> None:
    """What a node agent does when the control plane could not check the tap itself."""
    node = LocalNode(vm_ctx)
    spec = NodeVmSpec(name="v", image=TINY, memory_mib=256, nics=[NodeNic(tap="nosuch0", mac=MAC)])
    with pytest.raises(InvalidInput, match="no TAP device 'nosuch0'"):
        asyncio.run(node.create_vm(spec))
    bad = spec.model_copy(update={"nics": [NodeNic(tap="../../x", mac=MAC)]})
    with pytest.raises(InvalidInput, match="invalid tap device name"):
        asyncio.run(node.create_vm(bad))
    assert not vm_ctx.home.instance("v").dir.exists()


def test_qarax_minimal_vm_boots_diskless_from_its_boot_source(
    vm_ctx: Context, tiny_guest: Any, tmp_path: Path
) -> None:
    """No image, no image_object_id and no vm_default_image: only a boot_source_id."""
    client = _embedded(vm_ctx, tmp_path)
    try:
        boot = boot_source(client, vm_ctx, tiny_guest)
        body = {"name": "my-vm", "hypervisor": "qemu", "boot_vcpus": 2, "max_vcpus": 2,
                "memory_size": 268435456, "boot_source_id": boot}  # fmt: skip
        sized = client.post("/vms", json={**body, "disk_size": 1 << 30})
        assert sized.status_code == 422 and "no root disk" in sized.text
        vm = _ok(client.post("/vms", json=body), 201)
        assert vm["image"] is None and vm["image_object_id"] is None
        assert _wait_job(client, vm["job_id"])["status"] == "completed"
        job = _ok(client.post(f"/vms/{vm['id']}/start"), 202)
        assert _wait_job(client, job["id"])["status"] == "completed"
        assert _ok(client.get(f"/vms/{vm['id']}"))["status"] == "running"
        record, seen = lifecycle.status(vm_ctx, "my-vm")
        assert record.diskless and seen.pid is not None
        argv = Path(f"/proc/{seen.pid}/cmdline").read_bytes().split(b"\0")
        assert not any(b"disk0" in arg for arg in argv), argv
        assert not vm_ctx.home.instance("my-vm").disk.exists()
        _until_booted(client, vm["id"], 1)  # the console shows the kernel and the guest
        for action, expected in [("stop", "shutdown"), ("start", "running")]:
            job = _ok(client.post(f"/vms/{vm['id']}/{action}"), 202)
            assert _wait_job(client, job["id"])["status"] == "completed"
            assert _ok(client.get(f"/vms/{vm['id']}"))["status"] == expected
        job = _ok(client.delete(f"/vms/{vm['id']}"), 202)
        assert _wait_job(client, job["id"])["status"] == "completed"
        assert lifecycle.list_instances(vm_ctx) == []
    finally:
        client.__exit__(None, None, None)

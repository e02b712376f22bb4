"""The control plane with real nodes and real QEMU (the tiny test guest).

1. The qarax walkthrough from the seed, request for request with `"hypervisor": "qemu"`,
   against the embedded server: this machine is host `local`, an in-process LocalNode.
2. Two node agents (`create_node_app`, reached through HttpNode) on different loopback
   addresses and ports, on PostgreSQL: VMs spread by capacity; one agent is killed (its host
   goes `down`, its VMs `unknown`, new VMs go to the other); it comes back and the states of its
   VMs are reconciled from what the node reports.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from conftest import CACHE, TINY, kill_all
from control.conftest import MIB, TEMPLATE
from control.postgres import PostgresServer, free_port
from corral.api.app import create_app
from corral.config import Config
from corral.context import Context
from corral.control.settings import Settings
from corral.instance import lifecycle

pytestmark = pytest.mark.vm


def _client(settings: Settings) -> tuple[TestClient, dict[str, str]]:
    app = create_app(settings)
    client = TestClient(app)
    client.__enter__()
    _, token = app.state.plane.tokens.create("walkthrough", "admin")
    return client, {"Authorization": f"Bearer {token}"}


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (response.request.url, response.text)
    return response.json() if response.content else None


def _job_end(
    client: TestClient, job_id: str, headers: dict[str, str], timeout: float = 180
) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = _ok(client.get(f"/jobs/{job_id}", headers=headers))
        if job["status"] in ("completed", "failed"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def _wait_job(
    client: TestClient, job_id: str, headers: dict[str, str], timeout: float = 180
) -> dict:
    job = _job_end(client, job_id, headers, timeout)
    assert job["status"] == "completed", job
    return job


@pytest.mark.parametrize("where", ["embedded", "node-agent"])
def test_qarax_walkthrough(vm_ctx: Context, tiny_guest: Any, tmp_path: Path, where: str) -> None:
    """On the embedded server (this machine is host `local`), and on a control plane whose
    host is a `corral node` agent process reached over HTTP."""
    # The pool: a directory holding the kernel and initramfs, as qarax's step 1 asks, under
    # the storage root of the control plane and of the node ($CORRAL_HOME/pools by default).
    pool_dir = vm_ctx.home.root / "pools" / "images"
    pool_dir.mkdir(parents=True)
    shutil.copy(tiny_guest.kernel, pool_dir / "vmlinux")
    shutil.copy(tiny_guest.initrd, pool_dir / "initramfs.gz")
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/corral.db",
        local_node=where == "embedded",
        config=vm_ctx.config,
        vm_default_image=TINY,  # the root disk, as qarax's VM_ROOTFS
        health_interval=0,
        storage_roots=vm_ctx.config.pool_roots(),
    )
    agent = Agent(vm_ctx.home.root, "127.0.0.1", "node-token") if where == "node-agent" else None
    client, auth = _client(settings)
    try:
        if agent is not None:
            agent.start()
            body = {"name": "node1", "address": "127.0.0.1", "port": agent.port,
                    "token": agent.token}  # fmt: skip
            host = _ok(client.post("/hosts", headers=auth, json=body), 201)
            _ok(client.post(f"/hosts/{host['id']}/init", headers=auth))
        hosts = _ok(client.get("/hosts", headers=auth))
        name = "local" if agent is None else "node1"
        assert [(h["name"], h["status"]) for h in hosts] == [(name, "up")]
        assert hosts[0]["cpus"] >= 1 and hosts[0]["versions"]["qemu"]

        # Step 1 — Register a storage pool
        pool = _ok(
            client.post(
                "/storage-pools",
                headers=auth,
                json={
                    "name": "local-images",
                    "pool_type": "local",
                    "config": {"path": str(pool_dir)},
                },
            ),
            201,
        )
        # Step 2 — Register storage objects (kernel + initramfs)
        kernel = _ok(
            client.post(
                "/storage-objects",
                headers=auth,
                json={
                    "name": "vmlinux-6.1",
                    "storage_pool_id": pool["id"],
                    "object_type": "kernel",
                    "size_bytes": 0,
                    "config": {"path": str(pool_dir / "vmlinux")},
                },
            ),
            201,
        )
        initrd = _ok(
            client.post(
                "/storage-objects",
                headers=auth,
                json={
                    "name": "test-initramfs",
                    "storage_pool_id": pool["id"],
                    "object_type": "initrd",
                    "size_bytes": 0,
                    "config": {"path": str(pool_dir / "initramfs.gz")},
                },
            ),
            201,
        )
        # Step 3 — Create a boot source
        boot = _ok(
            client.post(
                "/boot-sources",
                headers=auth,
                json={
                    "name": "linux-6.1",
                    "kernel_image_id": kernel["id"],
                    "initrd_image_id": initrd["id"],
                    "kernel_params": "console=ttyS0 reboot=k panic=1 nomodules",
                },
            ),
            201,
        )
        # Step 4 — Create the VM (minimal, and with a TAP interface described)
        vm = _ok(
            client.post(
                "/vms",
                headers=auth,
                json={
                    "name": "my-vm",
                    "hypervisor": "qemu",
                    "boot_vcpus": 2,
                    "max_vcpus": 2,
                    "memory_size": 536870912,
                    "boot_source_id": boot["id"],
                },
            ),
            201,
        )
        # With a TAP network interface: the tap must exist on the host (this one has no tap0;
        # test_qarax_networks makes one in a network namespace and boots on it).
        with_tap = client.post(
            "/vms",
            headers=auth,
            json={
                "name": "my-vm-net",
                "hypervisor": "qemu",
                "boot_vcpus": 2,
                "max_vcpus": 2,
                "memory_size": 536870912,
                "boot_source_id": boot["id"],
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
            },
        )
        tap = None
        if agent is None:  # the embedded host checks before recording anything
            assert with_tap.status_code == 422 and "no TAP device 'tap0'" in with_tap.text
        else:  # a node agent's host: the create job fails, and the node makes nothing
            tap = _ok(with_tap, 201)
            failed = _job_end(client, tap["job_id"], auth)
            assert failed["status"] == "failed" and "no TAP device 'tap0'" in failed["error"]
            assert _ok(client.get(f"/vms/{tap['id']}", headers=auth))["status"] == "crashed"
        _wait_job(client, vm["job_id"], auth)
        assert _ok(client.get(f"/vms/{vm['id']}", headers=auth))["status"] == "created"
        # A hypervisor this fleet does not offer.
        error = _ok(
            client.post(
                "/vms",
                headers=auth,
                json={
                    "name": "ch",
                    "hypervisor": "cloud_hv",
                    "boot_vcpus": 2,
                    "max_vcpus": 2,
                    "memory_size": 536870912,
                    "boot_source_id": boot["id"],
                },
            ),
            422,
        )
        assert "this fleet offers qemu" in str(error)

        # Step 5 — Start the VM; Step 6 — Check status
        job = _ok(client.post(f"/vms/{vm['id']}/start", headers=auth), 202)
        _wait_job(client, job["id"], auth)
        status = _ok(client.get(f"/vms/{vm['id']}", headers=auth))
        assert status["status"] == "running"
        assert status["host_id"] == hosts[0]["id"]
        instance = lifecycle.status(vm_ctx, "my-vm")[0]
        assert instance.boot is not None and instance.boot.cmdline.startswith(
            "console=ttyS0 reboot=k"
        )
        assert (instance.cpus, instance.memory_mib) == (2, 512)

        # Other lifecycle operations
        for action, expected in [("pause", "paused"), ("resume", "running"), ("stop", "shutdown")]:
            job = _ok(client.post(f"/vms/{vm['id']}/{action}", headers=auth), 202)
            _wait_job(client, job["id"], auth)
            assert _ok(client.get(f"/vms/{vm['id']}", headers=auth))["status"] == expected
        console = client.get(f"/vms/{vm['id']}/console", headers=auth)
        assert console.status_code == 200 and b"Linux version" in console.content
        for target in [vm] if tap is None else [vm, tap]:
            job = _ok(client.delete(f"/vms/{target['id']}", headers=auth), 202)
            _wait_job(client, job["id"], auth)
            _ok(client.get(f"/vms/{target['id']}", headers=auth), 404)
        assert lifecycle.list_instances(vm_ctx) == []
    finally:
        client.__exit__(None, None, None)
        if agent is not None:
            agent.kill()


# --- two node agents ------------------------------------------------------------------------

AGENT = """
import sys
import uvicorn
from corral.context import Context
from corral.node.app import create_node_app

host, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
uvicorn.run(create_node_app(Context(), token), host=host, port=port, log_level="warning")
"""


class Agent:
    """A node agent in its own process, with its own state directory."""

    def __init__(self, home: Path, address: str, token: str) -> None:
        self.home = home
        self.address = address
        self.port = free_port()
        self.token = token
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Agent:
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "CORRAL_HOME": str(self.home),
            "CORRAL_CACHE_DIR": str(CACHE / "host"),
            "CORRAL_CONFIG": "/nonexistent",
        }
        argv = [sys.executable, "-c", AGENT, self.address, str(self.port), self.token]
        self.proc = subprocess.Popen(argv, env=env)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://{self.address}:{self.port}/health").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None, "the node agent exited"
            assert time.monotonic() < deadline, "the node agent did not start"
            time.sleep(0.1)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@contextmanager
def node_home(tiny_guest: Any) -> Iterator[Context]:
    home = Path(tempfile.mkdtemp(prefix="cn", dir="/tmp"))
    ctx = Context(replace(Config(), home=home, cache_dir=CACHE / "host"))
    ctx.store.import_image(
        tiny_guest.disk,
        TINY,
        kernel=tiny_guest.kernel,
        initrd=tiny_guest.initrd,
        cmdline=tiny_guest.cmdline,
        default_user=tiny_guest.default_user,
    )
    try:
        yield ctx
    finally:
        kill_all(ctx)
        shutil.rmtree(home, ignore_errors=True)


def _wait_for(what: str, condition: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_two_node_agents_spread_fail_over_and_reconcile(
    tiny_guest: Any, postgres: PostgresServer
) -> None:
    settings = Settings(
        database_url=postgres.url(postgres.create_database(template=TEMPLATE)),
        health_interval=0.5,
        down_after=2,
        node_timeout=2,
    )
    with node_home(tiny_guest) as ctx1, node_home(tiny_guest) as ctx2:
        agents = [
            Agent(ctx1.home.root, "127.0.0.1", "token-one").start(),
            Agent(ctx2.home.root, "127.0.0.2", "token-two").start(),
        ]
        client, auth = _client(settings)
        try:
            hosts = []
            for i, agent in enumerate(agents):
                host = _ok(
                    client.post(
                        "/hosts",
                        headers=auth,
                        json={
                            "name": f"node{i + 1}",
                            "address": agent.address,
                            "port": agent.port,
                            "token": agent.token,
                        },
                    ),
                    201,
                )
                host = _ok(client.post(f"/hosts/{host['id']}/init", headers=auth))
                assert host["status"] == "up"
                hosts.append(host)
            first, second = hosts

            def create(name: str) -> dict:
                vm = _ok(
                    client.post(
                        "/vms",
                        headers=auth,
                        json={"name": name, "memory_size": 256 * MIB, "image": TINY, "start": True},
                    ),
                    201,
                )
                _wait_job(client, vm["job_id"], auth)
                return _ok(client.get(f"/vms/{vm['id']}", headers=auth))

            vms = [create(f"vm{i}") for i in range(4)]
            assert [vm["status"] for vm in vms] == ["running"] * 4, vms
            # Equal capacity: each new VM goes where most memory is free, so they alternate.
            placed = [vm["host_id"] for vm in vms]
            assert placed.count(first["id"]) == placed.count(second["id"]) == 2
            on_first = [vm for vm in vms if vm["host_id"] == first["id"]]

            agents[0].kill()
            _wait_for(
                "node1 down",
                lambda: _ok(client.get(f"/hosts/{first['id']}", headers=auth))["status"] == "down",
            )
            for vm in on_first:
                assert _ok(client.get(f"/vms/{vm['id']}", headers=auth))["status"] == "unknown"
            assert _ok(client.get(f"/hosts/{second['id']}", headers=auth))["status"] == "up"
            fresh = create("vm-fresh")
            assert fresh["host_id"] == second["id"] and fresh["status"] == "running"

            # While its agent is away one of its VMs is shut down on the host itself.
            lifecycle.stop(ctx1, on_first[0]["name"], force=True)
            agents[0].start()  # same state directory, address, port and token
            _wait_for(
                "node1 up",
                lambda: _ok(client.get(f"/hosts/{first['id']}", headers=auth))["status"] == "up",
            )
            statuses = {
                vm["name"]: _ok(client.get(f"/vms/{vm['id']}", headers=auth))["status"]
                for vm in on_first
            }
            assert statuses == {on_first[0]["name"]: "shutdown", on_first[1]["name"]: "running"}
        finally:
            client.__exit__(None, None, None)
            for agent in agents:
                agent.kill()


def test_the_cli_manages_real_vms_through_the_embedded_server(
    vm_ctx: Context, tmp_path: Path
) -> None:
    """`corral --remote` from another state directory: the VM runs under the server's."""
    from control.livesrv import LiveServer
    from helpers import corral

    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/corral.db",
        local_node=True,
        config=vm_ctx.config,
        health_interval=0,
    )
    live = LiveServer(create_app(settings)).start()
    client_ctx = Context(replace(Config(), home=tmp_path / "client", cache_dir=CACHE / "host"))
    try:
        token = live.token()

        def run(*args: str) -> str:
            proc = corral(client_ctx, "--remote", live.url, "--token", token, *args, timeout=300)
            assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
            return proc.stdout

        assert "r1 is running on host local" in run(
            "launch", TINY, "--name", "r1", "--cpus", "1", "--memory", "256M"
        )
        record, seen = lifecycle.status(vm_ctx, "r1")  # a real QEMU, in the server's state
        assert seen.state == "running" and record.memory_mib == 256
        _wait_for("the guest's shell prompt", lambda: "r1:/#" in run("logs", "r1"))
        assert run("stop", "r1").strip() == "r1 shutdown"
        assert lifecycle.status(vm_ctx, "r1")[1].state == "stopped"
        assert run("start", "r1").strip() == "r1 running"
        assert lifecycle.status(vm_ctx, "r1")[1].state == "running"
        assert run("rm", "--force", "r1").strip() == "removed r1"
        assert [r.name for r, _ in lifecycle.list_instances(vm_ctx)] == []
        assert json.loads(run("ls", "--json")) == []
    finally:
        live.stop()

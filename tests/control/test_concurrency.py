"""Concurrent creates never over-book a host: 50 at once against room for 20 VMs give exactly 20
201s and 30 422s. Real concurrency: threads against live uvicorn servers; on PostgreSQL two
servers (two apps, two engines and connection pools) share the database."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from itertools import cycle

import httpx

from control.conftest import MIB
from control.fakes import Fleet
from control.livesrv import LiveServer
from corral.api.app import create_app
from corral.control.settings import Settings


def test_fifty_concurrent_creates_for_twenty_places(settings: Settings, fleet: Fleet) -> None:
    servers = [LiveServer(create_app(settings, node_factory=fleet)).start()]
    if settings.database_url.startswith("postgresql"):
        servers.append(LiveServer(create_app(settings, node_factory=fleet)).start())
    try:
        token = servers[0].token()
        auth = {"Authorization": f"Bearer {token}"}
        admin = httpx.Client(base_url=servers[0].url, headers=auth, timeout=60)
        hosts = []
        for i in range(2):
            # Room for 10 VMs of 512 MiB each: 5 GiB, and plenty of vCPUs.
            fleet.add(f"10.0.0.{i + 1}", 7000, cpus=16, memory_mib=5120)
            body = {"name": f"h{i}", "address": f"10.0.0.{i + 1}", "port": 7000}
            host = admin.post("/hosts", json=body).json()
            assert admin.post(f"/hosts/{host['id']}/init").json()["status"] == "up"
            hosts.append(host)

        barrier = threading.Barrier(50)
        urls = cycle([s.url for s in servers])
        targets = [next(urls) for _ in range(50)]

        def create(i: int) -> tuple[int, str]:
            with httpx.Client(base_url=targets[i], headers=auth, timeout=120) as client:
                body = {"name": f"vm{i}", "memory_size": 512 * MIB, "image": "tiny"}
                barrier.wait()
                response = client.post("/vms", json=body)
                return response.status_code, response.text

        with ThreadPoolExecutor(50) as pool:
            results = list(pool.map(create, range(50)))
        statuses = sorted(status for status, _ in results)
        assert statuses == [201] * 20 + [422] * 30, results
        assert all(
            "no up host with enough free capacity" in text for s, text in results if s == 422
        )

        vms = admin.get("/vms?limit=1000").json()
        assert len(vms) == 20
        for host in hosts:
            on_host = [vm for vm in vms if vm["host_id"] == host["id"]]
            assert len(on_host) == 10
            state = admin.get(f"/hosts/{host['id']}").json()
            assert state["used_memory"] == 10 * 512 * MIB == state["memory"]
        # Every create job finishes, on the server that accepted it.
        for vm in vms:
            job = None
            for _ in range(500):
                job = admin.get(f"/jobs?vm_id={vm['id']}").json()[0]
                if job["status"] == "completed":
                    break
                threading.Event().wait(0.02)
            assert job is not None and job["status"] == "completed", job
    finally:
        for server in servers:
            server.stop()

"""Several control-plane processes on one PostgreSQL database: one killed in the middle of a
job leaves it to the others, which fail it (saying why) once the dead process's heartbeat is
`process_timeout` old, and mark the VM whose create it was running `unknown`."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import select

from control.conftest import MIB, TEMPLATE, Api, start_client
from control.fakes import Fleet
from control.postgres import PostgresServer, free_port
from corral.control.settings import Settings
from corral.control.tokens import TokenService
from corral.db.engine import Database
from corral.db.migrate import upgrade
from corral.db.models import PlaneProcess

HERE = Path(__file__).resolve().parent


def processes(url: str) -> set[str]:
    db = Database(url)
    try:
        with db.read() as session:
            return {str(p.id) for p in session.scalars(select(PlaneProcess))}
    finally:
        db.dispose()


def create_then_die(url: str) -> tuple[dict, str]:
    """In a control-plane process of its own: a host, and a VM whose create never finishes;
    then that process is killed (no clean-up of any kind). The VM and its job's id."""
    db = Database(url)
    upgrade(db)
    token = TokenService(db).create("doomed", "admin")[1]
    db.dispose()
    port = free_port()
    doomed = subprocess.Popen([sys.executable, str(HERE / "plane_process.py"), url, str(port)])
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}",
                              headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                client.get("/health")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and doomed.poll() is None
                time.sleep(0.1)
        host = client.post("/hosts", json={"name": "h1", "address": "10.9.0.1", "port": 7000})
        client.post(f"/hosts/{host.json()['id']}/init").raise_for_status()
        body = {"name": "orphan", "hypervisor": "qemu", "boot_vcpus": 1,
                "memory_size": 256 * MIB, "image": "tiny"}  # fmt: skip
        created = client.post("/vms", json=body)
        assert created.status_code == 201, created.text
        vm, job_id = created.json(), created.json()["job_id"]
        assert client.get(f"/jobs/{job_id}").json()["status"] == "running"  # the node is slow
        return vm, job_id
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()


def test_the_jobs_of_a_killed_process_are_failed_by_another(postgres: PostgresServer) -> None:
    url = postgres.url(postgres.create_database(template=TEMPLATE))
    vm, job_id = create_then_die(url)
    assert len(processes(url)) == 1  # the dead one, still listed

    settings = Settings(database_url=url, health_interval=0, heartbeat_interval=0,
                        process_timeout=1.0)  # fmt: skip
    survivor, _ = start_client(settings, Fleet())
    api = Api(survivor, Fleet())
    try:
        plane = api.plane
        ours = str(plane.process_id)
        assert processes(url) - {ours}  # the dead one is still listed: not yet timed out
        time.sleep(1.2)
        failed = survivor.portal.call(plane.liveness.beat)  # type: ignore[union-attr]
        assert failed == 1
        job = api.ok("GET", f"/jobs/{job_id}")
        assert job["status"] == "failed"
        assert "control-plane process running it" in job["error"] and "stopped" in job["error"]
        after = api.ok("GET", f"/vms/{vm['id']}")
        assert after["status"] == "unknown"
        assert "create was not finished" in after["status_reason"]
        assert processes(url) == {ours}  # the dead one forgotten, the living one kept
        assert survivor.portal.call(plane.liveness.beat) == 0  # nothing more to do
    finally:
        survivor.__exit__(None, None, None)
    assert processes(url) == set()  # a process that stops removes itself


def test_a_living_process_keeps_its_record_fresh(postgres: PostgresServer) -> None:
    url = postgres.url(postgres.create_database(template=TEMPLATE))
    settings = Settings(database_url=url, health_interval=0, heartbeat_interval=0.1)
    client, _ = start_client(settings, Fleet())
    try:
        db = Database(url)
        try:

            def seen() -> object:
                with db.read() as session:
                    return session.scalars(select(PlaneProcess.seen_at)).one()

            first = seen()
            deadline = time.monotonic() + 10
            while seen() == first:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            db.dispose()
    finally:
        client.__exit__(None, None, None)


def test_sqlite_fails_what_a_killed_server_left_when_it_starts_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/corral.db"
    vm, job_id = create_then_die(url)
    restarted, _ = start_client(Settings(database_url=url, health_interval=0), Fleet())
    api = Api(restarted, Fleet())
    try:
        job = api.ok("GET", f"/jobs/{job_id}")
        assert job["status"] == "failed" and "restarted" in job["error"]
        assert api.ok("GET", f"/vms/{vm['id']}")["status"] == "unknown"
    finally:
        restarted.__exit__(None, None, None)

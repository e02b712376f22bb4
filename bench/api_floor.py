"""The floor of bench/api.py: the same durable writes, straight to the database, no HTTP and no
Python in the loop.

Per VM, two transactions, as a corral create and its job write them: one picks an `up` host
with room (the same query: free vCPUs and memory after the overcommit ratios, most free memory
first; on PostgreSQL FOR UPDATE SKIP LOCKED, waiting for a lock only when every host is held),
adds the VM to the host's reservation and inserts
the VM, its tag and its job (running); the other marks the VM created and the job completed.
PostgreSQL: pgbench (C, prepared statements) with as many connections in flight as the API
benchmark has. SQLite: the sqlite3 shell running every transaction in turn (SQLite has one
writer at a time), WAL mode and synchronous=NORMAL as corral uses. Neither sends events.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

MIB = 1 << 20
VM_MEMORY = 256 * MIB
HOST_CPUS = 64
HOST_MEMORY = 64 * 1024 * MIB


def add_hosts(url: str, count: int) -> None:
    """`count` hosts, `up`, with the capacity the benchmark's instant node reports."""
    from corral.db.engine import Database
    from corral.db.statements import HOSTS

    now = datetime.now(UTC)
    rows = [
        dict(id=uuid.uuid4(), name=f"host{i:03}", address=f"10.0.{i}.1", port=7000,
             status="up", down_by_health=False, cpus=HOST_CPUS, memory=HOST_MEMORY,
             disk=1 << 40, versions={}, used_vcpus=0, used_memory=0, created_at=now,
             updated_at=now)
        for i in range(count)
    ]  # fmt: skip
    db = Database(url)
    try:
        with db.write() as session:
            session.connection().execute(HOSTS.insert(), rows)
    finally:
        db.dispose()


def _fits(cpu_ratio: float, memory_ratio: float) -> tuple[str, str]:
    free_memory = f"memory * {memory_ratio} - used_memory"
    where = (
        f"status = 'up' AND 1 <= cpus * {cpu_ratio} - used_vcpus AND {VM_MEMORY} <= {free_memory}"
    )
    return where, f"{free_memory} DESC, id"


def pgbench_script(cpu_ratio: float, memory_ratio: float) -> str:
    where, order = _fits(cpu_ratio, memory_ratio)
    return f"""\\set tag random(0, 9)
BEGIN;
SELECT COALESCE((SELECT id FROM hosts WHERE {where} ORDER BY {order} LIMIT 1 FOR UPDATE SKIP LOCKED), (SELECT id FROM hosts WHERE {where} ORDER BY {order} LIMIT 1 FOR UPDATE)) AS host_id \\gset
UPDATE hosts SET used_vcpus = used_vcpus + 1, used_memory = used_memory + {VM_MEMORY} WHERE id = :host_id;
INSERT INTO vms (id, name, hypervisor, status, host_id, boot_vcpus, max_vcpus, memory_size, image, ssh_keys, networks, created_at, updated_at) VALUES (gen_random_uuid(), 'vm-' || gen_random_uuid(), 'qemu', 'pending', :host_id, 1, 1, {VM_MEMORY}, 'debian-12', '[]', '[]', now(), now()) RETURNING id AS vm_id \\gset
INSERT INTO vm_tags (vm_id, tag) VALUES (:vm_id, 'group' || :tag);
INSERT INTO jobs (id, kind, status, vm_id, host_id, created_at, started_at) VALUES (gen_random_uuid(), 'vm.create', 'running', :vm_id, :host_id, now(), now()) RETURNING id AS job_id \\gset
COMMIT;
BEGIN;
UPDATE vms SET status = 'created', updated_at = now() WHERE id = :vm_id;
UPDATE jobs SET status = 'completed', finished_at = now() WHERE id = :job_id;
COMMIT;
"""  # noqa: E501


def run_pgbench(
    pgbench: str, port: int, user: str, database: str, vms: int, clients: int,
    cpu_ratio: float, memory_ratio: float,
) -> float:  # fmt: skip
    """Seconds pgbench takes for `vms` creates (rounded up to a multiple of `clients`)."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", dir="/tmp") as script:
        script.write(pgbench_script(cpu_ratio, memory_ratio))
        script.flush()
        Path(script.name).chmod(0o644)
        argv = [pgbench, "-n", "-M", "prepared", "-c", str(clients), "-j", "2",
                "-t", str(-(-vms // clients)), "-f", script.name,
                "-h", "127.0.0.1", "-p", str(port), "-U", user, database]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"pgbench failed: {done.stderr.strip() or done.stdout.strip()}")
    return elapsed


def sqlite_script(vms: int, cpu_ratio: float, memory_ratio: float) -> str:
    where, order = _fits(cpu_ratio, memory_ratio)
    now = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
    uid = "lower(hex(randomblob(16)))"
    lines = [
        "PRAGMA journal_mode=WAL;",
        "PRAGMA synchronous=NORMAL;",
        "PRAGMA foreign_keys=ON;",
        "CREATE TEMP TABLE pick (host TEXT, vm TEXT, job TEXT);",
    ]
    for i in range(vms):
        lines += [
            "BEGIN IMMEDIATE;",
            "DELETE FROM pick;",
            f"INSERT INTO pick SELECT id, {uid}, {uid} FROM hosts WHERE {where} "
            f"ORDER BY {order} LIMIT 1;",
            f"UPDATE hosts SET used_vcpus = used_vcpus + 1, used_memory = used_memory + "
            f"{VM_MEMORY} WHERE id = (SELECT host FROM pick);",
            "INSERT INTO vms (id, name, hypervisor, status, host_id, boot_vcpus, max_vcpus, "
            "memory_size, image, ssh_keys, networks, created_at, updated_at) "
            f"SELECT vm, 'vm{i:05}', 'qemu', 'pending', host, 1, 1, {VM_MEMORY}, 'debian-12', "
            f"'[]', '[]', {now}, {now} FROM pick;",
            f"INSERT INTO vm_tags (vm_id, tag) SELECT vm, 'group{i % 10}' FROM pick;",
            "INSERT INTO jobs (id, kind, status, vm_id, host_id, created_at, started_at) "
            f"SELECT job, 'vm.create', 'running', vm, host, {now}, {now} FROM pick;",
            "COMMIT;",
            "BEGIN IMMEDIATE;",
            f"UPDATE vms SET status = 'created', updated_at = {now} "
            "WHERE id = (SELECT vm FROM pick);",
            f"UPDATE jobs SET status = 'completed', finished_at = {now} "
            "WHERE id = (SELECT job FROM pick);",
            "COMMIT;",
        ]
    return "\n".join(lines) + "\n"


def run_sqlite(path: str, vms: int, cpu_ratio: float, memory_ratio: float) -> float:
    """Seconds the sqlite3 shell takes for `vms` creates."""
    script = sqlite_script(vms, cpu_ratio, memory_ratio)
    argv = ["sqlite3", "-bail", path]
    started = time.perf_counter()
    done = subprocess.run(argv, input=script, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"sqlite3 failed: {done.stderr.strip()}")
    return elapsed

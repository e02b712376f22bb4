"""Control-plane API: VM creates per second and latency, and `GET /vms?limit=100` latency, with
100 hosts and 10,000 VMs, on SQLite (one server process) and PostgreSQL (two server processes
sharing the database, requests alternating between them).

The servers are real `create_app` apps under uvicorn, each in its own process, with a node
that answers every call at once (nodes are not what is measured): a create still runs its whole
path — token check, validation, scheduling with the host row locked, the VM, tag and job rows in
one transaction, and afterwards its job (running, the node call, completed and the VM's status),
which competes with the creates for the database. Hosts are registered and initialised through
the API first (not timed). The client is one asyncio process with 32 keep-alive connections,
each with one request in flight, speaking plain HTTP/1.1 over asyncio streams: httpx costs about
a millisecond of CPU per request, which on a 2-CPU machine would measure the client.

    .venv/bin/python bench/api.py [--vms 10000] [--hosts 100] [--concurrency 32]

No QEMU is involved. PostgreSQL runs from Debian's packages in a temp dir, with its default
durability (fsync and synchronous_commit on); SQLite runs in WAL mode with synchronous=NORMAL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

import api_floor
from common import REPO, log, now, print_table, write_results

sys.path.insert(0, str(REPO / "tests"))
from control.postgres import SUPERUSER, PostgresServer, find_bin, free_port

MIB = 1 << 20


# --- the server side (run as `api.py serve URL PORT`) ---------------------------------------


class InstantNode:
    """The node protocol, answered at once: plenty of room, every VM created as asked."""

    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    async def capacity(self) -> Any:
        from corral.node.protocol import Capacity

        return Capacity(cpus=64, memory_mib=64 * 1024, disk_bytes=1 << 40, arch="x86_64",
                        accelerator="kvm", versions={"corral": "bench"})  # fmt: skip

    async def list_vms(self) -> list[Any]:
        return []

    async def list_networks(self) -> list[Any]:
        return []

    async def list_images(self) -> list[Any]:
        return []

    async def create_vm(self, spec: Any) -> Any:
        from corral.node.protocol import NodeVm

        return NodeVm(name=spec.name, state="running" if spec.start else "stopped",
                      cpus=spec.cpus, memory_mib=spec.memory_mib, disk_size=1 << 30,
                      ssh_port=22, image=spec.image or "base")  # fmt: skip

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


def serve(url: str, port: int) -> None:
    import uvicorn

    from corral.api.app import create_app
    from corral.control.settings import Settings

    node = InstantNode()
    settings = Settings(database_url=url, health_interval=0, migrate=False)
    app = create_app(settings, node_factory=lambda where: node)  # type: ignore[arg-type, return-value]
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                loop="uvloop", http="httptools")  # fmt: skip


# --- the client side ------------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection, one request at a time, JSON bodies."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        host, _, port = base_url.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port)
        self.head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())

    async def open(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.head}"
        head += f"Content-Length: {len(data)}\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        self.writer.write(head.encode() + b"\r\n" + data)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) != b"\r\n":
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        content = await self.reader.readexactly(length)
        return status, json.loads(content) if content else None

    def close(self) -> None:
        self.writer.close()


def prepare(url: str) -> str:
    """Migrate the database and make an admin token (not timed)."""
    from corral.control.tokens import TokenService
    from corral.db.engine import Database
    from corral.db.migrate import upgrade

    db = Database(url)
    try:
        upgrade(db)
        return TokenService(db).create("bench", "admin")[1]  # it registers the hosts
    finally:
        db.dispose()


def start_servers(url: str, count: int) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    procs, urls = [], []
    for _ in range(count):
        port = free_port()
        argv = [sys.executable, __file__, "serve", url, str(port)]
        procs.append(subprocess.Popen(argv, cwd=REPO))
        urls.append(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 60
    for base in urls:
        while True:
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server {base} did not start")
            time.sleep(0.1)
    return procs, urls


def stop_servers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def measure(urls: list[str], token: str, args: argparse.Namespace) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    conns = [await Connection(urls[n % len(urls)], headers).open() for n in range(args.concurrency)]
    try:
        first = conns[0]
        for i in range(args.hosts):
            body = {"name": f"host{i:03}", "address": f"10.{i // 250}.{i % 250}.1", "port": 7000}
            status, host = await first.request("POST", "/hosts", body)
            assert status == 201, host
            status, host = await first.request("POST", f"/hosts/{host['id']}/init")
            assert status == 200 and host["status"] == "up", host
        log(f"{args.hosts} hosts up; creating {args.vms} VMs with {args.concurrency} in flight")

        latencies: list[float] = []
        failures: list[str] = []
        counter = iter(range(args.vms))

        async def worker(conn: Connection) -> None:
            for i in counter:
                body = {"name": f"vm{i:05}", "hypervisor": "qemu", "boot_vcpus": 1,
                        "memory_size": 256 * MIB, "image": "debian-12",
                        "tags": [f"group{i % 10}"]}  # fmt: skip
                started = time.perf_counter()
                status, answer = await conn.request("POST", "/vms", body)
                latencies.append(time.perf_counter() - started)
                if status != 201:
                    failures.append(f"{status} {str(answer)[:200]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker(conn) for conn in conns))
        elapsed = time.perf_counter() - started
        log(f"created in {elapsed:.1f}s ({len(failures)} failures); waiting for the jobs")
        while True:  # every create job done: no VM still pending
            _, pending = await first.request("GET", "/vms?status=pending&limit=1")
            if not pending:
                break
            await asyncio.sleep(0.2)
        drained = time.perf_counter() - started
        log(f"jobs done {drained - elapsed:.1f}s after the last create")

        async def gets(offsets: list[int]) -> list[float]:
            samples = []
            for k, offset in enumerate(offsets):
                conn = conns[k % len(urls)]  # alternate between the servers
                t = time.perf_counter()
                status, page = await conn.request("GET", f"/vms?limit=100&offset={offset}")
                samples.append(time.perf_counter() - t)
                assert status == 200 and len(page) == 100, status
            return samples

        await gets([0] * 20)  # warm-up
        first_page = await gets([0] * args.gets)
        rng = random.Random(1)
        anywhere = await gets([rng.randrange(0, args.vms - 100) for _ in range(args.gets)])
        return {
            "creates": args.vms,
            "failures": len(failures),
            "failure_examples": failures[:5],
            "create_seconds": elapsed,
            "creates_per_second": args.vms / elapsed,
            "create_latency_p50_ms": statistics.median(latencies) * 1000,
            "create_latency_p99_ms": percentile(latencies, 99) * 1000,
            "create_latency_max_ms": max(latencies) * 1000,
            "jobs_done_seconds": drained,
            "get_first_page_p50_ms": statistics.median(first_page) * 1000,
            "get_first_page_p99_ms": percentile(first_page, 99) * 1000,
            "get_any_page_p50_ms": statistics.median(anywhere) * 1000,
            "get_any_page_p99_ms": percentile(anywhere, 99) * 1000,
        }
    finally:
        for conn in conns:
            conn.close()


def run_backend(name: str, url: str, processes: int, args: argparse.Namespace) -> dict[str, Any]:
    log(f"{name}: {processes} server process(es)")
    token = prepare(url)
    procs, urls = start_servers(url, processes)
    try:
        result = asyncio.run(measure(urls, token, args))
    finally:
        stop_servers(procs)
    return {"backend": name, "processes": processes, **result}


def run_floor(name: str, url: str, args: argparse.Namespace, server: Any = None) -> float:
    """Creates per second of the floor (bench/api_floor.py) on a fresh database."""
    from sqlalchemy import create_engine, text

    from corral.control.settings import Settings

    prepare(url)
    api_floor.add_hosts(url, args.hosts)
    ratios = Settings.cpu_overcommit, Settings.memory_overcommit
    if server is None:
        elapsed = api_floor.run_sqlite(url.removeprefix("sqlite:///"), args.vms, *ratios)
    else:
        database = url.rsplit("/", 1)[1]
        elapsed = api_floor.run_pgbench(find_bin("pgbench"), server.port, SUPERUSER, database,
                                        args.vms, args.concurrency, *ratios)  # fmt: skip
    engine = create_engine(url)
    with engine.connect() as conn:
        made = conn.execute(text("SELECT count(*) FROM vms WHERE status = 'created'")).scalar()
    engine.dispose()
    log(f"{name} floor: {made} VMs in {elapsed:.1f}s")
    assert made and made >= args.vms, made
    return made / elapsed


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--gets", type=int, default=1000)
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    started = now()
    results = []
    if args.only in (None, "sqlite"):
        with tempfile.TemporaryDirectory(prefix="cbapi", dir="/tmp") as tmp:
            floor = run_floor("sqlite", f"sqlite:///{tmp}/floor.db", args)
            results.append(run_backend("sqlite", f"sqlite:///{tmp}/corral.db", 1, args))
            results[-1]["floor_creates_per_second"] = floor
    if args.only in (None, "postgresql"):
        server = PostgresServer(fsync=True).start()
        try:
            floor = run_floor("postgresql", server.url(server.create_database()), args, server)
            for processes in (2, 1):
                url = server.url(server.create_database())
                results.append(run_backend("postgresql", url, processes, args))
                results[-1]["floor_creates_per_second"] = floor
        finally:
            server.stop()

    print(f"# control-plane API: {args.hosts} hosts, {args.vms} VMs, {args.concurrency} in flight")
    print(f"date:    {started.isoformat(timespec='seconds')}")
    print(f"machine: {os.cpu_count()} CPUs, {Path('/proc/loadavg').read_text().split()[0]} load")
    print()
    print_table(
        ["backend", "servers", "creates/s", "floor/s", "ratio", "p50 ms", "p99 ms", "GET p50 ms",
         "GET p99 ms", "GET p99 ms (any page)", "failures"],
        [[r["backend"], r["processes"], r["creates_per_second"], r["floor_creates_per_second"],
          r["creates_per_second"] / r["floor_creates_per_second"], r["create_latency_p50_ms"],
          r["create_latency_p99_ms"], r["get_first_page_p50_ms"], r["get_first_page_p99_ms"],
          r["get_any_page_p99_ms"], r["failures"]] for r in results],
    )  # fmt: skip
    write_results("api", started, {"args": vars(args), "results": results})


if __name__ == "__main__":
    main()

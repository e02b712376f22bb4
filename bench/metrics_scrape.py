"""`GET /metrics` of the control plane with 100 hosts and 10,000 VMs: scrape time (median, p99),
and the same collection without HTTP.

The rows are inserted straight into a fresh SQLite database (hosts `up`, VMs spread over the
hosts and over six statuses, one completed `vm.create` job per VM and a few hundred others): no
node is involved, as a scrape reads only the database and this process's own figures. The
server is a real `create_app` app under uvicorn in a thread of this process (health checks
off); the client is httpx on one keep-alive connection, one scrape at a time, as Prometheus
scrapes. Before timing, a few hundred API requests are made so the request histogram has
series (a route template and status each), as on a server that has been up for a while.

    .venv/bin/python bench/metrics_scrape.py [--vms 10000] [--hosts 100] [--scrapes 200]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from common import REPO, log, now, print_table, write_results

sys.path.insert(0, str(REPO / "tests"))
from control.livesrv import LiveServer

STATUSES = ("running", "running", "running", "shutdown", "paused", "crashed", "pending", "unknown")
GIB, MIB = 1 << 30, 1 << 20


def fill(url: str, hosts: int, vms: int) -> None:
    """Hosts, VMs and jobs, inserted in one transaction (not timed)."""
    from sqlalchemy import insert

    from corral.db.engine import Database
    from corral.db.migrate import upgrade
    from corral.db.models import Host, Job, Vm

    db = Database(url)
    upgrade(db)
    rng = random.Random(15)
    at = datetime.now(UTC) - timedelta(days=1)
    host_ids = [uuid.uuid4() for _ in range(hosts)]
    host_rows = [
        {"id": h, "name": f"host{n:03d}", "address": f"10.0.{n // 250}.{n % 250 + 1}",
         "port": 8100, "status": "up", "cpus": 64, "memory": 256 * GIB, "disk": 2048 * GIB,
         "arch": "x86_64", "accelerator": "kvm", "versions": {}, "used_vcpus": 0,
         "used_memory": 0}
        for n, h in enumerate(host_ids)
    ]  # fmt: skip
    vm_rows, job_rows = [], []
    used: dict[uuid.UUID, list[int]] = {h: [0, 0] for h in host_ids}
    for n in range(vms):
        host, status = host_ids[n % hosts], rng.choice(STATUSES)
        vcpus, memory = rng.choice((1, 2, 4)), rng.choice((256, 512, 1024, 2048)) * MIB
        vm_id = uuid.uuid4()
        vm_rows.append(
            {"id": vm_id, "name": f"vm{n:05d}", "hypervisor": "qemu", "status": status,
             "host_id": host, "boot_vcpus": vcpus, "max_vcpus": vcpus, "memory_size": memory,
             "image": "debian-12", "ssh_keys": [], "networks": [], "volumes": []}
        )  # fmt: skip
        if status != "shutdown":
            used[host][0] += vcpus
            used[host][1] += memory
        started = at + timedelta(seconds=n)
        job_rows.append(
            {"kind": "vm.create", "status": "completed", "vm_id": vm_id, "host_id": host,
             "created_at": started, "started_at": started,
             "finished_at": started + timedelta(seconds=rng.uniform(0.5, 20))}
        )  # fmt: skip
    for n in range(vms // 20):
        job_rows.append(
            {"kind": rng.choice(("vm.start", "vm.stop", "vm.delete")),
             "status": rng.choice(("completed", "completed", "failed")),
             "vm_id": vm_rows[n]["id"], "host_id": vm_rows[n]["host_id"]}
        )  # fmt: skip
    for row in host_rows:
        row["used_vcpus"], row["used_memory"] = used[row["id"]]
    try:
        with db.write() as session:
            session.execute(insert(Host), host_rows)
            session.execute(insert(Vm), vm_rows)
            session.execute(insert(Job), job_rows)
    finally:
        db.dispose()


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from corral.api.app import create_app
    from corral.control.settings import Settings

    with tempfile.TemporaryDirectory(prefix="cbmetrics", dir="/tmp") as tmp:
        url = f"sqlite:///{tmp}/corral.db"
        log(f"inserting {args.hosts} hosts and {args.vms} VMs")
        fill(url, args.hosts, args.vms)
        live = LiveServer(create_app(Settings(database_url=url, health_interval=0))).start()
        try:
            token = live.token("prometheus", "metrics")
            admin = {"Authorization": f"Bearer {live.token('root', 'admin')}"}
            with httpx.Client(base_url=live.url, timeout=30) as client:
                for n in range(300):  # request series, as on a server up for a while
                    client.get("/vms", params={"limit": 10, "offset": n}, headers=admin)
                    client.get(f"/vms/{uuid.uuid4()}", headers=admin)  # 404
                client.headers["Authorization"] = f"Bearer {token}"
                first = client.get("/metrics")
                first.raise_for_status()
                log(f"timing {args.scrapes} scrapes")
                http: list[float] = []
                for _ in range(args.scrapes):
                    began = time.perf_counter()
                    response = client.get("/metrics")
                    http.append((time.perf_counter() - began) * 1000)
                    assert response.status_code == 200
                collect: list[float] = []
                for _ in range(args.scrapes):
                    began = time.perf_counter()
                    live.plane.metrics.text()
                    collect.append((time.perf_counter() - began) * 1000)
            body = response.text
        finally:
            live.stop()
    series = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
    vms_line = next(
        line for line in body.splitlines() if line.startswith('corral_vms{status="running"')
    )
    return {
        "scrape_ms": {"median": statistics.median(http), "p99": percentile(http, 99),
                      "samples": http},
        "collect_ms": {"median": statistics.median(collect), "p99": percentile(collect, 99),
                       "samples": collect},
        "bytes": len(body.encode()),
        "series": series,
        "check": vms_line,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args()
    started = now()
    result = run(args)
    print(f"# GET /metrics: {args.hosts} hosts, {args.vms} VMs (SQLite)")
    print(f"date:    {started.isoformat(timespec='seconds')}")
    print(f"machine: {os.cpu_count()} CPUs, {Path('/proc/loadavg').read_text().split()[0]} load")
    print(f"answer:  {result['bytes']} bytes, {result['series']} series ({result['check']})")
    print()
    print_table(
        ["what", "median ms", "p99 ms"],
        [["scrape over HTTP", result["scrape_ms"]["median"], result["scrape_ms"]["p99"]],
         ["collection alone", result["collect_ms"]["median"], result["collect_ms"]["p99"]]],
    )  # fmt: skip
    write_results("metrics_scrape", started, {"args": vars(args), **result})


if __name__ == "__main__":
    main()

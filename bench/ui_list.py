"""The dashboard's VM list with 10,000 VMs: server time and HTML size of the first page
(GET /ui/vms), and p50/p99 server time of the table fragment a filter change fetches
(GET /ui/vms/rows with a name prefix, a status, a tag, a host, and a page far down).

The app is the real `create_app` on SQLite with one host whose node answers at once (nodes are
not measured); the VM rows are written straight into the database (tests/control/uirows.py).
Server time is taken inside the server process, from the request's arrival at the ASGI app to
its last body byte, so the client (an in-process TestClient) is not measured.

    .venv/bin/python bench/ui_list.py [--vms 10000] [--requests 500]

Goal: the fragment's p99 under 100 ms.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from common import REPO, log, now, print_table, write_results

sys.path.insert(0, str(REPO / "tests"))
from api import InstantNode
from control.uirows import insert_vms


class ServerTime:
    """ASGI: the seconds each HTTP request spent in the app, and its body's size."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.samples: list[tuple[float, int]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, size = time.perf_counter(), 0

        async def counting(message: Any) -> None:
            nonlocal size
            if message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, counting)
        self.samples.append((time.perf_counter() - start, size))


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from corral.api.app import create_app
    from corral.control.settings import Settings

    started = now()
    home = Path(tempfile.mkdtemp(prefix="cb", dir="/tmp"))
    try:
        node = InstantNode()
        settings = Settings(database_url=f"sqlite:///{home}/corral.db", health_interval=0)
        app = create_app(settings, node_factory=lambda where: node)  # type: ignore[arg-type, return-value]
        timed = ServerTime(app)
        with TestClient(timed, base_url="http://bench") as client:  # type: ignore[arg-type]
            plane = app.state.plane
            _, token = plane.tokens.create("bench", "admin")
            bearer = {"Authorization": f"Bearer {token}"}
            body = {"name": "h1", "address": "10.0.0.1", "port": 7000}
            host = client.post("/hosts", json=body, headers=bearer).json()
            client.post(f"/hosts/{host['id']}/init", headers=bearer).raise_for_status()
            log(f"inserting {args.vms} VMs")
            insert_vms(plane, uuid.UUID(host["id"]), args.vms,
                       tags=lambda i: ["web"] if i % 10 == 0 else [])  # fmt: skip
            login = client.get("/ui/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', login.text)
            assert csrf
            signed = client.post("/ui/login", data={"token": token, "csrf": csrf.group(1)})
            assert signed.status_code == 200 and "data-vm-row" in signed.text, signed.status_code

            def timed_get(url: str) -> tuple[float, int]:
                answer = client.get(url, headers={"HX-Request": "true"})
                assert answer.status_code == 200, (url, answer.status_code)
                return timed.samples[-1]

            for _ in range(20):  # warm-up: caches, the first template compilations
                timed_get("/ui/vms")
            first = [timed_get("/ui/vms") for _ in range(50)]
            page = client.get("/ui/vms").text
            cursor = re.findall(r'rel="next"', page)
            assert cursor, "the first page has a next page"
            far = client.get(f"/ui/vms/rows?name=vm0{args.vms // 2 // 1000}").text
            deep = re.search(r'hx-get="/ui/vms/rows\?([^"]+)"[^>]*rel="next"', far)
            filters = [
                "status=running",
                "tag=web",
                f"host={host['id']}",
                "name=vm012",
                "name=vm0999",
                "status=paused&tag=web",
                deep.group(1).replace("&amp;", "&") if deep else "status=crashed",
            ]
            rng = random.Random(1)
            fragment = [
                timed_get(f"/ui/vms/rows?{rng.choice(filters)}") for _ in range(args.requests)
            ]
        times = [t for t, _ in fragment]
        first_times = [t for t, _ in first]
        rows = [
            ("first page GET /ui/vms (50 rows)", statistics.median(first_times) * 1000,
             percentile(first_times, 99) * 1000, first[-1][1]),
            (f"filter fragment GET /ui/vms/rows ({args.requests} requests)",
             statistics.median(times) * 1000, percentile(times, 99) * 1000,
             int(statistics.median([s for _, s in fragment]))),
        ]  # fmt: skip
        print(f"# the dashboard's VM list, {args.vms} VMs, SQLite")
        print(f"date: {started.isoformat(timespec='seconds')}")
        print_table(("", "median ms", "p99 ms", "HTML bytes"), rows)
        p99 = percentile(times, 99) * 1000
        print(f"goal: fragment p99 < 100 ms: {'met' if p99 < 100 else 'NOT met'} ({p99:.1f} ms)")
        write_results(
            "ui_list",
            started,
            {"vms": args.vms, "rows": [list(r) for r in rows], "fragment_p99_ms": p99},
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

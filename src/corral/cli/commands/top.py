"""`corral top`: the local instances' figures (those `corral node` gives Prometheus), as rates
between two readings `--interval` seconds apart, refreshed until interrupted (`--once`: one)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import typer

from corral.cli.context import get_context
from corral.cli.output import out, print_json, print_table

COLUMNS = ("NAME", "PID", "vCPU %", "CPU %", "RSS MiB", "DISK R/s", "DISK W/s", "NET RX/s",
           "NET TX/s", "UP")  # fmt: skip


def rows(before: Sequence[Any], after: Sequence[Any], seconds: float) -> list[dict[str, Any]]:
    """Per VM seen in both readings (same name, same pid): usage between them (pure)."""
    earlier = {(f.name, f.pid): f for f in before}
    out = []
    for f in after:
        prev = earlier.get((f.name, f.pid))
        if prev is None or seconds <= 0:
            continue

        def rate(now: float, then: float) -> float:
            return max(0.0, now - then) / seconds

        out.append({
            "name": f.name,
            "pid": f.pid,
            "vcpu_percent": None if f.vcpu_seconds is None or prev.vcpu_seconds is None
            else 100 * rate(f.vcpu_seconds, prev.vcpu_seconds),
            "cpu_percent": 100 * rate(f.cpu_seconds, prev.cpu_seconds),
            "resident_bytes": f.resident_bytes,
            "disk_read_bytes_per_s": rate(_disk(f, "read_bytes"), _disk(prev, "read_bytes")),
            "disk_write_bytes_per_s": rate(_disk(f, "write_bytes"), _disk(prev, "write_bytes")),
            "net_receive_bytes_per_s": rate(_nic(f, "receive_bytes"), _nic(prev, "receive_bytes"))
            if f.nics else None,
            "net_transmit_bytes_per_s": rate(
                _nic(f, "transmit_bytes"), _nic(prev, "transmit_bytes")
            ) if f.nics else None,
            "uptime_seconds": f.uptime_seconds,
        })  # fmt: skip
    return out


def _disk(figures: Any, field: str) -> int:
    return sum(getattr(d, field) for d in figures.disks)


def _nic(figures: Any, field: str) -> int:
    return sum(getattr(n, field) for n in figures.nics)


def _size(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "K", "M", "G"):
        if value < 1024:
            return f"{value:.0f}{unit}"
        value /= 1024
    return f"{value:.0f}T"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _uptime(seconds: float) -> str:
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


def top(
    interval: float = typer.Option(2.0, "--interval", "-n", min=0.2, help="Seconds per reading."),
    once: bool = typer.Option(False, "--once", help="One reading, then exit."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON (implies --once)."),
) -> None:
    """Show the local VMs' vCPU and CPU use, memory, disk and network traffic, and uptime."""
    from corral.node.metrics import gather

    home = get_context().home
    before = asyncio.run(gather(home))
    while True:
        began = time.monotonic()
        time.sleep(interval)
        after = asyncio.run(gather(home))
        table = rows(before, after, time.monotonic() - began)
        if json_out:
            print_json(table)
            return
        if not once:
            out.clear()
        print_table(
            COLUMNS,
            [[r["name"], r["pid"], _percent(r["vcpu_percent"]), _percent(r["cpu_percent"]),
              f"{r['resident_bytes'] / (1 << 20):.0f}",
              _size(r["disk_read_bytes_per_s"]), _size(r["disk_write_bytes_per_s"]),
              _size(r["net_receive_bytes_per_s"]), _size(r["net_transmit_bytes_per_s"]),
              _uptime(r["uptime_seconds"])] for r in table],
        )  # fmt: skip
        if once:
            return
        before = after


def register(app: typer.Typer) -> None:
    app.command()(top)

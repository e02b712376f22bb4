"""GET /metrics of a node agent: one real tiny-guest VM's figures, and its disk write bytes
growing after the guest writes; the parts that read /proc and QMP answers, on their own."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from corral.api.app import create_app
from corral.context import Context
from corral.control.settings import Settings
from corral.node.metrics import DiskFigures, NicFigures, VmFigures, _disks, _tap, vm_families
from helpers import corral
from node.conftest import TOKEN, serve_in_thread

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{url}/metrics", headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def one(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]  # type: ignore[no-any-return]


@pytest.mark.vm
def test_a_vm_disk_write_bytes_grow_after_it_writes(vm_ctx: Context, tmp_path: Path) -> None:
    launched = corral(vm_ctx, "launch", "tiny", "--name", "m1", "--type", "c1m256", "--wait",
                      "--timeout", "180")  # fmt: skip
    assert launched.returncode == 0, launched.stderr
    with serve_in_thread(vm_ctx, TOKEN) as url:
        before = scrape(url)
        write = ("corral_vm_disk_bytes_total", "m1", "disk0", "write")
        written = one(before, write[0], vm=write[1], device=write[2], op=write[3])
        writes = one(before, "corral_vm_disk_operations_total", vm="m1", device="disk0", op="write")
        assert one(before, "corral_vm_uptime_seconds", vm="m1") > 0
        assert one(before, "corral_vm_resident_memory_bytes", vm="m1") > 16 << 20
        assert one(before, "corral_vm_vcpus", vm="m1") == 1
        assert (
            0
            < one(before, "corral_vm_vcpu_seconds_total", vm="m1")
            <= one(before, "corral_vm_cpu_seconds_total", vm="m1")
        )

        # The tiny guest runs from its initramfs: its disk is free to scribble on.
        dd = "dd if=/dev/urandom of=/dev/vda bs=64k count=32 2>/dev/null && sync"
        exec_ = corral(vm_ctx, "exec", "m1", "--", "sh", "-c", dd)
        assert exec_.returncode == 0, exec_.stderr
        deadline = time.monotonic() + 30
        while True:
            after = scrape(url)
            grown = one(after, write[0], vm=write[1], device=write[2], op=write[3]) - written
            if grown >= 32 * 65536 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert grown >= 32 * 65536  # at least what dd wrote
        assert one(after, "corral_vm_disk_operations_total", vm="m1", device="disk0",
                   op="write") > writes  # fmt: skip
    # An embedded `corral serve` (its own node, in-process) adds the local VMs to its /metrics.
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/cp.db", local_node=True,
                              config=vm_ctx.config, health_interval=0))  # fmt: skip
    with TestClient(app) as client:
        _, metrics_token = app.state.plane.tokens.create("prometheus", "metrics")
        text = client.get("/metrics", headers={"Authorization": f"Bearer {metrics_token}"}).text
    names = {s.name: s for f in text_string_to_metric_families(text) for s in f.samples}
    assert names["corral_vm_uptime_seconds"].labels == {"vm": "m1"}
    assert "corral_host_cpus" in names  # and the fleet's figures: host `local`
    # `corral top` shows the same VM from the same figures.
    top = corral(vm_ctx, "top", "--json", "--interval", "0.5")
    assert top.returncode == 0, top.stderr
    (row,) = json.loads(top.stdout)
    assert row["name"] == "m1" and row["resident_bytes"] > 16 << 20 and row["cpu_percent"] >= 0
    assert corral(vm_ctx, "rm", "--force", "m1").returncode == 0


def test_a_node_without_running_vms_has_empty_families(ctx: Context) -> None:
    with serve_in_thread(ctx, TOKEN) as url:
        assert not [k for k in scrape(url) if k[0].startswith("corral_vm_")]
        assert httpx.get(f"{url}/metrics").status_code == 401


def test_blockstats_and_taps_are_read_safely() -> None:
    stats = [
        {"device": "disk0", "stats": {"rd_bytes": 1, "wr_bytes": 2, "rd_operations": 3,
                                      "wr_operations": 4}},
        {"device": "", "qdev": "/machine/peripheral-anon/device[1]/virtio-backend",
         "stats": {"rd_bytes": 5}},
        {"device": "bad"},  # no stats: skipped
    ]  # fmt: skip
    assert list(_disks(stats)) == [
        DiskFigures("disk0", 1, 2, 3, 4),
        DiskFigures("/machine/peripheral-anon/device[1]/virtio-backend", 5, 0, 0, 0),
    ]
    # A name from a record never makes a path outside /sys/class/net.
    for hostile in ("../../etc", "lo/../..", "a" * 16, "", "."):
        assert _tap(hostile) is None
    lo = _tap("lo")
    assert lo is not None and lo.receive_bytes >= 0


def test_families_of_a_reading() -> None:
    figures = [
        VmFigures("a", os.getpid(), 10.0, 1 << 20, 2.0, None, None,
                  (DiskFigures("disk0", 1, 2, 3, 4),), (NicFigures("tap0", 7, 8),)),
    ]  # fmt: skip
    families = {f.name: f for f in vm_families(figures)}
    assert families["corral_vm_vcpu_seconds"].samples == []  # not known: not made up
    net = {s.labels["dir"]: s.value for s in families["corral_vm_network_bytes"].samples}
    assert net == {"receive": 7, "transmit": 8}

"""`corral top`: usage between two readings (pure), and the command on a state directory with no
running VM (the figures of a real VM: tests/node/test_metrics.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from corral.cli.commands.top import rows
from corral.node.metrics import DiskFigures, NicFigures, VmFigures


def figures(cpu: float, written: int, pid: int = 10) -> VmFigures:
    disks, nics = (DiskFigures("disk0", 0, written, 0, 1),), (NicFigures("t0", 5, 6),)
    return VmFigures("a", pid, 60.0, 100 << 20, cpu, cpu / 2, 1, disks, nics)


def test_rates_between_two_readings() -> None:
    (row,) = rows([figures(1.0, 1000)], [figures(2.0, 3000)], 2.0)
    assert row["cpu_percent"] == 50.0 and row["vcpu_percent"] == 25.0
    assert row["disk_write_bytes_per_s"] == 1000.0 and row["net_receive_bytes_per_s"] == 0.0
    # A VM that restarted in between (another pid) has no rate yet; one seen once neither.
    assert rows([figures(1.0, 0, pid=9)], [figures(2.0, 0)], 2.0) == []
    assert rows([], [figures(2.0, 0)], 2.0) == []


def test_top_with_no_running_vm(tmp_path: Path) -> None:
    env = {**os.environ, "CORRAL_HOME": str(tmp_path), "CORRAL_CONFIG": "/nonexistent"}
    argv = [sys.executable, "-m", "corral.cli.app", "top", "--json", "--interval", "0.2"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []

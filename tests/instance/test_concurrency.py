"""Many launches at once, and corral killed in the middle of a launch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from corral.context import Context
from corral.fsutil import pid_alive
from corral.instance import registry
from helpers import corral, qemu_pids

pytestmark = pytest.mark.vm


def test_eight_concurrent_launches_get_distinct_ports(vm_ctx: Context) -> None:
    names = [f"par{i}" for i in range(8)]

    def launch(name: str) -> subprocess.CompletedProcess[str]:
        return corral(vm_ctx, "launch", "tiny", "--name", name, "--type", "c1m192")

    with ThreadPoolExecutor(len(names)) as pool:
        results = list(pool.map(launch, names))
    assert [r.returncode for r in results] == [0] * 8, [r.stderr for r in results]
    listed = json.loads(corral(vm_ctx, "ls", "--json").stdout)
    ports = [i["ssh_port"] for i in listed]
    assert len(set(ports)) == 8

    def ready(name: str) -> subprocess.CompletedProcess[str]:
        corral(vm_ctx, "wait", name, "--timeout", "400")
        return corral(vm_ctx, "exec", name, "--", "hostname")

    with ThreadPoolExecutor(len(names)) as pool:
        answers = list(pool.map(ready, names))
    assert [a.stdout for a in answers] == [f"{n}\n" for n in names], [a.stderr for a in answers]


def test_corral_killed_mid_launch_leaves_nothing(vm_ctx: Context) -> None:
    files = vm_ctx.home.instance("half")
    env = {**os.environ, "CORRAL_HOME": str(vm_ctx.home.root),
           "CORRAL_CACHE_DIR": str(vm_ctx.config.cache_dir)}  # fmt: skip
    for _attempt in range(10):
        before = qemu_pids(vm_ctx)
        launcher = subprocess.Popen(
            [sys.executable, "-m", "corral.cli.app", "launch", "tiny", "--name", "half",
             "--type", "c1m256"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        # Freeze the launcher the moment QEMU exists, before it can record the instance running.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not files.pidfile.exists():
            if launcher.poll() is not None:
                break
            time.sleep(0.001)
        launcher.send_signal(signal.SIGSTOP)
        state = registry.load(files).state if files.record.exists() else None
        orphan = set(qemu_pids(vm_ctx)) - before
        launcher.kill()
        launcher.wait()
        if state == "creating" and orphan:
            break
        registry.destroy(files)  # the launch got too far (or not far enough): try again
    else:
        pytest.fail("could not catch the launcher between spawning QEMU and finishing")

    assert all(pid_alive(p) for p in orphan)
    listed = json.loads(corral(vm_ctx, "ls", "--json").stdout)  # the next command cleans up
    assert listed == []
    assert not files.dir.exists()
    time.sleep(0.2)
    assert not any(pid_alive(p) for p in orphan)
    # The name and its port are free again.
    proc = corral(vm_ctx, "launch", "tiny", "--name", "half", "--type", "c1m256")
    assert proc.returncode == 0, proc.stderr

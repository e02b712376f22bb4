"""The seed's aleph-vm walkthrough, as written, against `corral serve` on the embedded default
(this machine is host `local`) with the tiny guest:

- the orchestrator's environment: ALEPH_VM_FAKE_INSTANCE_BASE, ALEPH_VM_FAKE_INSTANCE_MESSAGE,
  ALEPH_VM_USE_FAKE_INSTANCE_BASE=1, ALEPH_VM_ALLOCATION_TOKEN_HASH (sha256 of `test`), and
  `--developer-ssh-keys` (the base is the tiny guest's corral image: it boots from its own
  kernel; a disk image file works too, see test_aleph);
- "Start fake VM": POST /control/allocations with X-Auth-Signature: test, naming the item
  hash deca...deca, which is no VM yet;
- the logs websocket of that hash, while "Stop the VM": POST /control/machine/{hash}/stop
  (signed: corral does not turn its authentication off).
The server listens on a free loopback port rather than 4020 (tests run side by side).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from control.alephmsg import ITEM_HASH, MESSAGE_KEY, message, write
from control.postgres import free_port
from control.test_allocations import DEV_KEY, TOKEN_HASH
from corral.context import Context
from corral.control.aleph import vm_name
from corral.instance import lifecycle
from seed.test_iso import read_seed_iso

pytestmark = pytest.mark.vm


def test_aleph_walkthrough_on_corral_serve(vm_ctx: Context, tmp_path: Any) -> None:
    fake = write(tmp_path / "qemu_message_from_aleph.json", message())
    port = free_port()
    env = {
        **os.environ,
        "CORRAL_HOME": str(vm_ctx.config.home),
        "CORRAL_CACHE_DIR": str(vm_ctx.config.cache_dir),
        "CORRAL_CONFIG": "/nonexistent",
        "ALEPH_VM_FAKE_INSTANCE_BASE": "tiny",
        "ALEPH_VM_FAKE_INSTANCE_MESSAGE": str(fake),
        "ALEPH_VM_USE_FAKE_INSTANCE_BASE": "1",
        "ALEPH_VM_ALLOCATION_TOKEN_HASH": TOKEN_HASH,
    }
    argv = [sys.executable, "-m", "corral.cli.app", "serve", "--listen", f"127.0.0.1:{port}",
            "--developer-ssh-keys", json.dumps([DEV_KEY])]  # fmt: skip
    server = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "corral serve did not start"
            time.sleep(0.2)

        # ### Start fake VM
        response = httpx.post(
            f"{base}/control/allocations",
            headers={
                "Content-Type": "application/json",
                "X-Auth-Signature": "test",
                "Accept": "application/json",
            },
            content='{"persistent_vms": [], "instances": ["' + ITEM_HASH + '"]}',
            timeout=300,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["success"] and body["started"] == [ITEM_HASH], body

        # The VM: named from the hash, running the fake base, its message's key and the
        # developer key authorised, its host volume made and mounted through cloud-init.
        name = vm_name(ITEM_HASH)
        record, seen = lifecycle.status(vm_ctx, name)
        assert seen.state == "running" and record.image == "tiny"
        assert (record.cpus, record.memory_mib) == (1, 256)
        assert record.volumes == (5 << 20,)
        files = vm_ctx.home.instance(name)
        user_data = read_seed_iso(files.seed)["user-data"].decode()
        assert MESSAGE_KEY in user_data and DEV_KEY in user_data
        assert "/var/lib/example" in user_data and "VM_CUSTOM_NUMBER" in user_data
        assert seen.pid is not None
        argv_seen = Path(f"/proc/{seen.pid}/cmdline").read_bytes().split(b"\0")
        assert any(b"serial=vol1" in arg for arg in argv_seen)

        # Check the log via Websocket: new console output as JSON frames. The tiny guest is
        # quiet once booted, so the VM is stopped meanwhile (### Stop the VM, signed: corral
        # does not turn its authentication off): its power-down lines are new output, and the
        # stream ends with the VM.
        url = f"ws://127.0.0.1:{port}/control/machine/{ITEM_HASH}/logs"
        stops: list[httpx.Response] = []

        def stop() -> None:
            time.sleep(1)  # the websocket follows the console by now
            stops.append(
                httpx.post(
                    f"{base}/control/machine/{ITEM_HASH}/stop",
                    headers={"Accept": "application/json", "X-Auth-Signature": "test"},
                    timeout=300,
                )
            )

        frames = []
        with connect(url, additional_headers={"X-Auth-Signature": "test"}) as ws:
            stopper = threading.Thread(target=stop)
            stopper.start()
            try:
                for raw in ws:
                    frames.append(json.loads(raw))
            except ConnectionClosed:
                pass
            stopper.join()
        assert frames and all(f["type"] == "stdout" for f in frames), frames
        assert "".join(f["message"] for f in frames).strip()
        (stopped,) = stops
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["status"] == "completed"
        assert lifecycle.status(vm_ctx, name)[1].state == "stopped"
    finally:
        server.terminate()
        server.wait(timeout=30)

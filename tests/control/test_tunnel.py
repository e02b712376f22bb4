"""Reaching a VM through the control plane, end to end with real parts: `corral serve`'s app on
SQLite under uvicorn, a node agent (`corral node`'s app) for a state directory holding the
tiny guest, a VM launched through `corral --remote` with the test's own ssh key, and the real
CLI in a subprocess: exec, ssh (the system ssh through `corral tunnel-stdio`) and cp both ways,
all through `WS /vms/{id}/tunnel`. Refusals: a port the VM does not expose (the node agent's
own, PostgreSQL's), no token, a bad port. Many tunnels opened and closed leak no descriptor
and no task."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from control.livesrv import LiveServer
from corral.api.app import create_app
from corral.context import Context
from corral.control.settings import Settings
from helpers import corral
from node.conftest import serve_in_thread

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the ssh client"),
]

NODE_TOKEN = "node-token-for-the-tunnel-tests"


@dataclass
class Lab:
    url: str
    node_port: int
    admin: str
    user: str
    vm_id: str
    env: dict[str, str]  # CORRAL_SSH_KEY: the test's own key
    cli: Context  # the CLI's own state directory


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, tiny_guest: object) -> Iterator[Lab]:
    from dataclasses import replace

    from conftest import CACHE, TINY, kill_all
    from corral.config import Config

    tmp = tmp_path_factory.mktemp("tunnel")
    home = Path(os.path.realpath(tmp / "node"))
    ctx = Context(replace(Config(), home=home, cache_dir=CACHE / "host"))
    guest = tiny_guest
    ctx.store.import_image(
        guest.disk,  # type: ignore[attr-defined]
        TINY,
        kernel=guest.kernel,  # type: ignore[attr-defined]
        initrd=guest.initrd,  # type: ignore[attr-defined]
        cmdline=guest.cmdline,  # type: ignore[attr-defined]
        default_user=guest.default_user,  # type: ignore[attr-defined]
    )
    key = tmp / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    settings = Settings(database_url=f"sqlite:///{tmp}/cp.db", health_interval=0)
    live = None
    try:
        with serve_in_thread(ctx, NODE_TOKEN) as node_url:
            live = LiveServer(create_app(settings)).start()
            admin, user = live.token("admin", "admin"), live.token("alice", "user")
            auth = {"Authorization": f"Bearer {admin}"}
            node_port = int(node_url.rsplit(":", 1)[1])
            body = {"name": "n1", "address": "127.0.0.1", "port": node_port, "token": NODE_TOKEN}
            host = httpx.post(f"{live.url}/hosts", headers=auth, json=body).json()
            assert httpx.post(f"{live.url}/hosts/{host['id']}/init", headers=auth).is_success
            env = {"CORRAL_SSH_KEY": f"{key}.pub"}
            cli = Context(replace(Config(), home=tmp / "cli", cache_dir=CACHE / "host"))
            remote = ["--remote", live.url, "--token", user]
            launch = corral(cli, *remote, "launch", "tiny", "--name", "web1", "--memory", "256M",
                            env=env, timeout=300)  # fmt: skip
            assert launch.returncode == 0, launch.stderr
            vm = httpx.get(f"{live.url}/vms", headers=auth, params={"name": "web1"}).json()[0]
            lab = Lab(live.url, node_port, admin, user, vm["id"], env, cli)
            _until_ssh_answers(lab)
            yield lab
    finally:
        if live is not None:
            live.stop()
        kill_all(ctx)
        shutil.rmtree(home, ignore_errors=True)


def run(
    lab: Lab, *args: str, token: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    remote = ["--remote", lab.url, "--token", token or lab.user]
    return corral(lab.cli, *remote, *args, env=lab.env, timeout=timeout)


def _until_ssh_answers(lab: Lab, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while True:
        proc = run(lab, "exec", "web1", "--", "true", timeout=60)
        if proc.returncode == 0:
            return
        assert time.monotonic() < deadline, proc.stderr
        time.sleep(2)


def test_exec_ssh_and_cp_through_the_control_plane(lab: Lab, tmp_path: Path) -> None:
    proc = run(lab, "exec", "web1", "--", "uname", "-a")
    assert proc.returncode == 0 and proc.stdout.startswith("Linux web1"), proc.stderr
    proc = run(lab, "exec", "web1", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "out\n", "err\n")

    # The system ssh, non-interactive, through `corral tunnel-stdio` as its ProxyCommand.
    proc = run(lab, "ssh", "web1", "--", "echo", "hello from", "$(hostname)")
    assert (proc.returncode, proc.stdout) == (0, "hello from web1\n"), proc.stderr

    # cp both ways: a file larger than a few frames comes back the same.
    data = os.urandom(3 << 20)
    (tmp_path / "up.bin").write_bytes(data)
    assert run(lab, "cp", str(tmp_path / "up.bin"), "web1:/tmp/up.bin").returncode == 0
    proc = run(lab, "exec", "web1", "--", "wc", "-c", "/tmp/up.bin")
    assert proc.stdout.split()[0] == str(len(data))
    proc = run(lab, "cp", "web1:/tmp/up.bin", str(tmp_path / "down.bin"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "down.bin").read_bytes() == data


def test_many_mebibytes_stream_back_through_the_tunnel(lab: Lab) -> None:
    proc = run(lab, "exec", "web1", "--", "head", "-c", "16000000", "/dev/zero")
    assert proc.returncode == 0 and len(proc.stdout) == 16_000_000


def _tunnel_status(lab: Lab, port: str, headers: dict[str, str]) -> tuple[int, str]:
    url = f"ws{lab.url.removeprefix('http')}/vms/{lab.vm_id}/tunnel?port={port}"

    async def go() -> tuple[int, str]:
        with pytest.raises(InvalidStatus) as caught:
            await connect(url, additional_headers=headers, open_timeout=10)
        response = caught.value.response
        return response.status_code, (response.body or b"").decode()

    return asyncio.run(go())


def test_ports_the_vm_does_not_expose_are_refused(lab: Lab) -> None:
    user = {"Authorization": f"Bearer {lab.user}"}
    for port in (str(lab.node_port), "5432", str(int(lab.url.rsplit(":", 1)[1]))):
        status, body = _tunnel_status(lab, port, user)
        assert status == 403, body
        assert f"port {port} of VM 'web1' is not exposed (a tunnel reaches its ports: 22)" in body
    for port in ("0", "65536", "x", "", "22&port=5432x"):
        status, body = _tunnel_status(lab, port, user)
        assert status == 422 and "give a TCP port" in body, (port, body)
    # The CLI says so in one line.
    proc = run(lab, "tunnel-stdio", "web1", "5432")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "port 5432 of VM 'web1' is not exposed" in proc.stderr.splitlines()[0]


def test_a_tunnel_needs_a_valid_token(lab: Lab) -> None:
    assert _tunnel_status(lab, "22", {})[0] == 401
    assert _tunnel_status(lab, "22", {"Authorization": "Bearer nope"})[0] == 401
    proc = run(lab, "exec", "web1", "--", "true", token="not-a-token")
    assert proc.returncode == 2 and "refused the token" in proc.stderr
    # An admin token may too (a user token is what the CLI used above).
    assert run(lab, "exec", "web1", "--", "true", token=lab.admin).returncode == 0


def _open_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


def _live_tasks() -> int:
    # Both servers run in this process, each on its own loop: count every loop's tasks.
    return sum(1 for task in asyncio.tasks._all_tasks if not task.done())  # type: ignore[attr-defined]


def test_opening_and_closing_many_tunnels_leaks_nothing(lab: Lab) -> None:
    url = f"ws{lab.url.removeprefix('http')}/vms/{lab.vm_id}/tunnel?port=22"
    headers = {"Authorization": f"Bearer {lab.user}"}

    async def one(close_first: bool) -> None:
        async with connect(url, additional_headers=headers, open_timeout=10) as ws:
            if close_first:
                return  # the client closes before anything arrived
            banner = await asyncio.wait_for(ws.recv(), 30)
            assert isinstance(banner, bytes) and banner.startswith(b"SSH-2.0-")

    async def many() -> None:
        for i in range(40):
            await one(close_first=i % 2 == 1)

    asyncio.run(one(False))  # warm both servers up (pools, caches)
    time.sleep(0.5)
    fds, tasks = _open_fds(), _live_tasks()
    asyncio.run(many())
    deadline = time.monotonic() + 10
    while (_open_fds() > fds or _live_tasks() > tasks) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _open_fds() <= fds and _live_tasks() <= tasks, (fds, _open_fds(), tasks, _live_tasks())

"""`corral --remote ...` and `corral remote add|ls|rm`: the real CLI, in a subprocess, against
a real uvicorn server on SQLite whose hosts are in-memory nodes (the QEMU path is covered in
test_with_real_nodes.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from control.fakes import FakeNode, Fleet
from control.livesrv import LiveServer
from corral.api.app import create_app
from corral.context import Context
from corral.control.settings import Settings
from corral.errors import NotFound
from helpers import corral, corral_popen

MIB = 1 << 20


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[LiveServer, FakeNode, str]]:
    fleet = Fleet()
    node = fleet.add("10.0.0.1", 7000, cpus=4, memory_mib=4096)
    settings = Settings(database_url=f"sqlite:///{tmp_path}/cp.db", health_interval=0)
    live = LiveServer(create_app(settings, node_factory=fleet)).start()
    try:
        auth = {"Authorization": f"Bearer {live.token('operator', 'admin')}"}
        host = httpx.post(
            f"{live.url}/hosts",
            headers=auth,
            json={"name": "h1", "address": "10.0.0.1", "port": 7000},
        ).json()
        assert httpx.post(f"{live.url}/hosts/{host['id']}/init", headers=auth).is_success
        yield live, node, live.token("cli", "user")  # all the remote CLI needs
    finally:
        live.stop()


def ok(ctx: Context, *args: str, env: dict[str, str] | None = None) -> str:
    proc = corral(ctx, *args, env=env, timeout=60)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc.stdout


def fails(ctx: Context, *args: str, code: int = 2) -> str:
    proc = corral(ctx, *args, timeout=60)
    assert proc.returncode == code, (args, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2  # one line, and maybe a hint
    return proc.stderr


def test_instance_commands_work_remotely_as_they_do_locally(
    ctx: Context, server: tuple[LiveServer, FakeNode, str], tmp_path: Path
) -> None:
    live, node, token = server
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3Nza me@laptop\n")
    user_data = tmp_path / "user-data"
    user_data.write_text("#cloud-config\nruncmd: [touch /tmp/hi]\n")
    remote = ["--remote", live.url, "--token", token]

    launch = ["launch", "tiny", "--name", "web1", "--type", "c2m512", "--disk-size", "3G"]
    text = ok(ctx, *remote, *launch, "--ssh-key", str(key), "--user-data", str(user_data))
    assert "web1 is running on host h1" in text
    spec = node.specs["web1"]
    assert (spec.cpus, spec.memory_mib, spec.disk_size) == (2, 512, 3 << 30)
    assert spec.image == "tiny" and spec.start
    assert "ssh-ed25519 AAAAC3Nza me@laptop" in spec.ssh_keys
    assert "touch /tmp/hi" in (spec.user_data or "")

    listing = json.loads(ok(ctx, *remote, "ls", "--json"))
    assert [(v["name"], v["status"], v["host"]) for v in listing] == [("web1", "running", "h1")]
    assert "web1" in ok(ctx, *remote, "ls") and "h1" in ok(ctx, *remote, "ls")
    assert json.loads(ok(ctx, *remote, "inspect", "web1", "--json"))["memory_size"] == 512 * MIB

    assert ok(ctx, *remote, "pause", "web1").strip() == "web1 paused"
    assert node.vms["web1"].state == "paused"
    assert ok(ctx, *remote, "resume", "web1").strip() == "web1 running"
    assert ok(ctx, *remote, "stop", "web1").strip() == "web1 shutdown"
    assert node.vms["web1"].state == "stopped"
    assert ok(ctx, *remote, "start", "web1").strip() == "web1 running"
    assert ok(ctx, *remote, "restart", "--force", "web1").strip() == "web1 running"
    node.console["web1"] = b"Debian GNU/Linux 12 web1 ttyS0\n"
    assert ok(ctx, *remote, "logs", "web1") == "Debian GNU/Linux 12 web1 ttyS0\n"

    # rm refuses a running VM unless forced, as locally
    assert "is running" in fails(ctx, *remote, "rm", "web1")
    assert "web1" in node.vms
    assert ok(ctx, *remote, "rm", "--force", "web1").strip() == "removed web1"
    assert node.vms == {}
    assert json.loads(ok(ctx, *remote, "ls", "--json")) == []


def test_saved_remotes_and_the_environment(
    ctx: Context, server: tuple[LiveServer, FakeNode, str]
) -> None:
    live, node, token = server
    assert "refused the token" in fails(ctx, "remote", "add", "lab", live.url, "--token", "nope")
    assert not (ctx.home.root / "remotes.json").exists()
    ok(ctx, "remote", "add", "lab", live.url, "--token", token)
    assert json.loads(ok(ctx, "remote", "ls", "--json")) == [{"name": "lab", "url": live.url}]
    assert token not in ok(ctx, "remote", "ls")

    ok(ctx, "--remote", "lab", "launch", "tiny", "--name", "db1", "--memory", "256M")
    assert node.vms["db1"].memory_mib == 256
    ok(ctx, "--remote", "lab", "launch", "tiny", "--name", "db2", "--memory", "256M", "--no-start")
    deadline = time.monotonic() + 10
    while "db2" not in node.specs and time.monotonic() < deadline:
        time.sleep(0.05)
    assert node.specs["db2"].start is False
    env = {"CORRAL_REMOTE": "lab"}
    assert "db1" in ok(ctx, "ls", env=env)
    assert "db1" in ok(ctx, "ls", env={"CORRAL_REMOTE": live.url, "CORRAL_TOKEN": token})
    # this machine has no instance db1: without a remote, ls is local
    assert "db1" not in ok(ctx, "ls")
    ok(ctx, "remote", "rm", "lab")
    assert "no remote 'lab'" in fails(ctx, "--remote", "lab", "ls")


def test_remote_mistakes_are_one_line_errors_that_change_nothing(
    ctx: Context, server: tuple[LiveServer, FakeNode, str]
) -> None:
    live, node, token = server
    remote = ["--remote", live.url, "--token", token]
    ok(ctx, *remote, "launch", "tiny", "--name", "web1", "--memory", "256M")

    assert "already exists" in fails(ctx, *remote, "launch", "tiny", "--name", "web1")
    assert "--forward" in fails(ctx, *remote, "launch", "tiny", "--name", "w2",
                                "--forward", "8080:80")  # fmt: skip
    assert "no VM 'nope'" in fails(ctx, *remote, "stop", "nope")
    assert "cannot resume VM 'web1': it is running" in fails(ctx, *remote, "resume", "web1")
    assert "works on this machine only" in fails(ctx, *remote, "wait", "web1")
    assert "works on this machine only" in fails(ctx, *remote, "image", "ls")
    assert "needs an API token" in fails(ctx, "--remote", live.url, "ls")
    assert "refused the token" in fails(ctx, "--remote", live.url, "--token", "corral_x", "ls")
    assert "cannot reach" in fails(
        ctx, "--remote", "http://127.0.0.1:9", "--token", token, "ls", code=1
    )
    # a create that fails on its host leaves no VM behind
    node.fail["create_vm"] = "qemu-system-x86_64: could not open disk"
    assert "could not open disk" in fails(
        ctx, *remote, "launch", "tiny", "--name", "w3", "--memory", "256M", code=1
    )
    # a mistake found on the host is still the user's: exit 2, as locally
    node.fail["create_vm"] = NotFound("no image named 'tinyy'")
    assert "no image named 'tinyy'" in fails(
        ctx, *remote, "launch", "tinyy", "--name", "w4", "--memory", "256M", code=2
    )
    names = [v["name"] for v in json.loads(ok(ctx, *remote, "ls", "--json"))]
    assert names == ["web1"]


def test_logs_follow_streams_the_live_console(
    ctx: Context, server: tuple[LiveServer, FakeNode, str]
) -> None:
    live, node, token = server
    remote = ["--remote", live.url, "--token", token]
    ok(ctx, *remote, "launch", "tiny", "--name", "web1", "--memory", "256M")
    node.console["web1"] = b"booted\n"
    proc = corral_popen(ctx, *remote, "logs", "--follow", "web1")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"booted\n"
        _wait(lambda: node.streaming("web1") == 1)
        node.write_console("web1", b"login: \n", end=True)
        assert proc.stdout.readline() == b"login: \n"
        assert proc.wait(timeout=30) == 0  # the stream ended: the VM stopped
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _wait(condition, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.02)

"""Serving the node agent: listen addresses, the token file, and `corral node` end to end."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from corral.context import Context
from corral.errors import InvalidInput
from corral.node.serve import (
    default_token_file,
    is_loopback,
    load_or_create_token,
    parse_listen,
)
from flood import assert_refused_unread


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("127.0.0.1:8100", ("127.0.0.1", 8100)),
        ("0.0.0.0:9000", ("0.0.0.0", 9000)),
        (":8100", ("127.0.0.1", 8100)),
        ("[::1]:8100", ("::1", 8100)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_parse_listen(text: str, want: tuple[str, int]) -> None:
    assert parse_listen(text) == want


@pytest.mark.parametrize("text", ["8100", "127.0.0.1", "127.0.0.1:http", "h:70000", "[::x]:1"])
def test_parse_listen_refuses(text: str) -> None:
    with pytest.raises(InvalidInput, match="invalid listen address"):
        parse_listen(text)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("192.168.1.5", False), ("::", False), ("node1.lan", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_token_file_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "node" / "token"
    token, made = load_or_create_token(path)
    assert made and len(token) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == f"{token}\n"
    assert load_or_create_token(path) == (token, False)


@pytest.mark.parametrize("content", ["", "\n", "two tokens\n"])
def test_a_bad_token_file_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "token"
    path.write_text(content)
    with pytest.raises(InvalidInput, match="must hold one token"):
        load_or_create_token(path)


def test_default_token_file_is_in_the_state_directory(ctx: Context) -> None:
    assert default_token_file(ctx) == ctx.config.home / "node" / "token"


NODE_CLI = """
import sys, typer
from corral.cli.commands.node import register
app = typer.Typer()
app.callback()(lambda: None)
register(app)
sys.argv[0] = "corral"
app()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_node(ctx: Context, port: int, token_file: Path) -> subprocess.Popen[str]:
    """`corral node` in a process of its own, once its /health answers."""
    env = {**os.environ, "CORRAL_HOME": str(ctx.config.home), "CORRAL_CONFIG": "/nonexistent",
           "CORRAL_CACHE_DIR": str(ctx.config.cache_dir)}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-c", NODE_CLI, "node", "--listen", f"127.0.0.1:{port}",
         "--token-file", str(token_file)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(proc.communicate())
        time.sleep(0.1)


def test_corral_node_serves_until_sigterm(ctx: Context, tmp_path: Path) -> None:
    port = free_port()
    token_file = tmp_path / "token"
    proc = start_node(ctx, port, token_file)
    try:
        url = f"http://127.0.0.1:{port}"
        token = token_file.read_text().strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{url}/vms", headers=auth).json() == []
        assert httpx.get(f"{url}/vms").status_code == 401
        assert httpx.get(f"{url}/vms?token={token}").status_code == 401  # not a way in here
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=20)
    # uvicorn shuts down cleanly, then re-raises the signal: the exit status says SIGTERM.
    assert proc.returncode in (0, -signal.SIGTERM), stderr
    assert '"GET /vms?token=REDACTED HTTP/1.1" 401' in stdout  # the access log
    assert token not in stdout + stderr
    assert "Application shutdown complete" in stderr
    assert f"node token written to {token_file} (mode 0600)" in stderr


def test_corral_node_refuses_a_bad_listen_address(ctx: Context) -> None:
    env = {**os.environ, "CORRAL_HOME": str(ctx.config.home), "CORRAL_CONFIG": "/nonexistent"}
    proc = subprocess.run(
        [sys.executable, "-c", NODE_CLI, "node", "--listen", "nowhere"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "invalid listen address 'nowhere'" in proc.stderr
    assert not default_token_file(Context(ctx.config)).exists()  # nothing made


def test_corral_node_refuses_a_200_mb_body_before_reading_it(ctx: Context, tmp_path: Path) -> None:
    """Finding 5 of issue #11: the node held a whole body before its 401."""
    port = free_port()
    token_file = tmp_path / "token"
    proc = start_node(ctx, port, token_file)
    try:
        auth = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
        assert_refused_unread(proc.pid, port, "/vms", auth)
        assert httpx.get(f"http://127.0.0.1:{port}/vms", headers=auth).json() == []
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)

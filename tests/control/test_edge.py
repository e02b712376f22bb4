"""The HTTP edge of `corral serve` (issue #11): a body is refused before it is read (finding
5), `?token=` never reaches a log line in clear (8), and the smaller items of 11: the listen
warning, and what a host that is not a node gets to say (and to hear)."""

from __future__ import annotations

import asyncio
import http.server
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from control.conftest import start_client
from control.postgres import free_port
from corral.context import Context
from corral.control.settings import Settings
from flood import MIB, assert_refused_unread, flood
from helpers import _env, corral

ZERO = "00000000-0000-0000-0000-000000000000"


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    port: int
    token: str
    log: Path  # stdout and stderr: uvicorn's access and error logs

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def served(ctx: Context, tmp_path: Path) -> Iterator[Served]:
    """`corral serve` (embedded, SQLite) in a process of its own, with an admin token."""
    made = corral(ctx, "token", "create", "edge", "--role", "admin", timeout=60)
    assert made.returncode == 0, made.stderr
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "corral.cli.app", "serve", "--listen", f"127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, env=_env(ctx, {"PYTHONUNBUFFERED": "1"}),
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield Served(proc, port, made.stdout.strip(), log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_200_mb_body_is_refused_before_it_is_read(served: Served) -> None:
    auth = {"Authorization": f"Bearer {served.token}"}
    assert_refused_unread(served.proc.pid, served.port, "/vms", auth)
    assert served.proc.poll() is None
    # And an ordinary request still works on a fresh connection.
    assert httpx.get(f"{served.url}/vms", headers=auth).status_code == 200
    answer = flood(served.port, "/vms", total=200 * MIB, headers=auth).answer
    assert b'"detail":"the request body is larger than' in answer
    assert b"connection: close" in answer.lower()


def test_query_string_tokens_are_redacted_in_every_log_line(served: Served) -> None:
    """A browser's websocket carries `?token=`: uvicorn logs the path with its query."""
    # corral_KEY_SECRET; the secret is urlsafe base64, which may itself hold "_".
    secret = served.token.split("_", 2)[2]
    assert len(secret) >= 32, served.token
    base = f"ws://127.0.0.1:{served.port}/vms/{ZERO}/console/stream"

    async def websockets() -> None:
        # A valid token: accepted (then closed: there is no such VM).
        async with connect(f"{base}?token={served.token}", open_timeout=10) as ws:
            await ws.wait_closed()
        # A wrong one, percent-encoded and in another case: refused.
        with pytest.raises(InvalidStatus):
            await connect(f"{base}?x=1&%74OKEN={served.token}x", open_timeout=10)

    asyncio.run(websockets())
    assert httpx.get(f"{served.url}/health?token={served.token}").status_code == 200
    time.sleep(0.3)
    log = served.log.read_text()
    assert secret not in log
    assert f"/vms/{ZERO}/console/stream?token=REDACTED" in log
    assert "&%74OKEN=REDACTED" in log
    assert "/health?token=REDACTED" in log


def test_websockets_take_the_token_in_a_header_or_as_subprotocols(served: Served) -> None:
    base = f"ws://127.0.0.1:{served.port}/vms/{ZERO}/console/stream"

    async def opened(**kw: object) -> str | None:
        async with connect(base, open_timeout=10, **kw) as ws:  # type: ignore[arg-type]
            await ws.wait_closed()
            return ws.subprotocol

    header = {"Authorization": f"Bearer {served.token}"}
    assert asyncio.run(opened(additional_headers=header)) is None
    assert asyncio.run(opened(subprotocols=["bearer", served.token])) == "bearer"
    for refused in ({"subprotocols": ["bearer", served.token + "x"]}, {}):
        with pytest.raises(InvalidStatus):
            asyncio.run(opened(**refused))


def test_listening_beyond_loopback_warns_like_the_node(ctx: Context) -> None:
    url = "postgresql+psycopg://corral@127.0.0.1:1/corral"  # fails right after the warning
    proc = corral(ctx, "serve", "--listen", "0.0.0.0:8000", "--database", url, timeout=60)
    assert proc.returncode != 0
    assert (
        "warning: listening on 0.0.0.0: the control plane speaks plain HTTP, so its tokens "
        "travel in clear text" in proc.stderr
    )
    quiet = corral(ctx, "serve", "--listen", "127.0.0.1:8000", "--database", url, timeout=60)
    assert "warning" not in quiet.stderr


class _NotANode(http.server.BaseHTTPRequestHandler):
    """Whatever else may answer at a host's address: a page with something on it."""

    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        _NotANode.seen.append(dict(self.headers))
        body = b'{"message": "db password hunter2", "page": "<html>hunter2</html>"}'
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def not_a_node() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotANode)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _NotANode.seen.clear()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_init_of_a_host_that_is_not_a_node_reports_status_and_reason_only(
    settings: Settings, not_a_node: int
) -> None:
    """Issue #11: the /init error echoed 200 characters of what the address answered, and a
    host registered without a token sent `Authorization: Bearer ` (empty)."""
    client, _ = start_client(settings, node_factory=None)
    try:
        body = {"name": "h1", "address": "127.0.0.1", "port": not_a_node}
        host = client.post("/hosts", json=body).json()
        response = client.post(f"/hosts/{host['id']}/init")
        assert response.status_code == 502
        detail = response.json()["detail"]
        assert detail == (
            f"host 'h1' (http://127.0.0.1:{not_a_node}): "
            f"node http://127.0.0.1:{not_a_node} answered HTTP 500 Internal Server Error"
        )
        assert "hunter2" not in response.text
        assert "hunter2" not in client.get(f"/hosts/{host['id']}").text  # nor its status_reason
        assert _NotANode.seen and all("Authorization" not in h for h in _NotANode.seen)
    finally:
        client.__exit__(None, None, None)

"""Fixtures for the node tests: a node agent served from a background thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from corral.context import Context
from corral.errors import CorralError

TOKEN = "node-test-token-0123456789"


@contextlib.contextmanager
def serve_in_thread(ctx: Context, token: str, *, host: str = "127.0.0.1") -> Iterator[str]:
    """Run the node agent on a free port in a background thread; yield its base URL.

    Stopped when the block ends.
    """
    import uvicorn

    from corral.node.app import create_node_app

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_node_app(ctx, token),
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="corral-node", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise CorralError(f"the node agent did not start on {host}:{port}")
            time.sleep(0.02)
        shown = f"[{host}]" if ":" in host else host
        yield f"http://{shown}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def token() -> str:
    return TOKEN


@pytest.fixture
def agent(ctx: Context, token: str) -> Iterator[str]:
    """The base URL of a node agent for ctx's state directory, guarded by `token`."""
    with serve_in_thread(ctx, token) as url:
        yield url

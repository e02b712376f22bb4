"""Fixtures for the node tests: a node agent served from a background thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from corral.context import Context
from corral.node.serve import serve_in_thread

TOKEN = "node-test-token-0123456789"


@pytest.fixture
def token() -> str:
    return TOKEN


@pytest.fixture
def agent(ctx: Context, token: str) -> Iterator[str]:
    """The base URL of a node agent for ctx's state directory, guarded by `token`."""
    with serve_in_thread(ctx, token) as url:
        yield url

"""Fixtures of the build tests."""

from __future__ import annotations

import pytest

from corral.builds.store import BuildStore
from corral.context import Context


@pytest.fixture
def store(ctx: Context) -> BuildStore:
    """An empty build store in the test's state directory, its directories made."""
    store = BuildStore(ctx.home)
    store.ensure()
    return store

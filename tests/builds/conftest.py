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


@pytest.fixture
def bctx(vm_ctx: Context, tiny_disk_guest) -> Context:
    """A state directory holding the tiny guest with its root on its disk, as image 'tinyd'."""
    g = tiny_disk_guest
    vm_ctx.store.import_image(g.disk, "tinyd", kernel=g.kernel, initrd=g.initrd,
                              cmdline=g.cmdline)  # fmt: skip
    return vm_ctx

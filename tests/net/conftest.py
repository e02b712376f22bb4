"""The `netns` fixture: each test that makes bridges, taps, dnsmasq or nftables rules runs in
a network namespace of its own (see tests/netns.py for what it offers). Other test packages
use it by importing it into their conftest: `from netns import netns  # noqa: F401`, or by
adding a fixture of their own around `netns.Netns`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from netns import Netns


@pytest.fixture
def netns() -> Iterator[Netns]:
    """A fresh network namespace for this test (see the module docstring)."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    ns = Netns(f"crlt-{uuid.uuid4().hex[:10]}")
    try:
        yield ns
    finally:
        ns.close()

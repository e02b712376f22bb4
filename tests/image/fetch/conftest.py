"""Fixtures for the fetch tests; the machinery lives in support.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from image.fetch.support import Server, closed_port_url, make_qcow2, serve


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with serve(tmp_path / "www") as srv:
        yield srv


@pytest.fixture
def closed_url() -> str:
    return closed_port_url()


@pytest.fixture(scope="session")
def qcow2_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_qcow2(tmp_path_factory.mktemp("img") / "disk.qcow2").read_bytes()


@pytest.fixture(scope="session")
def other_qcow2_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_qcow2(tmp_path_factory.mktemp("img") / "other.qcow2", seed=1).read_bytes()

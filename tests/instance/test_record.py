"""Instance names: hostnames, matched as a whole (a final newline is not a hostname)."""

from __future__ import annotations

import pytest

from corral.errors import InvalidInput
from corral.instance.record import check_instance_name


@pytest.mark.parametrize("name", ["web1", "a", "a-b-1", "x" * 63])
def test_valid_names(name: str) -> None:
    assert check_instance_name(name) == name


@pytest.mark.parametrize(
    "name", ["web1\n", "\nweb1", "Web1", "-web", "web-", "a_b", "a.b", "", "x" * 64, "../x"]
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidInput, match="not a valid hostname"):
        check_instance_name(name)

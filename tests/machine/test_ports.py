import socket

import pytest

from corral.errors import Conflict
from corral.machine.ports import pick_ports, port_free


def test_picks_distinct_ports_in_range_avoiding_reserved() -> None:
    ports = pick_ports((18000, 18010), reserved={18000, 18001}, count=3, start=18000)
    assert len(set(ports)) == 3
    assert all(18002 <= p <= 18010 for p in ports)


def test_skips_a_port_bound_by_someone_else() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        assert not port_free(busy)
        # A range, not just busy + 1: another process may hold the next port by chance.
        (port,) = pick_ports((busy, busy + 64), reserved=(), count=1, start=busy)
        assert busy < port <= busy + 64


def test_range_exhausted_is_a_conflict() -> None:
    with pytest.raises(Conflict, match="no free port"):
        pick_ports((18000, 18001), reserved={18000, 18001}, count=1)

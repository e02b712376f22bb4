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


def test_claims_count_while_their_holder_exists(tmp_path) -> None:
    from corral.layout import Home
    from corral.machine.ports import PortClaims

    home = Home(tmp_path)
    claims = PortClaims(home)
    assert claims.held() == {}
    kept, gone = tmp_path / "instances" / "kept", tmp_path / "builds" / "run" / "1-cafe"
    kept.mkdir(parents=True)
    gone.mkdir(parents=True)
    claims.claim(kept, [18000, 18001])
    claims.claim(gone, [18002])
    assert claims.held() == {18000: kept, 18001: kept, 18002: gone}
    gone.rmdir()  # a VM frees its ports by being removed
    assert claims.held() == {18000: kept, 18001: kept}
    assert sorted(p.name for p in home.port_claims.iterdir()) == ["18000", "18001"]
    # Picking skips what is claimed (a range: someone else may hold some of it), and claims
    # what it picks.
    picked = claims.pick(gone.parent, (18000, 18063), 2)
    assert len(set(picked)) == 2 and not {18000, 18001} & set(picked)
    assert set(claims.held()) == {18000, 18001, *picked}

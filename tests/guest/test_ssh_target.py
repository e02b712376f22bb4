"""SshTarget: a forward on this host, or a guest's own address on a network (only an address)."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.errors import InvalidInput
from corral.guest.ssh import SshTarget

KEY = Path("/nonexistent/key")


def test_a_forward_and_an_address_on_a_network() -> None:
    forward = SshTarget(2222, "root", KEY)
    assert (forward.host, forward.port, str(forward)) == ("127.0.0.1", 2222, "127.0.0.1:2222")
    bridged = SshTarget.at("10.80.0.5", user="debian", key=KEY)
    assert (bridged.host, bridged.port, bridged.user) == ("10.80.0.5", 22, "debian")
    assert str(SshTarget.at("fd00::5", user="root", key=KEY)) == "[fd00::5]:22"


@pytest.mark.parametrize(
    "host",
    ["web1", "10.80.0.5 -oProxyCommand=touch /tmp/x", "-oProxyCommand=x", "10.80.0.300", ""],
)
def test_anything_but_an_ip_address_is_refused(host: str) -> None:
    with pytest.raises(InvalidInput, match="invalid guest address"):
        SshTarget.at(host, user="root", key=KEY)


@pytest.mark.parametrize("port", [0, 65536, -22])
def test_ports_out_of_range_are_refused(port: int) -> None:
    with pytest.raises(InvalidInput, match="invalid ssh port"):
        SshTarget.at("10.80.0.5", user="root", key=KEY, port=port)

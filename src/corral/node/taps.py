"""NICs on TAP devices that already exist on this host (qarax's `networks[].tap`).

The control plane names the tap; the node checks the name (TapNic's strict pattern) before it
asks the kernel about it, and asks through a socket of the caller's network namespace (not
/sys, which shows the namespace sysfs was mounted in), so a node run with `ip netns exec` or
on a setns'd thread sees its own interfaces.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from corral.errors import InvalidInput
from corral.machine.spec import TapNic
from corral.node.protocol import NodeNic
from corral.seed.netconfig import NicConfig, render_network_config


def tap_nics(nics: Sequence[NodeNic]) -> tuple[TapNic, ...]:
    """The machine's NICs, each on a tap that exists now; InvalidInput naming a missing one."""
    taps = tuple(TapNic(nic.tap, nic.mac.lower(), nic.mtu) for nic in nics)
    for nic in taps:
        check_tap_exists(nic.tap)
    return taps


def check_tap_exists(name: str) -> None:
    """`name` has been checked against TapNic's pattern (no path, no NUL, <= 15 bytes)."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        raise InvalidInput(
            f"no TAP device {name!r} on this host",
            hint="create it first, e.g. ip tuntap add dev NAME mode tap",
        ) from None


def network_config(nics: Sequence[NodeNic]) -> bytes | None:
    """cloud-init network-config for these NICs (static where addresses are given)."""
    if not nics:
        return None
    return render_network_config(
        [
            NicConfig(
                mac=nic.mac.lower(),
                addresses=tuple(nic.addresses),
                gateway4=nic.gateway4,
                nameservers=tuple(nic.nameservers),
                mtu=nic.mtu,
            )
            for nic in nics
        ]
    )

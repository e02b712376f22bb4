"""NICs on TAP devices that already exist on this host (qarax's `networks[].tap`).

The control plane names the tap; the node checks the name (TapNic's strict pattern) before it
asks the kernel about it (instance.options.check_tap_exists), before anything is made.
"""

from __future__ import annotations

from collections.abc import Sequence

from corral.instance.options import check_tap_exists
from corral.machine.spec import TapNic
from corral.node.protocol import NodeNic
from corral.seed.netconfig import NicConfig, render_network_config

__all__ = ["check_tap_exists", "network_config", "tap_nics"]


def tap_nics(nics: Sequence[NodeNic]) -> tuple[TapNic, ...]:
    """The machine's NICs, each on a tap that exists now; InvalidInput naming a missing one."""
    taps = tuple(TapNic(nic.tap, nic.mac.lower(), nic.mtu) for nic in nics)
    for nic in taps:
        check_tap_exists(nic.tap)
    return taps


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

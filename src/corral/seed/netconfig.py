"""cloud-init network-config (version 2) for VMs on taps: a pure function of typed NICs.

Each NIC is matched by its MAC address, so the order the guest's kernel names them in does
not matter. A NIC with addresses is configured statically (the same addresses are DHCP
reservations on a managed network, so guests that ignore network-config still get them); one
without uses DHCP.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from corral.errors import InvalidInput


@dataclass(frozen=True)
class NicConfig:
    """How the guest configures one NIC."""

    mac: str
    addresses: tuple[str, ...] = ()  # CIDR, e.g. "10.80.0.5/24" or "fd00::5/64"; empty: DHCP
    gateway4: str | None = None
    gateway6: str | None = None
    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    mtu: int | None = None

    def __post_init__(self) -> None:
        for cidr in self.addresses:
            try:
                ipaddress.ip_interface(cidr)
            except ValueError:
                raise InvalidInput(
                    f"invalid address {cidr!r}: expected e.g. 10.80.0.5/24"
                ) from None
        for addr in (self.gateway4, self.gateway6, *self.nameservers):
            if addr is not None:
                try:
                    ipaddress.ip_address(addr)
                except ValueError:
                    raise InvalidInput(f"invalid address {addr!r}") from None


def _ethernet(nic: NicConfig, index: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"match": {"macaddress": nic.mac}, "set-name": f"eth{index}"}
    if nic.addresses:
        entry["addresses"] = list(nic.addresses)
        if nic.gateway4:
            entry["gateway4"] = nic.gateway4
        if nic.gateway6:
            entry["gateway6"] = nic.gateway6
    else:
        entry["dhcp4"] = True
    if nic.nameservers or nic.search:
        dns: dict[str, Any] = {}
        if nic.nameservers:
            dns["addresses"] = list(nic.nameservers)
        if nic.search:
            dns["search"] = list(nic.search)
        entry["nameservers"] = dns
    if nic.mtu is not None:
        entry["mtu"] = nic.mtu
    return entry


def render_network_config(nics: Sequence[NicConfig]) -> bytes:
    """The network-config file for a VM whose NICs are `nics`, in order (eth0, eth1, ...)."""
    document = {
        "version": 2,
        "ethernets": {f"eth{i}": _ethernet(nic, i) for i, nic in enumerate(nics)},
    }
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False).encode()

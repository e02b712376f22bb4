"""instance/networking.py's pure part: the network-config corral writes for --network NICs."""

from __future__ import annotations

import yaml

from corral.instance.networking import network_config
from corral.instance.options import NetworkNic
from corral.net.model import Attachment


def attachment(network: str, mac: str, ipv4: str, gateway: str | None) -> Attachment:
    return Attachment(network=network, tap="crt0123456789ab", mac=mac, ipv4=ipv4, prefix=24,
                      gateway=gateway, dns=ipv4.rsplit(".", 1)[0] + ".1", domain="corral",
                      mtu=1400)  # fmt: skip


LAN = attachment("lan", "52:54:00:00:00:01", "10.80.0.5", "10.80.0.1")
BACK = attachment("back", "52:54:00:00:00:02", "10.81.0.7", "10.81.0.1")
ISOLATED = attachment("iso", "52:54:00:00:00:03", "10.82.0.9", None)


def test_a_requested_address_is_static_with_the_networks_gateway_dns_and_mtu() -> None:
    doc = yaml.safe_load(network_config([NetworkNic("lan", ip="10.80.0.5")], [LAN]))
    assert doc == {
        "version": 2,
        "ethernets": {
            "eth0": {
                "match": {"macaddress": LAN.mac},
                "set-name": "eth0",
                "addresses": ["10.80.0.5/24"],
                "gateway4": "10.80.0.1",
                "nameservers": {"addresses": ["10.80.0.1"], "search": ["corral"]},
                "mtu": 1400,
            }
        },
    }


def test_nics_without_an_address_use_dhcp_and_one_default_route_is_set() -> None:
    doc = yaml.safe_load(
        network_config(
            [NetworkNic("iso", "10.82.0.9"), NetworkNic("lan"), NetworkNic("back", "10.81.0.7")],
            [ISOLATED, LAN, BACK],
        )
    )
    iso, lan, back = doc["ethernets"].values()
    assert "gateway4" not in iso and iso["addresses"] == ["10.82.0.9/24"]  # isolated: no route
    assert lan == {"match": {"macaddress": LAN.mac}, "set-name": "eth1", "dhcp4": True,
                   "mtu": 1400}  # fmt: skip
    assert "gateway4" not in back  # the DHCP NIC before it routes

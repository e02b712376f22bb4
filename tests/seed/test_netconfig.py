import pytest
import yaml

from corral.errors import InvalidInput
from corral.seed.netconfig import NicConfig, render_network_config


def test_static_and_dhcp_nics_are_matched_by_mac_in_order() -> None:
    text = render_network_config(
        [
            NicConfig(
                "52:54:00:00:00:01",
                addresses=("10.80.0.5/24",),
                gateway4="10.80.0.1",
                nameservers=("10.80.0.1",),
                search=("corral",),
                mtu=1400,
            ),
            NicConfig("52:54:00:00:00:02"),
        ]
    )
    document = yaml.safe_load(text)
    assert document == {
        "version": 2,
        "ethernets": {
            "eth0": {
                "match": {"macaddress": "52:54:00:00:00:01"},
                "set-name": "eth0",
                "addresses": ["10.80.0.5/24"],
                "gateway4": "10.80.0.1",
                "nameservers": {"addresses": ["10.80.0.1"], "search": ["corral"]},
                "mtu": 1400,
            },
            "eth1": {
                "match": {"macaddress": "52:54:00:00:00:02"},
                "set-name": "eth1",
                "dhcp4": True,
            },
        },
    }


@pytest.mark.parametrize(
    "changes",
    [{"addresses": ("10.80.0.5/33",)}, {"gateway4": "10.80.0.1\nrm"}, {"nameservers": ("x",)}],
)
def test_bad_addresses_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        NicConfig("52:54:00:00:00:01", **changes)  # type: ignore[arg-type]  # the test's dict

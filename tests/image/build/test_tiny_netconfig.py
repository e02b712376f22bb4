"""The tiny guest's network-config reader (tiny-netconfig.awk), run by busybox's awk as in the
guest: it flattens the YAML corral writes, and the forms people write by hand, alike."""

from __future__ import annotations

import subprocess
from importlib import resources
from pathlib import Path

from corral.seed.netconfig import NicConfig, render_network_config

AWK = resources.files("corral.image.recipes").joinpath("tiny-netconfig.awk")


def flatten(busybox: Path, text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    proc = subprocess.run([busybox, "awk", AWK.read_text()], input=data, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode().splitlines()


def test_what_corral_renders(busybox: Path) -> None:
    static = NicConfig("52:54:00:00:00:01", ("10.80.0.5/24", "fd00::5/64"), "10.80.0.1",
                       "fd00::1", ("10.80.0.1",), ("corral", "lab"), 1400)  # fmt: skip
    dhcp = NicConfig("52:54:00:00:00:02", mtu=9000)
    assert flatten(busybox, render_network_config([static, dhcp])) == [
        "version 2",
        "ethernets/eth0/match/macaddress 52:54:00:00:00:01",
        "ethernets/eth0/set-name eth0",
        "ethernets/eth0/addresses/0 10.80.0.5/24",
        "ethernets/eth0/addresses/1 fd00::5/64",
        "ethernets/eth0/gateway4 10.80.0.1",
        "ethernets/eth0/gateway6 fd00::1",
        "ethernets/eth0/nameservers/addresses/0 10.80.0.1",
        "ethernets/eth0/nameservers/search/0 corral",
        "ethernets/eth0/nameservers/search/1 lab",
        "ethernets/eth0/mtu 1400",
        "ethernets/eth1/match/macaddress 52:54:00:00:00:02",
        "ethernets/eth1/set-name eth1",
        "ethernets/eth1/dhcp4 true",
        "ethernets/eth1/mtu 9000",
    ]


HAND_WRITTEN = """\
# written by hand
network:
  version: 2
  ethernets:
    "lan":   # a quoted key
      match: {macaddress: "52:54:00:AA:bb:01"}
      set-name: eth0
      addresses:
      - 10.80.0.5/24
      - 'fd00::5/64'
      nameservers: {addresses: [10.80.0.1, '1.1.1.1'], search: [corral]}
      routes:
        - to: 10.90.0.0/16
          via: 10.80.0.254
        - {to: default, via: "10.80.0.1"}
      description: it's # not a comment inside quotes? no: a comment after a blank
"""


def test_flow_collections_quotes_comments_and_the_network_key(busybox: Path) -> None:
    assert flatten(busybox, HAND_WRITTEN) == [
        "network/version 2",
        "network/ethernets/lan/match/macaddress 52:54:00:AA:bb:01",
        "network/ethernets/lan/set-name eth0",
        "network/ethernets/lan/addresses/0 10.80.0.5/24",
        "network/ethernets/lan/addresses/1 fd00::5/64",
        "network/ethernets/lan/nameservers/addresses/0 10.80.0.1",
        "network/ethernets/lan/nameservers/addresses/1 1.1.1.1",
        "network/ethernets/lan/nameservers/search/0 corral",
        "network/ethernets/lan/routes/0/to 10.90.0.0/16",
        "network/ethernets/lan/routes/0/via 10.80.0.254",
        "network/ethernets/lan/routes/1/to default",
        "network/ethernets/lan/routes/1/via 10.80.0.1",
        "network/ethernets/lan/description it's",
    ]


def test_the_e2e_example_in_flow_style(busybox: Path) -> None:
    text = (
        "version: 2\nethernets:\n  eth0:\n    addresses: [10.0.2.15/24]\n    gateway4: 10.0.2.2\n"
        "    nameservers: {addresses: [10.0.2.3]}\n    mtu: 1400\n"
    )
    assert flatten(busybox, text) == [
        "version 2",
        "ethernets/eth0/addresses/0 10.0.2.15/24",
        "ethernets/eth0/gateway4 10.0.2.2",
        "ethernets/eth0/nameservers/addresses/0 10.0.2.3",
        "ethernets/eth0/mtu 1400",
    ]


def test_a_path_is_always_one_word(busybox: Path) -> None:
    """Keys become one shell word ([A-Za-z0-9_.:-]); what is not understood is skipped."""
    text = ('version: 2\nethernets:\n  "eth0 $(reboot)":\n    dhcp4: true\n'
            "    script: |\n      rm -rf /\n    mtu: 1500\n")  # fmt: skip
    assert flatten(busybox, text) == [
        "version 2",
        "ethernets/eth0___reboot_/dhcp4 true",
        "ethernets/eth0___reboot_/mtu 1500",
    ]

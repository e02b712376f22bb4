"""Pure rules of corral.net: names, addresses, dnsmasq's configuration, nftables' document,
the capability check. No namespace needed."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from corral.errors import InvalidInput
from corral.net import caps, dnsmasq, nft
from corral.net.model import (
    AttachmentRecord,
    Published,
    bridge_name,
    check_address,
    check_domain,
    check_mac,
    check_name,
    define,
    parse_ipv6,
    parse_subnet,
    pick_subnet,
    random_mac,
    random_ula,
    reservable,
    tap_name,
)

NET = ipaddress.IPv4Network


def test_bridge_and_tap_names_fit_ifnamsiz() -> None:
    assert bridge_name("web") == "crl-web"
    assert bridge_name("a" * 11) == "crl-" + "a" * 11
    long_a, long_b = bridge_name("a" * 32), bridge_name("a" * 31 + "b")
    assert len(long_a) == len(long_b) == 15 and long_a != long_b
    assert long_a.startswith("crl-")
    taps = {tap_name("h1", "web", f"vm{i}") for i in range(100)}
    assert len(taps) == 100 and all(len(t) == 15 and t.startswith("crt") for t in taps)
    assert tap_name("h1", "web", "vm") != tap_name("h2", "web", "vm")


@pytest.mark.parametrize("name", ["Web", "-web", "web-", "a_b", "a.b", "a/b", "", "a\n",
                                  "x" * 33, "é"])  # fmt: skip
def test_bad_network_names(name: str) -> None:
    with pytest.raises(InvalidInput, match="invalid network name"):
        check_name(name)


@pytest.mark.parametrize(
    "text",
    ["10.0.0.1/24", "10.0.0.0/8", "10.0.0.0/30", "8.8.8.0/24", "127.0.0.0/24", "169.254.0.0/24",
     "x", "10.0.0.0/24\n"],
)  # fmt: skip
def test_bad_subnets(text: str) -> None:
    with pytest.raises(InvalidInput, match="invalid subnet"):
        parse_subnet(text)


def test_ipv6_must_be_a_ula_64() -> None:
    assert str(parse_ipv6("fd12:3456:789a::/64")) == "fd12:3456:789a::/64"
    for bad in ("2001:db8::/64", "fd00::/56", "fd00::1/64", "x"):
        with pytest.raises(InvalidInput):
            parse_ipv6(bad)
    ula = random_ula()
    assert ula.prefixlen == 64 and str(ula).startswith("fd") and parse_ipv6(str(ula)) == ula


def test_domain_and_mac_checks() -> None:
    assert check_domain("lab.example") == "lab.example"
    for bad in ("", "a..b", "-a", "a_b", "a/b", "a b", "a\nserver=1.1.1.1"):
        with pytest.raises(InvalidInput):
            check_domain(bad)
    assert check_mac("52:54:00:AB:cd:EF") == "52:54:00:ab:cd:ef"
    for bad in ("52:54:00:ab:cd", "52-54-00-ab-cd-ef", "01:00:5e:00:00:01", "zz:54:00:ab:cd:ef"):
        with pytest.raises(InvalidInput):
            check_mac(bad)
    assert check_mac(random_mac()).startswith("52:54:00:")


def test_define_splits_the_subnet() -> None:
    rec = define("web", NET("10.80.0.0/24"))
    assert (rec.gateway, rec.dhcp_start, rec.dhcp_end) == ("10.80.0.1", "10.80.0.128",
                                                           "10.80.0.254")  # fmt: skip
    pool = [str(a) for a in reservable(rec)]
    assert pool[0] == "10.80.0.2" and pool[-1] == "10.80.0.127"
    assert define("i", NET("10.80.0.0/24"), isolated=True).nat is False
    with pytest.raises(InvalidInput, match="not a host address"):
        check_address(rec, "10.80.1.1")
    with pytest.raises(InvalidInput, match="gateway"):
        check_address(rec, "10.80.0.1")
    assert str(check_address(rec, "10.80.0.200")) == "10.80.0.200"


def test_pick_subnet_skips_what_is_taken() -> None:
    assert pick_subnet([]) == NET("10.80.0.0/24")
    taken = [NET("10.80.0.0/23"), NET("10.80.2.128/25")]
    assert pick_subnet(taken) == NET("10.80.3.0/24")
    assert pick_subnet([NET("10.80.0.0/12")]) == NET("10.96.0.0/24")


def test_dnsmasq_conf_nat_and_isolated() -> None:
    web = define("web", NET("10.80.0.0/24"), domain="lab", mtu=1400)
    conf = dnsmasq.render_conf(web)
    assert "interface=crl-web\n" in conf and "bind-interfaces\n" in conf
    assert "except-interface=lo\n" in conf and "local=/lab/\n" in conf
    assert "dhcp-range=10.80.0.128,10.80.0.254,255.255.255.0,12h\n" in conf
    assert "dhcp-option=option:router,10.80.0.1\n" in conf
    assert "dhcp-option=option:mtu,1400\n" in conf and "no-resolv" not in conf
    iso = define("iso", NET("10.81.0.0/24"), isolated=True,
                 ipv6=ipaddress.IPv6Network("fd00:1::/64"))  # fmt: skip
    conf = dnsmasq.render_conf(iso)
    assert "dhcp-option=option:router\n" in conf and "no-resolv\n" in conf
    assert "enable-ra\n" in conf and "ra-param=crl-iso,mtu:1500,60,0\n" in conf
    att = AttachmentRecord("vm1", "web", "crt0", "52:54:00:00:00:01", "10.80.0.2", "vm1")
    assert dnsmasq.render_dhcp_hosts([att]) == "52:54:00:00:00:01,10.80.0.2,vm1\n"
    assert dnsmasq.render_dns_hosts(web, [att]) == "10.80.0.2 vm1.lab vm1\n"


def _rules(doc: dict, chain: str) -> list[list[dict]]:
    return [c["add"]["rule"]["expr"] for c in doc["nftables"]
            if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"] == chain]  # fmt: skip


def test_nft_document() -> None:
    table = {"table": {"family": "inet", "name": "corral"}}
    assert nft.ruleset([], []) == {"nftables": [{"add": table}, {"delete": table}]}
    web = define("web", NET("10.80.0.0/24")).replace(state="ready")
    iso = define("iso", NET("10.81.0.0/24"), isolated=True).replace(state="ready")
    att = AttachmentRecord("vm1", "web", "crt0", "52:54:00:00:00:01", "10.80.0.2", "vm1",
                           state="ready",
                           published=(Published("127.0.0.1", 8080, "10.80.0.2", 80),))  # fmt: skip
    doc = nft.ruleset([web, iso], [att])
    assert doc["nftables"][:3] == [{"add": table}, {"delete": table}, {"add": table}]
    post = _rules(doc, "postrouting")
    assert len(post) == 2  # web's masquerade, and loopback sources of its published port
    assert post[0][0]["match"]["right"] == {"prefix": {"addr": "10.80.0.0", "len": 24}}
    fwd = _rules(doc, "forward")
    between = [r for r in fwd if r[0]["match"]["right"] == {"set": ["crl-web", "crl-iso"]}]
    assert between and between[0][-1] == {"drop": None}
    assert [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "crl-iso"}},
            {"drop": None}] in fwd  # fmt: skip
    guard = _rules(doc, "input")
    assert guard[-1][-1] == {"drop": None} and "127.0.0.0" in str(guard[-1])
    for chain in ("prerouting", "output"):
        (rule,) = _rules(doc, chain)
        assert rule[-1] == {"dnat": {"family": "ip", "addr": "10.80.0.2", "port": 80}}


def test_capability_from_proc_status(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t000001ffffffffff\n")
    assert caps.has_net_admin(status)
    status.write_text("Name:\tx\nCapEff:\t0000000000000000\n")
    assert not caps.has_net_admin(status)
    status.write_text(f"CapEff:\t{(1 << 12):016x}\n")
    assert caps.has_net_admin(status)
    assert not caps.has_net_admin(tmp_path / "missing")

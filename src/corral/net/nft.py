"""corral's one nftables table, `inet corral`, built whole from the networks' records.

The document is pure data (nftables' JSON schema) and is applied with `nft -j -f -` in one
transaction: the table is added (a no-op if it exists), deleted and built again, so what the
kernel holds is exactly what the records say and no other table is ever touched. With no
network left the table is deleted and the ruleset is what it was before corral came.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from typing import Any

from corral.errors import CommandFailed
from corral.net.caps import NeedsNetAdmin
from corral.net.model import AttachmentRecord, NetworkRecord
from corral.run import require, run

FAMILY = "inet"
TABLE = "corral"
_T = {"family": FAMILY, "table": TABLE}


def _match(left: Any, right: Any, op: str = "==") -> dict[str, Any]:
    """A comparison; flags (ct state, ct status) need op "in": "==" would demand all of them."""
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def _payload(protocol: str, field: str) -> dict[str, Any]:
    return {"payload": {"protocol": protocol, "field": field}}


def _prefix(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> dict[str, Any]:
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _rule(chain: str, *expr: dict[str, Any]) -> dict[str, Any]:
    return {"add": {"rule": {**_T, "chain": chain, "expr": list(expr)}}}


def _chain(name: str, kind: str, hook: str, prio: int) -> dict[str, Any]:
    return {"add": {"chain": {**_T, "name": name, "type": kind, "hook": hook, "prio": prio,
                              "policy": "accept"}}}  # fmt: skip


def ruleset(
    networks: Sequence[NetworkRecord], attached: Sequence[AttachmentRecord]
) -> dict[str, Any]:
    """The whole table for these networks and published ports (empty networks: no table)."""
    table = {"table": {"family": FAMILY, "name": TABLE}}
    cmds: list[dict[str, Any]] = [{"add": table}, {"delete": table}]
    if not networks:
        return {"nftables": cmds}
    cmds += [
        {"add": table},
        _chain("prerouting", "nat", "prerouting", -100),
        _chain("output", "nat", "output", -100),
        _chain("postrouting", "nat", "postrouting", 100),
        _chain("forward", "filter", "forward", 0),
        _chain("input", "filter", "input", 0),
    ]
    bridges = [n.bridge for n in networks]
    by_name = {n.name: n for n in networks}
    # A VM never opens a connection to the host's loopback, even on a bridge where a port
    # published on 127.0.0.1 made corral turn route_localnet on (replies to those pass).
    from_vms = _match(_meta("iifname"), {"set": bridges})
    to_loopback = _match(_payload("ip", "daddr"), _prefix(ipaddress.IPv4Network("127.0.0.0/8")))
    replies = _match({"ct": {"key": "state"}}, ["established", "related"], "in")
    cmds.append(_rule("input", from_vms, to_loopback, replies, {"accept": None}))
    cmds.append(_rule("input", from_vms, to_loopback, {"drop": None}))
    for net in networks:
        # Within one bridge: always allowed (only seen here with br_netfilter).
        cmds.append(_rule("forward", _match(_meta("iifname"), net.bridge),
                          _match(_meta("oifname"), net.bridge), {"accept": None}))  # fmt: skip
    # Between two different corral bridges: never (isolation between networks).
    cmds.append(_rule("forward", _match(_meta("iifname"), {"set": bridges}),
                      _match(_meta("oifname"), {"set": bridges}), {"drop": None}))  # fmt: skip
    for net in networks:
        if net.isolated:
            cmds.append(_rule("forward", _match(_meta("iifname"), net.bridge), {"drop": None}))
            cmds.append(_rule("forward", _match(_meta("oifname"), net.bridge), {"drop": None}))
            continue
        if not net.nat:
            continue
        subnets: list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]] = [
            ("ip", net.network)
        ]
        if net.ipv6:
            subnets.append(("ip6", ipaddress.IPv6Network(net.ipv6)))
        for proto, subnet in subnets:
            cmds.append(_rule("postrouting", _match(_payload(proto, "saddr"), _prefix(subnet)),
                              _match(_meta("oifname"), net.bridge, "!="),
                              {"masquerade": None}))  # fmt: skip
        # From outside into a NAT network: replies and published ports only.
        into = _match(_meta("oifname"), net.bridge)
        published = _match({"ct": {"key": "status"}}, "dnat", "in")
        cmds.append(_rule("forward", into, replies, {"accept": None}))
        cmds.append(_rule("forward", into, published, {"accept": None}))
        cmds.append(_rule("forward", _match(_meta("oifname"), net.bridge), {"drop": None}))
    local_bridges = []
    for att in attached:
        owner_net = by_name.get(att.network)
        if owner_net is None or att.state != "ready":
            continue
        for pub in att.published:
            addr = ipaddress.IPv4Address(pub.host_addr)
            dnat = {"dnat": {"family": "ip", "addr": pub.guest_ip, "port": pub.guest_port}}
            match = []
            if not addr.is_unspecified:
                match.append(_match(_payload("ip", "daddr"), str(addr)))
            else:
                match.append(_match({"fib": {"result": "type", "flags": ["daddr"]}}, "local"))
            match.append(_match(_payload(pub.proto, "dport"), pub.host_port))
            cmds.append(_rule("prerouting", *match, dnat))
            cmds.append(_rule("output", *match, dnat))
            if addr.is_loopback or addr.is_unspecified:
                local_bridges.append(owner_net.bridge)
    for bridge in dict.fromkeys(local_bridges):
        # A published port reached on 127.0.0.1 leaves with a loopback source the VM cannot
        # answer: give it the bridge's address instead.
        cmds.append(_rule("postrouting", _match(_meta("oifname"), bridge),
                          _match(_payload("ip", "saddr"), _prefix(
                              ipaddress.IPv4Network("127.0.0.0/8"))),
                          {"masquerade": None}))  # fmt: skip
    return {"nftables": cmds}


def apply(document: dict[str, Any]) -> None:
    """Replace corral's table in one transaction."""
    nft = require("nft", package="nftables")
    try:
        run([str(nft), "-j", "-f", "-"], input=json.dumps(document).encode(), timeout=30)
    except CommandFailed as exc:
        if "Operation not permitted" in exc.stderr:
            raise NeedsNetAdmin() from exc
        raise


def table_exists() -> bool:
    nft = require("nft", package="nftables")
    proc = run([str(nft), "-j", "list", "table", FAMILY, TABLE], check=False, timeout=30)
    return proc.returncode == 0

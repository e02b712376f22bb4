"""Managed networks' lifecycle: create, up, rm, list, inspect, and reconcile.

Every change runs under the networks lock (`Home.networks_lock`). A network's record is written
with state 'creating' before anything exists on the host and becomes 'ready' once its bridge,
dnsmasq and rules are all in place; `reconcile`, run first by every network command (and by the
instance layer before it attaches a VM), removes what a killed command half-made.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.errors import Conflict, CorralError
from corral.fsutil import locked
from corral.layout import Home, NetworkFiles
from corral.net import dnsmasq, links, nft, registry
from corral.net.caps import require_net_admin
from corral.net.model import (
    DEFAULT_DOMAIN,
    DEFAULT_MTU,
    AttachmentRecord,
    NetworkRecord,
    check_name,
    define,
    overlapping,
    parse_ipv6,
    parse_subnet,
    pick_subnet,
    random_ula,
)


@dataclass(frozen=True)
class CreateOptions:
    subnet: str | None = None  # None: a free 10.x.y.0/24
    ipv6: str | None = None  # a fd..::/64, "auto" for a random one, None or "none" for none
    nat: bool = True
    isolated: bool = False
    domain: str = DEFAULT_DOMAIN
    mtu: int = DEFAULT_MTU


def create(home: Home, name: str, options: CreateOptions) -> NetworkRecord:
    """Create a network; every option is checked before anything on the host is touched."""
    ipv6 = _ipv6(options.ipv6)
    subnet = parse_subnet(options.subnet) if options.subnet else None

    def record_for(net: ipaddress.IPv4Network) -> NetworkRecord:
        return define(name, net, ipv6=ipv6, nat=options.nat, isolated=options.isolated,
                      domain=options.domain, mtu=options.mtu)  # fmt: skip

    record_for(subnet or ipaddress.IPv4Network("10.0.0.0/24"))  # raises on a bad option
    require_net_admin()
    with locked(home.networks_lock):
        reconcile_locked(home)
        files = home.network(name)
        if files.dir.exists():
            raise Conflict(f"network {name!r} already exists")
        others = [r for _, r in registry.ready_networks(home)]
        routes = links.routed_subnets()
        if subnet is None:
            subnet = pick_subnet([*routes, *(r.network for r in others)])
        else:
            _check_free(subnet, others, routes)
        record = record_for(subnet)
        if ipv6 is not None:
            for other in others:
                if other.ipv6 and ipaddress.IPv6Network(other.ipv6).overlaps(ipv6):
                    raise Conflict(f"IPv6 subnet {ipv6} is network {other.name}'s")
        if links.exists(record.bridge):
            raise Conflict(f"interface {record.bridge} already exists on this host")
        registry.make_dir(files.dir)
        registry.save(files, record)  # 'creating': what follows is undone if we die
        try:
            _bring_up(home, files, record, [*others, record])
        except BaseException:
            _teardown(home, files, record)
            apply_rules(home)
            raise
        record = record.replace(state="ready")
        registry.save(files, record)
    return record


def _ipv6(text: str | None) -> ipaddress.IPv6Network | None:
    if text is None or text == "none":
        return None
    if text == "auto":
        return random_ula()
    return parse_ipv6(text)


def _check_free(
    subnet: ipaddress.IPv4Network,
    others: list[NetworkRecord],
    routes: list[ipaddress.IPv4Network],
) -> None:
    for other in others:
        if subnet.overlaps(other.network):
            raise Conflict(f"subnet {subnet} overlaps network {other.name} ({other.subnet})")
    clash = overlapping(subnet, routes)
    if clash is not None:
        raise Conflict(f"subnet {subnet} overlaps {clash}, a route this host already has")


def _bring_up(
    home: Home, files: NetworkFiles, record: NetworkRecord, networks: list[NetworkRecord]
) -> None:
    """Make the host match a network's record: bridge, addresses, dnsmasq, forwarding, rules.
    Idempotent: it also completes a network whose parts a host restart took away."""
    gateway = (record.gateway, record.network.prefixlen)
    addrs = [gateway] + ([(record.gateway6, 64)] if record.gateway6 else [])
    links.make_bridge(record.bridge, registry.bridge_alias(home, record.name), record.mtu, addrs)
    attached = registry.ready_attachments(files)
    for att in attached:
        links.make_tap(att.tap, registry.tap_alias(home, record.name, att.owner), record.bridge,
                       record.mtu, att.uid, att.gid)  # fmt: skip
    dnsmasq.write_files(files, record, attached)
    if record.nat:
        _enable_forwarding(record.ipv6 is not None)
    apply_rules(home, networks)
    if dnsmasq.running(files) is None:
        dnsmasq.start(files)


def _enable_forwarding(ipv6: bool) -> None:
    """NAT needs the kernel to route; this namespace's setting is turned on and left on."""
    paths = [Path("/proc/sys/net/ipv4/ip_forward")]
    if ipv6:
        paths.append(Path("/proc/sys/net/ipv6/conf/all/forwarding"))
    for path in paths:
        if path.read_text().strip() != "1":
            path.write_text("1\n")


def apply_rules(home: Home, networks: list[NetworkRecord] | None = None) -> None:
    if networks is None:
        networks = [r for _, r in registry.ready_networks(home)]
    attached: list[AttachmentRecord] = []
    for net in networks:
        attached += registry.ready_attachments(home.network(net.name))
    nft.apply(nft.ruleset(networks, attached))


def up(home: Home, name: str | None = None) -> list[NetworkRecord]:
    """Recreate what a host restart took away (bridge, dnsmasq, rules) for one or all networks."""
    require_net_admin()
    with locked(home.networks_lock):
        reconcile_locked(home)
        ready = registry.ready_networks(home)
        if name is not None:
            ready = [registry.load_named(home, name)]
        every = [r for _, r in registry.ready_networks(home)]
        for files, record in ready:
            _bring_up(home, files, record, every)
        return [r for _, r in ready]


def ensure_up(home: Home, name: str) -> tuple[NetworkFiles, NetworkRecord]:
    """Under the lock: bring a network up when any of its parts is missing."""
    files, record = registry.load_named(home, name)
    if not (links.exists(record.bridge) and dnsmasq.running(files) and nft.table_exists()):
        _bring_up(home, files, record, [r for _, r in registry.ready_networks(home)])
    return files, record


def remove(home: Home, name: str) -> None:
    check_name(name)
    require_net_admin()
    with locked(home.networks_lock):
        reconcile_locked(home)
        files, record = registry.load_named(home, name)
        owners = [a.owner for a in registry.ready_attachments(files)]
        if owners:
            raise Conflict(
                f"network {name!r} is in use by {', '.join(owners)}",
                hint="remove those VMs first (corral rm)",
            )
        # 'removing' first: a kill from here on is finished by the next reconcile.
        registry.save(files, record.replace(state="removing"))
        apply_rules(home)  # the rules no longer name it (the table goes with the last network)
        _teardown(home, files, record)


def _teardown(home: Home, files: NetworkFiles, record: NetworkRecord | None) -> None:
    """Remove everything of one network from the host, then its directory."""
    dnsmasq.stop(files)
    if record is not None:
        for att in registry.attachments(files):
            links.delete_if_ours(att.tap, registry.tap_alias(home, record.name, att.owner),
                                 unmarked_kind="tun")  # fmt: skip
        links.delete_if_ours(
            record.bridge,
            registry.bridge_alias(home, record.name),
            unmarked_kind="bridge" if record.state == "creating" else None,  # never marked
        )
    shutil.rmtree(files.dir, ignore_errors=True)


def reconcile(home: Home, owner_alive: Callable[[str], bool] | None = None) -> list[str]:
    """Remove what killed commands half-made: networks still 'creating', attachments still
    'creating' (and, given `owner_alive`, those of VMs that no longer exist), and links
    carrying this state directory's alias that no record accounts for. Returns what went.
    Cheap when there is no network at all (no netlink, no nft)."""
    if not home.networks.is_dir():
        return []
    with locked(home.networks_lock):
        return reconcile_locked(home, owner_alive)


def reconcile_locked(home: Home, owner_alive: Callable[[str], bool] | None = None) -> list[str]:
    names = registry.names(home)
    if not names:  # nothing recorded: nothing of ours can be on the host (no netlink, no nft)
        return []
    removed: list[str] = []
    expected: set[str] = set()
    for name in names:
        files = home.network(name)
        registry.remove_stale_temps(files)
        try:
            record: NetworkRecord | None = registry.load(files)
        except CorralError:
            record = None
        if record is None or record.state != "ready":
            require_net_admin()
            _teardown(home, files, record)
            removed.append(f"network {name}")
            continue
        expected.add(record.bridge)
        changed = False
        for att in registry.attachments(files):
            dead = att.state != "ready" or (owner_alive is not None and not owner_alive(att.owner))
            if dead:
                require_net_admin()
                _drop_attachment(home, files, record, att)
                removed.append(f"tap {att.tap} of {att.owner}")
                changed = True
            else:
                expected.add(att.tap)
        if changed:
            dnsmasq.write_hosts(files, record, registry.ready_attachments(files))
            dnsmasq.reload(files)
    prefix = f"corral {registry.home_id(home)} "
    for ifname, _alias in links.links_with_alias_prefix(prefix):
        if ifname not in expected:
            require_net_admin()
            links.delete_if_ours(ifname, _alias)
            removed.append(f"interface {ifname}")
    if removed:
        apply_rules(home)
    return removed


def _drop_attachment(
    home: Home, files: NetworkFiles, record: NetworkRecord, att: AttachmentRecord
) -> None:
    links.delete_if_ours(att.tap, registry.tap_alias(home, record.name, att.owner),
                         unmarked_kind="tun")  # fmt: skip
    files.attachment(att.owner).unlink(missing_ok=True)


# --- views -----------------------------------------------------------------------------------


def summary(home: Home) -> list[dict[str, Any]]:
    out = []
    for files, record in registry.ready_networks(home):
        out.append({**_public(record), "up": _is_up(files, record),
                    "vms": len(registry.ready_attachments(files))})  # fmt: skip
    return out


def inspect(home: Home, name: str) -> dict[str, Any]:
    files, record = registry.load_named(home, name)
    leased = {lease.mac: lease.ip for lease in dnsmasq.leases(files)}
    vms = [
        {
            "name": a.owner,
            "tap": a.tap,
            "mac": a.mac,
            "ipv4": a.ipv4,
            "leased": leased.get(a.mac),
            "fqdn": f"{a.hostname}.{record.domain}",
            "published": [p.to_dict() for p in a.published],
        }
        for a in registry.ready_attachments(files)
    ]
    return {**_public(record), "up": _is_up(files, record), "dnsmasq_pid":
            dnsmasq.running(files), "vms": vms}  # fmt: skip


def _public(record: NetworkRecord) -> dict[str, Any]:
    data = record.to_dict()
    data.pop("state")
    data["gateway6"] = record.gateway6
    return data


def _is_up(files: NetworkFiles, record: NetworkRecord) -> bool:
    with contextlib.suppress(CorralError, OSError):
        return links.exists(record.bridge) and dnsmasq.running(files) is not None
    return False

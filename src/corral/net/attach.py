"""The host side of a VM on a managed network: its tap, its DHCP reservation and DNS name,
and the ports published to it. The instance layer calls these at launch, start and delete.

Like a network, an attachment's record is written ('creating') before its tap exists and turns
'ready' at the end, all under the networks lock; `manage.reconcile` removes what a killed
launch left.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from corral.errors import Conflict, InvalidInput, NotFound
from corral.fsutil import locked
from corral.layout import Home, NetworkFiles
from corral.net import dnsmasq, links, manage, registry
from corral.net.caps import require_net_admin
from corral.net.model import (
    Attachment,
    AttachmentRecord,
    NetworkRecord,
    Published,
    check_address,
    check_mac,
    check_name,
    check_owner,
    check_port,
    parse_publish_proto,
    random_mac,
    reservable,
    tap_name,
)


def attach(
    home: Home,
    network: str,
    owner: str,
    *,
    mac: str | None = None,
    ip: str | None = None,
    uid: int = 0,
    gid: int = 0,
) -> Attachment:
    """Give VM `owner` a tap on `network` (brought up if it is down), a MAC and a reserved
    address answered by DHCP and DNS (`owner.<domain>`). A requested address must be a free
    host address of the subnet; a requested MAC must be free on the network."""
    check_name(network)
    check_owner(owner)
    mac = check_mac(mac) if mac is not None else None
    require_net_admin()
    with locked(home.networks_lock):
        manage.reconcile_locked(home)
        files, record = manage.ensure_up(home, network)
        others = registry.attachments(files)
        if any(a.owner == owner for a in others):
            raise Conflict(f"VM {owner!r} already has a NIC on network {network!r}")
        taken = _taken_addresses(files, record, others)
        addr = _address(record, ip, taken)
        used_macs = {a.mac for a in others}
        if mac is not None and mac in used_macs:
            raise Conflict(f"MAC {mac} is taken on network {network!r}")
        while mac is None or mac in used_macs:
            mac = random_mac()
        att = AttachmentRecord(
            owner=owner,
            network=network,
            tap=tap_name(registry.home_id(home), network, owner),
            mac=mac,
            ipv4=str(addr),
            hostname=owner,
            uid=uid,
            gid=gid,
        )
        registry.save_attachment(files, att)  # 'creating': undone if we die before 'ready'
        links.make_tap(att.tap, registry.tap_alias(home, network, owner), record.bridge,
                       record.mtu, uid, gid)  # fmt: skip
        att = att.replace(state="ready")
        registry.save_attachment(files, att)
        dnsmasq.write_hosts(files, record, registry.ready_attachments(files))
        dnsmasq.reload(files)
        return view(record, att)


def _address(
    record: NetworkRecord, ip: str | None, taken: set[ipaddress.IPv4Address]
) -> ipaddress.IPv4Address:
    if ip is not None:
        addr = check_address(record, ip)
        if addr in taken:
            raise Conflict(f"address {addr} is taken on network {record.name!r}")
        return addr
    free = next((a for a in reservable(record) if a not in taken), None)
    if free is None:
        raise Conflict(f"network {record.name!r} has no free address left")
    return free


def _taken_addresses(
    files: NetworkFiles, record: NetworkRecord, others: list[AttachmentRecord]
) -> set[ipaddress.IPv4Address]:
    taken = {ipaddress.IPv4Address(record.gateway)}
    taken |= {ipaddress.IPv4Address(a.ipv4) for a in others}
    for lease in dnsmasq.leases(files):
        try:
            taken.add(ipaddress.IPv4Address(lease.ip))
        except ValueError:
            continue  # an IPv6 lease
    return taken


def view(record: NetworkRecord, att: AttachmentRecord) -> Attachment:
    return Attachment(
        network=record.name,
        tap=att.tap,
        mac=att.mac,
        ipv4=att.ipv4,
        prefix=record.network.prefixlen,
        gateway=None if record.isolated else record.gateway,
        dns=record.gateway,
        domain=record.domain,
        mtu=record.mtu,
        ipv6_prefix=record.ipv6,
    )


def attachments(home: Home, owner: str) -> list[Attachment]:
    """The NICs VM `owner` has, by network name (read only; no capability needed)."""
    check_owner(owner)
    out = []
    for files, record in registry.ready_networks(home):
        for att in registry.ready_attachments(files):
            if att.owner == owner:
                out.append(view(record, att))
    return out


def reattach(home: Home, owner: str) -> list[Attachment]:
    """Before a stopped VM starts again: bring its networks and taps back if a host restart
    took them away; returns its NICs by network name."""
    check_owner(owner)
    found = attachments(home, owner)
    if not found:
        return []
    require_net_admin()
    with locked(home.networks_lock):
        for nic in found:
            files, record = manage.ensure_up(home, nic.network)
            if not links.exists(nic.tap):
                att = next(a for a in registry.attachments(files) if a.owner == owner)
                links.make_tap(nic.tap, registry.tap_alias(home, nic.network, owner),
                               record.bridge, record.mtu, att.uid, att.gid)  # fmt: skip
    return found


def detach(home: Home, owner: str) -> list[str]:
    """Remove VM `owner`'s taps, reservations and published ports from every network.
    Returns the networks it left; nothing to do needs no capability."""
    check_owner(owner)
    holding = [
        (files, record)
        for files, record in registry.ready_networks(home)
        if files.attachment(owner).exists()
    ]
    if not holding:
        return []
    require_net_admin()
    left = []
    with locked(home.networks_lock):
        leaving = []
        for files, record in holding:
            for att in registry.attachments(files):
                if att.owner == owner:
                    # 'removing' first: out of the rules at once, finished by reconcile if
                    # this command dies before the tap and the record are gone.
                    registry.save_attachment(files, att.replace(state="removing"))
                    leaving.append((files, record, att))
        manage.apply_rules(home)
        for files, record, att in leaving:
            links.delete_if_ours(att.tap, registry.tap_alias(home, record.name, owner),
                                 unmarked_kind="tun")  # fmt: skip
            files.attachment(owner).unlink(missing_ok=True)
            dnsmasq.write_hosts(files, record, registry.ready_attachments(files))
            dnsmasq.reload(files)
            left.append(record.name)
    return left


def publish(
    home: Home,
    owner: str,
    network: str,
    host_addr: str,
    host_port: int,
    guest_port: int,
    proto: str = "tcp",
    guest_ip: str | None = None,
) -> Published:
    """DNAT host_addr:host_port (0.0.0.0: any local address) to the VM's address on the
    network (or `guest_ip` in its subnet), in corral's table."""
    check_owner(owner)
    check_name(network)
    try:
        addr = ipaddress.IPv4Address(host_addr)
    except ValueError:
        raise InvalidInput(f"invalid host address {host_addr!r}: expected IPv4") from None
    check_port(host_port, "host port")
    check_port(guest_port, "guest port")
    proto = parse_publish_proto(proto)
    require_net_admin()
    with locked(home.networks_lock):
        files, record = manage.ensure_up(home, network)
        if record.isolated:
            raise InvalidInput(f"network {network!r} is isolated: it publishes no ports")
        mine = next((a for a in registry.ready_attachments(files) if a.owner == owner), None)
        if mine is None:
            raise NotFound(f"VM {owner!r} has no NIC on network {network!r}")
        target = check_address(record, guest_ip) if guest_ip else ipaddress.IPv4Address(mine.ipv4)
        for _, other_net in registry.ready_networks(home):
            for other in registry.ready_attachments(home.network(other_net.name)):
                for pub in other.published:
                    same_addr = pub.host_addr == str(addr) or "0.0.0.0" in (pub.host_addr,
                                                                            str(addr))  # fmt: skip
                    if same_addr and pub.host_port == host_port and pub.proto == proto:
                        raise Conflict(
                            f"{proto} port {host_port} on {pub.host_addr} is already published "
                            f"to {other.owner}"
                        )
        published = Published(str(addr), host_port, str(target), guest_port, proto)
        if addr.is_loopback or addr.is_unspecified:
            _route_localnet(record.bridge)
        registry.save_attachment(files, mine.replace(published=(*mine.published, published)))
        manage.apply_rules(home)
        return published


def _route_localnet(bridge: str) -> None:
    """Let a packet for 127.0.0.1, DNATed to a VM, be routed out of the bridge."""
    path = Path("/proc/sys/net/ipv4/conf") / bridge / "route_localnet"
    if path.read_text().strip() != "1":
        path.write_text("1\n")

"""An instance's NICs on managed networks: attached at launch (a tap on the bridge, a DHCP
reservation, published ports), described to the guest by the network-config corral writes,
brought back before a start, removed with the instance, and reaped with a dead launch.

The host side (bridges, taps, dnsmasq, rules) is corral.net's; this module decides what an
instance asks of it and records what it got, in the launch's own NIC order (corral.net lists
NICs by network name).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

from corral.errors import CorralError
from corral.instance.options import NetworkNic
from corral.instance.record import ForwardRecord, InstanceRecord, NetworkNicRecord
from corral.layout import Home
from corral.machine.spec import Forward
from corral.net import attach, manage
from corral.net.caps import NeedsNetAdmin, require_net_admin
from corral.net.model import Attachment
from corral.seed.netconfig import NicConfig, render_network_config


def check_allowed(nics: Sequence[NetworkNic]) -> None:
    """Before anything is created: managed networks need CAP_NET_ADMIN."""
    if nics:
        require_net_admin()


def attach_all(
    home: Home, record: InstanceRecord, nics: Sequence[NetworkNic], published: Sequence[Forward]
) -> tuple[InstanceRecord, list[Attachment]]:
    """Give the VM its NICs, in order, and publish its ports to the first one's address.
    What this makes is undone by `detach` (or, if the launcher dies, by `reconcile`)."""
    uid, gid = os.getuid(), os.getgid()  # who QEMU runs as: the taps' owner
    attached = []
    for nic in nics:
        attached.append(
            attach.attach(home, nic.network, record.name, mac=nic.mac, ip=nic.ip, uid=uid, gid=gid)
        )
    for pub in published:
        attach.publish(home, record.name, attached[0].network, pub.host_addr, pub.host_port,
                       pub.guest_port, pub.protocol)  # fmt: skip
    record = record.replace(
        networks=tuple(nic_record(a) for a in attached),
        published=tuple(ForwardRecord.of(p) for p in published),
    )
    return record, attached


def nic_record(att: Attachment) -> NetworkNicRecord:
    return NetworkNicRecord(network=att.network, tap=att.tap, mac=att.mac, ipv4=att.ipv4,
                            prefix=att.prefix, mtu=att.mtu)  # fmt: skip


def network_config(requested: Sequence[NetworkNic], attached: Sequence[Attachment]) -> bytes:
    """cloud-init network-config for the VM's NICs (see nic_configs)."""
    return render_network_config(nic_configs(requested, attached))


def nic_configs(requested: Sequence[NetworkNic], attached: Sequence[Attachment]) -> list[NicConfig]:
    """The VM's NICs as the guest is to set them up: a static entry (address, gateway, DNS,
    MTU from the network) for a NIC whose address was asked for, DHCP for the others (the
    reservation hands out the same address). One default route: the first NIC that has one."""
    gateway_nic = next((i for i, a in enumerate(attached) if a.gateway), None)
    out = []
    for index, (want, att) in enumerate(zip(requested, attached, strict=True)):
        if want.ip is None:
            out.append(NicConfig(att.mac, mtu=att.mtu))
            continue
        out.append(
            NicConfig(
                att.mac,
                addresses=(att.cidr,),
                gateway4=att.gateway if index == gateway_nic else None,
                nameservers=(att.dns,),
                search=(att.domain,),
                mtu=att.mtu,
            )
        )
    return out


def reattach(home: Home, record: InstanceRecord) -> None:
    """Before a stopped VM starts: its taps (and networks) back if a host restart took them."""
    if not record.networks:
        return
    have = {a.network: a for a in attach.reattach(home, record.name)}
    for nic in record.networks:
        got = have.get(nic.network)
        if got is None or (got.tap, got.mac) != (nic.tap, nic.mac):
            raise CorralError(
                f"instance {record.name!r} has lost its NIC on network {nic.network!r}",
                hint=f"see: corral network inspect {nic.network}",
            )


def detach(home: Home, name: str) -> None:
    """Remove the VM's taps, reservations and published ports (nothing to do: no capability)."""
    attach.detach(home, name)


def reconcile(home: Home) -> None:
    """Remove NICs whose VM no longer exists (a launch killed midway) and whatever a killed
    network command half-made. Without CAP_NET_ADMIN it is left for a command that has it."""

    def owner_alive(owner: str) -> bool:
        return home.instance(owner).record.exists()

    with contextlib.suppress(NeedsNetAdmin):
        manage.reconcile(home, owner_alive)

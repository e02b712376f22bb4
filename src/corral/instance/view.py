"""The public view of an instance, shared by `corral ls/inspect --json` and the HTTP API."""

from __future__ import annotations

from typing import Any

from corral.instance.record import InstanceRecord, NetworkNicRecord, NicRecord
from corral.instance.state import Observed
from corral.layout import Home
from corral.net import dnsmasq


def instance_view(home: Home, record: InstanceRecord, seen: Observed) -> dict[str, Any]:
    files = home.instance(record.name)
    networks = [_nic_view(home, nic) for nic in record.networks]
    return {
        "name": record.name,
        "state": seen.state,
        "reason": seen.reason,
        "image": record.image,
        "image_digest": record.image_digest,
        "cpus": record.cpus,
        "memory_mib": record.memory_mib,
        "disk_size": record.disk_size,
        "volumes": list(record.volumes),
        "ssh_port": record.ssh_port,
        "ssh_user": record.ssh_user,
        "forwards": [str(f.to_forward()) for f in record.forwards],
        "address": record.address,
        "networks": networks,
        # Every NIC on a tap, in the VM's order (managed networks' first), with the addresses
        # known for it: what a node reports to the control plane.
        "nics": [*(_nic_summary(n) for n in networks), *(_tap_view(n) for n in record.nics)],
        "published": [str(p.to_forward()) for p in record.published],
        "console": str(files.serial_socket),
        "serial_log": str(files.serial_log),
        "qmp": str(files.qmp),
        "pid": seen.pid,
        "instance_id": record.instance_id,
        "seed": record.seed,
        "kernel_cmdline": record.boot.cmdline if record.boot else None,
        "created_at": record.created_at.isoformat(),
        "started_at": record.started_at.isoformat() if record.started_at else None,
        "dir": str(files.dir),
    }


def _nic_view(home: Home, nic: NetworkNicRecord) -> dict[str, Any]:
    """One NIC on a managed network: its reservation, and what dnsmasq has leased to its MAC
    (a guest configured statically takes no lease)."""
    leased = [lease.ip for lease in dnsmasq.leases(home.network(nic.network))
              if lease.mac == nic.mac]  # fmt: skip
    return {
        "network": nic.network,
        "mac": nic.mac,
        "tap": nic.tap,
        "ipv4": nic.ipv4,
        "prefix": nic.prefix,
        "addresses": list(dict.fromkeys([nic.ipv4, *leased])),
        "leased": leased,
        "mtu": nic.mtu,
    }


def _nic_summary(nic: dict[str, Any]) -> dict[str, Any]:
    return {k: nic[k] for k in ("network", "tap", "mac", "mtu", "addresses")}


def _tap_view(nic: NicRecord) -> dict[str, Any]:
    """A NIC on the caller's own tap: corral knows no address of it."""
    return {"network": None, "tap": nic.tap, "mac": nic.mac, "mtu": nic.mtu, "addresses": []}

"""What a managed network is, as saved on disk, and the pure rules that check and derive it.

Every value that ends up in an interface name, a dnsmasq line or an nftables rule is checked
here first: names fullmatch strict patterns, addresses go through `ipaddress`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from corral.errors import InvalidInput
from corral.records import Record

NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
HOSTNAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
MAC_RE = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
BRIDGE_PREFIX = "crl-"
TAP_PREFIX = "crt"
IFNAMSIZ = 15
DEFAULT_DOMAIN = "corral"
DEFAULT_MTU = 1500
MIN_PREFIX, MAX_PREFIX = 16, 28
PROTOCOLS = ("tcp", "udp")

State = Literal["creating", "ready", "removing"]


@dataclass(frozen=True)
class NetworkRecord(Record):
    """A managed network: written with state 'creating' before anything exists on the host,
    'ready' once bridge, dnsmasq and rules are all in place, 'removing' before it goes."""

    name: str
    bridge: str
    subnet: str  # e.g. 10.80.0.0/24
    gateway: str  # the bridge's address, dnsmasq's, and the VMs' router (unless isolated)
    dhcp_start: str
    dhcp_end: str
    ipv6: str | None  # a /64, or None
    nat: bool
    isolated: bool
    domain: str
    mtu: int
    state: State = "creating"

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def gateway6(self) -> str | None:
        return str(ipaddress.IPv6Network(self.ipv6)[1]) if self.ipv6 else None


@dataclass(frozen=True)
class Published(Record):
    """One published port: host_addr:host_port on the host is DNATed to guest_ip:guest_port."""

    host_addr: str
    host_port: int
    guest_ip: str
    guest_port: int
    proto: str = "tcp"


@dataclass(frozen=True)
class AttachmentRecord(Record):
    """One VM's NIC on a network: its tap, MAC, reserved address and published ports."""

    owner: str
    network: str
    tap: str
    mac: str
    ipv4: str
    hostname: str
    state: State = "creating"
    published: tuple[Published, ...] = ()
    uid: int = 0  # who owns the tap (the user QEMU runs as): kept to recreate it after a reboot
    gid: int = 0


@dataclass(frozen=True)
class DnsmasqRecord(Record):
    """The dnsmasq corral started: a pid is believed only while its start time matches."""

    pid: int
    start_time: int


@dataclass(frozen=True)
class Attachment:
    """What the instance layer needs to give a VM a NIC on a network."""

    network: str
    tap: str
    mac: str
    ipv4: str
    prefix: int
    gateway: str | None  # None on an isolated network: no route out
    dns: str
    domain: str
    mtu: int
    ipv6_prefix: str | None = None

    @property
    def cidr(self) -> str:
        return f"{self.ipv4}/{self.prefix}"


# --- checks ----------------------------------------------------------------------------------


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid network name {name!r}: lowercase letters, digits and inner hyphens, "
            "at most 32 characters"
        )
    return name


def check_owner(owner: str) -> str:
    if not HOSTNAME_RE.fullmatch(owner):
        raise InvalidInput(f"invalid VM name {owner!r} for a network: not a valid hostname")
    return owner


def check_domain(domain: str) -> str:
    labels = domain.split(".")
    if len(domain) > 200 or not all(HOSTNAME_RE.fullmatch(label) for label in labels):
        raise InvalidInput(
            f"invalid domain {domain!r}: dot-separated labels of lowercase letters, digits "
            "and inner hyphens"
        )
    return domain


def check_mtu(mtu: int, ipv6: bool) -> int:
    low = 1280 if ipv6 else 576
    if not low <= mtu <= 9000:
        raise InvalidInput(f"invalid MTU {mtu}: expected {low}-9000")
    return mtu


def check_mac(mac: str) -> str:
    mac = mac.lower()
    if not MAC_RE.fullmatch(mac):
        raise InvalidInput(f"invalid MAC address {mac!r}: expected e.g. 52:54:00:12:34:56")
    if int(mac[:2], 16) & 1:
        raise InvalidInput(f"invalid MAC address {mac!r}: a multicast address")
    return mac


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except ValueError as exc:
        raise InvalidInput(f"invalid subnet {text!r}: {exc}") from None
    if not MIN_PREFIX <= net.prefixlen <= MAX_PREFIX:
        raise InvalidInput(f"invalid subnet {text}: the prefix must be /{MIN_PREFIX}-/{MAX_PREFIX}")
    if not net.is_private or net.is_loopback or net.is_link_local or net.is_multicast:
        raise InvalidInput(f"invalid subnet {text}: not a private IPv4 range")
    return net


def parse_ipv6(text: str) -> ipaddress.IPv6Network:
    try:
        net = ipaddress.IPv6Network(text, strict=True)
    except ValueError as exc:
        raise InvalidInput(f"invalid IPv6 subnet {text!r}: {exc}") from None
    if net.prefixlen != 64 or net.network_address not in ipaddress.IPv6Network("fc00::/7"):
        raise InvalidInput(f"invalid IPv6 subnet {text}: expected a unique local /64 (fd..::/64)")
    return net


def random_ula() -> ipaddress.IPv6Network:
    """A random unique local /64 (RFC 4193: fd + 40 random bits + a subnet id of 0)."""
    return ipaddress.IPv6Network((b"\xfd" + secrets.token_bytes(5) + bytes(10), 64))


def bridge_name(name: str) -> str:
    """crl-NAME when it fits in 15 characters, else crl- and a hash of the name."""
    if len(BRIDGE_PREFIX) + len(name) <= IFNAMSIZ:
        return BRIDGE_PREFIX + name
    return BRIDGE_PREFIX + hashlib.sha256(name.encode()).hexdigest()[: IFNAMSIZ - 4]


def tap_name(home_id: str, network: str, owner: str) -> str:
    """A tap name unique to (state directory, network, VM), 15 characters."""
    digest = hashlib.sha256(f"{home_id}\0{network}\0{owner}".encode()).hexdigest()
    return TAP_PREFIX + digest[: IFNAMSIZ - len(TAP_PREFIX)]


def random_mac() -> str:
    return "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


# --- derived addresses -----------------------------------------------------------------------


def define(
    name: str,
    subnet: ipaddress.IPv4Network,
    *,
    ipv6: ipaddress.IPv6Network | None = None,
    nat: bool = True,
    isolated: bool = False,
    domain: str = DEFAULT_DOMAIN,
    mtu: int = DEFAULT_MTU,
) -> NetworkRecord:
    """A new network's record: gateway .1; the upper half of the subnet for DHCP to strangers,
    the lower half for the addresses corral reserves for its VMs."""
    check_name(name)
    check_domain(domain)
    check_mtu(mtu, ipv6 is not None)
    start, end = dynamic_range(subnet)
    return NetworkRecord(
        name=name,
        bridge=bridge_name(name),
        subnet=str(subnet),
        gateway=str(subnet[1]),
        dhcp_start=str(start),
        dhcp_end=str(end),
        ipv6=str(ipv6) if ipv6 else None,
        nat=nat and not isolated,
        isolated=isolated,
        domain=domain,
        mtu=mtu,
    )


def dynamic_range(
    subnet: ipaddress.IPv4Network,
) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    half = subnet.num_addresses // 2
    return subnet[half], subnet[-2]


def reservable(record: NetworkRecord) -> Iterable[ipaddress.IPv4Address]:
    """Addresses corral hands to its VMs, lowest first: after the gateway, below DHCP's."""
    net = record.network
    start = ipaddress.IPv4Address(record.dhcp_start)
    addr = net[2]
    while addr < start:
        yield addr
        addr += 1


def check_address(record: NetworkRecord, text: str) -> ipaddress.IPv4Address:
    """A requested address must be a host address of the subnet other than the gateway."""
    try:
        addr = ipaddress.IPv4Address(text)
    except ValueError:
        raise InvalidInput(f"invalid IPv4 address {text!r}") from None
    net = record.network
    if addr not in net or addr in (net.network_address, net.broadcast_address):
        raise InvalidInput(f"address {addr} is not a host address of network {record.name} "
                           f"({record.subnet})")  # fmt: skip
    if str(addr) == record.gateway:
        raise InvalidInput(f"address {addr} is network {record.name}'s gateway")
    return addr


def overlapping(
    subnet: ipaddress.IPv4Network, taken: Iterable[ipaddress.IPv4Network]
) -> ipaddress.IPv4Network | None:
    """The first of `taken` that overlaps subnet (default routes excluded by the caller)."""
    for other in taken:
        if subnet.overlaps(other):
            return other
    return None


def pick_subnet(taken: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    """The first 10.x.y.0/24 from 10.80.0.0 on that overlaps nothing taken."""
    for second in (*range(80, 256), *range(1, 80)):
        for third in range(256):
            candidate = ipaddress.IPv4Network(f"10.{second}.{third}.0/24")
            if overlapping(candidate, taken) is None:
                return candidate
    raise InvalidInput("no free 10.x.y.0/24 subnet: give one with --subnet")


def parse_publish_proto(proto: str) -> str:
    if proto not in PROTOCOLS:
        raise InvalidInput(f"invalid protocol {proto!r}: expected tcp or udp")
    return proto


def check_port(port: int, what: str) -> int:
    if type(port) is not int or not 1 <= port <= 65535:
        raise InvalidInput(f"invalid {what} {port!r}: expected 1-65535")
    return port

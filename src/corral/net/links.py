"""The host's interfaces through netlink (pyroute2): bridges, taps, addresses and routes.

Never parses `ip`. Every link corral makes carries an alias naming the state directory that
made it (`corral HOME_ID ...`), and corral deletes only links that carry its alias (or, for a
network record still 'creating', the bridge of that record's name: it was checked free under
the networks lock before the record was written).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

from corral.errors import Conflict
from corral.net.caps import NeedsNetAdmin


@contextlib.contextmanager
def netlink() -> Iterator[Any]:
    """An IPRoute socket; EPERM from the kernel becomes the one-line CAP_NET_ADMIN error."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    ipr = IPRoute()
    try:
        yield ipr
    except NetlinkError as exc:
        if exc.code in (errno.EPERM, errno.EACCES):
            raise NeedsNetAdmin() from exc
        raise
    finally:
        ipr.close()


def _one(ipr: Any, ifname: str) -> Any | None:
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        links = ipr.link("get", ifname=ifname)
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise
    return links[0] if links else None


def link_info(ipr: Any, ifname: str) -> dict[str, Any] | None:
    """kind, alias, index, master, mtu, up of an interface, or None when it does not exist."""
    link = _one(ipr, ifname)
    if link is None:
        return None
    return {
        "index": link["index"],
        "kind": link.get(("IFLA_LINKINFO", "IFLA_INFO_KIND")),
        "alias": link.get("IFLA_IFALIAS"),
        "master": link.get("IFLA_MASTER"),
        "mtu": link.get("IFLA_MTU"),
        "up": bool(link["flags"] & 1),
    }


def exists(ifname: str) -> bool:
    with netlink() as ipr:
        return _one(ipr, ifname) is not None


def make_bridge(ifname: str, alias: str, mtu: int, addrs: list[tuple[str, int]]) -> None:
    """Create (or complete) a bridge with our alias, its MTU, its addresses, up."""
    from pyroute2.netlink.exceptions import NetlinkError

    with netlink() as ipr:
        info = link_info(ipr, ifname)
        if info is None:
            ipr.link("add", ifname=ifname, kind="bridge")
            info = link_info(ipr, ifname)
            assert info is not None
        elif info["kind"] != "bridge" or info["alias"] not in (None, alias):
            raise Conflict(f"interface {ifname} exists and is not corral's")
        index = info["index"]
        # No STP and no forwarding delay: a VM's port forwards as soon as its tap is up.
        with contextlib.suppress(NetlinkError):
            ipr.link("set", index=index, kind="bridge", br_stp_state=0, br_forward_delay=0)
        ipr.link("set", index=index, ifalias=alias, mtu=mtu)
        for addr, prefix in addrs:
            family = socket.AF_INET6 if ":" in addr else socket.AF_INET
            try:
                ipr.addr("add", index=index, address=addr, prefixlen=prefix, family=family,
                         **({"flags": 0x80} if family == socket.AF_INET6 else {}))  # fmt: skip
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise
        ipr.link("set", index=index, state="up")


def make_tap(ifname: str, alias: str, bridge: str, mtu: int, uid: int, gid: int) -> None:
    """Create (or complete) a persistent tap owned by uid/gid, on the bridge, with its MTU."""
    with netlink() as ipr:
        info = link_info(ipr, ifname)
        if info is None:
            ipr.link("add", ifname=ifname, kind="tuntap", mode="tap", uid=uid, gid=gid)
            info = link_info(ipr, ifname)
            assert info is not None
        elif info["alias"] not in (None, alias):
            raise Conflict(f"interface {ifname} exists and is not corral's")
        br = link_info(ipr, bridge)
        if br is None:
            raise Conflict(f"bridge {bridge} is missing")
        ipr.link("set", index=info["index"], ifalias=alias)
        ipr.link("set", index=info["index"], mtu=mtu, master=br["index"], state="up")


def delete_if_ours(ifname: str, alias: str, *, unmarked_kind: str | None = None) -> bool:
    """Delete the interface when it carries `alias` (or no alias at all and is of
    `unmarked_kind`: one corral created and was killed before marking). True if deleted."""
    from pyroute2.netlink.exceptions import NetlinkError

    with netlink() as ipr:
        info = link_info(ipr, ifname)
        if info is None:
            return False
        ours = info["alias"] == alias or (
            unmarked_kind is not None and info["alias"] is None and info["kind"] == unmarked_kind
        )
        if not ours:
            return False
        try:
            ipr.link("del", index=info["index"])
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise
        return True


def links_with_alias_prefix(prefix: str) -> list[tuple[str, str]]:
    """(name, alias) of every interface whose alias starts with prefix."""
    out = []
    with netlink() as ipr:
        for link in ipr.get_links():
            alias = link.get("IFLA_IFALIAS")
            if alias and alias.startswith(prefix):
                out.append((link.get("IFLA_IFNAME"), alias))
    return out


def routed_subnets(exclude: frozenset[str] = frozenset()) -> list[ipaddress.IPv4Network]:
    """Every IPv4 destination this network namespace has a route for, in every table,
    default routes aside; routes through interfaces in `exclude` are left out."""
    out = []
    with netlink() as ipr:
        names = {link["index"]: link.get("IFLA_IFNAME") for link in ipr.get_links()}
        for route in ipr.route("dump", family=socket.AF_INET):
            prefix = route["dst_len"]
            if prefix == 0:
                continue
            if names.get(route.get("RTA_OIF")) in exclude:
                continue
            dst = route.get("RTA_DST")
            if dst is None:
                continue
            with contextlib.suppress(ValueError):
                out.append(ipaddress.IPv4Network(f"{dst}/{prefix}", strict=False))
    return out

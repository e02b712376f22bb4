"""Managed networks of the fleet: one name, made by the node of one host or of every `up` host
(corral.net on each, through the node protocol), each host with its own bridge and subnet.

The row is written first (`creating`: it claims the name, and no VM is placed on it yet), then
each node is asked; if any refuses, the hosts that made it remove it again and the row goes, so
a create is all or nothing. A delete is refused (409) while a VM has an interface on it; it
marks the row `removing` (no VM is placed on it from then on), asks each node, and only then
deletes the row (a node's refusal puts it back to `ready`).
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from corral.control.nodes import NodeAddress
from corral.control.types import NetworkCreate
from corral.db.models import Host, Network, NetworkHost, utcnow
from corral.db.repositories import HostRepository, NetworkRepository
from corral.errors import Conflict, CorralError, InvalidInput, NotFound
from corral.node.protocol import NodeNetwork, NodeNetworkSpec

if TYPE_CHECKING:
    from corral.control.plane import ControlPlane

# A create asks each host once and records the result; one still `creating` after this long
# belongs to a server that died, and may be deleted.
STALE_CREATE = timedelta(minutes=15)


@dataclass
class HostState:
    """A network on one host, with what its node says of it now (when asked)."""

    host_id: uuid.UUID
    host_name: str
    bridge: str
    subnet: str
    gateway: str
    up: bool | None = None  # None: not asked, or the node did not answer (see reason)
    reason: str | None = None
    vms: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class NetworkView:
    id: uuid.UUID
    name: str
    state: str
    config: dict[str, Any]
    created_at: Any
    hosts: list[HostState]


class NetworkService:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    async def create(self, data: NetworkCreate) -> NetworkView:
        config = data.model_dump(exclude={"name", "host_id"})
        spec = NodeNetworkSpec(name=data.name, **config)
        network_id, hosts = await self.plane.write(self._claim, data, config)
        made: list[tuple[NodeAddress, NodeNetwork]] = []
        try:
            for where in hosts:
                made.append((where, await self.plane.nodes.for_host(where).create_network(spec)))
            await self.plane.write(_ready, network_id, made)
        except BaseException as exc:
            for where, _ in made:
                with contextlib.suppress(CorralError):
                    await self.plane.nodes.for_host(where).delete_network(data.name)
            await self.plane.write(_drop, network_id)
            if isinstance(exc, CorralError) and len(hosts) > 1 and len(made) < len(hosts):
                exc.message = f"host {hosts[len(made)].name!r}: {exc.message}"
            raise
        return await self.get(network_id, live=False)

    def _claim(
        self, session: Session, data: NetworkCreate, config: dict[str, Any]
    ) -> tuple[uuid.UUID, list[NodeAddress]]:
        hosts_repo = HostRepository(session)
        if data.host_id is not None:
            host = hosts_repo.get(data.host_id)
            if host is None:
                raise InvalidInput(f"host_id: no host {data.host_id}")
            if host.status != "up":
                raise Conflict(f"host {host.name!r} is {host.status}, not up")
            hosts: list[Host] = [host]
        else:
            hosts = sorted(hosts_repo.with_status("up"), key=lambda h: h.name)
            if not hosts:
                raise Conflict("no host is up to make the network on")
        networks = NetworkRepository(session)
        if networks.name_taken(data.name):
            raise Conflict(f"a network named {data.name!r} already exists")
        network = networks.add(Network(name=data.name, state="creating", config=config))
        return network.id, [NodeAddress.of(h) for h in hosts]

    async def get(self, network_id: uuid.UUID, *, live: bool = True) -> NetworkView:
        """The network; `live`: with each host's state and attached VMs, asked of its node."""
        found = await self.plane.read(_views, network_id)
        if not found:
            raise NotFound(f"no network {network_id}")
        view = found[0]
        if live:
            where = await self.plane.read(_addresses, [h.host_id for h in view.hosts])
            for state in view.hosts:
                await self._ask(where[state.host_id], view.name, state)
        return view

    async def _ask(self, where: NodeAddress, name: str, state: HostState) -> None:
        try:
            found = await self.plane.nodes.for_host(where).list_networks()
        except CorralError as exc:
            state.reason = exc.message
            return
        for net in found:
            if net.name == name:
                state.up = net.up
                state.vms = [vm.model_dump() for vm in net.vms]
                return
        state.up, state.reason = False, "the host's node does not have it (any more)"

    async def delete(self, network_id: uuid.UUID) -> None:
        name, hosts, before = await self.plane.write(self._begin_delete, network_id)
        try:
            for where in hosts:
                try:
                    await self.plane.nodes.for_host(where).delete_network(name)
                except NotFound:
                    pass  # already gone from that host (or never made there)
        except BaseException:
            await self.plane.write(_set_state, network_id, before)
            raise
        await self.plane.write(_drop, network_id)

    def _begin_delete(
        self, session: Session, network_id: uuid.UUID
    ) -> tuple[str, list[NodeAddress], str]:
        networks = NetworkRepository(session)
        network = networks.get(network_id, lock=True)  # creates placing VMs on it wait
        if network is None:
            raise NotFound(f"no network {network_id}")
        before = "ready" if network.state == "removing" else network.state
        if network.state == "creating":  # (`removing`: a delete that died, tried again)
            if utcnow() - network.created_at < STALE_CREATE:
                raise Conflict(
                    f"network {network.name!r} is still being created",
                    hint=f"a create whose server died can be deleted "
                    f"{int(STALE_CREATE.total_seconds()) // 60} minutes after it began",
                )
            # Its server died before recording which hosts made it: ask every host it could
            # have been made on; those without it answer NotFound.
            network.state = "removing"
            session.flush()
            hosts = HostRepository(session).with_status("up")
            return network.name, [NodeAddress.of(h) for h in hosts], before
        users = networks.users(network)
        if users:
            raise Conflict(
                f"network {network.name!r} is in use by {', '.join(users)}",
                hint="delete those VMs first",
            )
        network.state = "removing"
        session.flush()
        addresses = _addresses(session, [r.host_id for r in network.host_rows])
        return network.name, list(addresses.values()), before

    async def list(self) -> list[NetworkView]:  # last: it shadows `list` in the class body
        return await self.plane.read(_views)


def adopt(session: Session, host: Host, found: list[NodeNetwork]) -> None:
    """At a host's init: record the networks its node has (e.g. made with `corral network
    create` on that host, or before a restart) as the fleet's, and forget this host's part in
    those it no longer has. A name the fleet already has gains this host; one still being
    created or removed is left to that operation."""
    networks = NetworkRepository(session)
    have = {net.name: net for net in found}
    for network in networks.list():
        if network.state != "ready":
            continue
        rows = {row.host_id: row for row in network.host_rows}
        net = have.pop(network.name, None)
        row = rows.get(host.id)
        if net is None:
            if row is not None:
                network.host_rows.remove(row)
        elif row is None:
            network.host_rows.append(_host_row(host.id, net))
        else:
            row.bridge, row.subnet, row.gateway = net.bridge, net.subnet, net.gateway
    for net in have.values():
        config = {"subnet": net.subnet, "ipv6": net.ipv6, "nat": net.nat,
                  "isolated": net.isolated, "domain": net.domain, "mtu": net.mtu}  # fmt: skip
        network = networks.add(Network(name=net.name, state="ready", config=config))
        network.host_rows.append(_host_row(host.id, net))
    session.flush()


def _host_row(host_id: uuid.UUID, net: NodeNetwork) -> NetworkHost:
    return NetworkHost(host_id=host_id, bridge=net.bridge, subnet=net.subnet, gateway=net.gateway)


def _views(session: Session, network_id: uuid.UUID | None = None) -> list[NetworkView]:
    networks = NetworkRepository(session)
    if network_id is not None:
        one = networks.get(network_id)
        rows = [one] if one is not None else []
    else:
        rows = list(networks.list())
    names = {h.id: h.name for h in HostRepository(session).list()}
    return [
        NetworkView(
            id=n.id,
            name=n.name,
            state=n.state,
            config=dict(n.config),
            created_at=n.created_at,
            hosts=[
                HostState(r.host_id, names.get(r.host_id, "?"), r.bridge, r.subnet, r.gateway)
                for r in n.host_rows
            ],
        )
        for n in rows
    ]


def _addresses(session: Session, host_ids: list[uuid.UUID]) -> dict[uuid.UUID, NodeAddress]:
    hosts = HostRepository(session)
    found = {}
    for host_id in host_ids:
        host = hosts.get(host_id)
        if host is not None:
            found[host_id] = NodeAddress.of(host)
    return found


def _ready(
    session: Session, network_id: uuid.UUID, made: list[tuple[NodeAddress, NodeNetwork]]
) -> None:
    network = NetworkRepository(session).get(network_id)
    if network is None:
        raise NotFound(f"network {network_id} was deleted")
    for where, net in made:
        network.host_rows.append(
            NetworkHost(
                host_id=where.host_id, bridge=net.bridge, subnet=net.subnet, gateway=net.gateway
            )
        )
    network.state = "ready"
    session.flush()


def _set_state(session: Session, network_id: uuid.UUID, state: str) -> None:
    network = NetworkRepository(session).get(network_id)
    if network is not None:
        network.state = state
        session.flush()


def _drop(session: Session, network_id: uuid.UUID) -> None:
    networks = NetworkRepository(session)
    network = networks.get(network_id)
    if network is not None:
        networks.delete(network)

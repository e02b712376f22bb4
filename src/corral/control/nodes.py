"""Which NodeClient serves which host: one client per host, rebuilt when its address changes.

The default factory gives an HttpNode for a host's address and port, and the in-process
LocalNode for the embedded host (address `in-process`). Both are imported lazily: the control
plane loads without them, and tests and benchmarks pass factories of their own.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from corral.context import Context
from corral.control.settings import IN_PROCESS, Settings
from corral.db.models import Host
from corral.errors import NodeUnreachable
from corral.node.protocol import NodeClient


@dataclass(frozen=True)
class NodeAddress:
    """What a factory needs to reach a host's node."""

    host_id: uuid.UUID
    name: str
    address: str
    port: int
    token: str | None

    @classmethod
    def of(cls, host: Host) -> NodeAddress:
        return cls(host.id, host.name, host.address, host.port, host.token)

    @property
    def base_url(self) -> str:
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{address}:{self.port}"


NodeFactory = Callable[[NodeAddress], NodeClient]


def default_factory(settings: Settings) -> NodeFactory:
    local: list[NodeClient] = []  # one LocalNode per control plane, made on first use
    lock = threading.Lock()

    def make(where: NodeAddress) -> NodeClient:
        if where.address == IN_PROCESS:
            if not settings.local_node:
                raise NodeUnreachable(
                    f"host {where.name!r} is served in-process, and this server has no local node"
                )
            with lock:
                if not local:
                    from corral.node.local import LocalNode

                    local.append(
                        LocalNode(Context(settings.config) if settings.config else Context())
                    )
            return local[0]
        from corral.node.http import HttpNode

        return HttpNode(where.base_url, where.token)

    return make


class NodeRegistry:
    def __init__(self, factory: NodeFactory) -> None:
        self._factory = factory
        self._clients: dict[uuid.UUID, tuple[NodeAddress, NodeClient]] = {}
        self._lock = threading.Lock()

    def for_host(self, where: NodeAddress) -> NodeClient:
        with self._lock:
            known = self._clients.get(where.host_id)
            if known is not None and known[0] == where:
                return known[1]
        client = self._factory(where)
        with self._lock:
            self._clients[where.host_id] = (where, client)
        return client

    def forget(self, host_id: uuid.UUID) -> None:
        with self._lock:
            self._clients.pop(host_id, None)

    async def close(self) -> None:
        with self._lock:
            clients = [c for _, c in self._clients.values()]
            self._clients.clear()
        for client in clients:
            aclose = getattr(client, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:  # closing must not fail the shutdown
                    pass

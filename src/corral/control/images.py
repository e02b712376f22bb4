"""What images the hosts have: each host's node asked for its store's list, all at once.

Nothing is kept: a node's store changes under it (`corral image pull` on the host), so each
question goes to the nodes. A host that does not answer in time is reported with the reason,
beside the others' answers, never as a failure of the whole question.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from corral.control.nodes import NodeAddress
from corral.db.models import Host
from corral.errors import CorralError, NotFound
from corral.node.protocol import NodeImage

if TYPE_CHECKING:
    from corral.control.plane import ControlPlane

TIMEOUT = 5.0  # seconds a node has to list its images


@dataclass(frozen=True)
class HostImages:
    """One host's images, or why there are none to show (`error`)."""

    host_id: uuid.UUID
    host: str
    images: tuple[NodeImage, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class ImageCopy:
    """An image of that name on one host."""

    host_id: uuid.UUID
    host: str
    image: NodeImage


@dataclass(frozen=True)
class FleetImage:
    name: str
    copies: tuple[ImageCopy, ...]


def by_name(answers: Sequence[HostImages]) -> list[FleetImage]:
    """The hosts' images gathered by name (sorted), each with the hosts that have it."""
    found: dict[str, list[ImageCopy]] = {}
    for answer in answers:
        for image in answer.images:
            found.setdefault(image.name, []).append(ImageCopy(answer.host_id, answer.host, image))
    return [FleetImage(name, tuple(copies)) for name, copies in sorted(found.items())]


class ImageService:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    async def on_host(self, host_id: uuid.UUID) -> HostImages:
        host = await self.plane.hosts.get(host_id)
        return await self._ask(host)

    async def fleet(self) -> list[HostImages]:
        """Every up host's answer (the hosts asked at once), in the hosts' order."""
        hosts = [h for h in await self.plane.hosts.list() if h.status == "up"]
        return list(await asyncio.gather(*(self._ask(h) for h in hosts)))

    async def _ask(self, host: Host) -> HostImages:
        if host.status != "up":
            return HostImages(host.id, host.name, error=f"host is {host.status}")
        try:
            node = self.plane.nodes.for_host(NodeAddress.of(host))
            async with asyncio.timeout(TIMEOUT):
                images = await node.list_images()
        except TimeoutError:
            return HostImages(host.id, host.name, error=f"no answer in {TIMEOUT:g} s")
        except NotFound:
            error = "its node agent does not list images (an older corral)"
            return HostImages(host.id, host.name, error=error)
        except CorralError as exc:
            return HostImages(host.id, host.name, error=f"unreachable: {exc.message}")
        return HostImages(host.id, host.name, tuple(sorted(images, key=lambda i: i.name)))

"""/networks: managed networks (bridges with DHCP, DNS and NAT) on one host or on every `up`
host. Creating and deleting them needs an admin token (they change the hosts' interfaces and
firewall); any token reads them."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from corral.api.deps import ADMIN_ONLY, Authenticated, Plane
from corral.api.errors import ERRORS
from corral.api.schemas import NetworkCreate, NetworkPublic

router = APIRouter(responses=ERRORS)


@router.post("/networks", status_code=201, tags=["networks"], **ADMIN_ONLY)
async def create_network(body: NetworkCreate, response: Response, plane: Plane) -> NetworkPublic:
    """Made by the node of `host_id`, or of every `up` host; all or nothing. A node without
    CAP_NET_ADMIN answers 409."""
    network = await plane.networks.create(body)
    response.headers["Location"] = f"/networks/{network.id}"
    return NetworkPublic.model_validate(network)


@router.get("/networks", tags=["networks"], dependencies=[Authenticated])
async def list_networks(plane: Plane) -> list[NetworkPublic]:
    return [NetworkPublic.model_validate(n) for n in await plane.networks.list()]


@router.get("/networks/{network_id}", tags=["networks"], dependencies=[Authenticated])
async def get_network(network_id: uuid.UUID, plane: Plane) -> NetworkPublic:
    """With each host's state and the VMs on it there, as the hosts' nodes say now."""
    return NetworkPublic.model_validate(await plane.networks.get(network_id))


@router.delete("/networks/{network_id}", status_code=204, tags=["networks"], **ADMIN_ONLY)
async def delete_network(network_id: uuid.UUID, plane: Plane) -> None:
    """Refused (409) while a VM has an interface on it."""
    await plane.networks.delete(network_id)

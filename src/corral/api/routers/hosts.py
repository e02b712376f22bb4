"""/hosts: register hypervisor hosts, init them from their node, set their status (admin
tokens); read them (any token)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from corral.api.deps import ADMIN_ONLY, AdminOnly, Authenticated, Plane
from corral.api.errors import ADMIN_ERRORS, ERRORS
from corral.api.schemas import HostCreate, HostPublic, HostUpdate

router = APIRouter(prefix="/hosts", tags=["hosts"], responses=ERRORS)


@router.post("", status_code=201, **ADMIN_ONLY)
async def create_host(body: HostCreate, response: Response, plane: Plane) -> HostPublic:
    host = await plane.hosts.create(body)
    response.headers["Location"] = f"/hosts/{host.id}"
    return HostPublic.model_validate(host)


@router.get("", dependencies=[Authenticated])
async def list_hosts(plane: Plane) -> list[HostPublic]:
    return [HostPublic.model_validate(h) for h in await plane.hosts.list()]


@router.get("/{host_id}", dependencies=[Authenticated])
async def get_host(host_id: uuid.UUID, plane: Plane) -> HostPublic:
    return HostPublic.model_validate(await plane.hosts.get(host_id))


@router.patch("/{host_id}", **ADMIN_ONLY)
async def update_host(host_id: uuid.UUID, body: HostUpdate, plane: Plane) -> HostPublic:
    """Set the status (`up`, `down`, `maintenance`), address, port or token.

    `up` on a host that was never initialised initialises it (as POST /hosts/{id}/init).
    """
    return HostPublic.model_validate(await plane.hosts.update(host_id, body))


@router.delete("/{host_id}", status_code=204, **ADMIN_ONLY)
async def delete_host(host_id: uuid.UUID, plane: Plane) -> None:
    await plane.hosts.delete(host_id)


@router.post(
    "/{host_id}/init",
    dependencies=[AdminOnly],
    responses={**ADMIN_ERRORS, 502: {"description": "the node could not be reached"}},
)
async def init_host(host_id: uuid.UUID, plane: Plane) -> HostPublic:
    """Contact the host's node, record its capacity and versions, and mark it `up`."""
    return HostPublic.model_validate(await plane.hosts.init(host_id))

"""/images: the images the up hosts have, gathered by name; /hosts/{id}/images: one host's
(any token). Asked of the nodes on each request: their stores change under them."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from corral.api.deps import Authenticated, Plane
from corral.api.errors import ERRORS
from corral.api.schemas import FleetImagePublic, FleetImagesPublic, HostImagesPublic
from corral.control.images import by_name

router = APIRouter(dependencies=[Authenticated], responses=ERRORS, tags=["images"])


@router.get("/images")
async def list_images(plane: Plane) -> FleetImagesPublic:
    """Each image name and the up hosts whose store has it; a host that did not answer (in
    5 s) is listed under `unreachable` with the reason."""
    answers = await plane.images.fleet()
    return FleetImagesPublic(
        images=[FleetImagePublic.model_validate(i) for i in by_name(answers)],
        unreachable=[HostImagesPublic.model_validate(a) for a in answers if a.error],
    )


@router.get("/hosts/{host_id}/images")
async def host_images(host_id: uuid.UUID, plane: Plane) -> HostImagesPublic:
    """The images in one host's store; `error` set (and no images) when its node did not
    answer or the host is not up."""
    return HostImagesPublic.model_validate(await plane.images.on_host(host_id))

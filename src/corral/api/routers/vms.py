"""/vms: create (scheduled onto a host), list and filter, lifecycle jobs, console."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, WebSocket

from corral.api.deps import Authenticated, Plane
from corral.api.errors import ERRORS
from corral.api.schemas import (
    VM_NAME_PATTERN,
    JobPublic,
    VmAction,
    VmCreate,
    VmCreated,
    VmPublic,
    VmStatus,
)
from corral.api.streams import accept_authorised, console_typist, pump
from corral.errors import CorralError

router = APIRouter(prefix="/vms", tags=["vms"], responses=ERRORS)
ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {"description": "the job doing it; follow GET /jobs/{id}"}
}


@router.post("", status_code=201, dependencies=[Authenticated])
async def create_vm(body: VmCreate, response: Response, plane: Plane) -> VmCreated:
    """Schedule the VM onto an `up` host with room for it and record it there (`pending`);
    a job then creates it on the host (`created`, or `running` with `start: true`)."""
    vm = await plane.vms.create(body)
    response.headers["Location"] = f"/vms/{vm['id']}"
    return VmCreated.model_validate(vm)


@router.get("", dependencies=[Authenticated])
async def list_vms(
    plane: Plane,
    tags: Annotated[list[str], Query(max_length=64, description="every one of these tags")] = [],  # noqa: B006
    status: VmStatus | None = None,
    host_id: uuid.UUID | None = None,
    name: Annotated[
        str | None, Query(pattern=VM_NAME_PATTERN, max_length=63, description="exactly this name")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> list[VmPublic]:
    vms = await plane.vms.list(
        tags=tags, status=status, host_id=host_id, name=name, limit=limit, offset=offset
    )
    return [VmPublic.model_validate(vm) for vm in vms]


@router.get("/{vm_id}", dependencies=[Authenticated])
async def get_vm(vm_id: uuid.UUID, plane: Plane) -> VmPublic:
    return VmPublic.model_validate(await plane.vms.get(vm_id))


@router.delete("/{vm_id}", status_code=202, responses=ACCEPTED, dependencies=[Authenticated])
async def delete_vm(
    vm_id: uuid.UUID,
    response: Response,
    plane: Plane,
    force: Annotated[
        bool, Query(description="forget the VM even if its host is unreachable")
    ] = False,
) -> JobPublic:
    job = await plane.vms.delete(vm_id, force=force)
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobPublic.model_validate(job)


def _action_route(action: VmAction) -> None:
    async def act(vm_id: uuid.UUID, response: Response, plane: Plane) -> JobPublic:
        job = await plane.vms.act(vm_id, action)
        response.headers["Location"] = f"/jobs/{job.id}"
        return JobPublic.model_validate(job)

    act.__name__ = f"{action.replace('-', '_')}_vm"
    act.__doc__ = f"{action.capitalize()} the VM on its host (a job)."
    router.post(
        f"/{{vm_id}}/{action}", status_code=202, responses=ACCEPTED, dependencies=[Authenticated]
    )(act)


for _action in ("start", "stop", "force-stop", "pause", "resume"):
    _action_route(_action)


@router.get(
    "/{vm_id}/console",
    dependencies=[Authenticated],
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "the serial console log"}},
)
async def console(vm_id: uuid.UUID, plane: Plane) -> Response:
    return Response(await plane.vms.console(vm_id), media_type="text/plain; charset=utf-8")


@router.websocket("/{vm_id}/console/stream")
async def console_stream(websocket: WebSocket, vm_id: uuid.UUID) -> None:
    """The live serial console: binary frames of what the VM writes from now on; what the
    client sends (binary or text frames, at most 4096 bytes each) is typed on it."""
    plane = websocket.app.state.plane
    if not await accept_authorised(websocket, plane):
        return
    try:
        stream = await plane.vms.console_stream(vm_id)
    except CorralError as exc:
        await websocket.close(code=1008, reason=exc.message[:120])
        return
    await pump(websocket, stream, websocket.send_bytes, console_typist(plane, vm_id))

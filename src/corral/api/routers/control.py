"""aleph-vm's supervisor endpoints under /control (see corral.control.allocations)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response, WebSocket

from corral.api.deps import (
    SUPERVISOR,
    Plane,
    RequireRole,
    api_role,
    principal,
    websocket_credentials,
)
from corral.api.errors import ERRORS
from corral.api.schemas import AllocationRequest, AllocationResult, JobPublic, VmRef
from corral.api.streams import accept_authorised, pump
from corral.control.tokens import API_ROLES
from corral.errors import Unauthorized

router = APIRouter(prefix="/control", tags=["aleph-vm supervisor"], responses=ERRORS)

# Documentation only: the guard (corral.webguard) checks the header before the body is read.
Signature = Annotated[
    str | None,
    Header(alias="X-Auth-Signature", max_length=1024, description="the allocation token"),
]


@router.post("/allocations")
async def allocations(
    body: AllocationRequest, request: Request, plane: Plane, signature: Signature = None
) -> AllocationResult:
    """Make the listed VMs (ids or names) run; stop those allocated before and not listed now."""
    if principal(request) != SUPERVISOR:
        raise Unauthorized("this route needs X-Auth-Signature (the allocation token)")
    return await plane.allocations.allocate(body)


@router.post(
    "/machine/{ref}/stop",
    responses={202: {"description": "the stop is still under way"}},
    dependencies=[Depends(RequireRole(*API_ROLES, SUPERVISOR))],
)
async def stop_machine(
    ref: VmRef, response: Response, plane: Plane, signature: Signature = None
) -> JobPublic:
    """Stop a VM (by id or name); answers when it has stopped (202 if that takes too long).
    Authorised by X-Auth-Signature or by an `admin` or `user` token."""
    job = await plane.allocations.stop(ref)
    if job.status in ("pending", "running"):
        response.status_code = 202
    return JobPublic.model_validate(job)


@router.websocket("/machine/{ref}/logs")
async def machine_logs(websocket: WebSocket, ref: str) -> None:
    """New console lines of the VM as JSON text frames: {"type": "stdout", "message": LINE}."""
    plane = websocket.app.state.plane
    signed = plane.allocations.authorised(websocket.headers.get("x-auth-signature"))
    if not signed and not await api_role(plane, websocket_credentials(websocket)[0]):
        await websocket.close(code=1008, reason="unknown, revoked or missing token")
        return
    try:
        lines = await plane.allocations.log_lines(ref)
    except Exception as exc:
        await websocket.close(code=1008, reason=str(exc)[:120])
        return
    await accept_authorised(websocket, plane, extra_ok=True)

    async def send(line: str) -> None:
        await websocket.send_json({"type": "stdout", "message": line})

    await pump(websocket, lines, send)

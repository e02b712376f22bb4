"""aleph-vm's supervisor endpoints under /control (see corral.control.allocations)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response, WebSocket

from corral.api.deps import Plane, token_valid, websocket_token
from corral.api.errors import ERRORS, Unauthorized
from corral.api.schemas import AllocationRequest, AllocationResult, JobPublic, VmRef
from corral.api.streams import accept_authorised, pump

router = APIRouter(prefix="/control", tags=["aleph-vm supervisor"], responses=ERRORS)  # type: ignore[arg-type]

Signature = Annotated[
    str | None,
    Header(alias="X-Auth-Signature", max_length=1024, description="the allocation token"),
]
Authorization = Annotated[str | None, Header(max_length=1024, include_in_schema=False)]


async def _signed_or_token(plane: Plane, signature: str | None, authorization: str | None) -> None:
    if plane.allocations.authorised(signature):
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and await token_valid(plane, token.strip()):
        return
    raise Unauthorized("needs X-Auth-Signature (the allocation token) or a bearer token")


@router.post("/allocations")
async def allocations(
    body: AllocationRequest, plane: Plane, signature: Signature = None
) -> AllocationResult:
    """Make the listed VMs (ids or names) run; stop those allocated before and not listed now."""
    if not plane.allocations.authorised(signature):
        raise Unauthorized("X-Auth-Signature does not match the allocation token")
    return await plane.allocations.allocate(body)


@router.post("/machine/{ref}/stop", responses={202: {"description": "the stop is still under way"}})
async def stop_machine(
    ref: VmRef,
    response: Response,
    plane: Plane,
    signature: Signature = None,
    authorization: Authorization = None,
) -> JobPublic:
    """Stop a VM (by id or name); answers when it has stopped (202 if that takes too long)."""
    await _signed_or_token(plane, signature, authorization)
    job = await plane.allocations.stop(ref)
    if job.status in ("pending", "running"):
        response.status_code = 202
    return JobPublic.model_validate(job)


@router.websocket("/machine/{ref}/logs")
async def machine_logs(websocket: WebSocket, ref: str) -> None:
    """New console lines of the VM as JSON text frames: {"type": "stdout", "message": LINE}."""
    plane = websocket.app.state.plane
    signed = plane.allocations.authorised(websocket.headers.get("x-auth-signature"))
    if not signed and not await token_valid(plane, websocket_token(websocket)):
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

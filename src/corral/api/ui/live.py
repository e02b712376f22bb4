"""The dashboard's live channels, authenticated by the session cookie: the event stream
(the API's own GET /events) and a VM's serial console (the API's relay), each same-origin."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import StreamingResponse

from corral.api.routers.jobs import events
from corral.api.streams import POLICY_VIOLATION, console_typist, pump
from corral.api.ui.pages import SignedIn
from corral.api.ui.sessions import COOKIE
from corral.api.ui.web import SignInNeeded, plane_of, same_origin, valid_session
from corral.errors import CorralError

router = APIRouter()
BACKLOG = 64 * 1024  # bytes of the console log sent first


@router.get("/events/stream")
async def event_stream(request: Request, session: SignedIn) -> StreamingResponse:
    """Server-sent events of VMs and jobs, as GET /events sends them."""
    return await events(request, plane_of(request), ["vm", "job"])


@router.websocket("/vms/{vm_id}/console/ws")
async def console(websocket: WebSocket, vm_id: uuid.UUID) -> None:
    """The VM's serial console for xterm.js: output as binary frames, keystrokes back.

    Browsers send cookies on websockets from any site, so the Origin header must name this
    server (cross-site websocket hijacking); the session cookie then says who it is."""
    plane = websocket.app.state.plane
    if not same_origin(websocket.headers.get("host"), websocket.headers.get("origin")):
        await websocket.close(code=POLICY_VIOLATION, reason="cross-origin websocket refused")
        return
    try:
        await valid_session(plane, websocket.app.state.sessions, websocket.cookies.get(COOKIE))
    except SignInNeeded:
        await websocket.close(code=POLICY_VIOLATION, reason="not signed in")
        return
    try:
        stream = await plane.vms.console_stream(vm_id)
    except CorralError as exc:
        await websocket.close(code=POLICY_VIOLATION, reason=exc.message[:120])
        return
    await websocket.accept()
    try:  # what the console said so far (its end), so a page opened after boot shows it
        past = await plane.vms.console(vm_id)
        if past:
            await websocket.send_bytes(past[-BACKLOG:])
    except CorralError:
        pass
    await pump(websocket, stream, websocket.send_bytes, console_typist(plane, vm_id))

"""Streaming to clients: websockets fed from node streams, and server-sent events."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect

from corral.api.deps import api_role, websocket_credentials
from corral.control.plane import ControlPlane
from corral.errors import CorralError
from corral.node.protocol import MAX_CONSOLE_INPUT

POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011


async def accept_authorised(
    websocket: WebSocket, plane: ControlPlane, *, extra_ok: bool = False
) -> bool:
    """Accept the websocket if it carries a valid token of an API role (not `metrics`) or
    `extra_ok`; else refuse it (HTTP 403)."""
    token, subprotocol = websocket_credentials(websocket)
    if not (extra_ok or await api_role(plane, token)):
        await websocket.close(code=POLICY_VIOLATION, reason="unknown, revoked or missing token")
        return False
    await websocket.accept(subprotocol=subprotocol)
    return True


async def pump(
    websocket: WebSocket,
    source: AsyncIterator[Any],
    send: Callable[[Any], Awaitable[None]],
    received: Callable[[bytes], Awaitable[None]] | None = None,
) -> None:
    """Send what `source` yields until it ends or the client goes away, then close; what the
    client sends goes to `received` (in order), or is ignored without it."""

    async def forward() -> None:
        async for item in source:
            await send(item)

    async def watch() -> None:
        # A client that disconnects is noticed here even while the source is quiet.
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if received is not None:
                data = message.get("bytes")
                if data is None and message.get("text") is not None:
                    data = message["text"].encode()
                if data:
                    await received(data)

    sender = asyncio.ensure_future(forward())
    watcher = asyncio.ensure_future(watch())
    code, reason = 1000, ""
    try:
        done, _ = await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if sender in done and sender.exception() is not None:
            exc = sender.exception()
            if isinstance(exc, WebSocketDisconnect):
                return
            code = INTERNAL_ERROR
            reason = exc.message[:120] if isinstance(exc, CorralError) else "stream failed"
        if watcher in done:
            return
    finally:
        for task in (sender, watcher):
            task.cancel()
        await asyncio.gather(sender, watcher, return_exceptions=True)
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
    with contextlib.suppress(Exception):
        await websocket.close(code=code, reason=reason)


def console_typist(plane: ControlPlane, vm_id: uuid.UUID) -> Callable[[bytes], Awaitable[None]]:
    """What a console websocket does with what the client sends: type it on the VM's serial
    console, in pieces a node takes; a refusal (the VM stopped) ends the stream."""

    async def typed(data: bytes) -> None:
        for start in range(0, len(data), MAX_CONSOLE_INPUT):
            await plane.vms.console_input(vm_id, data[start : start + MAX_CONSOLE_INPUT])

    return typed

"""Tunnels: a TCP stream to a port of a VM, carried by websockets from the control plane's API
through the node agent (see corral.instance.endpoint for which ports a tunnel may reach).

A `Tunnel` is the byte stream itself: on the node a TCP connection to the VM's forward
(`TcpTunnel`), on the control plane a websocket to the node agent (`WebsocketTunnel`).
`splice` joins a server's accepted websocket to a tunnel: binary frames both ways, each side
read only once what was read before has been written (so a slow reader slows the writer, and
nothing piles up in memory), and when either end closes, both are closed and both pumps ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from corral.errors import CorralError, GuestError, InvalidInput
from corral.node.protocol import Tunnel

log = logging.getLogger("corral.tunnel")

CHUNK = 1 << 16  # bytes read from TCP at a time, i.e. the largest frame we send
MAX_FRAME = 1 << 20  # a larger frame from a client ends its tunnel (1009)
CONNECT_TIMEOUT = 10.0

NORMAL, UNSUPPORTED_DATA, TOO_BIG, INTERNAL_ERROR = 1000, 1003, 1009, 1011


def tunnel_port(text: str | None) -> int:
    """The `?port=` of a tunnel request, checked."""
    if not (text and text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        raise InvalidInput(f"port: give a TCP port (1-65535), not {text!r}", hint="?port=22")
    return int(text)


class TcpTunnel:
    """A TCP connection to (host, port) on this host."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, host: str, port: int, *, what: str) -> TcpTunnel:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                reader, writer = await asyncio.open_connection(host, port, limit=CHUNK)
        except (OSError, TimeoutError) as exc:
            raise GuestError(
                f"{what} does not answer: {exc or type(exc).__name__}",
                hint="is the VM running, and is something listening on that port in it?",
            ) from exc
        return cls(reader, writer)

    async def read(self) -> bytes:
        return await self._reader.read(CHUNK)

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):  # a reset connection included: cleanup never fails
            async with asyncio.timeout(5):
                await self._writer.wait_closed()


class WebsocketTunnel:
    """A tunnel carried by a websocket client connection (the `websockets` library's)."""

    def __init__(self, ws: Any, where: str) -> None:
        self._ws = ws
        self._where = where  # for messages: whose websocket this is

    async def read(self) -> bytes:
        from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK

        while True:
            try:
                message = await self._ws.recv()
            except ConnectionClosedOK:
                return b""
            except ConnectionClosedError as exc:
                if exc.rcvd is not None and exc.rcvd.code == INTERNAL_ERROR:  # the far end's error
                    raise CorralError(exc.rcvd.reason or f"{self._where} ended the tunnel") from exc
                raise GuestError(f"the tunnel through {self._where} broke: {exc}") from exc
            data = message if isinstance(message, bytes) else message.encode()
            if data:
                return data

    async def write(self, data: bytes) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self._ws.send(data)  # waits while the write buffer is over its high mark
        except ConnectionClosed as exc:
            raise GuestError(f"the tunnel through {self._where} is closed") from exc

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self._ws.close()


class _Refused(Exception):
    """A client frame that ends the tunnel: (close code, reason)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


async def splice(websocket: WebSocket, tunnel: Tunnel) -> None:
    """Carry bytes between an accepted websocket and `tunnel` until either end closes; then
    close both. Never raises for what either end does."""

    async def upstream() -> None:  # client -> VM
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                raise _Refused(UNSUPPORTED_DATA, "a tunnel carries binary frames only")
            if len(data) > MAX_FRAME:
                raise _Refused(TOO_BIG, f"frames are limited to {MAX_FRAME} bytes")
            if data:
                await tunnel.write(data)

    async def downstream() -> None:  # VM -> client
        while data := await tunnel.read():
            await websocket.send_bytes(data)

    up = asyncio.create_task(upstream())
    down = asyncio.create_task(downstream())
    try:
        done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (up, down):
            task.cancel()
        await asyncio.gather(up, down, return_exceptions=True)
        await tunnel.close()
    failure = next((t.exception() for t in done if t.exception() is not None), None)
    code, reason = NORMAL, ""
    if isinstance(failure, WebSocketDisconnect) or (up in done and failure is None):
        return  # the client went away: nothing to tell it
    if isinstance(failure, _Refused):
        code, reason = failure.code, failure.reason
    elif isinstance(failure, CorralError):
        # A close reason holds at most 123 bytes.
        code, reason = INTERNAL_ERROR, failure.message.encode()[:120].decode(errors="ignore")
    elif isinstance(failure, OSError):
        code, reason = INTERNAL_ERROR, f"the VM's end broke: {failure}"[:120]
    elif failure is not None:
        log.error("tunnel failed", exc_info=failure)
        code, reason = INTERNAL_ERROR, "internal error"
    if websocket.application_state != WebSocketState.DISCONNECTED:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await websocket.close(code, reason)

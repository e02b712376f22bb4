"""The client end of a tunnel: a websocket to the control plane's `/vms/{id}/tunnel?port=N`
that carries a TCP stream to port N of a VM on any host (see corral.api.routers.tunnel).

`stdio` pipes stdin and stdout over it (ssh's ProxyCommand: `corral tunnel-stdio`);
`connected_socket` gives a socket whose other end is the VM's port, for asyncssh's `sock=`.
Bytes travel as binary frames; each side is read only once what came before was written.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from corral.errors import CorralError
from corral.remote.api import RemoteUnreachable, error_of
from corral.remote.saved import Remote

CHUNK = 1 << 16
MAX_FRAME = 1 << 20
INTERNAL_ERROR = 1011


def tunnel_url(remote: Remote, vm_id: str, port: int) -> str:
    base = "ws" + remote.url.removeprefix("http")
    return f"{base}/vms/{quote(vm_id, safe='')}/tunnel?port={int(port)}"


def _headers(remote: Remote) -> dict[str, str]:
    return {"Authorization": f"Bearer {remote.token}"}


def _refused(exc: Any, remote: Remote) -> CorralError:
    response = exc.response
    return error_of(
        response.status_code, bytes(response.body or b""), response.reason_phrase, remote.url
    )


def _closed_error(exc: Any) -> CorralError | None:
    """The far end's own error, when it closed with one (1011 and a reason)."""
    rcvd = getattr(exc, "rcvd", None)
    if rcvd is not None and rcvd.code != 1000:
        return CorralError(f"the tunnel ended: {rcvd.reason or f'code {rcvd.code}'}")
    return None


# --- stdin/stdout (ssh's ProxyCommand) ----------------------------------------------------------


def _connect_options(remote: Remote) -> dict[str, Any]:
    """What both websocket clients (sync for stdio, asyncio for asyncssh) open a tunnel with."""
    return {"additional_headers": _headers(remote), "open_timeout": 30, "max_size": MAX_FRAME,
            "compression": None}  # fmt: skip


def _open_failed(exc: Exception, remote: Remote) -> CorralError:
    from websockets.exceptions import InvalidStatus

    if isinstance(exc, InvalidStatus):
        return _refused(exc, remote)
    return RemoteUnreachable(f"cannot open a tunnel through {remote.url}: {exc}")


def stdio(remote: Remote, vm_id: str, port: int, *, stdin: int = 0, stdout: int = 1) -> None:
    """Carry stdin to the VM's port and what it sends to stdout, until either side closes."""
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
    from websockets.sync.client import connect

    try:
        ws = connect(tunnel_url(remote, vm_id, port), **_connect_options(remote))
    except (InvalidStatus, OSError, TimeoutError, InvalidHandshake) as exc:
        raise _open_failed(exc, remote) from None

    def upstream() -> None:
        # A sync websocket may send from one thread while another receives.
        with contextlib.suppress(OSError, ConnectionClosed):
            while data := os.read(stdin, CHUNK):
                ws.send(data)
        ws.close()

    threading.Thread(target=upstream, name="corral-tunnel-up", daemon=True).start()
    with ws:
        try:
            for message in ws:
                data = message if isinstance(message, bytes) else message.encode()
                view = memoryview(data)
                while view:
                    view = view[os.write(stdout, view) :]
        except ConnectionClosed as exc:
            if (error := _closed_error(exc)) is not None:
                raise error from None
        except BrokenPipeError:
            return  # whoever reads stdout went away: so do we


# --- a socket for asyncssh ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def connected_socket(remote: Remote, vm_id: str, port: int) -> AsyncIterator[socket.socket]:
    """A socket whose far end is `port` of the VM, carried by a tunnel while the block runs;
    the tunnel and both sockets are closed on the way out."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake, InvalidStatus

    try:
        ws = await connect(tunnel_url(remote, vm_id, port), **_connect_options(remote))
    except (InvalidStatus, OSError, TimeoutError, InvalidHandshake) as exc:
        raise _open_failed(exc, remote) from None
    ours, theirs = socket.socketpair()
    try:
        reader, writer = await asyncio.open_connection(sock=ours, limit=CHUNK)
    except BaseException:
        ours.close()
        theirs.close()
        await ws.close()
        raise
    bridge = asyncio.create_task(_bridge(ws, reader, writer))
    try:
        yield theirs
    finally:
        bridge.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await bridge
        theirs.close()


async def _bridge(ws: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Carry bytes between the websocket and the socket until either closes; close both."""
    from websockets.exceptions import ConnectionClosed

    async def up() -> None:
        while data := await reader.read(CHUNK):
            await ws.send(data)

    async def down() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                writer.write(message if isinstance(message, bytes) else message.encode())
                await writer.drain()

    tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await ws.close()

"""Talking to a running QEMU over its QMP socket, with the qemu.qmp library.

Each call opens its own short connection: corral keeps no process per VM, so there is no
long-lived connection to share. Async functions are the core; `qmp_call` wraps one for
synchronous callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient
from qemu.qmp.error import QMPError

from corral.errors import QemuError

logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


async def qmp_execute_async(
    socket: Path, command: str, arguments: dict[str, Any] | None = None, *, timeout: float = 10
) -> Any:
    """Run one QMP command and return its result; failures become QemuError."""
    client = QMPClient("corral")
    try:
        async with asyncio.timeout(timeout):
            await client.connect(str(socket))
        async with asyncio.timeout(timeout):
            return await client.execute(command, arguments)
    except (QMPError, OSError, EOFError, TimeoutError) as exc:
        raise QemuError(f"QMP {command} on {socket} failed: {exc or type(exc).__name__}") from exc
    finally:
        with contextlib.suppress(QMPError, OSError, EOFError):
            await client.disconnect()


async def qmp_session_async(
    socket: Path, *commands: tuple[str, dict[str, Any] | None]
) -> list[Any]:
    """Run several commands over one connection, in order."""
    client = QMPClient("corral")
    try:
        async with asyncio.timeout(10):
            await client.connect(str(socket))
        return [await client.execute(name, args) for name, args in commands]
    except (QMPError, OSError, EOFError, TimeoutError) as exc:
        raise QemuError(f"QMP on {socket} failed: {exc or type(exc).__name__}") from exc
    finally:
        with contextlib.suppress(QMPError, OSError, EOFError):
            await client.disconnect()


def qmp_call(
    socket: Path, command: str, arguments: dict[str, Any] | None = None, *, timeout: float = 10
) -> Any:
    return asyncio.run(qmp_execute_async(socket, command, arguments, timeout=timeout))


async def qmp_answers_async(socket: Path, timeout: float = 1.0) -> bool:
    try:
        await qmp_execute_async(socket, "query-status", timeout=timeout)
    except QemuError:
        return False
    return True

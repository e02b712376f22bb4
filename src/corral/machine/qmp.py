"""Talking to a running QEMU over its QMP socket: qemu.qmp's client behind typed helpers.

`Qmp` is one connection. A detached instance is driven by short-lived commands, each opening
its own (`qmp_execute_async`); a build keeps one open for its VM's life. Every failure, the
connection's or the command's, becomes a QemuError that names the command and the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from types import TracebackType
from typing import Any

from qemu.qmp import QMPClient
from qemu.qmp.error import QMPError

from corral.errors import QemuError

logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)

TIMEOUT = 10.0  # default seconds for connecting and for one command

_FAILURES = (QMPError, OSError, EOFError, TimeoutError)


def _failed(what: str, socket: Path, exc: BaseException) -> QemuError:
    return QemuError(f"QMP {what}on {socket} failed: {exc or type(exc).__name__}")


class Qmp:
    """One QMP connection to a QEMU."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self._client = QMPClient("corral")

    async def connect(self, timeout: float = TIMEOUT) -> Qmp:
        try:
            async with asyncio.timeout(timeout):
                await self._client.connect(str(self.socket))
        except _FAILURES as exc:
            await self.close()
            raise _failed("", self.socket, exc) from exc
        return self

    async def close(self) -> None:
        with contextlib.suppress(QMPError, OSError, EOFError):
            await self._client.disconnect()

    async def __aenter__(self) -> Qmp:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def execute(
        self, command: str, arguments: dict[str, Any] | None = None, *, timeout: float = TIMEOUT
    ) -> Any:
        """Run one command and return its result."""
        try:
            async with asyncio.timeout(timeout):
                return await self._client.execute(command, arguments)
        except _FAILURES as exc:
            raise _failed(f"{command} ", self.socket, exc) from exc

    async def send_fd(self, fd: int, name: str) -> None:
        """Hand QEMU an open file descriptor under `name` (SCM_RIGHTS, then getfd): QEMU then
        reads or writes a file it could not open itself under -sandbox."""
        try:
            self._client.send_fd_scm(fd)
        except (QMPError, OSError) as exc:
            raise _failed("getfd ", self.socket, exc) from exc
        await self.execute("getfd", {"fdname": name})

    # --- typed helpers ---------------------------------------------------------------------

    async def status(self) -> str:
        """The run state: 'running', 'paused', 'shutdown', ..."""
        return str((await self.execute("query-status"))["status"])

    async def set_link(self, nic: str, up: bool) -> None:
        await self.execute("set_link", {"name": nic, "up": up})

    async def snapshot_onto(self, device: str, file: Path, node: str) -> None:
        """Make `file` (created by the caller, backed by the current top) the device's top."""
        await self.execute(
            "blockdev-snapshot-sync",
            {"device": device, "snapshot-file": str(file), "snapshot-node-name": node,
             "format": "qcow2", "mode": "existing"},
        )  # fmt: skip

    async def job(self, job_id: str) -> dict[str, Any] | None:
        jobs = await self.execute("query-jobs")
        return next((j for j in jobs if j["id"] == job_id), None)


async def qmp_execute_async(
    socket: Path, command: str, arguments: dict[str, Any] | None = None, *,
    timeout: float = TIMEOUT,
) -> Any:  # fmt: skip
    """Run one command over a connection of its own and return its result."""
    qmp = Qmp(socket)
    try:
        await qmp.connect(timeout)
    except QemuError as exc:  # said again naming the command it was for
        raise _failed(f"{command} ", socket, exc.__cause__ or exc) from exc.__cause__
    async with qmp:
        return await qmp.execute(command, arguments, timeout=timeout)


async def qmp_answers_async(socket: Path, timeout: float = 1.0) -> bool:
    try:
        await qmp_execute_async(socket, "query-status", timeout=timeout)
    except QemuError:
        return False
    return True

"""Talking to the agent inside a guest: qemu-ga's JSON protocol over a virtio-serial port.

The port is a unix socket QEMU listens on (MachineSpec.agent_socket). Unlike QMP there is no
greeting and no capability negotiation, and the channel may hold answers to commands sent by
an earlier client (or, in a restored guest, by the client of the machine that was saved): so
every connection starts with guest-sync-delimited and a random id, and whatever comes before
the answer carrying that id is thrown away. Only what corral needs is here: ping, and running
a program with its stdin given and its output captured (guest-exec, guest-exec-status). The
tiny test guest answers exactly this subset.

Everything the guest says is untrusted: answers are size-limited JSON, checked for shape.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from corral.errors import DeadlineExceeded, GuestError

SYNC_ATTEMPT = 1.0  # seconds to wait for one sync answer before asking again
MAX_ANSWER = 64 << 20  # bytes in one answer line (captured output is base64 inside it)
EXEC_POLL = 0.02  # seconds between guest-exec-status polls, doubling up to EXEC_POLL_MAX
# A poll is one cheap request to the agent; the wait after an exit is at most this long (and
# a warm clone's launch, the identity script, is a second: 0.25 s was a fifth of it).
EXEC_POLL_MAX = 0.08


@dataclass(frozen=True)
class ExecResult:
    exitcode: int
    stdout: bytes
    stderr: bytes


class GuestAgent:
    """One connection to a guest's agent; opened and synced on first use."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> GuestAgent:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    # --- the protocol ----------------------------------------------------------------------

    async def sync(self, timeout: float = 10.0) -> None:
        """Connect (again) and agree with the agent on where the answers start.

        Raises DeadlineExceeded when no agent answers in time (none installed, or the guest
        has not started it yet).
        """
        end = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < end:
            await self.close()
            try:
                self._reader, self._writer = await asyncio.open_unix_connection(
                    str(self.socket), limit=MAX_ANSWER
                )
            except OSError as exc:
                last = str(exc)
                await asyncio.sleep(0.05)
                continue
            token = secrets.randbelow(1 << 31)
            # 0xFF first: it resets a qemu-ga whose parser holds half a command.
            self._writer.write(b"\xff" + _command("guest-sync-delimited", {"id": token}))
            try:
                await self._writer.drain()
                if await self._sync_answer(token, min(SYNC_ATTEMPT, end - time.monotonic())):
                    return
            except (OSError, TimeoutError, ValueError, EOFError, asyncio.LimitOverrunError) as exc:
                last = str(exc) or type(exc).__name__
        await self.close()
        raise DeadlineExceeded(
            f"the guest agent did not answer within {timeout:g}s ({last})",
            hint="the image needs qemu-guest-agent (corral's images have it)",
        )

    async def _sync_answer(self, token: int, timeout: float) -> bool:
        """Read past anything stale to the 0xFF that precedes the sync answer."""
        assert self._reader is not None
        async with asyncio.timeout(max(timeout, 0.01)):
            while True:
                await self._reader.readuntil(b"\xff")
                line = await self._reader.readline()
                with contextlib.suppress(ValueError):
                    answer = json.loads(line)
                    if isinstance(answer, dict) and answer.get("return") == token:
                        return True

    async def call(
        self, command: str, arguments: dict[str, Any] | None = None, *, timeout: float = 10.0
    ) -> Any:
        """Run one agent command and return its result (synced first if not yet)."""
        if self._writer is None:
            await self.sync(timeout)
        assert self._reader is not None and self._writer is not None
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(_command(command, arguments))
                await self._writer.drain()
                line = await self._reader.readline()
        except TimeoutError:
            await self.close()
            raise DeadlineExceeded(f"the guest agent did not answer {command} in time") from None
        except (OSError, ValueError) as exc:  # ValueError: an answer over MAX_ANSWER
            await self.close()
            raise GuestError(f"guest agent {command} failed: {exc}") from exc
        return _result(command, line)

    async def ping(self, timeout: float = 2.0) -> bool:
        try:
            await self.call("guest-ping", timeout=timeout)
        except (DeadlineExceeded, GuestError):
            return False
        return True

    async def exec(
        self, argv: Sequence[str], *, stdin: bytes = b"", timeout: float = 60.0
    ) -> ExecResult:
        """Run a program in the guest with `stdin` as its input; wait for it to exit."""
        end = time.monotonic() + timeout
        arguments: dict[str, Any] = {
            "path": argv[0], "arg": list(argv[1:]), "capture-output": True,
        }  # fmt: skip
        if stdin:
            arguments["input-data"] = base64.b64encode(stdin).decode()
        started = await self.call("guest-exec", arguments, timeout=timeout)
        pid = started.get("pid") if isinstance(started, dict) else None
        if not isinstance(pid, int):
            raise GuestError(f"guest agent guest-exec answered without a pid: {started!r:.200}")
        delay = EXEC_POLL
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded(f"{argv[0]} did not finish in the guest within {timeout:g}s")
            status = await self.call("guest-exec-status", {"pid": pid}, timeout=left)
            if isinstance(status, dict) and status.get("exited"):
                return _exec_result(status)
            await asyncio.sleep(min(delay, max(left, 0)))
            delay = min(delay * 2, EXEC_POLL_MAX)


def _command(command: str, arguments: dict[str, Any] | None = None) -> bytes:
    message: dict[str, Any] = {"execute": command}
    if arguments is not None:
        message["arguments"] = arguments
    return json.dumps(message).encode() + b"\n"


def _result(command: str, line: bytes) -> Any:
    if not line:
        raise GuestError(f"the guest agent closed the channel during {command}")
    try:
        answer = json.loads(line)
    except ValueError:
        raise GuestError(f"the agent answered {command} with non-JSON: {line!r:.200}") from None
    if not isinstance(answer, dict):
        raise GuestError(f"the guest agent answered {command} with {answer!r:.200}")
    if "error" in answer:
        error = answer["error"]
        desc = error.get("desc", error) if isinstance(error, dict) else error
        raise GuestError(f"guest agent {command} failed: {desc!s:.500}")
    if "return" not in answer:
        raise GuestError(f"the guest agent answered {command} with {answer!r:.200}")
    return answer["return"]


def _exec_result(status: dict[str, Any]) -> ExecResult:
    def data(key: str) -> bytes:
        value = status.get(key, "")
        try:
            return base64.b64decode(value, validate=True) if isinstance(value, str) else b""
        except ValueError:
            raise GuestError(f"the guest agent sent bad base64 in {key}") from None

    code = status.get("exitcode")
    if not isinstance(code, int):  # killed by a signal: qemu-ga reports "signal" instead
        signal = status.get("signal")
        code = 128 + signal if isinstance(signal, int) else -1
    return ExecResult(code, data("out-data"), data("err-data"))

"""The guest agent client against a stand-in agent on a unix socket (real guests: tests/guest).

The stand-in speaks qemu-ga's protocol as a channel that held earlier traffic would: stale
answers come before the sync answer, and the client must skip them.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

from corral.errors import DeadlineExceeded, GuestError
from corral.machine.agent import GuestAgent


async def stand_in(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A tiny qemu-ga: sync-delimited, ping, exec (runs nothing: echoes stdin upper-cased)."""
    writer.write(b'{"return": 12345}\n\xff{"return": 1}\n')  # stale, from an earlier client
    runs: dict[int, bytes] = {}
    while line := await reader.readline():
        message = json.loads(line.lstrip(b"\xff"))
        command, args = message["execute"], message.get("arguments", {})
        if command == "guest-sync-delimited":
            writer.write(b"\xff" + json.dumps({"return": args["id"]}).encode() + b"\n")
        elif command == "guest-ping":
            writer.write(b'{"return": {}}\n')
        elif command == "guest-exec":
            if args["path"] == "/bin/false":
                writer.write(b'{"error": {"class": "GenericError", "desc": "no such file"}}\n')
            else:
                runs[7] = base64.b64decode(args.get("input-data", ""))
                writer.write(b'{"return": {"pid": 7}}\n')
        elif command == "guest-exec-status":
            out = base64.b64encode(runs[args["pid"]].upper()).decode()
            answer = {"exited": True, "exitcode": 3, "out-data": out}
            writer.write(json.dumps({"return": answer}).encode() + b"\n")
        await writer.drain()
    writer.close()


def test_the_client_skips_stale_answers_and_runs_a_program(home: Path) -> None:
    async def scenario() -> None:
        socket = home / "agent.sock"
        server = await asyncio.start_unix_server(stand_in, str(socket))
        async with server, GuestAgent(socket) as agent:
            assert await agent.ping()
            result = await agent.exec(["/bin/sh", "-s"], stdin=b"echo hi")
            assert (result.exitcode, result.stdout, result.stderr) == (3, b"ECHO HI", b"")
            with pytest.raises(GuestError, match="no such file"):
                await agent.exec(["/bin/false"])

    asyncio.run(scenario())


def test_an_agent_that_never_answers_is_a_deadline(home: Path) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # like a port nobody reads in the guest

    async def scenario() -> None:
        socket = home / "agent.sock"
        server = await asyncio.start_unix_server(silent, str(socket))
        async with server, GuestAgent(socket) as agent:
            with pytest.raises(DeadlineExceeded, match="guest agent did not answer"):
                await agent.sync(timeout=1.5)
            assert not await agent.ping(timeout=1.0)

    asyncio.run(scenario())

"""A stand-in for QEMU: a process whose command line names its QMP socket, answering QMP there.

    python fake_qemu.py QMP_SOCKET LOG MODE

Only the wire is fake: the Vm under test talks to it with the real qemu.qmp client, finds it
by its command line and signals it. MODE says how it takes being stopped:

    obedient  system_powerdown or quit ends it
    deaf      system_powerdown is ignored (as by a guest without ACPI); quit ends it
    stubborn  both ignored, and SIGTERM too: only SIGKILL ends it

Every command it receives is appended to LOG, one name a line.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

GREETING = {
    "QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 8}, "package": ""},
            "capabilities": []}
}  # fmt: skip


async def main(socket: str, log: str, mode: str) -> None:
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    decoder = json.JSONDecoder()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(json.dumps(GREETING).encode() + b"\r\n")
        buffer = ""
        while chunk := await reader.read(4096):
            buffer += chunk.decode()
            while buffer.strip():
                try:
                    msg, end = decoder.raw_decode(buffer.lstrip())
                except json.JSONDecodeError:
                    break  # the rest of the message is still on its way
                buffer = buffer.lstrip()[end:]
                command = msg.get("execute", "")
                with open(log, "a") as f:
                    f.write(command + "\n")
                result = {"status": "running"} if command == "query-status" else {}
                reply = {"return": result, **({"id": msg["id"]} if "id" in msg else {})}
                writer.write(json.dumps(reply).encode() + b"\r\n")
                await writer.drain()
                ends = {"obedient": ("quit", "system_powerdown"), "deaf": ("quit",)}
                if command in ends.get(mode, ()):
                    os._exit(0)

    server = await asyncio.start_unix_server(serve, socket)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))

"""The serial console: attach to its unix socket, or print and follow its log file."""

from __future__ import annotations

import os
import selectors
import socket
import sys
import termios
import time
import tty
from pathlib import Path

from corral.context import Context
from corral.errors import QemuError
from corral.instance import lifecycle
from corral.machine import console as serial

DETACH = b"\x1d"  # Ctrl-]
PIPE_GRACE = 2.0  # seconds to keep reading after stdin ends when not on a terminal


def attach(path: Path) -> None:
    """Bridge the terminal (or a pipe) to the console socket until Ctrl-] or end of input."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError as exc:
        raise QemuError(f"cannot attach to the console at {path}: {exc.strerror}") from exc
    stdin = sys.stdin.fileno()
    interactive = os.isatty(stdin)
    saved = termios.tcgetattr(stdin) if interactive else None
    if interactive:
        sys.stderr.write("[attached to the serial console; detach with Ctrl-]]\r\n")
        tty.setraw(stdin)
    try:
        _pump(sock, stdin, interactive)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
            sys.stderr.write("\n[detached]\n")
        sock.close()


def _pump(sock: socket.socket, stdin: int, interactive: bool) -> None:
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    sel.register(stdin, selectors.EVENT_READ)
    stdout = sys.stdout.buffer
    deadline: float | None = None
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        events = sel.select(timeout)
        if not events and deadline is not None:
            return
        for key, _ in events:
            if key.fileobj is sock:
                data = sock.recv(65536)
                if not data:
                    return
                stdout.write(data)
                stdout.flush()
            else:
                data = os.read(stdin, 65536)
                if interactive and DETACH in data:
                    sock.sendall(data.split(DETACH, 1)[0])
                    return
                if not data:
                    sel.unregister(stdin)
                    deadline = time.monotonic() + PIPE_GRACE
                    continue
                sock.sendall(data)


def print_log(ctx: Context, name: str, *, follow: bool) -> None:
    """Print the serial log; with follow, keep printing until the VM stops or Ctrl-C."""
    path = ctx.home.instance(name).serial_log
    out = sys.stdout.buffer

    def running() -> bool:
        return follow and lifecycle.status(ctx, name)[1].pid is not None

    for chunk in serial.follow(path, running=running):
        out.write(chunk)
        out.flush()

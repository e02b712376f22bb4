"""An attacker's request: a huge body pushed at a server over a raw socket, as fast as it takes
it, until the server answers; and the resident memory of a server process."""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass
from pathlib import Path

MIB = 1 << 20
BLOCK = b"x" * (64 << 10)


@dataclass(frozen=True)
class Flooded:
    status: int | None  # the server's answer, None if it sent none
    seconds: float  # from the request line to the answer
    sent: int  # bytes of body (and chunk framing) the server let us send
    answer: bytes  # the answer's head and what came of its body


def rss_mib(pid: int) -> float:
    """VmRSS of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def flood(
    port: int,
    path: str,
    *,
    total: int = 200 * MIB,
    chunked: bool = False,
    headers: dict[str, str] | None = None,
) -> Flooded:
    """POST `total` bytes to 127.0.0.1:port, with Content-Length or chunked; stop sending as
    soon as the server answers or closes."""
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}")
    frame = b"%x\r\n%s\r\n" % (len(BLOCK), BLOCK) if chunked else BLOCK
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    start = time.monotonic()
    try:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        sock.setblocking(False)
        sent, pending = 0, memoryview(frame)
        while sent < total:
            readable, writable, _ = select.select([sock], [sock], [], 30)
            if readable or not writable:
                break  # an answer, an end, or a server that neither reads nor answers
            try:
                n = sock.send(pending)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += n
            pending = pending[n:] or memoryview(frame)
        else:
            if chunked:
                sock.setblocking(True)
                sock.sendall(b"0\r\n\r\n")
        return _answer(sock, start, sent)
    finally:
        sock.close()


def _answer(sock: socket.socket, start: float, sent: int) -> Flooded:
    sock.setblocking(True)
    sock.settimeout(30)
    data = b""
    seconds = None
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            seconds = seconds or time.monotonic() - start
            data += chunk
        sock.settimeout(0.5)
        data += sock.recv(65536)  # some of the body, if it came along
    except (ConnectionResetError, TimeoutError):
        pass
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None
    return Flooded(status, seconds or time.monotonic() - start, sent, data)


def assert_refused_unread(pid: int, port: int, path: str, auth: dict[str, str]) -> None:
    """The server `pid` answers 200 MB bodies, with Content-Length and chunked, at once: 401
    without a token, 413 with `auth` (after at most its cap); its RSS stays as it was."""
    cases = [({}, False, 401), ({}, True, 401), (auth, False, 413), (auth, True, 413)]
    for headers, chunked, status in cases:  # every path once (imports, caches), then measure
        assert flood(port, path, total=4 * MIB, chunked=chunked, headers=headers).status == status
    before = rss_mib(pid)
    for headers, chunked, status in cases:
        answer = flood(port, path, chunked=chunked, headers=headers)
        assert answer.status == status, (headers, chunked, answer)
        assert answer.seconds < 5, answer.seconds
        # The server stopped taking the body: what was sent fits in the sockets' buffers.
        assert answer.sent < 40 * MIB, (headers, chunked, answer.sent)
        grown = rss_mib(pid) - before
        assert grown < 4, f"RSS grew by {grown:.1f} MiB ({headers}, chunked={chunked})"

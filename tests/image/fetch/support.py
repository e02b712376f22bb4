"""Support for the fetch tests: a real HTTP server in a thread, small qcow2 images, and checks
that a failed pull left the store as it was.

The server serves a directory tree (with directory listings, Range and If-Range) and can be
told, per path, to answer with another status, another Content-Type, to drop the connection
after N bytes (a number of times), to ignore Range, or to never answer.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import html
import socket
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from corral.context import Context


@dataclass
class Route:
    status: int = 200
    content_type: str | None = None
    drop_after: int | None = None  # close the connection after this many body bytes...
    drops: int = 1 << 30  # ...this many times, then answer in full
    ranges: bool = True  # honour Range requests
    hang: bool = False  # accept the connection and never answer


@dataclass
class Request:
    path: str
    range: str | None
    if_range: str | None


@dataclass
class Server:
    root: Path
    routes: dict[str, Route] = field(default_factory=dict)
    log: list[Request] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def add(self, path: str, data: bytes) -> str:
        """Serve data at path; return its URL."""
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return self.url(path)

    def route(self, path: str, **kwargs: object) -> None:
        self.routes["/" + path.lstrip("/")] = Route(**kwargs)  # type: ignore[arg-type]

    def requests(self, path: str) -> list[Request]:
        return [r for r in self.log if r.path == "/" + path.lstrip("/")]


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            server.log.append(Request(path, self.headers.get("Range"),
                                      self.headers.get("If-Range")))  # fmt: skip
            route = server.routes.get(path, Route())
            if route.hang:
                server.stopping.wait(60)
                self.close_connection = True
                return
            if route.status != 200:
                self._send(route.status, b"<html><body>nope</body></html>", "text/html")
                return
            local = server.root / path.lstrip("/")
            if local.is_dir():
                links = "".join(
                    f'<li><a href="{urllib.parse.quote(p.name)}">{html.escape(p.name)}</a></li>'
                    for p in sorted(local.iterdir())
                )
                self._send(200, f"<html><body><ul>{links}</ul></body></html>".encode(),
                           "text/html")  # fmt: skip
                return
            if not local.is_file():
                self._send(404, b"<html><body>404 Not Found</body></html>", "text/html")
                return
            self._file(local, route)

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _file(self, local: Path, route: Route) -> None:
            data = local.read_bytes()
            stat = local.stat()
            etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
            start = 0
            wanted = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            if wanted and route.ranges and (if_range is None or if_range == etag):
                start = int(wanted.removeprefix("bytes=").split("-")[0])
            body = data[start:]
            if start:
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            kind = route.content_type or (
                "text/plain" if "SUMS" in local.name or "CHECKSUM" in local.name
                else "application/octet-stream"
            )  # fmt: skip
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", email.utils.formatdate(stat.st_mtime, usegmt=True))
            self.send_header("Accept-Ranges", "bytes" if route.ranges else "none")
            self.end_headers()
            if route.drop_after is not None and route.drops > 0:
                route.drops -= 1
                self.wfile.write(body[: max(route.drop_after - start, 0)])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

    return Handler


@contextlib.contextmanager
def serve(root: Path) -> Iterator[Server]:
    """Run a Server on 127.0.0.1 (a free port) for the duration of the block."""
    root.mkdir(parents=True, exist_ok=True)
    srv = Server(root=root)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(srv))
    httpd.daemon_threads = True
    srv.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.stopping.set()
        httpd.shutdown()
        httpd.server_close()


def closed_port_url() -> str:
    """A URL on a port nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/disk.qcow2"


# --- images -----------------------------------------------------------------------------------


def run(*argv: str | Path) -> None:
    subprocess.run([str(a) for a in argv], check=True, capture_output=True)


def make_qcow2(path: Path, size: str = "8M", seed: int = 0) -> Path:
    """A small qcow2 with data in it (so a truncated copy is really truncated)."""
    run("qemu-img", "create", "-q", "-f", "qcow2", path, size)
    run("qemu-io", "-f", "qcow2", "-c", f"write -P {0x41 + seed} 0 1M",
        "-c", f"write -P {0x61 + seed} 2M 512k", path)  # fmt: skip
    return path


def store_state(ctx: Context) -> tuple[list[str], list[str], list[str]]:
    """(blobs, manifests, tmp files): what a failed pull must leave unchanged."""

    def names(path: Path) -> list[str]:
        return sorted(p.name for p in path.iterdir()) if path.is_dir() else []

    return names(ctx.home.blobs), names(ctx.home.manifests), names(ctx.home.image_tmp)


def assert_unchanged(ctx: Context, before: tuple[list[str], list[str], list[str]]) -> None:
    after = store_state(ctx)
    assert after[0] == before[0], "a blob was added"
    assert after[1] == before[1], "a manifest was added"
    assert after[2] == [], f"left in images/tmp: {after[2]}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

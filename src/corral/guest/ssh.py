"""SSH to guests with asyncssh: connect, run commands, stream output, copy files.

Copying uses plain `cat` and `tar` over exec channels rather than SFTP, so it works with any
guest that has a POSIX shell (busybox and dropbear included).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import logging
import shlex
import socket
import tarfile
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import asyncssh

from corral.errors import GuestError, InvalidInput, NotFound
from corral.guest.receive import receive_file, receive_tree
from corral.guest.tar import Read

logging.getLogger("asyncssh").setLevel(logging.WARNING)

Sink = Callable[[bytes], None]

# ed25519 first: some small sshd builds (dropbear) advertise RSA without having an RSA key.
HOST_KEY_ALGS = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
    "ssh-rsa",
)


@dataclass(frozen=True)
class SshTarget:
    """Where and as whom to reach a guest: through a forward on this host (127.0.0.1 and the
    forwarded port), or at the guest's own address on a network (`SshTarget.at`, port 22).
    (Over a tunnel's socket, `host` only names the guest.)"""

    port: int
    user: str
    key: Path
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise InvalidInput(f"invalid ssh port {self.port}")

    @classmethod
    def at(cls, address: str, *, user: str, key: Path, port: int = 22) -> SshTarget:
        """The guest at its own address on a network (a bridge, no forward). The address is an
        IP address, never a name: nothing resolves it, and no caller's or guest's text reaches
        asyncssh as a host to look up."""
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise InvalidInput(f"invalid guest address {address!r}: not an IP address") from None
        return cls(port=port, user=user, key=key, host=address)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


async def connect(
    target: SshTarget, *, timeout: float = 10, sock: socket.socket | None = None
) -> asyncssh.SSHClientConnection:
    """Open a connection; guest host keys are not pinned (they are regenerated per instance).
    With `sock`, SSH runs over that connected socket (e.g. a tunnel's) instead of TCP to
    the target's host and port.

    asyncssh's own connect_timeout runs through asyncio.wait_for, which on Python 3.11 loses a
    cancellation (a Ctrl-C) that arrives as the connection completes: the caller would go on
    as if nothing happened. So the timeout is ours, and a cancellation seen while connecting
    is raised here whatever asyncssh did with it.
    """
    task = asyncio.current_task()
    cancelling = task.cancelling() if task is not None else 0
    async with asyncio.timeout(timeout):
        conn = await asyncssh.connect(
            target.host,
            target.port,
            sock=sock,
            username=target.user,
            client_keys=[str(target.key)],
            known_hosts=None,
            server_host_key_algs=HOST_KEY_ALGS,
            agent_path=None,
            config=None,
            connect_timeout=None,
            login_timeout=timeout,
            keepalive_interval=15,
        )
    if task is not None and task.cancelling() > cancelling:
        conn.abort()
        raise asyncio.CancelledError
    return conn


def command_line(command: str | Sequence[str]) -> str:
    return command if isinstance(command, str) else shlex.join(command)


def _exit_code(proc: asyncssh.SSHClientProcess) -> int:
    if proc.exit_status is not None and proc.exit_status >= 0:
        return proc.exit_status
    return 255  # killed by a signal or the channel closed without a status, as ssh(1) does


async def run_on(
    conn: asyncssh.SSHClientConnection,
    command: str | Sequence[str],
    *,
    stdin: bytes | None = None,
    timeout: float | None = None,
) -> ExecResult:
    """Run a command and collect its output."""
    async with asyncio.timeout(timeout):
        result = await conn.run(command_line(command), input=stdin, encoding=None, check=False)
    return ExecResult(
        result.exit_status if result.exit_status is not None and result.exit_status >= 0 else 255,
        cast(bytes, result.stdout or b""),  # bytes: encoding=None
        cast(bytes, result.stderr or b""),
    )


@contextlib.asynccontextmanager
async def remote_process(
    conn: asyncssh.SSHClientConnection, command: str
) -> AsyncIterator[asyncssh.SSHClientProcess[bytes]]:
    """A remote process whose channel is closed on the way out without waiting for it.

    Without a PTY a command outlives the closing of its channel (no hangup), and the server
    closes the channel only when the command ends: waiting there would hold up a Ctrl-C or a
    cancelled step for as long as the command runs. Whoever cancels ends the VM or connection.
    """
    proc = await conn.create_process(command, encoding=None)
    try:
        yield proc
    finally:
        proc.close()


async def stream_on(
    conn: asyncssh.SSHClientConnection,
    command: str | Sequence[str],
    *,
    stdout: Sink,
    stderr: Sink | None = None,
    stdin: bytes | AsyncIterable[bytes] | None = None,
) -> int:
    """Run a command, passing its output to the sinks as it arrives (stderr to stdout's sink
    when it has none of its own); return its exit code."""
    async with remote_process(conn, command_line(command)) as proc:

        async def pump(reader: asyncssh.SSHReader[bytes], sink: Sink) -> None:
            while chunk := await reader.read(65536):
                sink(chunk)

        async def feed() -> None:
            if isinstance(stdin, bytes):
                proc.stdin.write(stdin)
            elif stdin is not None:
                async for chunk in stdin:
                    proc.stdin.write(chunk)
                    await proc.stdin.drain()
            proc.stdin.write_eof()

        await asyncio.gather(pump(proc.stdout, stdout), pump(proc.stderr, stderr or stdout), feed())
        await proc.wait()
        return _exit_code(proc)


# --- copying ------------------------------------------------------------------------------


async def upload(conn: asyncssh.SSHClientConnection, src: Path, dst: str) -> None:
    """Copy a local file or directory to dst in the guest."""
    if src.is_dir():
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(src, arcname=".")
        command = f"mkdir -p {shlex.quote(dst)} && tar -xf - -C {shlex.quote(dst)}"
        data = buf.getvalue()
    elif src.is_file():
        command = f'd={shlex.quote(dst)}; [ -d "$d" ] && d="$d"/{shlex.quote(src.name)}; cat > "$d"'
        data = src.read_bytes()
    else:
        raise NotFound(f"no such file: {src}")
    result = await run_on(conn, ["sh", "-c", command], stdin=data)
    if result.exit_code != 0:
        raise GuestError(f"copy to {dst} failed: {_last_line(result.stderr)}")


async def download(conn: asyncssh.SSHClientConnection, src: str, dst: Path) -> None:
    """Copy a guest file or directory to the local path dst, streamed to disk as it comes.

    What the guest sends is not trusted: receive.py writes it (see there).
    """
    probe = await run_on(conn, ["sh", "-c", f"test -d {shlex.quote(src)} && echo dir"])
    if probe.stdout.strip() == b"dir":
        target = dst / Path(src.rstrip("/")).name if dst.is_dir() else dst
        argv = ["tar", "-cf", "-", "-C", src, "."]
        await _pull(conn, argv, lambda read, check: receive_tree(read, target, check), src)
        return
    target = dst / Path(src).name if dst.is_dir() else dst
    if not target.parent.is_dir():
        raise InvalidInput(f"no such directory: {target.parent}")
    await _pull(conn, ["cat", src], lambda read, check: receive_file(read, target, check), src)


async def _pull(
    conn: asyncssh.SSHClientConnection,
    argv: list[str],
    land: Callable[[Read, Callable[[], None]], None],
    src: str,
) -> None:
    """Run argv in the guest and hand its stdout to `land`, which runs in a thread.

    `land` reads with a blocking `read(n)` that waits on the channel here, so nothing is
    held in memory beyond what it asks for; it reads to the end, then calls `check()` before
    it keeps anything, which raises if the guest's command failed.
    """
    loop = asyncio.get_running_loop()
    errors = bytearray()
    async with remote_process(conn, command_line(argv)) as proc:
        proc.stdin.write_eof()

        async def collect() -> None:
            while chunk := await proc.stderr.read(65536):
                if len(errors) < 65536:
                    errors.extend(chunk)

        collector = asyncio.create_task(collect())

        async def failure(wait: float | None) -> GuestError | None:
            """The command's own failure once it has ended; None if it succeeded (or runs on
            after `wait` seconds). Its output must have been read: nothing more is."""
            try:
                async with asyncio.timeout(wait):
                    await proc.wait_closed()
                    await collector
            except TimeoutError:
                return None
            if _exit_code(proc) == 0:
                return None
            return GuestError(f"copy from {src} failed: {_last_line(bytes(errors))}")

        def read(n: int) -> bytes:
            return asyncio.run_coroutine_threadsafe(proc.stdout.read(n), loop).result()

        async def finished() -> None:
            if (error := await failure(None)) is not None:
                raise error

        def check() -> None:
            asyncio.run_coroutine_threadsafe(finished(), loop).result()

        try:
            await asyncio.to_thread(land, read, check)
        except GuestError:
            # A command that failed sends a stub or nothing: its own words explain better.
            if (error := await failure(2)) is not None:
                raise error from None
            raise
        finally:
            collector.cancel()


def _last_line(data: bytes) -> str:
    lines = data.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else "no error output"


async def close(conn: asyncssh.SSHClientConnection) -> None:
    conn.close()
    with contextlib.suppress(Exception):  # TimeoutError included: cleanup never hangs
        async with asyncio.timeout(5):
            await conn.wait_closed()

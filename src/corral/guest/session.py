"""A session with one guest over one SSH connection: every way corral talks to a guest.

Run a command as a given user, in a directory, with an environment; capture its output or
stream it (stdout and stderr apart, or merged); copy files in and out. `exec`, `cp`,
configure and build steps all go through it. What a download brings back is not trusted
(see receive.py).
"""

from __future__ import annotations

import re
import shlex
import socket
from collections.abc import AsyncIterable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import asyncssh

from corral.errors import InvalidInput
from corral.guest.ssh import (
    ExecResult,
    SshTarget,
    close,
    connect,
    download,
    run_on,
    stream_on,
    upload,
)

Sink = Callable[[bytes], None]
Command = str | Sequence[str]  # shell text, or an argv

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SETUP_FAILED = 125  # the exit code when the directory cannot be entered (as env(1) does)


def command_line(
    command: Command,
    *,
    login: str,
    user: str | None = None,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """The line to send for `command` run as `user` (through sudo unless that is who logged
    in), in `cwd`, with `env` added to the environment. A pure function."""
    for name in env or {}:
        if not _ENV_NAME.fullmatch(name):
            raise InvalidInput(f"invalid environment variable name {name!r}")
    text = command if isinstance(command, str) else shlex.join(command)
    setup = [f"cd {shlex.quote(cwd)} || exit {SETUP_FAILED}"] if cwd is not None else []
    setup += [f"export {name}={shlex.quote(value)}" for name, value in (env or {}).items()]
    if setup:
        text = "\n".join([*setup, text])
    if user is None or user == login:
        return text
    sudo = ["sudo", "-n"] if user == "root" else ["sudo", "-n", "-u", user]
    if isinstance(command, str) or setup:
        return shlex.join([*sudo, "sh", "-c", text])
    return shlex.join([*sudo, *command])


@dataclass
class GuestSession:
    conn: asyncssh.SSHClientConnection
    login: str  # whom the connection logged in as

    @classmethod
    async def open(
        cls, target: SshTarget, *, timeout: float = 10, sock: socket.socket | None = None
    ) -> GuestSession:
        """A session with the guest at `target`, or over `sock` (a tunnel) as target.user."""
        return cls(await connect(target, timeout=timeout, sock=sock), target.user)

    async def close(self) -> None:
        await close(self.conn)

    async def __aenter__(self) -> GuestSession:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _line(
        self, command: Command, user: str | None, cwd: str | None, env: Mapping[str, str] | None
    ) -> str:
        return command_line(command, login=self.login, user=user, cwd=cwd, env=env)

    async def run(
        self,
        command: Command,
        *,
        user: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """Run a command and collect its exit code, stdout and stderr."""
        line = self._line(command, user, cwd, env)
        return await run_on(self.conn, line, stdin=stdin, timeout=timeout)

    async def stream(
        self,
        command: Command,
        *,
        stdout: Sink,
        stderr: Sink | None = None,
        stdin: bytes | AsyncIterable[bytes] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> int:
        """Run a command, passing its output to the sinks as it comes (merged into stdout's
        when stderr has none); return its exit code (255 when it has none, as ssh(1) does)."""
        line = self._line(command, user, cwd, env)
        return await stream_on(self.conn, line, stdout=stdout, stderr=stderr, stdin=stdin)

    async def upload(self, src: Path, dst: str) -> None:
        """Copy a local file or directory to dst in the guest."""
        await upload(self.conn, src, dst)

    async def download(self, src: str, dst: Path) -> None:
        """Copy a guest file or directory to the local dst (written by receive.py)."""
        await download(self.conn, src, dst)

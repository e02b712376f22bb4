"""Operations inside a running guest: wait until ready, exec, copy."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import asyncssh

from corral.context import Context
from corral.errors import Conflict, CorralError, GuestError, InvalidInput
from corral.guest.ready import wait_ready_async
from corral.guest.session import GuestSession
from corral.guest.ssh import ExecResult, SshTarget
from corral.instance import registry
from corral.instance.record import InstanceRecord
from corral.instance.state import observe
from corral.layout import InstanceFiles
from corral.machine import console
from corral.machine.vm import Vm


def ssh_target(ctx: Context, record: InstanceRecord) -> SshTarget:
    """Where the instance answers SSH: its forward on 127.0.0.1, or, on a managed network
    (no forward), port 22 at its address there."""
    if not record.ssh_port and record.address is not None:
        return SshTarget.at(record.address, user=record.ssh_user, key=ctx.home.ssh_key)
    if not record.ssh_port:
        raise Conflict(
            f"instance {record.name!r} has no SSH forward, and corral knows no address of it "
            "(its NICs are on taps of your own)",
            hint="ssh to its address on the taps' network",
        )
    return SshTarget(port=record.ssh_port, user=record.ssh_user, key=ctx.home.ssh_key)


T = TypeVar("T")


def _in_guest(
    ctx: Context, record: InstanceRecord, work: Callable[[GuestSession], Awaitable[T]]
) -> T:
    """Run `work` in one session; SSH failures become a GuestError naming the instance."""

    target = ssh_target(ctx, record)

    async def go() -> T:
        async with await GuestSession.open(target) as session:
            return await work(session)

    try:
        return asyncio.run(go())
    except (OSError, asyncssh.Error) as exc:
        raise GuestError(
            f"ssh to {record.name!r} ({target}) failed: {exc or type(exc).__name__}",
            hint=f"is it ready? corral wait {record.name}",
        ) from exc


def _require_running(files: InstanceFiles, record: InstanceRecord) -> None:
    state = observe(record, files).state
    if state != "running":
        raise Conflict(f"instance {record.name!r} is {state}, not running")


def wait_ready(
    ctx: Context,
    name: str,
    *,
    timeout: float = 300,
    on_stage: Callable[[str], None] = lambda stage: None,
) -> None:
    """Wait until ssh answers and cloud-init is done; errors carry the last console lines.

    A warm clone's cloud-init finished in its template before the save (and the launch applied
    its user-data through the agent), so for it ssh answering is ready."""
    files, record = registry.load_named(ctx.home, name)
    _require_running(files, record)
    vm = Vm.attach(files)
    alive = vm.alive if vm is not None else lambda: False
    try:
        asyncio.run(
            wait_ready_async(
                ssh_target(ctx, record),
                timeout=timeout,
                alive=alive,
                on_stage=on_stage,
                cloud_init=not record.warm,
            )
        )
    except CorralError as exc:
        lines = console.tail(files.serial_log, 15)
        exc.details = [*exc.details, *(["last console lines:", *lines] if lines else [])]
        exc.hint = exc.hint or f"full console log: {files.serial_log}"
        raise


def execute(
    ctx: Context, name: str, command: str | Sequence[str], *, stdin: bytes | None = None,
    timeout: float | None = None, user: str | None = None, cwd: str | None = None,
    env: Mapping[str, str] | None = None,
) -> ExecResult:  # fmt: skip
    """Run a command in the guest (as `user`, in `cwd`, with `env` added; by default as the
    instance's login user) and collect (exit code, stdout, stderr)."""
    files, record = registry.load_named(ctx.home, name)
    _require_running(files, record)

    def work(guest: GuestSession) -> Awaitable[ExecResult]:
        return guest.run(command, stdin=stdin, timeout=timeout, user=user, cwd=cwd, env=env)

    return _in_guest(ctx, record, work)


def execute_streaming(
    ctx: Context, name: str, command: str | Sequence[str], *,
    stdout: Callable[[bytes], None], stderr: Callable[[bytes], None], user: str | None = None,
    cwd: str | None = None, env: Mapping[str, str] | None = None,
) -> int:  # fmt: skip
    """Run a command in the guest, streaming its output; return its exit code."""
    files, record = registry.load_named(ctx.home, name)
    _require_running(files, record)

    def work(guest: GuestSession) -> Awaitable[int]:
        return guest.stream(command, stdout=stdout, stderr=stderr, user=user, cwd=cwd, env=env)

    return _in_guest(ctx, record, work)


def split_remote(spec: str) -> tuple[str | None, str]:
    """'name:/path' -> ('name', '/path'); a local path -> (None, path)."""
    head, sep, tail = spec.partition(":")
    if sep and head and "/" not in head:
        return head, tail
    return None, spec


def copy(ctx: Context, src: str, dst: str) -> None:
    """Copy between host and guest; exactly one side is NAME:/path."""
    src_name, src_path = split_remote(src)
    dst_name, dst_path = split_remote(dst)
    if (src_name is None) == (dst_name is None):
        raise InvalidInput("exactly one of SRC and DST must be NAME:/path")
    name = src_name or dst_name
    assert name is not None
    files, record = registry.load_named(ctx.home, name)
    _require_running(files, record)

    if src_name is None:
        _in_guest(ctx, record, lambda guest: guest.upload(Path(src_path), dst_path))
    else:
        _in_guest(ctx, record, lambda guest: guest.download(src_path, Path(dst_path)))

"""Readiness: a guest is ready when SSH answers and cloud-init reports it is done.

Readiness is a sequence of named stages (booting -> ssh -> cloud-init -> ready), so a timeout
or failure names the one that did not pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import asyncssh

from corral.errors import DeadlineExceeded, GuestError
from corral.guest.ssh import SshTarget, close, connect, run_on

STAGES = ("booting", "ssh", "cloud-init", "ready")
SSH_RETRY = 0.1
# Long enough for a loaded guest's sshd (it forks and re-executes itself per connection) to
# greet: giving up after 1 s closed the connection under it, and the retry started another, so
# a busy TCG guest spent its CPU on sshd children that never got to answer. A guest that is not
# listening yet answers at once (user networking resets the connection); until its NIC is up
# an attempt waits here instead of being retried.
BANNER_TIMEOUT = 10.0
CLOUD_INIT_RETRY = 0.5
# A restored clone's sshd was listening when its template was saved: the first handshake is
# tried without the greeting probe, and given this long before the probing loop takes over.
FIRST_TRY = 5.0


class NotReady(DeadlineExceeded):
    """The guest did not reach the next stage in time; `stage` names the one that failed."""

    def __init__(
        self, stage: str, message: str, *, hint: str | None = None, details: list[str] | None = None
    ) -> None:
        super().__init__(message, hint=hint, details=details)
        self.stage = stage


def parse_cloud_init_status(output: str) -> str:
    """Pick the status word out of `cloud-init status` output ('status: done' -> 'done')."""
    for line in output.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "status":
            return value.strip()
    return "unknown"


async def ssh_banner(target: SshTarget, timeout: float = BANNER_TIMEOUT) -> bool:
    """True when the guest's sshd greets us.

    User-mode networking accepts a forwarded connection before the guest listens, so a full
    SSH handshake attempted too early would hang until its own timeout; the greeting is cheap.
    """
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(target.host, target.port)
    except (OSError, TimeoutError):
        return False
    try:
        async with asyncio.timeout(timeout):
            greeting = await reader.read(8)
        return greeting.startswith(b"SSH-")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _wait_ssh(
    target: SshTarget, end: float, alive: Callable[[], bool], *, listening: bool = False
) -> asyncssh.SSHClientConnection:
    last_error = "no answer"
    if listening:  # one handshake straight away: the greeting would cost sshd a second child
        try:
            return await connect(target, timeout=max(0.5, min(FIRST_TRY, end - time.monotonic())))
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            last_error = str(exc) or type(exc).__name__
    while time.monotonic() < end:
        if not alive():
            raise GuestError("QEMU exited while the guest was booting")
        # Never past the deadline: time spent waiting here is the ssh stage's, and must be
        # reported as such, not found missing by the next stage.
        if await ssh_banner(target, min(BANNER_TIMEOUT, max(0.05, end - time.monotonic()))):
            try:
                return await connect(target, timeout=max(0.5, min(10.0, end - time.monotonic())))
            except (OSError, asyncssh.Error, TimeoutError) as exc:
                last_error = str(exc) or type(exc).__name__
        await asyncio.sleep(SSH_RETRY)
    where = f"on port {target.port}" if target.host == "127.0.0.1" else f"at {target}"
    raise NotReady("ssh", f"ssh {where} did not answer ({last_error})")


async def _wait_cloud_init(conn: asyncssh.SSHClientConnection, end: float) -> None:
    """One `cloud-init status --wait`: it returns within 0.25 s of the end (its own poll).

    Polling `cloud-init status` instead would start a Python process in the guest every round,
    each costing a second or more of the one emulated CPU that cloud-init itself is using.
    """
    status = "not started"
    while time.monotonic() < end:
        result = await run_on(
            conn, "cloud-init status --wait", timeout=max(1.0, end - time.monotonic())
        )
        if result.exit_code == 127:
            return  # no cloud-init in this image: ssh answering is all we can ask
        status = parse_cloud_init_status(result.stdout.decode(errors="replace"))
        if status in ("done", "disabled"):
            return
        if status in ("error", "degraded done", "degraded"):
            long = await run_on(conn, "cloud-init status --long", timeout=30)
            raise GuestError(
                f"cloud-init reported {status}",
                details=long.stdout.decode(errors="replace").strip().splitlines()[-12:],
            )
        await asyncio.sleep(CLOUD_INIT_RETRY)  # --wait came back early (killed, or unknown)
    raise NotReady("cloud-init", f"cloud-init did not finish (last status: {status})")


async def wait_ready_async(
    target: SshTarget,
    *,
    timeout: float,
    alive: Callable[[], bool],
    on_stage: Callable[[str], None] = lambda stage: None,
    cloud_init: bool = True,
) -> None:
    """Wait through the stages until the guest is ready or raise naming the stage that failed.

    cloud_init=False: ssh answering is ready (a clone restored from a template whose cloud-init
    had finished: asking would only start a Python process in the guest to hear "done"); its
    sshd is listening already, so the first handshake goes without the greeting probe.
    """
    end = time.monotonic() + timeout
    on_stage("booting")
    on_stage("ssh")
    conn = await _wait_ssh(target, end, alive, listening=not cloud_init)
    try:
        on_stage("cloud-init")
        try:
            if cloud_init:
                await _wait_cloud_init(conn, end)
        except (TimeoutError, asyncssh.Error, OSError) as exc:
            if time.monotonic() >= end:
                raise NotReady("cloud-init", "cloud-init did not finish in time") from exc
            raise GuestError(f"lost ssh while waiting for cloud-init: {exc}") from exc
        on_stage("ready")
    finally:
        with contextlib.suppress(Exception):
            await close(conn)

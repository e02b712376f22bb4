"""A running QEMU: started from a MachineSpec in its directory, or found again from that directory.

Instances are detached: a command starts QEMU and exits, and a later one attaches by the
directory. Nothing there is trusted: the pidfile's process must be alive, its command line
must name this directory's QMP socket and, when its start time was recorded, it must have
started then (a reused pid is someone else). A build holds its Vm for the build's life, with one
QMP connection open; a detached caller's QMP commands each open their own.

Stopping escalates, each step with its own deadline: ACPI powerdown (the guest shuts down
cleanly; only when asked for), then QMP quit, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.errors import DeadlineExceeded, QemuError
from corral.fsutil import pid_alive, process_start_time
from corral.layout import MachineFiles
from corral.machine.argv import build_argv
from corral.machine.process import is_our_qemu, kill, qemu_error_text, read_pid, spawn, wait_gone
from corral.machine.qmp import TIMEOUT, Qmp, qmp_answers_async, qmp_execute_async
from corral.machine.spec import MachineSpec

START_DEADLINE = 60.0  # for a starting QEMU to answer on QMP
QMP_DEADLINE = 5.0  # for QEMU to answer a QMP command while stopping
QUIT_DEADLINE = 10.0  # for QEMU to exit after quit
KILL_DEADLINE = 10.0  # for a killed QEMU to be gone


@dataclass
class Vm:
    files: MachineFiles
    pid: int
    started: int | None = None  # the process's start time, when known: tells a reused pid
    qmp: Qmp | None = None  # a connection kept open (see open_qmp); else one per command

    # --- finding and starting --------------------------------------------------------------

    @classmethod
    async def start(
        cls,
        qemu: str,
        spec: MachineSpec,
        files: MachineFiles,
        *,
        prefix: Sequence[str] = (),
        on_spawn: Callable[[Vm], None] = lambda vm: None,
        deadline: float = START_DEADLINE,
    ) -> Vm:
        """Spawn QEMU detached (argv `prefix` first) and wait until QMP answers.

        `on_spawn` sees the Vm as soon as the process exists (e.g. to record it). On any
        failure QEMU is killed and reaped before the error goes on.
        """
        for leftover in (*files.sockets, files.pidfile):
            leftover.unlink(missing_ok=True)
        proc = spawn([*prefix, *build_argv(qemu, spec)], cwd=files.dir, log=files.qemu_stderr)
        vm = cls(files, proc.pid, process_start_time(proc.pid))  # our child: not reused yet
        try:
            on_spawn(vm)
            await _until_answering(proc.pid, files, deadline)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        for sock in files.sockets:
            if sock.exists():  # the agent's only when the spec asked for one
                sock.chmod(0o600)  # already so by QEMU's umask; said again where it matters
        return vm

    @classmethod
    def attach(
        cls, files: MachineFiles, *, pid: int | None = None, started: int | None = None
    ) -> Vm | None:
        """The QEMU running in this directory (the pidfile's, or `pid`), if it provably is it."""
        vm = cls(files, pid or read_pid(files.pidfile) or 0, started)
        return vm if vm.alive() else None

    def alive(self) -> bool:
        if not is_our_qemu(self.pid, self.files.qmp):
            return False
        return self.started is None or process_start_time(self.pid) == self.started

    # --- QMP -------------------------------------------------------------------------------

    async def open_qmp(self) -> None:
        """Keep one QMP connection for the commands to come (closed by stop)."""
        if self.qmp is None:
            self.qmp = await Qmp(self.files.qmp).connect()

    async def close_qmp(self) -> None:
        if self.qmp is not None:
            qmp, self.qmp = self.qmp, None
            await qmp.close()

    async def execute(
        self, command: str, arguments: dict[str, Any] | None = None, *, timeout: float = TIMEOUT
    ) -> Any:
        if self.qmp is not None:
            return await self.qmp.execute(command, arguments, timeout=timeout)
        return await qmp_execute_async(self.files.qmp, command, arguments, timeout=timeout)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Qmp]:
        """The open connection, or one for the length of the block."""
        if self.qmp is not None:
            yield self.qmp
            return
        async with await Qmp(self.files.qmp).connect() as qmp:
            yield qmp

    async def pause(self) -> None:
        """Stop the vCPUs; memory and devices stay as they are."""
        await self.execute("stop")

    async def resume(self) -> None:
        await self.execute("cont")

    async def set_link(self, nic: str, up: bool) -> None:
        await self.execute("set_link", {"name": nic, "up": up})

    async def live_snapshot(self, device: str, new_top: Path, node: str) -> None:
        """Go on writing `device` to `new_top` (made by the caller, backed by the current top):
        the VM pauses, QEMU switches files, the VM resumes, the old top is never written again.
        QEMU opens the new file as it is ("existing" mode) and never rewrites backing names."""
        async with self.session() as qmp:
            await qmp.execute("stop")
            try:
                await qmp.execute(
                    "blockdev-snapshot-sync",
                    {"device": device, "snapshot-file": str(new_top), "snapshot-node-name": node,
                     "format": "qcow2", "mode": "existing"},
                )  # fmt: skip
            except QemuError as exc:
                raise QemuError(f"live snapshot failed: {exc.message}") from exc
            finally:
                await qmp.execute("cont")

    async def backup(
        self, device: str, target: Path, *, job_id: str = "corral-backup", timeout: float = 3600
    ) -> None:
        """Copy a point-in-time view of the device's top image to `target` (qcow2, sync=top)
        with a drive-backup job, while the guest keeps running."""
        async with self.session() as qmp:
            await qmp.execute(
                "drive-backup",
                {"job-id": job_id, "device": device, "target": str(target), "format": "qcow2",
                 "sync": "top", "mode": "absolute-paths", "auto-dismiss": False},
            )  # fmt: skip
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                jobs = await qmp.execute("query-jobs")
                job = next((j for j in jobs if j["id"] == job_id), None)
                if job is None:
                    raise QemuError("the snapshot job vanished")
                if job["status"] == "concluded":
                    await qmp.execute("job-dismiss", {"id": job_id})
                    if job.get("error"):
                        raise QemuError(f"snapshot failed: {job['error']}")
                    return
                await asyncio.sleep(0.1)
        raise QemuError("the snapshot job did not finish in time")

    # --- ending ----------------------------------------------------------------------------

    async def stop(
        self, *, powerdown: float | None = None, progress: Callable[[str], None] = lambda s: None
    ) -> None:
        """End QEMU: powerdown (only with a deadline), then quit, then SIGKILL; `progress`
        hears the name of each step as it is taken."""
        gone = False
        if powerdown is not None:
            progress("powerdown")
            try:
                await self.execute("system_powerdown", timeout=min(QMP_DEADLINE, powerdown))
                gone = await self._gone(powerdown)
            except QemuError:
                gone = False
        if not gone:
            progress("quit")
            with contextlib.suppress(QemuError):  # QEMU may close the socket before answering
                await self.execute("quit", timeout=QMP_DEADLINE)
            gone = await self._gone(QUIT_DEADLINE)
        await self.close_qmp()
        if not gone:
            progress("kill")
            kill(self.pid)
            await self._gone(KILL_DEADLINE)

    def kill(self) -> bool:
        """SIGKILL at once (its disk may be left mid-write); True once it is gone."""
        kill(self.pid)
        return wait_gone(self.pid, KILL_DEADLINE)

    def terminate(self, deadline: float = KILL_DEADLINE) -> bool:
        """End QEMU by signals alone, for one nobody may be able to talk to: SIGTERM (which also
        reaches a stopped QEMU, as SIGCONT follows), then SIGKILL; True once it is gone."""
        kill(self.pid, signal.SIGTERM)
        kill(self.pid, signal.SIGCONT)
        if wait_gone(self.pid, deadline):
            return True
        kill(self.pid)
        return wait_gone(self.pid, deadline)

    async def _gone(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while pid_alive(self.pid):
            if time.monotonic() >= end:
                return False
            await asyncio.sleep(0.05)
        return True


async def _until_answering(pid: int, files: MachineFiles, deadline: float) -> None:
    """Return once QMP answers; raise QemuError with QEMU's message if it exits first."""
    log = files.qemu_stderr
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if not pid_alive(pid):
            raise QemuError(f"QEMU failed to start: {qemu_error_text(log)}", hint=f"see {log}")
        if files.qmp.exists() and await qmp_answers_async(files.qmp, timeout=2):
            return
        await asyncio.sleep(0.01)
    raise DeadlineExceeded(f"QEMU did not answer on QMP within {deadline:g}s", hint=f"see {log}")

"""A build VM: one QEMU booted from a layer and kept for as many steps as it can serve.

It is a machine of the core library's kind (the same argv builder, spawn and QMP), with what
builds need on top: its root disk is the top of a layer chain, checkpointed after each step by
a QMP live external snapshot (the finished top becomes the step's layer, the VM goes on writing
to a new file), its first NIC is restricted to the ssh forward, and a second NIC is raised only
for steps that ask for the network. Commands run over one SSH connection as root.

A build VM lives no longer than its build. Where util-linux's setpriv can, QEMU is started
with a parent-death signal, so it shuts down as soon as the process that started it dies;
and every build (and `build prune`) first stops the QEMU of any run directory whose owner has
gone (`stop_orphans`), so even a VM that missed that signal does not outlive the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
from qemu.qmp import QMPClient

from corral.builds.store import QEMU_FILE, Boot, BuildStore
from corral.context import Context
from corral.errors import CorralError, DeadlineExceeded, QemuError
from corral.fsutil import locked, process_start_time, write_atomic
from corral.guest.ready import wait_ready_async
from corral.guest.ssh import SshTarget, close, connect, remote_process
from corral.instance import registry
from corral.instance.keys import ensure_corral_key
from corral.instance.state import console_tail
from corral.layout import InstanceFiles
from corral.machine.argv import build_argv
from corral.machine.ports import pick_ports
from corral.machine.process import (
    is_our_qemu,
    kill,
    read_pid,
    spawn,
    wait_gone,
    wait_started_async,
)
from corral.machine.spec import DirectBoot, Drive, Forward, MachineSpec
from corral.run import run
from corral.seed.iso import write_seed_iso
from corral.seed.render import SeedInput, render_seed_files

Sink = Callable[[bytes], None]


def cache_serial(name: str) -> str:
    """The virtio serial a cache disk carries (at most 20 characters): how the guest finds it."""
    import hashlib

    return "cc" + hashlib.sha256(name.encode()).hexdigest()[:18]


@dataclass
class BuildVm:
    ctx: Context
    files: InstanceFiles
    pid: int
    port: int
    user: str  # the image's login user; commands become root through sudo when it is not
    conn: asyncssh.SSHClientConnection
    qmp: QMPClient
    top: Path
    size: int  # the disk's virtual size: every layer of a chain has the same
    top_node: str = "top0"
    snapshots: int = 0
    closed: bool = field(default=False)

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def boot(
        cls,
        ctx: Context,
        store: BuildStore,
        boot: Boot,
        top: Path,
        *,
        caches: Mapping[str, Path] = {},
        cpus: int = 2,
        memory_mib: int = 2048,
        timeout: float = 300,
        console: Sink | None = None,
    ) -> BuildVm:
        """Start a VM on the disk `top` and wait until it answers over SSH."""
        rundir = store.new_run_dir()
        files = InstanceFiles(rundir)
        key = ensure_corral_key(ctx.home.ssh_key)
        seed = SeedInput(instance_id=f"build-{rundir.name}", hostname="build", user=boot.user,
                         ssh_keys=(key,))  # fmt: skip
        write_seed_iso(files.seed, render_seed_files(seed))
        drives = [Drive("disk0", top, "qcow2", node_name="top0")]
        drives += [
            Drive(f"cache{i}", path, "qcow2", serial=cache_serial(name))
            for i, (name, path) in enumerate(sorted(caches.items()))
        ]
        drives.append(Drive("seed", files.seed, "raw", readonly=True))
        size = ctx.qemu_img.info(top, "qcow2").virtual_size  # before QEMU holds its lock
        kernel = ctx.store.blob(boot.kernel) if boot.kernel else None
        if kernel is None:
            raise CorralError(f"image {boot.image!r} has no kernel: builds boot images directly")
        pid = 0
        try:
            # Hold the host-wide ports lock until QEMU has bound its forward.
            with locked(ctx.home.ports_lock):
                (port,) = pick_ports(ctx.config.port_range, registry.reserved_ports(ctx.home), 1)
                spec = MachineSpec(
                    name="corral-build", cpus=cpus, memory_mib=memory_mib,
                    accelerator=ctx.host.accelerator, drives=tuple(drives),
                    forwards=(Forward(port, 22),), qmp_socket=files.qmp,
                    serial_socket=files.serial_socket, serial_log=files.serial_log,
                    pidfile=files.pidfile, isolated=True,
                    boot=DirectBoot(kernel, ctx.store.blob(boot.initrd) if boot.initrd else None,
                                    boot.cmdline or "console=ttyS0"),
                )  # fmt: skip
                argv = [*_die_with_owner(), *build_argv(ctx.host.qemu.path, spec)]
                pid = spawn(argv, cwd=rundir, log=files.qemu_stderr).pid
                # Our unreaped child: the pid cannot have been reused yet.
                write_atomic(rundir / QEMU_FILE, f"{pid} {process_start_time(pid)}\n".encode())
                await wait_started_async(pid, files.qmp, files.qemu_stderr)
            qmp = QMPClient("corral-build")
            await qmp.connect(str(files.qmp))
            await qmp.execute("set_link", {"name": "nic1", "up": False})
            target = SshTarget(port=port, user=boot.user, key=ctx.home.ssh_key)
            following = _follow(files.serial_log, console) if console else None
            try:
                await wait_ready_async(
                    target, timeout=timeout, alive=lambda: is_our_qemu(pid, files.qmp)
                )
            except CorralError as exc:
                raise DeadlineExceeded(
                    f"the build VM did not answer SSH within {timeout:g}s ({exc.message})",
                    details=["last console lines:", *console_tail(files, 15)],
                ) from exc
            finally:
                if following is not None:
                    following.cancel()
            conn = await connect(target)
        except BaseException:
            if pid:
                kill(pid)
                wait_gone(pid, 10)
            shutil.rmtree(rundir, ignore_errors=True)
            raise
        return cls(ctx, files, pid, port, boot.user, conn, qmp, top, size)

    async def close(self) -> None:
        """End the VM (its unfinished top is the caller's to discard)."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            await close(self.conn)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self.qmp.execute("quit")
        with contextlib.suppress(Exception):
            await self.qmp.disconnect()
        if not await asyncio.to_thread(wait_gone, self.pid, 10):
            kill(self.pid)
            await asyncio.to_thread(wait_gone, self.pid, 10)
        shutil.rmtree(self.files.dir, ignore_errors=True)

    # --- commands --------------------------------------------------------------------------

    def _as_root(self, script: str) -> list[str]:
        return ["sh", "-c", script] if self.user == "root" else ["sudo", "-n", "sh", "-c", script]

    async def run(
        self,
        script: str,
        *,
        sink: Sink,
        stdin: bytes | AsyncIterator[bytes] | None = None,
    ) -> int:
        """Run a shell script as root, passing stdout and stderr (merged) to sink."""
        import shlex

        command = shlex.join(self._as_root(script))
        async with remote_process(self.conn, command) as proc:

            async def pump(reader: Any) -> None:
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

            await asyncio.gather(pump(proc.stdout), pump(proc.stderr), feed())
            await proc.wait()
            status = proc.exit_status
        return status if status is not None and status >= 0 else 255

    async def output(self, script: str) -> bytes:
        """Run a script as root and return its stdout (raising if it fails)."""
        chunks: list[bytes] = []
        code = await self.run(script, sink=chunks.append)
        if code != 0:
            raise CorralError(f"build VM: {script!r} failed ({code}): {b''.join(chunks)[-300:]!r}")
        return b"".join(chunks)

    async def set_network(self, up: bool) -> None:
        await self.qmp.execute("set_link", {"name": "nic1", "up": up})

    # --- layers ----------------------------------------------------------------------------

    async def checkpoint(self, new_top: Path, backing: str) -> None:
        """Freeze the disk as it stands as the current top's final state; go on in new_top.

        new_top is created here, naming its backing file `backing` (where the current top will
        be once published); the guest flushes its caches, the VM pauses, QEMU switches to the
        new file with the current top as its backing, and the VM resumes: the old top is never
        written again. QEMU opens the new file as it is ("existing" mode) and never rewrites
        backing names itself, so headers stay short, relative names whatever the chain length.
        """
        await asyncio.to_thread(
            self.ctx.qemu_img.create_on, new_top, Path(backing), "qcow2", self.size
        )
        await self.output("sync")
        self.snapshots += 1
        node = f"top{self.snapshots}"
        await self.qmp.execute("stop")
        try:
            await self.qmp.execute(
                "blockdev-snapshot-sync",
                {"device": "disk0", "snapshot-file": str(new_top), "snapshot-node-name": node,
                 "format": "qcow2", "mode": "existing"},
            )  # fmt: skip
        except Exception as exc:
            raise QemuError(f"live snapshot failed: {exc}") from exc
        finally:
            await self.qmp.execute("cont")
        self.top, self.top_node = new_top, node


@functools.cache
def _die_with_owner() -> tuple[str, ...]:
    """The argv prefix that makes QEMU get SIGTERM when its starter dies (none if unavailable).

    setpriv sets the parent-death signal and execs QEMU, which keeps it (and the pid). The
    signal comes when the thread that started QEMU ends: a build starts its VMs from the
    thread that runs the build.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return ()
    prefix = (setpriv, "--pdeathsig", "TERM", "--")
    try:
        run([*prefix, "true"], timeout=10)
    except CorralError:
        return ()  # too old to know --pdeathsig
    return prefix


def stop_orphans(store: BuildStore) -> list[int]:
    """Stop the QEMU of every build VM whose owner has gone; remove their run directories.

    Returns the pids stopped. A process is signalled only when it provably is that VM's QEMU:
    its pid is the pidfile's (and the one recorded at spawn), its command line names the run
    directory's QMP socket, and it started when that QEMU did; a pid reused by anything else
    is left alone. A QEMU is asked to quit (SIGTERM, which also reaches one that was stopped
    as SIGCONT follows) and killed if it has not within ten seconds.
    """
    stopped = []
    for rundir in store.orphan_runs():
        files = InstanceFiles(rundir)
        pid = read_pid(files.pidfile)
        recorded_pid, started = _qemu_record(rundir)
        pid = pid or recorded_pid
        if pid and _is_that_qemu(pid, files, recorded_pid, started):
            kill(pid, signal.SIGTERM)
            kill(pid, signal.SIGCONT)
            if not wait_gone(pid, 10):
                kill(pid)
                if not wait_gone(pid, 10):
                    continue  # unkillable for now: keep its files so the next sweep finds it
            stopped.append(pid)
        shutil.rmtree(rundir, ignore_errors=True)
    return stopped


def _qemu_record(rundir: Path) -> tuple[int | None, int | None]:
    try:
        pid, start = (rundir / QEMU_FILE).read_text().split()
        return int(pid), int(start) if start.isdigit() else None
    except (OSError, ValueError):
        return None, None


def _is_that_qemu(pid: int, files: InstanceFiles, recorded_pid: int | None,
                  started: int | None) -> bool:  # fmt: skip
    if not is_our_qemu(pid, files.qmp):
        return False
    if recorded_pid is None:
        return True  # killed between spawn and the record: the command line must do
    return pid == recorded_pid and (started is None or process_start_time(pid) == started)


def _follow(path: Path, sink: Sink) -> asyncio.Task[None]:
    async def go() -> None:
        position = 0
        while True:
            with contextlib.suppress(FileNotFoundError):
                with open(path, "rb") as f:
                    f.seek(position)
                    data = f.read()
                if data:
                    sink(data)
                    position += len(data)
            await asyncio.sleep(0.2)

    return asyncio.create_task(go())

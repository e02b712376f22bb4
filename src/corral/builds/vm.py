"""A build VM: one QEMU booted from a layer and kept for as many steps as it can serve.

It is a machine/ Vm like an instance's (the same spec, spawn, QMP and stop), driven through
one guest/ session, with what builds need on top: its root disk is the top of a layer chain,
checkpointed after each step by a live external snapshot (the finished top becomes the step's
layer, the VM goes on writing to a new file), its first NIC is restricted to the ssh forward,
and a second NIC is raised only for steps that ask for the network. Commands run as root.
A VM on a base layer is usually not booted but restored from a saved one (`restore`; the
saved states are warm.py's), on an overlay of the disk as it stood at the save.

A build VM lives no longer than its build. Where util-linux's setpriv can, QEMU is started
with a parent-death signal, so it shuts down as soon as the process that started it dies;
and every build (and `build prune`) first stops the QEMU of any run directory whose owner has
gone (`stop_orphans`), so even a VM that missed that signal does not outlive the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from corral.builds.commands import resumed_script
from corral.builds.store import QEMU_FILE, Boot, BuildStore
from corral.context import Context
from corral.errors import CorralError, DeadlineExceeded, QemuError
from corral.fsutil import locked, write_atomic
from corral.guest.ready import wait_ready_async
from corral.guest.session import GuestSession
from corral.guest.ssh import SshTarget
from corral.guest.ssh_keys import ensure_corral_key
from corral.layout import MachineFiles
from corral.machine import console as serial
from corral.machine.argv import OUTSIDE_NIC
from corral.machine.migrate import restore_state, save_state
from corral.machine.ports import PortClaims
from corral.machine.process import die_with_owner, read_pid
from corral.machine.spec import DirectBoot, Drive, Forward, MachineSpec
from corral.machine.vm import Vm
from corral.seed.iso import write_seed_iso
from corral.seed.render import SeedInput, render_seed_files

Sink = Callable[[bytes], None]


def cache_serial(name: str) -> str:
    """The virtio serial a cache disk carries (at most 20 characters): how the guest finds it."""
    return "cc" + hashlib.sha256(name.encode()).hexdigest()[:18]


def machine_spec(
    ctx: Context, files: MachineFiles, boot: Boot, top: Path, caches: Mapping[str, Path],
    cpus: int, memory_mib: int, port: int, *, seed: Path | None = None, incoming: bool = False,
) -> MachineSpec:  # fmt: skip
    """The build VM's machine: the layer's top disk, then the caches, then the seed; its first
    NIC reaches only the ssh forward. A restored VM has exactly the devices of the saved one
    (the same number of caches; `seed` the one it booted with) and starts `incoming`."""
    assert boot.kernel  # checked by boot
    drives = [Drive("disk0", top, "qcow2", node_name="top0")]
    drives += [
        Drive(f"cache{i}", path, "qcow2", serial=cache_serial(name))
        for i, (name, path) in enumerate(sorted(caches.items()))
    ]
    drives.append(Drive("seed", seed or files.seed, "raw", readonly=True))
    initrd = ctx.store.blob(boot.initrd) if boot.initrd else None
    return MachineSpec(
        name="corral-build", cpus=cpus, memory_mib=memory_mib, accelerator=ctx.host.accelerator,
        drives=tuple(drives), forwards=(Forward(port, 22),), qmp_socket=files.qmp,
        serial_socket=files.serial_socket, serial_log=files.serial_log, pidfile=files.pidfile,
        isolated=True, incoming=incoming,
        boot=DirectBoot(ctx.store.blob(boot.kernel), initrd, boot.cmdline or "console=ttyS0"),
    )  # fmt: skip


@dataclass
class BuildVm:
    ctx: Context
    vm: Vm
    guest: GuestSession  # logged in as the image's user; commands become root through sudo
    top: Path
    size: int  # the disk's virtual size: every layer of a chain has the same
    spec: MachineSpec | None = None  # what it was started from
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
        if not boot.kernel:
            raise CorralError(f"image {boot.image!r} has no kernel: builds boot images directly")
        size = ctx.qemu_img.info(top, "qcow2").virtual_size  # before QEMU holds its lock
        rundir = store.new_run_dir()
        files = MachineFiles(rundir)

        def record(vm: Vm) -> None:  # our unreaped child: the pid cannot have been reused yet
            write_atomic(rundir / QEMU_FILE, f"{vm.pid} {vm.started}\n".encode())

        vm = None
        try:
            key = ensure_corral_key(ctx.home.ssh_key)
            seed = SeedInput(instance_id=f"build-{rundir.name}", hostname="build",
                             user=boot.user, ssh_keys=(key,))  # fmt: skip
            write_seed_iso(files.seed, render_seed_files(seed))
            # Hold the host-wide ports lock until QEMU has bound its forward.
            with locked(ctx.home.ports_lock):
                (port,) = PortClaims(ctx.home).pick(rundir, ctx.config.port_range)
                spec = machine_spec(ctx, files, boot, top, caches, cpus, memory_mib, port)
                vm = await Vm.start(
                    ctx.host.qemu.path, spec, files, prefix=die_with_owner(), on_spawn=record
                )
            await vm.open_qmp()
            await vm.set_link(OUTSIDE_NIC, False)
            target = SshTarget(port=port, user=boot.user, key=ctx.home.ssh_key)
            shown = serial.following_async(files.serial_log, console) if console else None
            try:
                async with shown or contextlib.nullcontext():
                    await wait_ready_async(target, timeout=timeout, alive=vm.alive)
            except CorralError as exc:
                raise DeadlineExceeded(
                    f"the build VM did not answer SSH within {timeout:g}s ({exc.message})",
                    details=["last console lines:", *serial.tail(files.serial_log, 15)],
                ) from exc
            guest = await GuestSession.open(target)
        except BaseException:
            if vm is not None:
                vm.kill()
            shutil.rmtree(rundir, ignore_errors=True)
            raise
        return cls(ctx, vm, guest, top, size, spec)

    @classmethod
    async def restore(
        cls,
        ctx: Context,
        store: BuildStore,
        boot: Boot,
        top: Path,
        warm: Path,
        *,
        caches: Mapping[str, Path] = {},
        cpus: int = 2,
        memory_mib: int = 2048,
        timeout: float = 300,
    ) -> BuildVm:
        """Start a VM on the disk `top` (an overlay on the warm state's disk) from the saved
        state in the directory `warm` instead of booting, and log in over SSH.

        The guest then sets its clock to now, mixes new randomness into its pool, and drops
        what its block cache holds of the cache disks (the save saw blank stand-ins).
        WarmRestoreFailed when QEMU refuses the state or the restored guest does not answer:
        the caller boots instead.
        """
        size = ctx.qemu_img.info(top, "qcow2").virtual_size
        rundir = store.new_run_dir()
        files = MachineFiles(rundir)

        def record(vm: Vm) -> None:
            write_atomic(rundir / QEMU_FILE, f"{vm.pid} {vm.started}\n".encode())

        vm = None
        try:
            with locked(ctx.home.ports_lock):
                (port,) = PortClaims(ctx.home).pick(rundir, ctx.config.port_range)
                spec = machine_spec(ctx, files, boot, top, caches, cpus, memory_mib, port,
                                    seed=warm / "seed.iso", incoming=True)  # fmt: skip
                vm = await Vm.start(
                    ctx.host.qemu.path, spec, files, prefix=die_with_owner(), on_spawn=record
                )
            await vm.open_qmp()
            fd = os.open(warm / "state", os.O_RDONLY | os.O_CLOEXEC)
            try:
                await restore_state(vm, fd, timeout=timeout)
            except (QemuError, DeadlineExceeded) as exc:
                raise WarmRestoreFailed(exc.message) from exc
            finally:
                os.close(fd)
            await vm.set_link(OUTSIDE_NIC, False)
            target = SshTarget(port=port, user=boot.user, key=ctx.home.ssh_key)
            guest = await _log_in(target, vm, timeout=min(timeout, RESTORED_SSH_DEADLINE))
            bvm = cls(ctx, vm, guest, top, size, spec)
            serials = [cache_serial(name) for name in sorted(caches)]
            script = resumed_script(serials, int(time.time()))
            await bvm.run(script, sink=lambda _: None, stdin=secrets.token_bytes(64))
        except BaseException:
            if vm is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        await vm.close_qmp()
                vm.kill()
            shutil.rmtree(rundir, ignore_errors=True)
            raise
        return bvm

    async def close(self) -> None:
        """End the VM (its unfinished top is the caller's to discard)."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            await self.guest.close()
        await self.vm.stop()  # quit, then kill
        shutil.rmtree(self.vm.files.dir, ignore_errors=True)

    # --- commands --------------------------------------------------------------------------

    async def run(
        self,
        script: str,
        *,
        sink: Sink,
        stderr: Sink | None = None,
        stdin: bytes | AsyncIterable[bytes] | None = None,
    ) -> int:
        """Run a shell script as root, passing stdout and stderr to sink (merged, unless
        stderr has a sink of its own: a tar on stdout must stay clean)."""
        return await self.guest.stream(
            ["sh", "-c", script], user="root", stdout=sink, stderr=stderr, stdin=stdin
        )

    async def output(self, script: str) -> bytes:
        """Run a script as root and return its stdout (raising if it fails)."""
        chunks: list[bytes] = []
        code = await self.run(script, sink=chunks.append)
        if code != 0:
            raise CorralError(f"build VM: {script!r} failed ({code}): {b''.join(chunks)[-300:]!r}")
        return b"".join(chunks)

    async def set_network(self, up: bool) -> None:
        await self.vm.set_link(OUTSIDE_NIC, up)

    # --- layers ----------------------------------------------------------------------------

    async def checkpoint(self, new_top: Path, backing: str) -> None:
        """Freeze the disk as it stands as the current top's final state; go on in new_top.

        new_top is created here, naming its backing file `backing` (where the current top will
        be once published); the guest flushes its caches, then the VM switches to the new file
        (Vm.live_snapshot). Backing names stay short and relative whatever the chain length.
        """
        await asyncio.to_thread(
            self.ctx.qemu_img.create_on, new_top, Path(backing), "qcow2", self.size
        )
        await self.output("sync")
        self.snapshots += 1
        node = f"top{self.snapshots}"
        await self.vm.live_snapshot("disk0", new_top, node)
        self.top, self.top_node = new_top, node

    async def save(self, state: Path, seed: Path) -> None:
        """Save the running VM into the file `state` (and keep its seed as `seed`), then end it.

        The guest writes out what it holds for the disk first and SSH is closed (a connection
        would not survive a restore: user-mode networking does not save it). The disk as it
        stands is then the saved state's; nothing may write it again.
        """
        await self.output("sync")
        shutil.copyfile(self.vm.files.seed, seed)
        with contextlib.suppress(Exception):
            await self.guest.close()
        fd = os.open(state, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            await save_state(self.vm, fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        await self.close()


RESTORED_SSH_DEADLINE = 60.0  # a restored guest's sshd already listens: it answers at once


class WarmRestoreFailed(CorralError):
    """A warm state could not be restored (the build then boots its VM instead)."""


async def _log_in(target: SshTarget, vm: Vm, *, timeout: float) -> GuestSession:
    """A session with a restored guest: its sshd listened at the save, so no readiness wait;
    a few tries while the forward comes up."""
    end = asyncio.get_running_loop().time() + timeout
    last = "no answer"
    while asyncio.get_running_loop().time() < end:
        if not vm.alive():
            raise WarmRestoreFailed("QEMU exited after the restore")
        try:
            return await GuestSession.open(
                target, timeout=max(1.0, min(10.0, end - asyncio.get_running_loop().time()))
            )
        except (OSError, TimeoutError, asyncssh.Error) as exc:
            last = str(exc) or type(exc).__name__
        await asyncio.sleep(0.05)
    raise WarmRestoreFailed(f"the restored guest did not answer SSH within {timeout:g}s ({last})")


def stop_orphans(store: BuildStore) -> list[int]:
    """Stop the QEMU of every build VM whose owner has gone; remove their run directories.

    Returns the pids stopped. A process is signalled only when it provably is that VM's QEMU
    (`_that_qemu`); a pid reused by anything else is left alone. A QEMU is ended by signals
    (Vm.terminate: it may be stopped, and then cannot answer QMP).
    """
    stopped = []
    for rundir in store.orphan_runs():
        vm = _that_qemu(rundir)
        if vm is not None:
            if not vm.terminate():
                continue  # unkillable for now: keep its files so the next sweep finds it
            stopped.append(vm.pid)
        shutil.rmtree(rundir, ignore_errors=True)
    return stopped


def _that_qemu(rundir: Path) -> Vm | None:
    """The run directory's QEMU if it provably is it: the pidfile's pid (or, if QEMU had not
    written it yet, the one recorded at spawn), the same as recorded, its command line naming
    the directory's QMP socket, started when recorded."""
    files = MachineFiles(rundir)
    recorded, started = _qemu_record(rundir)
    pid = read_pid(files.pidfile) or recorded
    if pid is None or (recorded is not None and pid != recorded):
        return None
    return Vm.attach(files, pid=pid, started=started)


def _qemu_record(rundir: Path) -> tuple[int | None, int | None]:
    try:
        pid, start = (rundir / QEMU_FILE).read_text().split()
        return int(pid), int(start) if start.isdigit() else None
    except (OSError, ValueError):
        return None, None

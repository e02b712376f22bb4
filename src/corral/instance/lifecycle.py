"""Stop, start, pause, resume and remove instances, each under the instance's lock.

Stopping escalates with a deadline at each step (see machine/vm.py): ACPI powerdown (the guest
shuts down cleanly), then QMP quit, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any

from corral.context import Context
from corral.errors import Conflict
from corral.fsutil import locked, process_start_time
from corral.image.manifest import now
from corral.instance import networking, registry
from corral.instance.boot import machine_spec, start_qemu
from corral.instance.record import InstanceRecord, State
from corral.instance.state import Observed, observe
from corral.layout import InstanceFiles
from corral.machine.ports import wait_port_free
from corral.machine.vm import Vm


def status(ctx: Context, name: str) -> tuple[InstanceRecord, Observed]:
    files, record = registry.load_named(ctx.home, name)
    return record, observe(record, files)


def list_instances(ctx: Context) -> list[tuple[InstanceRecord, Observed]]:
    registry.reap_stale(ctx.home)
    return [(record, observe(record, files)) for files, record in registry.records(ctx.home)]


def _update(files: InstanceFiles, record: InstanceRecord, **changes: object) -> InstanceRecord:
    record = record.replace(**changes)
    registry.save(files, record)
    return record


def stop(
    ctx: Context,
    name: str,
    *,
    force: bool = False,
    timeout: float = 60,
    progress: Callable[[str], None] = lambda step: None,
) -> InstanceRecord:
    """Stop a VM: powerdown, then quit, then SIGKILL, each after its own deadline."""
    files, record = registry.load_named(ctx.home, name)
    with registry.instance_lock(files):
        record = registry.load(files)
        seen = observe(record, files)
        if seen.pid is None:
            if seen.state != record.state:
                record = _update(files, record, state=seen.state, reason=seen.reason)
            return record
        record = _update(files, record, state="stopping", reason=None)
        powerdown = None if force or seen.state == "paused" else timeout
        asyncio.run(Vm(files, seen.pid).stop(powerdown=powerdown, progress=progress))
        registry.release_ports(record)
        for leftover in (*files.sockets, files.pidfile):
            leftover.unlink(missing_ok=True)
        return _update(files, record, state="stopped", reason=None)


def start(ctx: Context, name: str) -> InstanceRecord:
    """Boot a stopped VM again from its own disk, with the same identity and ports."""
    files, record = registry.load_named(ctx.home, name)
    with registry.instance_lock(files):
        record = registry.load(files)
        seen = observe(record, files)
        if seen.pid is not None:
            raise Conflict(f"instance {name!r} is already {seen.state}")
        host = ctx.host
        with locked(ctx.home.ports_lock):
            ports = [(record.ssh_port, "127.0.0.1", "tcp")] if record.ssh_port else []
            ports += [(f.host_port, f.host_addr, f.protocol) for f in record.forwards]
            for port, addr, proto in ports:
                if not wait_port_free(port, addr, proto):
                    raise Conflict(f"host port {port} of instance {name!r} is in use")
            record = _update(
                files,
                record,
                state="starting",
                reason=None,
                launcher_pid=os.getpid(),
                launcher_start=process_start_time(os.getpid()),
            )
        try:
            networking.reattach(ctx.home, record)  # a host restart may have taken its taps
            start_qemu(ctx, record, machine_spec(ctx, record, files, host.accelerator), files)
        except BaseException:
            _update(files, record, state="stopped", launcher_pid=None, launcher_start=None)
            raise
        return _update(
            files,
            record,
            state="running",
            launcher_pid=None,
            launcher_start=None,
            started_at=now(),
            warm=False,  # booted this time: readiness waits for cloud-init again
        )


def restart(ctx: Context, name: str, *, force: bool = False, timeout: float = 60) -> InstanceRecord:
    stop(ctx, name, force=force, timeout=timeout)
    return start(ctx, name)


def _switch(
    ctx: Context, name: str, want: str, act: Callable[[Vm], Coroutine[Any, Any, None]], to: State
) -> InstanceRecord:
    """Move a VM from state `want` to `to` with one QMP command (pause and resume)."""
    files, _ = registry.load_named(ctx.home, name)
    with registry.instance_lock(files):
        record = registry.load(files)
        seen = observe(record, files)
        if seen.state != want or seen.pid is None:
            raise Conflict(f"instance {name!r} is {seen.state}, not {want}")
        asyncio.run(act(Vm(files, seen.pid)))
        return _update(files, record, state=to, reason=None)


def pause(ctx: Context, name: str) -> InstanceRecord:
    """Stop the VM's vCPUs (QMP stop); memory and devices stay as they are."""
    return _switch(ctx, name, "running", Vm.pause, "paused")


def resume(ctx: Context, name: str) -> InstanceRecord:
    return _switch(ctx, name, "paused", Vm.resume, "running")


def remove(ctx: Context, name: str, *, force: bool = False) -> None:
    """Delete an instance: its disk, seed, sockets, ports and NICs on managed networks. A
    running one needs force."""
    files, record = registry.load_named(ctx.home, name)
    with registry.instance_lock(files):
        seen = observe(record, files)
        if seen.pid is not None and not force:
            raise Conflict(
                f"instance {name!r} is {seen.state}: stop it first, or use --force",
                hint=f"corral stop {name}",
            )
        if record.networks and seen.pid is not None:
            registry.destroy_vm(files)  # QEMU lets go of its taps before they are removed
        networking.detach(ctx.home, name)  # before the record goes: it keeps its NICs alive
        with locked(ctx.home.ports_lock):
            registry.destroy(files)

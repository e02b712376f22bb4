"""The Python API on real QEMU with the tiny guest: launch, wait, execute, stop, start, delete."""

from __future__ import annotations

import os
import signal
import stat

import pytest

from corral.client import Corral
from corral.context import Context
from corral.errors import Conflict, InvalidInput
from corral.fsutil import pid_alive
from corral.instance import lifecycle
from corral.machine.ports import port_free
from corral.machine.process import wait_gone

pytestmark = pytest.mark.vm


def api(ctx: Context) -> Corral:
    corral = Corral(ctx.config)
    corral.ctx = ctx
    return corral


def test_launch_wait_execute_stop_start_delete(vm_ctx: Context) -> None:
    vm = api(vm_ctx).launch("tiny", name="web1", instance_type="c1m256", wait=True, timeout=120)
    assert vm.state == "running"
    assert 18000 <= vm.ssh_port <= 18999
    assert vm.console.is_socket()
    files = vm_ctx.home.instance("web1")
    for sock in (files.qmp, files.serial_socket):
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600

    result = vm.execute("hostname")
    assert (result.exit_code, result.stdout) == (0, b"web1\n")
    result = vm.execute(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.exit_code, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert vm.execute("cat", stdin=b"piped").stdout == b"piped"

    identity = (vm.record.instance_id, vm.ssh_port)
    pid = vm.pid
    vm.stop(timeout=30)
    assert vm.state == "stopped"
    assert pid is not None and not pid_alive(pid)
    assert not files.qmp.exists()

    vm.start(wait=True, timeout=120)
    assert (vm.record.instance_id, vm.ssh_port) == identity
    assert vm.execute("hostname").stdout == b"web1\n"

    port = vm.ssh_port
    vm.delete()
    assert not files.dir.exists()
    assert port_free(port)
    assert api(vm_ctx).instances() == []


def test_stop_escalates_when_the_guest_ignores_powerdown(vm_ctx: Context) -> None:
    vm = api(vm_ctx).launch("tiny", name="deaf", instance_type="c1m256", wait=True, timeout=120)
    # Kill the guest's ACPI handler so the powerdown request goes unanswered.
    vm.execute("pkill acpid || killall acpid")
    steps: list[str] = []
    lifecycle.stop(vm_ctx, "deaf", timeout=2, progress=steps.append)
    assert steps == ["powerdown", "quit"]
    assert vm.state == "stopped"


def test_stop_kills_a_qemu_that_does_not_answer(vm_ctx: Context) -> None:
    vm = api(vm_ctx).launch("tiny", name="hung", instance_type="c1m256")
    pid = vm.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # QEMU frozen: QMP connects but never answers
    try:
        steps: list[str] = []
        lifecycle.stop(vm_ctx, "hung", timeout=1, progress=steps.append)
        assert steps == ["powerdown", "quit", "kill"]
        assert not pid_alive(pid)
        assert vm.state == "stopped"
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_pause_and_resume(vm_ctx: Context) -> None:
    vm = api(vm_ctx).launch("tiny", name="p1", instance_type="c1m256", wait=True, timeout=120)
    vm.pause()
    assert vm.state == "paused"
    with pytest.raises(Conflict, match="paused, not running"):
        vm.execute("true")
    vm.resume()
    assert vm.state == "running"
    assert vm.execute("true").exit_code == 0
    vm.stop(timeout=30)  # a paused VM cannot take ACPI: stop goes straight to quit
    assert vm.state == "stopped"


def test_qemu_killed_shows_crashed_then_start_works(vm_ctx: Context) -> None:
    vm = api(vm_ctx).launch("tiny", name="c1", instance_type="c1m256", wait=True, timeout=120)
    assert vm.pid is not None
    pid = vm.pid
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid, 10)
    observed = vm.observed
    assert observed.state == "crashed"
    assert "QEMU exited unexpectedly" in (observed.reason or "")
    vm.start(wait=True, timeout=120)
    assert vm.execute("hostname").stdout == b"c1\n"


def test_guest_poweroff_is_stopped_not_crashed(vm_ctx: Context) -> None:
    vm = api(vm_ctx).launch("tiny", name="off1", instance_type="c1m256", wait=True, timeout=120)
    pid = vm.pid
    vm.execute("sh -c '(sleep 0.5; poweroff) >/dev/null 2>&1 &'")
    assert pid is not None and wait_gone(pid, 30)
    assert vm.observed.state == "stopped"
    assert vm.observed.reason == "powered off from inside the guest"


def test_running_instance_cannot_be_removed_without_force(vm_ctx: Context) -> None:
    vm = api(vm_ctx).launch("tiny", name="r1", instance_type="c1m256")
    with pytest.raises(Conflict, match="stop it first"):
        vm.delete(force=False)
    vm.delete(force=True)


def test_volumes_forward_and_disk_size(vm_ctx: Context) -> None:
    import asyncio

    from corral.guest.ssh import SshTarget, close, connect, run_on
    from corral.machine.ports import pick_ports

    (extra,) = pick_ports((19500, 19999), (), 1)
    vm = api(vm_ctx).launch(
        "tiny", name="v1", instance_type="c1m256", disk_size="512M", volumes=["1G", "64M"],
        forwards=[f"{extra}:22"], wait=True, timeout=120,
    )  # fmt: skip
    sizes = vm.execute("cat /sys/block/vda/size /sys/block/vdb/size /sys/block/vdc/size")
    assert [int(s) * 512 for s in sizes.stdout.split()] == [512 << 20, 1 << 30, 64 << 20]
    # Each volume is named by its serial (/dev/disk/by-id/virtio-vol1 where udev runs).
    serials = vm.execute("for d in vdb vdc; do cat /sys/block/$d/serial; echo; done")
    assert serials.stdout.split() == [b"vol1", b"vol2"]  # sysfs gives no newline

    async def over_forward() -> bytes:
        conn = await connect(SshTarget(extra, "root", vm_ctx.home.ssh_key))
        try:
            return (await run_on(conn, "hostname")).stdout
        finally:
            await close(conn)

    assert asyncio.run(over_forward()) == b"v1\n"
    vm.delete()
    assert port_free(extra)


def test_launch_without_start_creates_it_stopped(vm_ctx: Context) -> None:
    corral = api(vm_ctx)
    with pytest.raises(InvalidInput, match="start"):
        corral.launch("tiny", name="later", start=False, wait=True)
    assert corral.instances() == []  # the refusal created nothing

    vm = corral.launch("tiny", name="later", instance_type="c1m256", start=False)
    files = vm_ctx.home.instance("later")
    assert vm.state == "stopped" and vm.pid is None
    assert files.disk.exists() and not files.qmp.exists()
    assert vm.record.started_at is None
    port = vm.ssh_port
    assert 18000 <= port <= 18999  # reserved for it already, in its record

    vm.start(wait=True, timeout=120)
    assert vm.state == "running" and vm.ssh_port == port
    assert vm.execute("hostname").stdout == b"later\n"
    vm.delete(force=True)

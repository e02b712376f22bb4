"""Saving a running tiny guest's memory and devices to a file and restoring it in another QEMU.

The guest notes something in its RAM (a file in its initramfs root) through its serial shell;
the restored guest still has it, runs, and answers on its serial console. A state restored
into a machine of another size is refused by QEMU, and the restore names QEMU's reason.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from corral.errors import QemuError
from corral.image.qemu_img import QemuImg
from corral.layout import MachineFiles
from corral.machine.migrate import restore_state, save_state
from corral.machine.spec import DirectBoot, Drive, MachineSpec
from corral.machine.vm import Vm
from corral.machine.warm import Requirements, devices, difference, requirements

pytestmark = pytest.mark.vm

QEMU = "qemu-system-x86_64"


def spec_for(files: MachineFiles, guest, disk: Path, *, memory: int = 256) -> MachineSpec:
    return MachineSpec(
        name="warm", cpus=1, memory_mib=memory, accelerator="tcg",
        drives=(Drive("disk0", disk, "qcow2"),), forwards=(), qmp_socket=files.qmp,
        serial_socket=files.serial_socket, serial_log=files.serial_log, pidfile=files.pidfile,
        boot=DirectBoot(guest.kernel, guest.initrd, guest.cmdline), agent_socket=files.agent,
    )  # fmt: skip


def shell(files: MachineFiles, command: str, expect: bytes, timeout: float = 60) -> bytes:
    """Type `command` on the guest's serial shell; return the output once `expect` shows."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(files.serial_socket))
        sock.settimeout(0.5)
        seen = b""
        end = time.monotonic() + timeout
        sock.sendall(b"\n" + command.encode() + b"\n")
        while expect not in seen:
            assert time.monotonic() < end, f"no {expect!r} on the console: {seen[-500:]!r}"
            try:
                seen += sock.recv(65536)
            except TimeoutError:
                pass
        return seen


def until_ready(files: MachineFiles, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while b"corral-tiny: ready" not in files.serial_log.read_bytes():
        assert time.monotonic() < end, "the tiny guest did not come up"
        time.sleep(0.1)


@pytest.fixture
def dirs(home: Path) -> Iterator[tuple[MachineFiles, MachineFiles]]:
    a, b = MachineFiles(home / "a"), MachineFiles(home / "b")
    a.dir.mkdir()
    b.dir.mkdir()
    yield a, b
    for files in (a, b):
        vm = Vm.attach(files)
        if vm is not None:
            vm.kill()


def test_a_saved_state_restores_into_another_qemu(dirs, tiny_guest, home: Path) -> None:
    a, b = dirs
    img = QemuImg("qemu-img")
    for files in (a, b):
        img.create_overlay(files.dir / "disk.qcow2", tiny_guest.disk, "qcow2", 256 << 20)
    spec_a = spec_for(a, tiny_guest, a.dir / "disk.qcow2")
    vm = asyncio.run(Vm.start(QEMU, spec_a, a))
    assert oct(a.agent.stat().st_mode & 0o777) == "0o600"
    until_ready(a)
    shell(a, "echo warm-$((20+22)) > /tmp/mark; echo noted", b"noted\r\n")

    state = home / "state"
    fd = os.open(state, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        written = asyncio.run(save_state(vm, fd))
    finally:
        os.close(fd)
    assert written == state.stat().st_size > 0
    # Pages the guest never touched cost a flag, not 4 KiB: far below its 256 MiB.
    assert written < 128 << 20
    asyncio.run(vm.resume())  # the saved VM goes on
    shell(a, "cat /tmp/mark", b"warm-42")
    asyncio.run(vm.stop())

    spec_b = replace(spec_for(b, tiny_guest, b.dir / "disk.qcow2"), incoming=True)
    restored = asyncio.run(Vm.start(QEMU, spec_b, b))
    fd = os.open(state, os.O_RDONLY)
    try:
        asyncio.run(restore_state(restored, fd))
    finally:
        os.close(fd)
    assert b"corral-tiny: ready" not in b.serial_log.read_bytes()  # it did not boot
    shell(b, "cat /tmp/mark", b"warm-42")
    asyncio.run(restored.stop())

    # Into a machine of another size the state does not fit: QEMU says why, and is gone.
    (b.dir / "disk.qcow2").unlink()
    img.create_overlay(b.dir / "disk.qcow2", tiny_guest.disk, "qcow2", 256 << 20)
    bigger = replace(spec_b, memory_mib=512)
    other = asyncio.run(Vm.start(QEMU, bigger, b))
    fd = os.open(state, os.O_RDONLY)
    try:
        with pytest.raises(QemuError, match="restoring the saved state failed"):
            asyncio.run(restore_state(other, fd))
    finally:
        os.close(fd)
    assert not other.alive()


def _reqs(**changes: object) -> Requirements:
    base = Requirements(
        qemu_version="7.2.22", machine="q35", cpu_model="max", accelerator="tcg", cpus=1,
        memory_mib=256, devices=("boot:kernel", "disk0:virtio-blk", "nic0:virtio-net"),
    )  # fmt: skip
    return replace(base, **changes)


def test_difference_names_the_first_thing_that_differs() -> None:
    assert difference(_reqs(), _reqs()) is None
    assert difference(_reqs(), _reqs(memory_mib=512)) == (
        "memory: saved 256 MiB, this launch 512 MiB"
    )
    assert difference(_reqs(), _reqs(cpus=2)) == "cpus: saved 1, this launch 2"
    assert difference(_reqs(), _reqs(qemu_version="8.0.0")) == (
        "QEMU version: saved 7.2.22, this launch 8.0.0"
    )
    assert difference(_reqs(), _reqs(accelerator="kvm")).startswith("accelerator: saved tcg")
    assert difference(_reqs(), _reqs(devices=("boot:kernel",))).startswith("devices: saved")


def test_requirements_describe_the_devices_in_argv_order(home: Path) -> None:
    files = MachineFiles(home)
    spec = MachineSpec(
        name="x", cpus=2, memory_mib=512, accelerator="tcg",
        drives=(Drive("disk0", home / "d", "qcow2"),
                Drive("seed", home / "s", "raw", readonly=True)),
        forwards=(), qmp_socket=files.qmp, serial_socket=files.serial_socket,
        serial_log=files.serial_log, pidfile=files.pidfile, isolated=True,
    )  # fmt: skip
    assert devices(spec) == (
        "boot:firmware", "disk0:virtio-blk", "seed:virtio-blk:ro", "nic0:virtio-net",
        "nic1:virtio-net", "rng:virtio-rng", "vmgenid",
    )  # fmt: skip
    reqs = requirements(replace(spec, agent_socket=files.agent), "7.2.22")
    assert reqs.devices[-1] == "agent:virtio-serial"
    assert (reqs.cpus, reqs.memory_mib, reqs.machine) == (2, 512, "q35")
    assert Requirements.from_json(reqs.to_json()) == reqs

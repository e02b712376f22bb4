"""The Vm object on a stand-in QEMU (fake_qemu.py): finding it again, QMP, stopping.

Real QEMU goes through the same code in tests/instance and tests/builds; here each behaviour
is cheap to provoke.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corral.fsutil import pid_alive, process_start_time
from corral.layout import MachineFiles
from corral.machine import vm as vm_module
from corral.machine.vm import Vm

FAKE = Path(__file__).with_name("fake_qemu.py")


@pytest.fixture
def files(home: Path) -> MachineFiles:
    return MachineFiles(home)  # a short path: unix socket paths must fit in 108 bytes


def fake(files: MachineFiles, procs: list, mode: str = "obedient") -> int:
    """Start a stand-in QEMU for `files` and wait until it answers; its pid."""
    log = files.dir / "commands"
    argv = [sys.executable, str(FAKE), str(files.qmp), str(log), mode]
    proc = subprocess.Popen(argv)
    procs.append(proc)
    files.pidfile.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 10
    while not files.qmp.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc.pid


def commands(files: MachineFiles) -> list[str]:
    lines = (files.dir / "commands").read_text().split()
    return [c for c in lines if c != "qmp_capabilities"]


def test_attach_finds_only_the_qemu_of_its_directory(files: MachineFiles, procs: list) -> None:
    assert Vm.attach(files) is None  # no pidfile
    pid = fake(files, procs)
    vm = Vm.attach(files)
    assert vm is not None and vm.pid == pid and vm.alive()
    assert Vm.attach(files, started=process_start_time(pid)) is not None
    # The pid is alive and names the socket, but started at another time: a reused pid.
    assert Vm.attach(files, started=(process_start_time(pid) or 0) + 1) is None
    # A live process whose command line names no QMP socket of this directory.
    other = MachineFiles(files.dir / "other")
    other.dir.mkdir()
    other.pidfile.write_text(f"{pid}\n")
    assert Vm.attach(other) is None


def test_typed_helpers_over_one_kept_connection(files: MachineFiles, procs: list) -> None:
    fake(files, procs)
    vm = Vm.attach(files)
    assert vm is not None

    async def drive() -> None:
        await vm.pause()  # a connection of its own
        await vm.open_qmp()
        await vm.resume()
        await vm.set_link("nic1", False)
        await vm.close_qmp()

    asyncio.run(drive())
    assert commands(files) == ["stop", "cont", "set_link"]
    assert (files.dir / "commands").read_text().count("qmp_capabilities") == 2


@pytest.mark.parametrize(
    ("mode", "powerdown", "steps"),
    [
        ("obedient", 5.0, ["powerdown"]),
        ("deaf", 0.3, ["powerdown", "quit"]),
        ("deaf", None, ["quit"]),  # e.g. a paused VM, or a build's: straight to quit
        ("stubborn", 0.3, ["powerdown", "quit", "kill"]),
    ],
)
def test_stop_escalates(
    files: MachineFiles, procs: list, monkeypatch: pytest.MonkeyPatch, mode: str,
    powerdown: float | None, steps: list[str],
) -> None:  # fmt: skip
    monkeypatch.setattr(vm_module, "QUIT_DEADLINE", 0.5)
    pid = fake(files, procs, mode)
    vm = Vm.attach(files)
    assert vm is not None
    taken: list[str] = []
    asyncio.run(vm.stop(powerdown=powerdown, progress=taken.append))
    assert taken == steps
    procs[0].wait(timeout=5)
    assert not pid_alive(pid)


def test_terminate_ends_a_stopped_qemu_by_signals(files: MachineFiles, procs: list) -> None:
    import os
    import signal

    pid = fake(files, procs)
    os.kill(pid, signal.SIGSTOP)  # it could not answer QMP
    vm = Vm.attach(files)
    assert vm is not None and vm.terminate(deadline=5)
    assert not pid_alive(pid)

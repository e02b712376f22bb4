"""Orphan build VMs: which process the sweep may stop, checked on stand-ins for QEMU.

A stand-in is a Python process whose command line names a run directory's QMP socket, as
QEMU's does; tests/builds/test_build_vm.py kills a real build and its real QEMU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from corral.builds.store import OWNER_FILE, QEMU_FILE, BuildStore
from corral.builds.vm import stop_orphans
from corral.fsutil import pid_alive, process_cmdline, process_start_time
from corral.layout import MachineFiles


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def stand_in(procs: list[subprocess.Popen[bytes]], *args: str) -> int:
    argv = [sys.executable, "-c", "import time; time.sleep(120)", *args]
    proc = subprocess.Popen(argv)
    procs.append(proc)
    deadline = time.monotonic() + 10
    while process_cmdline(proc.pid) != argv and time.monotonic() < deadline:
        time.sleep(0.01)  # until it has exec'd: before, it shows pytest's command line
    return proc.pid


def run_dir(store: BuildStore, owner: tuple[int, int | None], qemu_pid: int,
            qemu_start: int | None, *, record: bool = True) -> Path:  # fmt: skip
    path = store.runs / f"{owner[0]}-cafe"
    path.mkdir()
    (path / OWNER_FILE).write_text(f"{owner[0]} {owner[1]}\n")
    MachineFiles(path).pidfile.write_text(f"{qemu_pid}\n")
    if record:
        (path / QEMU_FILE).write_text(f"{qemu_pid} {qemu_start}\n")
    return path


def test_the_qemu_of_a_dead_owner_is_stopped(store: BuildStore, procs: list) -> None:
    path = store.runs / f"{dead_pid()}-cafe"
    qmp = str(MachineFiles(path).qmp)
    pid = stand_in(procs, qmp)
    run_dir(store, (int(path.name.split("-")[0]), None), pid, process_start_time(pid))
    assert stop_orphans(store) == [pid]
    procs[0].wait(timeout=5)
    assert not path.exists()


def test_a_reused_pid_is_never_signalled(store: BuildStore, procs: list) -> None:
    """A pidfile naming a live process that is not that VM's QEMU: only the files go."""
    other = stand_in(procs)  # any process: its command line names no QMP socket
    first = run_dir(store, (dead_pid(), None), other, process_start_time(other))
    assert stop_orphans(store) == []
    assert pid_alive(other) and not first.exists()

    path = store.runs / f"{dead_pid()}-cafe"
    twin = stand_in(procs, str(MachineFiles(path).qmp))  # the same command line...
    start = process_start_time(twin)
    assert start is not None
    run_dir(store, (int(path.name.split("-")[0]), None), twin, start - 1)  # ...started later
    assert stop_orphans(store) == []
    assert pid_alive(twin) and not path.exists()


def test_a_live_owner_keeps_its_vm(store: BuildStore, procs: list) -> None:
    me = (os.getpid(), process_start_time(os.getpid()))
    path = store.runs / f"{me[0]}-cafe"
    pid = stand_in(procs, str(MachineFiles(path).qmp))
    run_dir(store, me, pid, process_start_time(pid))
    assert stop_orphans(store) == []
    assert pid_alive(pid) and path.exists()


def test_an_owner_whose_pid_was_reused_is_gone(store: BuildStore, procs: list) -> None:
    """The owner's pid runs again, but as another process (it started at another time)."""
    me = os.getpid()
    start = process_start_time(me)
    assert start is not None
    path = store.runs / f"{me}-cafe"
    pid = stand_in(procs, str(MachineFiles(path).qmp))
    run_dir(store, (me, start + 1), pid, process_start_time(pid))
    assert store.orphan_runs() == [path]
    assert stop_orphans(store) == [pid]
    assert not path.exists()

"""State is derived from the record plus the process table (pure rules, real files)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from corral.fsutil import process_start_time
from corral.instance.record import InstanceRecord
from corral.instance.state import observe
from corral.layout import InstanceFiles


def record(**changes: object) -> InstanceRecord:
    base = dict(
        name="web1",
        instance_id="i-1",
        image="img",
        image_digest="d",
        image_format="qcow2",
        cpus=1,
        memory_mib=256,
        disk_size=1 << 30,
        ssh_user="root",
        ssh_port=18000,
    )
    base.update(changes)
    return InstanceRecord(**base)  # type: ignore[arg-type]


@pytest.fixture
def files(tmp_path: Path) -> InstanceFiles:
    return InstanceFiles(tmp_path)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_stopped_stays_stopped(files: InstanceFiles) -> None:
    assert observe(record(state="stopped"), files).state == "stopped"


def test_running_without_process_is_crashed_with_reason(files: InstanceFiles) -> None:
    files.pidfile.write_text(str(dead_pid()))
    files.qemu_stderr.write_text("+ qemu ...\nqemu-system-x86_64: terminating on signal 9\n")
    seen = observe(record(state="running"), files)
    assert seen.state == "crashed"
    assert seen.reason and "terminating on signal 9" in seen.reason


def test_guest_poweroff_is_stopped(files: InstanceFiles) -> None:
    files.serial_log.write_text("[   12.0] reboot: Power down\n")
    seen = observe(record(state="running"), files)
    assert (seen.state, seen.reason) == ("stopped", "powered off from inside the guest")


def test_a_live_process_that_is_not_our_qemu_does_not_count(files: InstanceFiles) -> None:
    files.pidfile.write_text(str(os.getpid()))  # alive, but its cmdline names no QMP socket
    assert observe(record(state="running"), files).state == "crashed"


def test_creating_with_dead_launcher_is_stale(files: InstanceFiles) -> None:
    seen = observe(record(state="creating", launcher_pid=dead_pid()), files)
    assert (seen.state, seen.stale) == ("creating", True)


def test_creating_with_live_launcher_is_not_stale(files: InstanceFiles) -> None:
    seen = observe(record(state="creating", launcher_pid=os.getpid()), files)
    assert (seen.state, seen.stale) == ("creating", False)


def test_a_throwaway_whose_owner_is_gone_is_stale(files: InstanceFiles) -> None:
    seen = observe(record(state="running", owner_pid=dead_pid()), files)
    assert seen.stale and seen.reason is not None and "owner" in seen.reason


def test_a_throwaway_whose_owner_runs_is_not_stale(files: InstanceFiles) -> None:
    me = os.getpid()
    assert not observe(record(state="stopped", owner_pid=me), files).stale
    # The same pid with another start time is another process (the pid was reused).
    reused = record(state="stopped", owner_pid=me, owner_start=process_start_time(me) + 1)
    assert observe(reused, files).stale

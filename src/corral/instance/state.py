"""Working out an instance's live state from its directory, never trusting the record alone.

The record says what corral last did; the process table says what is true. A QEMU that is
gone while the record says running either powered off from inside the guest (the kernel's
"reboot: Power down" is the last thing on the console) or crashed.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.fsutil import same_process
from corral.instance.record import InstanceRecord, State
from corral.layout import InstanceFiles
from corral.machine import console
from corral.machine.process import is_our_qemu, qemu_error_text, read_pid

POWER_DOWN_MARKERS = ("reboot: Power down", "System halted", "reboot: System halted")


@dataclass(frozen=True)
class Observed:
    state: State
    reason: str | None
    pid: int | None
    stale: bool = False  # a launch whose launcher died: to be cleaned up


def launcher_alive(record: InstanceRecord) -> bool:
    return same_process(record.launcher_pid, record.launcher_start)


def powered_off_by_guest(files: InstanceFiles) -> bool:
    return any(m in line for line in console.tail(files.serial_log, 5) for m in POWER_DOWN_MARKERS)


def observe(record: InstanceRecord, files: InstanceFiles) -> Observed:
    """Derive the state from the record, the pid file and the process table."""
    pid = read_pid(files.pidfile)
    alive = is_our_qemu(pid, files.qmp)
    if record.owner_pid is not None and not same_process(record.owner_pid, record.owner_start):
        gone = f"a throwaway instance whose owner (pid {record.owner_pid}) is gone"
        return Observed(record.state, gone, pid if alive else None, True)
    if record.state == "creating":
        if launcher_alive(record):
            return Observed("creating", None, pid if alive else None)
        return Observed("creating", "its launch was interrupted", pid if alive else None, True)
    if alive:
        if record.state in ("stopped", "crashed"):
            return Observed("running", None, pid)
        return Observed(record.state, record.reason, pid)
    if record.state == "starting" and launcher_alive(record):
        return Observed("starting", None, None)
    if record.state in ("stopped", "stopping", "starting"):
        return Observed("stopped", record.reason if record.state == "stopped" else None, None)
    if record.state == "crashed":
        return Observed("crashed", record.reason, None)
    if powered_off_by_guest(files):
        return Observed("stopped", "powered off from inside the guest", None)
    last = qemu_error_text(files.qemu_stderr)
    reason = "QEMU exited unexpectedly" + (
        " without a message (killed?)" if last == "no output" else f": {last}"
    )
    return Observed("crashed", reason, None)

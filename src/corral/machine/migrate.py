"""Saving a running machine's memory and device state to a file, and restoring it.

Both go through QEMU's migration with an "fd:" URI: corral opens the file and hands QEMU the
descriptor over QMP, so QEMU never opens a path (and `-sandbox spawn=deny` stays on: an
"exec:" URI would need a shell). The stream holds RAM and device state only; the disks are the
caller's to capture at the same instant (the VM is paused while both happen). Pages the guest
never touched are sent as a flag, not as 4 KiB of zeros, so a state is about as large as the
memory the guest used.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Sequence
from typing import Any

from corral.errors import DeadlineExceeded, QemuError
from corral.fsutil import pid_alive
from corral.machine.process import qemu_error_text
from corral.machine.qmp import Qmp
from corral.machine.vm import Vm

FD_NAME = "corral-state"
POLL = 0.02  # seconds between query-migrate / query-status polls
# No throttle: QEMU's default (128 MiB/s) would make a 1 GiB save take 8 s for nothing.
MAX_BANDWIDTH = 1 << 40
DONE = ("completed",)
FAILED = ("failed", "cancelled")


async def save_state(vm: Vm, fd: int, *, timeout: float = 600.0) -> int:
    """Pause the VM and write its RAM and device state into `fd` (the caller's; not closed).

    The VM is left paused (QEMU's "postmigrate"): resume it with vm.resume(), which also
    takes back its disks, or stop it. Returns the bytes written.
    """
    start = os.lseek(fd, 0, os.SEEK_CUR) if _regular(fd) else 0
    async with vm.session() as qmp:
        if (await qmp.status()) == "running":
            await qmp.execute("stop")
        await qmp.execute("migrate-set-parameters", {"max-bandwidth": MAX_BANDWIDTH})
        await qmp.send_fd(fd, FD_NAME)
        await qmp.execute("migrate", {"uri": f"fd:{FD_NAME}"})
        info = await _until_migrated(qmp, timeout)
    if _regular(fd):
        return os.fstat(fd).st_size - start
    return int(info.get("ram", {}).get("transferred", 0))


async def _until_migrated(qmp: Qmp, timeout: float) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        info = await qmp.execute("query-migrate")
        status = info.get("status")
        if status in DONE:
            return dict(info)
        if status in FAILED:
            raise QemuError(f"saving the VM's state failed: {info.get('error-desc', status)}")
        await asyncio.sleep(POLL)
    await qmp.execute("migrate_cancel")
    raise DeadlineExceeded(f"saving the VM's state did not finish within {timeout:g}s")


async def _links_down(qmp: Qmp, nics: Sequence[str]) -> None:
    for nic in nics:
        await qmp.execute("set_link", {"name": nic, "up": False})


async def restore_state(
    vm: Vm, fd: int, *, links_down: Sequence[str] = (), timeout: float = 600.0
) -> None:
    """Load a saved state from `fd` into a QEMU started with `-incoming defer`; return once the
    guest runs (it is resumed: a state is saved paused). A state that does not fit makes QEMU
    exit: its reason is raised. The NICs named in `links_down` (QMP names) have their link
    taken down before the guest runs again: QEMU then drops what the guest sends on them (the
    saved guest still has its template's MAC and address) until the caller raises them."""
    log = vm.files.qemu_stderr
    try:
        async with vm.session() as qmp:
            await qmp.send_fd(fd, FD_NAME)
            await qmp.execute("migrate-incoming", {"uri": f"fd:{FD_NAME}"})
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                status = await qmp.status()
                if status == "running":
                    await _links_down(qmp, links_down)  # not saved paused: as early as it can be
                    return
                if (
                    status == "paused"
                    and (await qmp.execute("query-migrate")).get("status") in DONE
                ):
                    # Saved from a paused VM (save_state pauses it), so it arrives paused.
                    # (A link set before the load would be overwritten by the saved state.)
                    await _links_down(qmp, links_down)
                    await qmp.execute("cont")
                    return
                if status not in ("inmigrate", "prelaunch", "restore-vm"):
                    raise QemuError(f"the restored VM is {status}, not running")
                await asyncio.sleep(POLL)
    except QemuError as exc:
        if await _exits(vm.pid, 2.0):
            raise QemuError(
                f"restoring the saved state failed: {qemu_error_text(log)}", hint=f"see {log}"
            ) from exc
        raise
    raise DeadlineExceeded(f"restoring the saved state did not finish within {timeout:g}s")


async def _exits(pid: int, within: float) -> bool:
    end = time.monotonic() + within
    while pid_alive(pid):
        if time.monotonic() >= end:
            return False
        await asyncio.sleep(POLL)
    return True


def _regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)

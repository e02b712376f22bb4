"""Starting QEMU detached and signalling it: the only place that spawns or signals QEMU.

QEMU runs in its own session with stdio on a file in the VM's directory, so it outlives
the command that started it and its own error messages are kept. Startup waits until QMP
answers or QEMU exits; in the latter case QEMU's last words become the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

from corral.errors import CorralError, DeadlineExceeded, MissingDependency, QemuError
from corral.fsutil import pid_alive, process_cmdline
from corral.run import run

START_DEADLINE = 60.0


def spawn(argv: list[str], *, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start QEMU detached; its sockets are created 0600 because of the umask."""
    with open(log, "ab") as out:
        out.write(f"+ {shlex.join(argv)}\n".encode())
        out.flush()
        try:
            return subprocess.Popen(
                argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                close_fds=True,
                umask=0o077,
            )
        except FileNotFoundError as exc:
            raise MissingDependency(f"{argv[0]} not found") from exc


def qemu_error_text(log: Path) -> str:
    """QEMU's own error, taken from the last non-command lines it wrote."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "no output"
    words = [ln for ln in lines if ln.strip() and not ln.startswith("+ ")]
    errors = [ln for ln in words if "warning:" not in ln]
    picked = (errors or words)[-1:] if (errors or words) else ["no output"]
    return picked[0].strip()


async def wait_started_async(
    proc_pid: int, qmp: Path, log: Path, *, deadline: float = START_DEADLINE
) -> None:
    """Return once QMP answers; raise QemuError with QEMU's message if it exits first."""
    from corral.machine.qmp import qmp_answers_async

    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if not pid_alive(proc_pid):
            raise QemuError(f"QEMU failed to start: {qemu_error_text(log)}", hint=f"see {log}")
        if qmp.exists() and await qmp_answers_async(qmp, timeout=2):
            return
        await asyncio.sleep(0.01)
    raise DeadlineExceeded(f"QEMU did not answer on QMP within {deadline:g}s", hint=f"see {log}")


def is_our_qemu(pid: int | None, qmp: Path) -> bool:
    """True when pid is alive and its command line names this instance's QMP socket."""
    if not pid or not pid_alive(pid):
        return False
    return any(str(qmp) in arg for arg in process_cmdline(pid))


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait up to timeout seconds for pid to exit."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


@functools.cache
def die_with_owner() -> tuple[str, ...]:
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

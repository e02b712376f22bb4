"""Starting QEMU detached and signalling it: the only place that spawns or signals QEMU.

QEMU runs in its own session with stdio on a file in the VM's directory, so it outlives
the command that started it and its own error messages are kept (`qemu_error_text` picks its
last words out for errors).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

from corral.errors import CorralError, MissingDependency
from corral.fsutil import pid_alive, process_cmdline
from corral.run import run


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

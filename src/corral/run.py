"""The one door to host subprocesses.

Every external command goes through `run`: it logs a copy-pasteable command line, closes stdin
unless input is given, fixes the locale so output can be parsed, always has a timeout, and turns
failure into an error that carries the command and the tail of its stderr.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from corral.errors import CommandFailed, DeadlineExceeded, MissingDependency

log = logging.getLogger("corral.run")


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    timeout: float = 120,
    input: bytes | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    pass_fds: Sequence[int] = (),
) -> subprocess.CompletedProcess[bytes]:
    """Run a command to completion and return it; raise CommandFailed if it fails and check.

    `pass_fds` stay open in the child under the same numbers: a file corral opened itself can
    be named to the command as /dev/fd/N, so the command never resolves a path of its own.
    """
    args = [os.fspath(a) for a in argv]
    log.debug("run: %s", shlex.join(args))
    full_env = {**os.environ, "LC_ALL": "C.UTF-8", **(env or {})}
    try:
        proc = subprocess.run(
            args,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            cwd=cwd,
            env=full_env,
            timeout=timeout,
            check=False,
            pass_fds=tuple(pass_fds),
        )
    except FileNotFoundError as exc:
        raise MissingDependency(f"{args[0]}: command not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise DeadlineExceeded(f"{shlex.join(args)} did not finish within {timeout:g}s") from exc
    if check and proc.returncode != 0:
        raise CommandFailed(args, proc.returncode, proc.stderr.decode(errors="replace"))
    return proc


def which(program: str) -> Path | None:
    """Resolve a program name or path to an executable, or None."""
    if os.sep in program:
        path = Path(program)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    found = shutil.which(program)
    return Path(found) if found else None


def require(program: str, *, package: str) -> Path:
    """Resolve a program or raise MissingDependency naming the Debian package that provides it."""
    path = which(program)
    if path is None:
        raise MissingDependency(
            f"{program} not found", hint=f"install it: apt-get install {package}"
        )
    return path

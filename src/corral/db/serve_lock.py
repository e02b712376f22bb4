"""One `corral serve` per SQLite file: a lock held for the server's lifetime.

On start a server on SQLite fails the jobs the previous server left unfinished; a second server
on the same file would fail the running jobs of the first. So the server holds an flock on
`<database file>.serve.lock` while it runs, with its pid and listen address written in the file
for the message of the one refused. The kernel drops the lock when the process ends, however it
ends. Other commands on the file (`corral token ...`, `corral db upgrade`) take no lock.
PostgreSQL needs none: its servers know each other (see control/liveness.py).

A process may take the lock more than once (the CLI takes it before it starts the server, the
control plane when it starts): it is released when the last holder lets go.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from sqlalchemy.engine import make_url

from corral.errors import Conflict

_guard = threading.Lock()
_held: dict[Path, tuple[int, int]] = {}  # lock file -> (descriptor, holders in this process)


def lock_path(database_url: str) -> Path | None:
    """The lock file of an SQLite database URL; None for other databases."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database:
        return None
    return Path(f"{os.path.realpath(url.database)}.serve.lock")


class ServeLock:
    """The right to serve an SQLite file; a no-op for PostgreSQL."""

    def __init__(self, database_url: str) -> None:
        self.path = lock_path(database_url)
        self._holding = False

    def acquire(self, address: str | None = None) -> None:
        """Take the lock, or raise Conflict naming the server that holds it."""
        if self.path is None or self._holding:
            return
        with _guard:
            fd, holders = _held.get(self.path, (-1, 0))
            if holders == 0:
                fd = self._take(address)
            _held[self.path] = (fd, holders + 1)
        self._holding = True

    def release(self) -> None:
        if self.path is None or not self._holding:
            return
        with _guard:
            fd, holders = _held[self.path]
            if holders == 1:
                del _held[self.path]
                os.close(fd)  # the flock goes with the last descriptor
            else:
                _held[self.path] = (fd, holders - 1)
        self._holding = False

    def _take(self, address: str | None) -> int:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Not inherited by children (QEMU outlives no server holding its lock).
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "starting"
            os.close(fd)
            database = self.path.name.removesuffix(".serve.lock")
            raise Conflict(
                f"another corral serve is running on {self.path.parent / database} ({holder})",
                hint="stop it first; several servers can share a PostgreSQL database",
            ) from None
        except BaseException:
            os.close(fd)
            raise
        where = f", listening on {address}" if address else ""
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}{where}\n".encode(), 0)
        return fd

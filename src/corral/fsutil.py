"""Small filesystem helpers: atomic writes, hashing copies, locks, process checks."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from corral.confine import create_exclusive

CHUNK = 4 << 20
_ZERO = bytes(CHUNK)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write data to a temporary sibling and rename it into place, so readers never see half.

    The temporary file is created exclusively, with a random name and the final mode: a token
    file is never readable by others, not even for a moment, and a planted link is never
    followed.
    """
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with atomic_file(dir_fd, path.name, mode=mode) as fd, os.fdopen(os.dup(fd), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def atomic_file(
    dir_fd: int, name: str, *, suffix: str = ".tmp", mode: int = 0o644
) -> Iterator[int]:
    """A new file of random name beside `name` in a directory descriptor, open for writing:
    created exclusively with exactly `mode` (never an existing file, never through a link
    planted there), renamed to `name` when the block succeeds, removed when it fails."""
    fd, tmp = create_exclusive(dir_fd, f".{name}.", suffix, mode)
    try:
        yield fd
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    finally:
        os.close(fd)


def copy_hashing(src: Path, dst: Path) -> str:
    """Copy src to dst in one pass, returning the sha256; runs of zeros become holes."""
    with open(dst, "wb") as fout:
        return copy_hashing_into(src, fout)


def copy_hashing_into(src: Path, fout: BinaryIO) -> str:
    """Copy src into a file already open for writing (e.g. one created exclusively)."""
    digest = hashlib.sha256()
    with open(src, "rb") as fin:
        while chunk := fin.read(CHUNK):
            digest.update(chunk)
            if len(chunk) == CHUNK and chunk == _ZERO:
                fout.seek(CHUNK, os.SEEK_CUR)
            else:
                fout.write(chunk)
        fout.truncate()
        fout.flush()
        os.fsync(fout.fileno())
    return digest.hexdigest()


def hash_file(path: Path) -> str:
    """The sha256 of a file, read once in large chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def locked(path: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold an flock on `path` (created if needed) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def pid_alive(pid: int | None) -> bool:
    """True when pid names a live process (zombies count as dead and are reaped if ours)."""
    if not pid or pid <= 0:
        return False
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False  # it was our child and has just been reaped
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of pid in clock ticks: tells a process from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def same_process(pid: int | None, start: int | None) -> bool:
    """Whether pid runs and is the process that started at `start` (a reused pid is not;
    start None: not recorded, any live process with that pid)."""
    if pid is None or not pid_alive(pid):
        return False
    return start is None or process_start_time(pid) == start


def process_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]

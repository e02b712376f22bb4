"""Paths named by someone corral does not trust, kept inside the directory they belong to.

Architecture files name output files, API callers name files in storage pools, build specs
name caches, guests send tar streams. Each such path must stay under a root. Checking the
string is not enough: a directory on the way may be a symlink that leads out, or become one
between the check and the use. So a path is walked from its root one component at a time with
O_NOFOLLOW, and the file is then used through the descriptor the walk returned, never by name.

The root itself is trusted (the operator chose it) and may be reached through symlinks.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from corral.errors import InvalidInput

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def relative_parts(text: str, what: str = "path") -> tuple[str, ...]:
    """The components of a relative path that stays where it starts.

    Refused: empty, absolute, `..` anywhere, NUL or newline characters. `.` parts are dropped.
    """
    if not text or "\0" in text or "\n" in text:
        raise InvalidInput(f"{what} {text!r} is not a usable path")
    path = PurePosixPath(text)
    if path.is_absolute():
        raise InvalidInput(f"{what} {text!r} must be relative, not absolute")
    if ".." in path.parts:
        raise InvalidInput(f"{what} {text!r} must not contain '..'")
    parts = tuple(p for p in path.parts if p != ".")
    if not parts:
        raise InvalidInput(f"{what} {text!r} names no file")
    return parts


def _escape(root: Path, parts: tuple[str, ...], index: int, what: str) -> InvalidInput:
    shown = "/".join(parts[: index + 1])
    return InvalidInput(f"{what} {'/'.join(parts)!r} leads out of {root} through {shown!r}")


@contextmanager
def open_dir(
    root: Path, parts: tuple[str, ...], *, create: bool = False, what: str = "path"
) -> Iterator[int]:
    """A descriptor of the directory root/parts, no symlink followed below root.

    With create, missing directories are made (mode 0755 less the umask). A component that is
    a symlink or not a directory is an InvalidInput naming it.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for index, part in enumerate(parts):
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise InvalidInput(
                        f"{what}: no such directory {'/'.join(parts[: index + 1])!r} in {root}"
                    ) from None
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass  # made meanwhile (or a link made meanwhile: the open below refuses it)
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    raise _escape(root, parts, index, what) from exc
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _escape(root, parts, index, what) from None
                raise InvalidInput(f"{what}: cannot open {part!r}: {exc.strerror}") from None
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def open_file(dir_fd: int, name: str, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """Open `name` in a directory descriptor without following a symlink; a regular file only."""
    fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidInput(f"{name!r} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_exclusive(
    dir_fd: int, prefix: str, suffix: str = "", mode: int = 0o600
) -> tuple[int, str]:
    """A new file with a random name in a directory: never an existing file, never a link.

    Returns the open descriptor (read-write) and the name; the caller renames or unlinks it.
    """
    for _ in range(100):
        name = f"{prefix}{secrets.token_hex(8)}{suffix}"
        try:
            fd = os.open(
                name,
                os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                mode,
                dir_fd=dir_fd,
            )
        except FileExistsError:
            continue
        os.fchmod(fd, mode)  # the umask must not widen or narrow what the caller asked for
        return fd, name
    raise FileExistsError(errno.EEXIST, "no free temporary name", prefix)


def fd_path(fd: int) -> Path:
    """What the kernel says an open descriptor is (its real path, symlinks resolved)."""
    return Path(f"/proc/self/fd/{fd}").readlink()


def is_inside(root: Path, path: Path) -> bool:
    """Whether path, symlinks resolved, lies strictly inside root (symlinks resolved too)."""
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path))
    return real != real_root and real.is_relative_to(real_root)

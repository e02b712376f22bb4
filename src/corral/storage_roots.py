"""The directories storage pools live in, and the files in them, reached without leaving them.

The operator names the storage roots (`storage_roots` in the config). The control plane only
accepts pools and objects whose paths lie under one of its roots; a node only uses base disks,
kernels and initrds under one of its own, opened by walking from the root without following any
symlink (confine.open_dir + open_file), so a link planted or swapped in after the control plane
looked is refused when the file is used. The caller then reads the file through the descriptor
(or /proc/self/fd/N of it), never by name again.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from corral import confine
from corral.errors import InvalidInput, NotFound


def _roots_text(roots: Sequence[Path]) -> str:
    return ", ".join(str(root) for root in roots) if roots else "none are configured"


def under_root(roots: Sequence[Path], text: str, what: str) -> tuple[Path, tuple[str, ...]]:
    """The root an absolute path lies under, and the path's components below it (maybe none).

    Only the text is looked at: refused are relative paths, `..`, NUL or newline characters and
    paths under none of the roots (the error names the allowed roots).
    """
    if not text or "\0" in text or "\n" in text:
        raise InvalidInput(f"{what} {text!r} is not a usable path")
    path = PurePosixPath(text)
    if not path.is_absolute():
        raise InvalidInput(f"{what} must be an absolute path, not {text!r}")
    if ".." in path.parts:
        raise InvalidInput(f"{what} must not contain '..': {text!r}")
    parts = path.parts[1:]
    for root in roots:
        depth = len(root.parts) - 1
        if parts[:depth] == root.parts[1:]:
            return root, parts[depth:]
    raise InvalidInput(
        f"{what} {text!r} is not under a storage root (allowed: {_roots_text(roots)})",
        hint="the operator sets storage_roots (CORRAL_STORAGE_ROOTS) in the configuration",
    )


def open_under(roots: Sequence[Path], text: str, what: str) -> int:
    """A read-only descriptor of the regular file `text`, which must lie under one of roots.

    Walked from the root with O_NOFOLLOW: a symlink anywhere below the root is refused, and the
    opened file's real path is checked to lie under the root's real path. The caller closes it.
    """
    root, parts = under_root(roots, text, what)
    if not parts:
        raise InvalidInput(f"{what} {text!r} is a storage root, not a file in one")
    if not root.is_dir():
        raise NotFound(f"{what}: the storage root {root} does not exist on this host")
    with confine.open_dir(root, parts[:-1], what=what) as dir_fd:
        try:
            # O_NONBLOCK: a FIFO planted in a pool must not hang the open.
            fd = confine.open_file(dir_fd, parts[-1], os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            raise NotFound(f"{what}: no such file {text!r}") from None
        except InvalidInput:
            raise InvalidInput(f"{what} {text!r} is not a regular file") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise InvalidInput(f"{what} {text!r} is a symbolic link: refused") from None
            raise InvalidInput(f"{what}: cannot open {text!r}: {exc.strerror}") from None
    if not confine.is_inside(root, confine.fd_path(fd)):
        os.close(fd)
        raise InvalidInput(f"{what} {text!r} leads out of the storage root {root}")
    return fd

"""What a copy takes and where it lands: Entry and TarMember, with obuilder's normalised modes.

Modes are normalised as obuilder does: directories 0755, files 0755 if any executable bit is
set and 0644 otherwise, symlinks 0777. Only files, directories and symlinks can be copied.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from typing import Literal

Kind = Literal["file", "dir", "symlink"]

DIR_MODE = 0o755
EXEC_MODE = 0o755
FILE_MODE = 0o644
LINK_MODE = 0o777
MODES = {"dir": DIR_MODE, "symlink": LINK_MODE}  # a file's depends on its executable bits


@dataclass(frozen=True)
class Entry:
    """One thing a copy takes: the fields its step ID is made from.

    `path` is relative to the context (or the child's `/`), posix, "." for the root itself.
    """

    path: str
    kind: Kind
    mode: int  # normalised: DIR_MODE, EXEC_MODE, FILE_MODE or LINK_MODE
    digest: str | None = None  # sha256 hex of a file's content
    target: str | None = None  # a symlink's target, as stored


@dataclass(frozen=True)
class TarMember:
    """Where something lands in the guest: an absolute path and what goes there.

    `source` is the entry copied to `path`; None marks a parent directory the copy needs,
    which the tar leaves out and `extract_command` creates only if missing.
    """

    path: str
    kind: Kind
    mode: int
    source: Entry | None


def file_mode(mode: int) -> int:
    """A file's normalised mode, from its own (st_mode or a tar member's)."""
    return EXEC_MODE if mode & 0o111 else FILE_MODE


def not_copyable(mode: int) -> str:
    """Why something that is not a file, directory or symlink cannot be copied."""
    for test, what in (
        (stat.S_ISFIFO, "a fifo"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return f"it is {what}; only files, directories and symlinks can be copied"
    return "only files, directories and symlinks can be copied"


def order(entry: Entry) -> tuple[str, ...]:
    """The sort key of a manifest: by components, so a directory comes right before what it
    holds ("a", "a/b", "a-b")."""
    return () if entry.path == "." else tuple(entry.path.split("/"))

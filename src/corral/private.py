"""The state directory is private to the user who runs corral.

It holds what other local users must not read: the control-plane database (node tokens in
clear, VM user-data), corral's SSH key, instance seeds and console logs, image blobs. So the
directory is 0700, the database and its WAL/SHM files 0600 and blobs 0400. An install made
before this rule is tightened the first time a command opens it: one stat per command when
nothing needs doing.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from corral.layout import Home

DIR_MODE = 0o700
FILE_MODE = 0o600
BLOB_MODE = 0o400
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def make_private(home: Home) -> None:
    """Create the state directory 0700, or tighten an existing one that others can enter."""
    root = home.root
    try:
        mode = root.stat().st_mode
    except FileNotFoundError:
        root.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            root.mkdir(mode=DIR_MODE)
        mode = root.stat().st_mode
    if stat.S_IMODE(mode) & 0o077:
        tighten(home)


def tighten(home: Home) -> None:
    """Take away every permission of group and others on what the state directory holds."""
    _chmod(home.root, DIR_MODE)
    for suffix in SQLITE_SUFFIXES:
        _chmod(home.root / f"corral.db{suffix}", FILE_MODE)
    if home.blobs.is_dir():
        for blob in home.blobs.iterdir():
            _chmod(blob, BLOB_MODE)


def private_sqlite_file(path: Path) -> None:
    """Make an SQLite database file 0600 before SQLite opens it (its WAL and SHM files take
    the database file's mode), creating it empty if missing; tighten leftovers of older runs."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=DIR_MODE)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE))
    for suffix in SQLITE_SUFFIXES:
        _chmod(Path(f"{path}{suffix}"), FILE_MODE)


def _chmod(path: Path, mode: int) -> None:
    """Set `mode` unless the file is missing, is a link, or is not ours to change."""
    with contextlib.suppress(OSError):
        st = path.lstat()
        if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & ~mode:
            path.chmod(stat.S_IMODE(st.st_mode) & mode)

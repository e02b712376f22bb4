"""The manifest of a copy from the build context: one walk of the host's files, read safely.

The rules, as obuilder and Docker's COPY have them: symlinks are copied as symlinks, never
followed, and one whose target resolves outside the context is refused, as is a source reached
through such a link; fifos, sockets and devices are refused. A file is read through a
descriptor whose real path must lie in the context (`open_inside`), so a directory swapped
for a link after the checks leaks nothing.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from corral import confine
from corral.builds.copying.entries import DIR_MODE, LINK_MODE, Entry, file_mode, not_copyable, order
from corral.builds.copying.sources import exclude_names, excluded, sources
from corral.errors import InvalidInput


def manifest(context: Path, srcs: Sequence[str], exclude: Sequence[str]) -> tuple[Entry, ...]:
    """Every file, directory and symlink the copy takes from `context`, sorted by path.

    Each file is read once, for its digest. Raises InvalidInput naming the offending path.
    """
    return walk_context(context, srcs, exclude)[1]


def walk_context(
    context: Path, srcs: Sequence[str], exclude: Sequence[str]
) -> tuple[Path, tuple[Entry, ...]]:
    """The context's real path, resolved once, and the manifest walked from it."""
    paths = sources(srcs, guest=False)
    names = exclude_names(exclude)
    root = Path(os.path.realpath(context))
    if not root.is_dir():
        raise InvalidInput(f"build context {str(context)!r} is not a directory")
    entries: list[Entry] = []
    for src, path in zip(srcs, paths, strict=True):
        _walk(root, _locate(root, src, path), path, names, entries)
    return root, tuple(sorted(entries, key=order))


def _locate(root: Path, src: str, path: str) -> Path:
    """The host path of a source, checking each symlink on the way resolves inside the context."""
    here = root
    parts = [] if path == "." else path.split("/")
    for i, part in enumerate(parts):
        here = here / part
        try:
            mode = os.lstat(here).st_mode
        except (FileNotFoundError, NotADirectoryError):
            raise InvalidInput(f"copy source {src!r} not found in the build context") from None
        except OSError as exc:
            raise InvalidInput(f"copy source {src!r}: {exc.strerror}") from exc
        if stat.S_ISLNK(mode) and i < len(parts) - 1 and not _inside_root(root, here):
            prefix = "/".join(parts[: i + 1])
            raise InvalidInput(
                f"copy source {src!r} escapes the build context: {prefix!r} is a symlink"
                f" to {readlink(here)!r}"
            )
    return here


def _walk(root: Path, host: Path, rel: str, names: tuple[str, ...], out: list[Entry]) -> None:
    """Append the entries of one source (a whole tree for a directory) to `out`."""
    stack = [(host, rel)]
    while stack:
        host, rel = stack.pop()
        try:
            mode = os.lstat(host).st_mode
        except OSError as exc:
            raise InvalidInput(f"cannot read {rel!r} in the build context: {exc.strerror}") from exc
        if stat.S_ISLNK(mode):
            target = readlink(host)
            if not _inside_root(root, host):
                raise InvalidInput(
                    f"symlink {rel!r} escapes the build context: it points to {target!r}"
                )
            out.append(Entry(rel, "symlink", LINK_MODE, target=target))
        elif stat.S_ISREG(mode):
            out.append(Entry(rel, "file", file_mode(mode), digest=_file_digest(root, host, rel)))
        elif stat.S_ISDIR(mode):
            out.append(Entry(rel, "dir", DIR_MODE))
            try:
                # Reversed, so entries are visited (and the first error met) in sorted order.
                children = sorted(host.iterdir(), reverse=True)
            except OSError as exc:
                raise InvalidInput(f"cannot list {rel!r}: {exc.strerror}") from exc
            stack.extend(
                (child, child.name if rel == "." else f"{rel}/{child.name}")
                for child in children
                if not excluded(child.name, names)
            )
        else:
            raise InvalidInput(f"cannot copy {rel!r}: {not_copyable(mode)}")


def _inside_root(root: Path, path: Path) -> bool:
    # os.path.realpath, not Path.resolve: that raises on a symlink loop, a harmless thing to copy.
    return Path(os.path.realpath(path)).is_relative_to(root)


def readlink(path: Path) -> str:
    """A symlink's target as stored (Path.readlink would normalise "./x/" to "x")."""
    return os.readlink(path)  # noqa: PTH115


def _file_digest(root: Path, host: Path, rel: str) -> str:
    try:
        with os.fdopen(open_inside(root, host, rel), "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        raise InvalidInput(f"cannot read {rel!r} in the build context: {exc.strerror}") from exc


def open_inside(root: Path, host: Path, rel: str) -> int:
    """Open a context file for reading: a regular file, really inside the context.

    What was checked before may have changed since (a directory on the way swapped for a
    link): the opened file's real path is what counts.
    """
    fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise changed(rel)
        if not confine.fd_path(fd).is_relative_to(root):
            raise InvalidInput(f"{rel!r} leads out of the build context; nothing was copied")
    except BaseException:
        os.close(fd)
        raise
    return fd


def changed(path: str) -> InvalidInput:
    """The error for a context entry that is no longer what its manifest says."""
    return InvalidInput(f"{path!r} changed while being copied; run the build again")

"""The spelling of a copy's `src` and `exclude`: which sources and names are allowed.

Sources are relative to the context (or to the child build's `/`) and may not leave it;
they may not repeat or hold one another, so each entry belongs to exactly one source.
`exclude` holds basenames (globs allowed) skipped at any depth below a source.
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Sequence

from corral.errors import InvalidInput


def sources(srcs: Sequence[str], *, guest: bool) -> tuple[str, ...]:
    """Sources as normalised relative paths ("." for the root); refuse ones that leave it.

    Context sources must be relative; guest sources are taken relative to the child's `/`.
    Sources may not repeat or hold one another: each entry then belongs to exactly one.
    """
    if not srcs:
        raise InvalidInput("a copy needs at least one source")
    out: list[str] = []
    for src in srcs:
        if guest:
            path = posixpath.normpath("/" + src).lstrip("/") or "."
        elif src.startswith("/"):
            raise InvalidInput(
                f"copy source {src!r} is absolute; sources are relative to the build context"
            )
        else:
            path = posixpath.normpath(src or ".")
            if path == ".." or path.startswith("../"):
                raise InvalidInput(f"copy source {src!r} leaves the build context")
        for other_src, other in zip(srcs, out, strict=False):
            if path == other:
                raise InvalidInput(f"copy source {src!r} is given twice")
            if within(path, other) or within(other, path):
                raise InvalidInput(f"copy sources {other_src!r} and {src!r} overlap")
        out.append(path)
    return tuple(out)


def within(path: str, top: str) -> bool:
    """Whether relative `path` is `top` or lies below it."""
    return top == "." or path == top or path.startswith(top + "/")


def exclude_names(exclude: Sequence[str]) -> tuple[str, ...]:
    """The exclusions, checked: each a file or directory name (a glob), never a path."""
    for name in exclude:
        if not name or "/" in name:
            raise InvalidInput(
                f"exclude {name!r} is not a file or directory name (globs allowed, no '/')"
            )
    return tuple(exclude)


def excluded(name: str, names: tuple[str, ...]) -> bool:
    """Whether the basename `name` matches one of the exclusions."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in names)

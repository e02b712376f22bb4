"""The spec's syntax tree: one frozen dataclass per op, and Spec and Build around them.

Ops are kept as written: a relative `workdir` stays relative, and `effective_workdirs` works
out the directory each op runs in. Positions ride along on the nodes for later messages but
take no part in equality, so `parse_spec(format_spec(s)) == s`.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

from corral.builds.sexp import Pos

DEFAULT_SHELL = ("/bin/bash", "-c")  # obuilder's default: specs written for it run unchanged
DEFAULT_WORKDIR = "/"
# A cache id names a disk file in the build store, so it is a plain name, never a path.
CACHE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class _Node:
    pos: Pos | None = field(default=None, kw_only=True, compare=False, repr=False)


@dataclass(frozen=True)
class Comment(_Node):
    keyword: ClassVar[str] = "comment"
    text: str


@dataclass(frozen=True)
class Workdir(_Node):
    """Set the working directory; a relative path is joined to the current one."""

    keyword: ClassVar[str] = "workdir"
    path: str


@dataclass(frozen=True)
class Shell(_Node):
    """The argv prefix for later `run` commands (default DEFAULT_SHELL)."""

    keyword: ClassVar[str] = "shell"
    args: tuple[str, ...]


@dataclass(frozen=True)
class Env(_Node):
    keyword: ClassVar[str] = "env"
    name: str
    value: str


@dataclass(frozen=True)
class UnixUser(_Node):
    """`(user (uid N) (gid N))`."""

    keyword: ClassVar[str] = "user"
    uid: int
    gid: int


@dataclass(frozen=True)
class NamedUser(_Node):
    """`(user (name NAME))`, obuilder's form for Windows guests."""

    keyword: ClassVar[str] = "user"
    name: str


@dataclass(frozen=True)
class Cache(_Node):
    """A persistent cache `id` mounted at `target` for one `run`."""

    id: str
    target: str


@dataclass(frozen=True)
class Secret(_Node):
    """The secret `id` mounted read-only at `target` for one `run`."""

    id: str
    target: str


@dataclass(frozen=True)
class Run(_Node):
    keyword: ClassVar[str] = "run"
    shell: str  # the command, given as the last argument to the current shell
    cache: tuple[Cache, ...] = ()
    network: tuple[str, ...] = ()
    secrets: tuple[Secret, ...] = ()


@dataclass(frozen=True)
class Copy(_Node):
    """Copy `src` paths to `dst`; from the build context, or from a child build's root."""

    keyword: ClassVar[str] = "copy"
    src: tuple[str, ...]
    dst: str
    from_build: str | None = None  # None: the build context
    exclude: tuple[str, ...] = ()  # basenames to skip


User = UnixUser | NamedUser
Op = Comment | Workdir | Shell | Env | UnixUser | NamedUser | Run | Copy


@dataclass(frozen=True)
class Build(_Node):
    """A named child build; `copy` ops can take files from its result."""

    name: str
    spec: Spec


@dataclass(frozen=True)
class Spec(_Node):
    base: str  # the image named by (from BASE)
    ops: tuple[Op, ...] = ()
    builds: tuple[Build, ...] = ()
    # Where BASE is written: a build that cannot use the image reports this position.
    base_pos: Pos | None = field(default=None, kw_only=True, compare=False, repr=False)


def resolve_workdir(current: str, path: str) -> str:
    """The directory `(workdir path)` selects when `current` is in effect."""
    return posixpath.join(current, path)


def effective_workdirs(ops: Iterable[Op], start: str = DEFAULT_WORKDIR) -> tuple[str, ...]:
    """For each op, the working directory in effect as it starts.

    A `workdir` op changes the directory for the ops after it, so its own entry is the previous
    directory: the one a build prints before it, as obuilder does.
    """
    current = start
    result: list[str] = []
    for op in ops:
        result.append(current)
        if isinstance(op, Workdir):
            current = resolve_workdir(current, op.path)
    return tuple(result)

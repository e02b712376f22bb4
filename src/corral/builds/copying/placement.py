"""Where a copy lands in the guest: the absolute path of each entry, and the parents it needs.

Parent directories are not tar members: a tar member for an existing directory such as /usr
or /home would chown and chmod it (busybox tar has no --no-overwrite-dir), so they are listed
apart (`parent_dirs`) and `extract_command` creates only the missing ones.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass

from corral.builds.copying.entries import DIR_MODE, Entry, Kind, TarMember
from corral.builds.copying.sources import sources, within
from corral.errors import InvalidInput


def plan(
    entries: Sequence[Entry], srcs: Sequence[str], dst: str, workdir: str
) -> tuple[TarMember, ...]:
    """Where each entry lands: parent directories first, then each source's members in order.

    `dst` is joined to `workdir`. With one source and a `dst` that does not end in "/" (nor
    is ".", ".." or "/"), the source becomes `dst`: a file or symlink is copied to that path,
    a directory to that directory (obuilder's "copies the single item SRC as DST"). Otherwise
    `dst` is a directory, created if missing and otherwise left as it is, and each source
    goes inside it: a directory source's contents, anything else itself. Two sources putting
    a non-directory at one path is fine, the later wins as in a tar; a directory and a
    non-directory at one path is refused.
    """
    placement = Placement.of(srcs, dst, workdir)
    present = {entry.path for entry in entries}
    for src, path in zip(srcs, placement.srcs, strict=True):
        if path not in present:
            raise InvalidInput(f"copy source {src!r} not found")
    members = [TarMember(d, "dir", DIR_MODE, None) for d in placement.parents]
    kinds: dict[str, Kind] = {}
    for src in placement.srcs:
        for entry in entries:
            if not within(entry.path, src):
                continue
            guest_path = placement.place(src, entry.path, entry.kind)
            if guest_path is not None:
                claim(kinds, guest_path, entry.kind)
                members.append(TarMember(guest_path, entry.kind, entry.mode, entry))
    return tuple(members)


def parent_dirs(srcs: Sequence[str], dst: str, workdir: str) -> tuple[str, ...]:
    """The directories `extract_command` creates if missing, outermost first.

    They depend on the spelling of the op only, not on what the sources hold, so a copy
    from a child build knows them before its tar is read. `plan` puts them first.
    """
    return Placement.of(srcs, dst, workdir).parents


@dataclass(frozen=True)
class Placement:
    """The rules of `plan`, shared with `retarget_tar`, which has no manifest to plan from."""

    srcs: tuple[str, ...]  # normalised, relative, disjoint
    target: str  # dst joined to the workdir
    into: bool  # target is a directory the sources go into; else the one source becomes it

    @classmethod
    def of(cls, srcs: Sequence[str], dst: str, workdir: str) -> Placement:
        paths = sources(srcs, guest=True)
        target = _guest_path(workdir, dst)
        into = (
            len(paths) > 1
            or dst.endswith("/")
            or posixpath.basename(dst) in (".", "..")
            or target == "/"
        )
        return cls(paths, target, into)

    @property
    def parents(self) -> tuple[str, ...]:
        return tuple(_ancestors(self.target if self.into else posixpath.dirname(self.target)))

    def source_of(self, path: str) -> str | None:
        return next((src for src in self.srcs if within(path, src)), None)

    def place(self, src: str, path: str, kind: Kind) -> str | None:
        """Where `path` (under `src`) lands; None for a directory source's own directory."""
        if path != src:
            return posixpath.join(self.target, path if src == "." else path[len(src) + 1 :])
        if not self.into:
            return self.target
        return None if kind == "dir" else posixpath.join(self.target, posixpath.basename(src))


def claim(kinds: dict[str, Kind], guest_path: str, kind: Kind) -> None:
    """Record `kind` at `guest_path`; refuse a directory and a non-directory at one path."""
    seen = kinds.setdefault(guest_path, kind)
    if (seen == "dir") != (kind == "dir"):
        raise InvalidInput(f"copy destination {guest_path!r} would be both a {seen} and a {kind}")


def _guest_path(workdir: str, dst: str) -> str:
    if not dst:
        raise InvalidInput("copy destination is empty")
    if not workdir.startswith("/"):
        raise InvalidInput(f"workdir {workdir!r} is not an absolute path")
    joined = posixpath.normpath(posixpath.join(workdir, dst))
    return "/" + joined.lstrip("/")  # normpath keeps a leading "//"


def _ancestors(path: str) -> list[str]:
    """The directories from the top down to `path`: "/a/b" gives "/a", "/a/b"."""
    parts = [p for p in path.split("/") if p]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]

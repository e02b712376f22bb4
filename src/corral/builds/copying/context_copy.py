"""A copy from the build context: walked once, its step ID and its tar made from that walk.

The walk (`walk_context`) gives the manifest the step's ID is made from; the tar sends those
very entries, each file read again and checked against its digest as it goes, so what lands
in the layer is what the ID says. Whatever changed since the walk fails the step ("changed
while being copied"); a file added since is not copied, as the ID does not name it.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from corral.builds.copying.context_manifest import changed, open_inside, readlink, walk_context
from corral.builds.copying.entries import Entry, TarMember
from corral.builds.copying.placement import plan
from corral.builds.copying.tar_writer import Pieces, encode, header, send_data
from corral.builds.spec import Copy


@dataclass(frozen=True)
class ContextCopy:
    """A `copy` from the build context, its sources walked once."""

    op: Copy
    root: Path  # the context's real path, resolved once for the walk and the tar
    entries: tuple[Entry, ...]  # the manifest: step_ids.copy_material makes the ID from it

    @classmethod
    def walk(cls, context: Path, op: Copy) -> ContextCopy:
        """Walk `op`'s sources in `context`; InvalidInput names what cannot be copied."""
        root, entries = walk_context(context, op.src, op.exclude)
        return cls(op, root, entries)

    def tar(self, workdir: str, uid: int, gid: int) -> Iterator[bytes]:
        """The tar of the walked entries, placed for `workdir` (`plan` runs now, the reads as
        the pieces are taken); raises InvalidInput for anything changed since the walk."""
        members = plan(self.entries, self.op.src, self.op.dst, workdir)
        return _tar(self.root, members, uid, gid)


def tar_stream(context: Path, members: Sequence[TarMember], uid: int, gid: int) -> Iterator[bytes]:
    """A pax tar of the members, names relative to `/`, owned by uid:gid, in pieces.

    Parent directories (members without a source) are left to `extract_command`. Files are
    read again here and checked against their digests, so what is copied is what the step ID
    says; a file that changed since `manifest` raises InvalidInput.
    """
    return _tar(Path(os.path.realpath(context)), members, uid, gid)


def _tar(root: Path, members: Sequence[TarMember], uid: int, gid: int) -> Iterator[bytes]:
    out = Pieces()
    for member in members:
        entry = member.source
        if entry is None:
            continue
        host = root / entry.path
        try:
            st = os.lstat(host)
        except OSError:
            raise changed(entry.path) from None
        info = header(member.path, member.kind, member.mode, uid, gid, int(st.st_mtime))
        if entry.kind == "file":
            yield from _send_file(out, info, root, host, entry)
            continue
        if entry.kind == "dir" and not stat.S_ISDIR(st.st_mode):
            raise changed(entry.path)
        if entry.kind == "symlink":
            if not stat.S_ISLNK(st.st_mode) or readlink(host) != entry.target:
                raise changed(entry.path)
            info.linkname = entry.target
        yield from out.add(encode(info))
    yield from out.finish()


def _send_file(
    out: Pieces, info: tarfile.TarInfo, root: Path, host: Path, entry: Entry
) -> Iterator[bytes]:
    try:
        fd = open_inside(root, host, entry.path)
    except OSError:
        raise changed(entry.path) from None
    with os.fdopen(fd, "rb") as f:
        info.size = os.fstat(fd).st_size
        yield from out.add(encode(info))
        yield from send_data(out, f, info.size, entry.digest, changed(entry.path))

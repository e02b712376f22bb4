"""A copy from the build context: the tar of its manifest's entries, checked as it is read.

Each file is read again and checked against the digest its manifest holds, so what lands in
the layer is what the step ID says; whatever changed since fails the step ("changed while
being copied").
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from corral.builds.copying.context_manifest import changed, open_inside, readlink
from corral.builds.copying.entries import Entry, TarMember
from corral.builds.copying.tar_writer import Pieces, encode, header, send_data


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

"""Reading a copy `(from (build NAME))`: the tar a child build's VM exported, taken apart.

The child's files come as the tar `guest_export_command` writes (several archives back to
back when the list is long). `manifest_from_tar` makes from it the same entries `manifest`
would make from the same tree; `retarget_tar` rewrites it, in one pass, to the paths `plan`
would give, for `extract_command` with `parent_dirs`. Members that are absolute or climb out
with ".." are refused: the tar comes from a guest, which corral does not trust.
"""

from __future__ import annotations

import hashlib
import stat
import tarfile
from collections.abc import Iterator, Sequence
from typing import IO

from corral.builds.copying.entries import (
    DIR_MODE,
    LINK_MODE,
    MODES,
    Entry,
    Kind,
    file_mode,
    not_copyable,
    order,
)
from corral.builds.copying.placement import Placement, claim
from corral.builds.copying.tar_writer import CHUNK, Pieces, encode, header, send_data
from corral.errors import GuestError, InvalidInput

_SPECIAL_TYPES = {
    tarfile.FIFOTYPE: stat.S_IFIFO,
    tarfile.CHRTYPE: stat.S_IFCHR,
    tarfile.BLKTYPE: stat.S_IFBLK,
}


def manifest_from_tar(stream: IO[bytes]) -> tuple[Entry, ...]:
    """The entries of a tar written by `guest_export_command`, as `manifest` makes them.

    Hard links become files with their target's digest. Raises GuestError for a member that
    is absolute or holds "..", InvalidInput for a fifo, socket or device.
    """
    entries: dict[str, Entry] = {}
    for tar, info in _read_tar(stream):
        path = _member_path(info.name)
        if info.isreg():
            digest = hashlib.sha256()
            for chunk in _member_data(tar, info):
                digest.update(chunk)
            entry = Entry(path, "file", file_mode(info.mode), digest=digest.hexdigest())
        elif info.islnk():
            linked = entries.get(_member_path(info.linkname))
            if linked is None or linked.kind != "file":
                raise GuestError(f"hard link {path!r} points to {info.linkname!r}, not a file")
            entry = Entry(path, "file", file_mode(info.mode), digest=linked.digest)
        elif _tar_kind(info, path) == "dir":
            entry = Entry(path, "dir", DIR_MODE)
        else:
            entry = Entry(path, "symlink", LINK_MODE, target=info.linkname)
        entries[path] = entry
    return tuple(sorted(entries.values(), key=order))


def retarget_tar(
    stream: IO[bytes], srcs: Sequence[str], dst: str, workdir: str, uid: int, gid: int
) -> Iterator[bytes]:
    """Rewrite a `guest_export_command` tar to where `plan` puts things, for `extract_command`.

    One pass, in pieces: each member goes to its guest path, owned by uid:gid with its
    normalised mode; hard links stay hard links. Raises GuestError for a member that is
    absolute, climbs out with "..", or lies under no source; InvalidInput for a fifo, socket
    or device, a source missing from the tar, or a clash `plan` would refuse.
    """
    placement = Placement.of(srcs, dst, workdir)
    kinds: dict[str, Kind] = {}
    written: dict[str, str] = {}  # member path -> the name it was written as, for hard links
    found: set[str] = set()
    out = Pieces()
    for tar, info in _read_tar(stream):
        path = _member_path(info.name)
        kind = _tar_kind(info, path)
        src = placement.source_of(path)
        if src is None:
            raise GuestError(f"the export holds {path!r}, which is under no copy source")
        if path == src:
            found.add(src)
        guest_path = placement.place(src, path, kind)
        if guest_path is None:
            continue
        claim(kinds, guest_path, kind)
        mode = file_mode(info.mode) if kind == "file" else MODES[kind]
        new = header(guest_path, kind, mode, uid, gid, int(info.mtime))
        if info.islnk():
            linked = written.get(_member_path(info.linkname))
            if linked is None:
                raise GuestError(f"hard link {path!r} points to {info.linkname!r}, not copied")
            new.type, new.linkname = tarfile.LNKTYPE, linked
        elif kind == "symlink":
            new.linkname = info.linkname
        elif kind == "file":
            new.size = info.size
        yield from out.add(encode(new))
        if new.isreg():
            reader = _Reader(_member_data(tar, info))
            cut = GuestError(f"the export is cut short in {path!r}")
            yield from send_data(out, reader, info.size, None, cut)
        written[path] = new.name
    for src, path in zip(srcs, placement.srcs, strict=True):
        if path not in found:
            raise InvalidInput(f"copy source {src!r} is not in the export")
    yield from out.finish()


def _read_tar(stream: IO[bytes]) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    # ignore_zeros: the export may be several archives back to back (see guest_commands).
    try:
        with tarfile.open(fileobj=stream, mode="r|", ignore_zeros=True) as tar:
            for info in tar:
                yield tar, info
    except tarfile.TarError as exc:
        raise GuestError(f"the export is not a readable tar: {exc}") from exc


def _member_data(tar: tarfile.TarFile, info: tarfile.TarInfo) -> Iterator[bytes]:
    f = tar.extractfile(info)
    if f is None:
        return
    try:
        while chunk := f.read(CHUNK):
            yield chunk
    except tarfile.TarError as exc:
        raise GuestError(f"the export is cut short in {info.name!r}: {exc}") from exc


class _Reader:
    """A `read(n)` over an iterator of chunks, for `send_data`."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._rest = b""

    def read(self, n: int) -> bytes:
        if not self._rest:
            self._rest = next(self._chunks, b"")
        piece, self._rest = self._rest[:n], self._rest[n:]
        return piece


def _member_path(name: str) -> str:
    """A tar member's name as an entry path; refuse one that is absolute or climbs out."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise GuestError(f"the export holds {name!r}, which escapes /")
    return "/".join(parts) or "."


def _tar_kind(info: tarfile.TarInfo, path: str) -> Kind:
    """A member's kind (a hard link is a file); refuse fifos and devices."""
    if info.isreg() or info.islnk():
        return "file"
    if info.isdir():
        return "dir"
    if info.issym():
        return "symlink"
    raise InvalidInput(f"cannot copy {path!r}: {not_copyable(_SPECIAL_TYPES.get(info.type, 0))}")

"""The tar a copy step sends to the guest, written in pieces: pax headers and checked data.

Everything copied is owned by the step's numeric uid:gid, with no user or group names, so
extraction uses the numbers whatever the guest's names. (tarfile's own writer copies a whole
file per addfile call; headers come from TarInfo.tobuf instead and data is copied here chunk
by chunk, so a stream never holds a whole file.)
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterator
from typing import Protocol

from corral.builds.copying.entries import Kind

CHUNK = 1 << 20  # file read size, and the size pieces of a tar stream are gathered to
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
_TAR_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE}


def header(path: str, kind: Kind, mode: int, uid: int, gid: int, mtime: int) -> tarfile.TarInfo:
    """A member's header, its name relative to `/`, owned by uid:gid."""
    info = tarfile.TarInfo(path.lstrip("/"))
    info.type = _TAR_TYPES[kind]
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""  # extraction then uses the numbers, whatever the guest's names
    info.mtime = mtime
    return info


def encode(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


class Readable(Protocol):
    def read(self, n: int, /) -> bytes: ...


def send_data(
    out: Pieces, f: Readable, size: int, digest: str | None, error: Exception
) -> Iterator[bytes]:
    """Copy `size` bytes of `f` into the tar, padded; raise `error` if short or not `digest`."""
    hashed = hashlib.sha256()
    left = size
    while left:
        chunk = f.read(min(CHUNK, left))
        if not chunk:
            raise error
        hashed.update(chunk)
        left -= len(chunk)
        yield from out.add(chunk)
    if digest is not None and hashed.hexdigest() != digest:
        raise error
    yield from out.add(bytes(-size % _BLOCK))


class Pieces:
    """Gathers tar bytes into pieces of about CHUNK, so a stream never holds a whole file."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._held = 0
        self._total = 0

    def add(self, data: bytes) -> Iterator[bytes]:
        self._parts.append(data)
        self._held += len(data)
        self._total += len(data)
        if self._held >= CHUNK:
            yield self._take()

    def finish(self) -> Iterator[bytes]:
        """The end-of-archive blocks, padded to a whole record as tar writes it."""
        end = 2 * _BLOCK
        yield from self.add(bytes(end + (-(self._total + end) % _RECORD)))
        if self._held:
            yield self._take()

    def _take(self) -> bytes:
        piece = b"".join(self._parts)
        self._parts, self._held = [], 0
        return piece

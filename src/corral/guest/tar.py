"""A small streaming tar reader for archives a guest sends: corral's own, not tarfile's.

What `corral cp NAME:/dir DST` receives was made by whatever the guest runs as `tar`, so it is
read as hostile input, the same way whatever Python patch level runs corral: one 512-byte
block at a time from a `read(n)` callable (never the whole archive in memory), each header's
checksum verified, numbers parsed strictly (octal or GNU base-256, never negative), and the
formats guests write understood: ustar (with its name prefix), GNU long names and long link
names ('L', 'K') and pax extended headers ('x'; global 'g' headers are read and ignored). The
extended records are capped in size. Deciding what a member may do on the host is
receive.py's business: this module only says what the archive holds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from corral.errors import GuestError

Read = Callable[[int], bytes]  # up to n bytes; b"" at the end of the stream

BLOCK = 512
CHUNK = 1 << 20  # file data comes out in pieces of at most this
MAX_EXTENDED = 1 << 20  # the largest long name or pax header accepted

FILE_TYPES = (b"0", b"\0", b"7")  # regular (old and new spelling) and contiguous
HARDLINK, SYMLINK, DIRECTORY = b"1", b"2", b"5"
_LONG_NAME, _LONG_LINK, _PAX, _PAX_GLOBAL = b"L", b"K", b"x", b"g"


@dataclass(frozen=True)
class Member:
    """One archive member, its extended headers applied."""

    name: str
    type: bytes  # the typeflag, one byte
    mode: int
    size: int  # bytes of data that follow (only files carry data worth reading)
    linkname: str
    mtime: float

    @property
    def is_file(self) -> bool:
        return self.type in FILE_TYPES


def _cut(field: bytes) -> bytes:
    return field.split(b"\0", 1)[0]


def _number(field: bytes, what: str) -> int:
    if field[:1] == b"\x80":  # GNU base-256, positive
        return int.from_bytes(field[1:], "big")
    if field[:1] and field[0] & 0x80:
        raise GuestError(f"the tar has a negative {what}")
    text = _cut(field).strip(b" ")
    if not text:
        return 0
    if not all(48 <= c <= 55 for c in text):  # 0-7
        raise GuestError(f"the tar has a malformed {what} field {text[:20]!r}")
    return int(text, 8)


def _check_sum(block: bytes) -> None:
    wrong = GuestError("the guest did not send a tar (a header checksum is wrong)")
    try:
        stored = _number(block[148:156], "header checksum")
    except GuestError:
        raise wrong from None
    header = block[:148] + b" " * 8 + block[156:]
    unsigned = sum(header)
    signed = sum(c - 256 if c > 127 else c for c in header)  # some old tars summed signed
    if stored not in (unsigned, signed):
        raise wrong


def _pax_records(data: bytes) -> dict[str, str]:
    """`LEN key=value\\n` records; a malformed one is refused, not skipped."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        if data[pos:].strip(b"\0") == b"":
            break
        space = data.find(b" ", pos)
        length_text = data[pos:space] if space > pos else b""
        if not length_text.isdigit():
            raise GuestError("the tar has a malformed pax header")
        end = pos + int(length_text)
        record = data[space + 1 : end]
        if end > len(data) or end <= space or not record.endswith(b"\n") or b"=" not in record:
            raise GuestError("the tar has a malformed pax header")
        key, _, value = record[:-1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos = end
    return records


class TarReader:
    """Members of a tar stream, in order: `for member in reader`, reading each file's data
    with `reader.data()` before asking for the next (what is not read is skipped)."""

    def __init__(self, read: Read) -> None:
        self._read = read
        self._buffer = bytearray()
        self._left = 0  # data bytes of the current member not yet read
        self._padding = 0  # then this many bytes up to the next block
        self.ended = False  # the end-of-archive block was met

    def _take(self, n: int) -> bytes:
        """Up to n bytes (fewer only at the end of the stream)."""
        while len(self._buffer) < n:
            chunk = self._read(max(n - len(self._buffer), 65536))
            if not chunk:
                break
            self._buffer += chunk
        piece = bytes(self._buffer[:n])
        del self._buffer[:n]
        return piece

    def _exactly(self, n: int) -> bytes:
        piece = self._take(n)
        if len(piece) != n:
            raise GuestError("the tar the guest sent is cut short")
        return piece

    def data(self) -> Iterator[bytes]:
        """The current member's data, in pieces of at most CHUNK."""
        while self._left:
            piece = self._exactly(min(self._left, CHUNK))
            self._left -= len(piece)
            yield piece

    def _skip(self) -> None:
        for _ in self.data():
            pass
        self._exactly(self._padding)
        self._padding = 0

    def _extended(self, size: int) -> bytes:
        if size > MAX_EXTENDED:
            raise GuestError(f"the tar has an extended header of {size} bytes (at most 1 MiB)")
        self._left, self._padding = size, -size % BLOCK
        data = b"".join(self.data())
        self._skip()
        return data

    def __iter__(self) -> Iterator[Member]:
        return self

    def __next__(self) -> Member:
        self._skip()
        overrides: dict[str, str] = {}
        while True:
            block = self._take(BLOCK)
            if not block:
                raise GuestError("the tar the guest sent has no end")
            if len(block) != BLOCK:
                raise GuestError("the tar the guest sent is cut short")
            if block == bytes(BLOCK):
                self.ended = True
                raise StopIteration
            _check_sum(block)
            kind = block[156:157]
            size = _number(block[124:136], "size")
            if kind in (_LONG_NAME, _LONG_LINK):
                key = "path" if kind == _LONG_NAME else "linkpath"
                overrides[key] = os.fsdecode(_cut(self._extended(size)))
                continue
            if kind == _PAX:
                overrides.update(_pax_records(self._extended(size)))
                continue
            if kind == _PAX_GLOBAL:
                self._extended(size)
                continue
            return self._member(block, kind, size, overrides)

    def _member(self, block: bytes, kind: bytes, size: int, overrides: dict[str, str]) -> Member:
        name = _cut(block[0:100])
        if block[257:263] == b"ustar\0":  # POSIX ustar: a prefix holds the start of long names
            prefix = _cut(block[345:500])
            if prefix:
                name = prefix + b"/" + name
        if "size" in overrides:
            text = overrides["size"]
            if not text.isdigit():
                raise GuestError("the tar has a malformed pax size")
            size = int(text)
        try:
            mtime = float(overrides.get("mtime", _number(block[136:148], "mtime")))
        except ValueError:
            raise GuestError("the tar has a malformed pax mtime") from None
        self._left, self._padding = size, -size % BLOCK
        path = overrides.get("path", os.fsdecode(name))
        if kind == b"\0" and path.endswith("/"):  # pre-POSIX tars marked directories so
            kind = DIRECTORY
        return Member(
            name=path,
            type=kind,
            mode=_number(block[100:108], "mode"),
            size=size,
            linkname=overrides.get("linkpath", os.fsdecode(_cut(block[157:257]))),
            mtime=mtime,
        )

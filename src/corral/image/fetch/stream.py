"""What happens to downloaded bytes: hashed as sent, decompressed, sniffed, hashed and written.

One pass over the data: the checksum the publisher gave applies to the bytes as sent (often
`.xz`); the store's sha256 is of the bytes written. Decompression is bounded per call, so a small
compressed chunk that expands to gigabytes of zeros never sits in memory at once, and runs of
zeros become holes in the file.
"""

from __future__ import annotations

import bz2
import contextlib
import hashlib
import lzma
import os
import queue
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from corral.errors import CorralError, InvalidInput
from corral.image.fetch.checksums import Checksum

OUT_CHUNK = 4 << 20
SNIFF_BYTES = 4096
_QUEUE_PIECES = 64  # pieces in flight to the writer thread: at most 64 x 4 MiB

COMPRESSIONS = {".xz": "xz", ".gz": "gz", ".bz2": "bz2"}
_MAGIC = ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b\x08", "gz"), (b"BZh", "bz2"))


def compression_of(filename: str) -> str | None:
    """'x.qcow2.xz' -> 'xz'; None when the name says nothing is compressed."""
    for suffix, kind in COMPRESSIONS.items():
        if filename.lower().endswith(suffix):
            return kind
    return None


def sniff_compression(head: bytes) -> str | None:
    """The compression whose magic number starts `head`, if any."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            if kind == "bz2" and not (len(head) > 3 and head[3:4] in b"123456789"):
                continue
            return kind
    return None


def sniff_not_an_image(head: bytes) -> str | None:
    """Name what `head` is if it is plainly not a disk image (an HTML page, an archive...).

    Such a file would pass `qemu-img info` as a "raw" image, so it is caught here.
    """
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<!--", b"<?xml")):
        return "an HTML page"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "a tar archive"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive"
    kind = sniff_compression(head)
    if kind:
        return f"{kind}-compressed data"
    return None


class _Decoder:
    """Streaming decompression of concatenated streams, at most OUT_CHUNK bytes per step."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.streams = 0
        self._new()

    def _new(self) -> None:
        self.streams += 1
        if self.kind == "gz":
            self.d: Any = zlib.decompressobj(wbits=31)
        elif self.kind == "bz2":
            self.d = bz2.BZ2Decompressor()
        else:
            self.d = lzma.LZMADecompressor()

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data:
            if self.d.eof:
                if not data.strip(b"\0"):
                    return  # zero padding after the last stream (allowed in .xz files)
                self._new()  # another stream follows
            if self.kind == "gz":
                yield self.d.decompress(data, OUT_CHUNK)
                while self.d.unconsumed_tail and not self.d.eof:
                    yield self.d.decompress(self.d.unconsumed_tail, OUT_CHUNK)
            else:
                yield self.d.decompress(data, OUT_CHUNK)
                while not self.d.eof and not self.d.needs_input:
                    yield self.d.decompress(b"", OUT_CHUNK)
            data = self.d.unused_data if self.d.eof else b""

    def finish(self) -> None:
        if not self.d.eof:
            raise EOFError("the compressed data ends early")


def _all_zero(piece: bytes) -> bool:
    """A run of zeros worth a hole (the end bytes rule out almost all data at once)."""
    return len(piece) >= 4096 and piece[0] == 0 and piece[-1] == 0 and piece == bytes(len(piece))


class _Writer:
    """Writes pieces in order on a thread of its own: disk writes overlap receiving and hashing.

    Runs of zeros become holes (the file is truncated to its size at the end). A write error
    is raised on the next put() or at close().
    """

    def __init__(self, file: BinaryIO, path: Path) -> None:
        self.file = file
        self.path = path
        self.error: OSError | None = None
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUE_PIECES)
        self.thread = threading.Thread(target=self._run, name="corral-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (piece := self.queue.get()) is not None:
            if self.error is not None:
                continue  # drain: the error is reported to the producer
            try:
                if _all_zero(piece):
                    self.file.seek(len(piece), 1)
                else:
                    self.file.write(piece)
            except OSError as exc:
                self.error = exc

    def put(self, piece: bytes) -> None:
        self._raise()
        self.queue.put(piece)

    def close(self) -> None:
        """Wait until everything is written; raise the first write error."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        self._raise()

    def _raise(self) -> None:
        error = self.error  # stays set: nothing more is written once a write has failed
        if error is not None:
            raise CorralError(f"cannot write {self.path}: {error.strerror or error}") from error


class Sink:
    """The file a download is written to, plus everything computed on the way.

    `expected` names the algorithm for the bytes as sent (sha256 when nothing is expected). When
    nothing is decompressed and that algorithm is sha256, one hash serves both purposes.
    """

    def __init__(self, path: Path, *, expected: Checksum | None, compression: str | None,
                 label: str) -> None:  # fmt: skip
        self.path = path
        self.label = label
        self.algo = expected.algo if expected else "sha256"
        self.compression = compression
        self.file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._writer: _Writer | None = None
        self.reset()

    def reset(self) -> None:
        """Start over from the first byte (the server could not resume)."""
        if self._writer is not None:
            self._writer.close()
        self.file.seek(0)
        self.file.truncate()
        self._writer = _Writer(self.file, self.path)
        self.sent_hash = hashlib.new(self.algo)
        self.sent_size = 0
        self.stored_hash: Any = None
        self.size = 0
        self._wire_head = b""
        self._decoder: _Decoder | None = None
        self.kind: str | None = None
        self._decided = False
        self._head = bytearray()
        self._sniffed = False

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self.sent_size += len(data)
        self.sent_hash.update(data)
        if not self._decided:
            self._wire_head += data
            if len(self._wire_head) < 8:
                return
            data, self._wire_head = self._wire_head, b""
            self._decide(data)
        self._decode(data)

    def _decide(self, head: bytes) -> None:
        kind = self.compression or sniff_compression(head)
        self._decoder = _Decoder(kind) if kind else None
        self.kind = kind
        self._decided = True
        if self._decoder is None and self.algo == "sha256":
            self.stored_hash = None  # the sent hash is the stored hash
        else:
            self.stored_hash = hashlib.sha256()

    def _decode(self, data: bytes) -> None:
        if self._decoder is None:
            self._out(data)
            return
        try:
            for piece in self._decoder.feed(data):
                self._out(piece)
        except (lzma.LZMAError, OSError, zlib.error, EOFError, ValueError) as exc:
            raise InvalidInput(f"{self.label}: corrupt {self.kind} data ({exc})") from exc

    def _out(self, piece: bytes) -> None:
        if not piece:
            return
        if not self._sniffed:
            self._head += piece
            if len(self._head) < SNIFF_BYTES:
                return
            piece, self._head = bytes(self._head), bytearray()
            self._sniff(piece)
        assert self._writer is not None
        self._writer.put(piece)
        if self.stored_hash is not None:
            self.stored_hash.update(piece)
        self.size += len(piece)

    def _sniff(self, head: bytes) -> None:
        self._sniffed = True
        what = sniff_not_an_image(head)
        if what:
            raise InvalidInput(f"{self.label} is {what}, not a disk image")

    def finish(self) -> None:
        """The last byte has been fed: flush everything and check the stream was complete."""
        if not self._decided:
            data, self._wire_head = self._wire_head, b""
            self._decide(data)
            self._decode(data)
        if self._decoder is not None:
            try:
                self._decoder.finish()
            except EOFError as exc:
                raise InvalidInput(f"{self.label}: corrupt {self.kind} data ({exc})") from exc
        if not self._sniffed:
            head, self._head = bytes(self._head), bytearray()
            if not head:
                raise InvalidInput(f"{self.label} is empty, not a disk image")
            self._sniff(head)
            self._out(head)
        assert self._writer is not None
        self._writer.close()
        try:
            self.file.truncate(self.size)
            self.file.flush()
            os.fdatasync(self.file.fileno())  # the store will vouch for these bytes by name
        except OSError as exc:
            raise CorralError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def sent_hexdigest(self, expected: Checksum | None) -> str:
        return expected.hexdigest(self.sent_hash) if expected else self.sent_hash.hexdigest()

    @property
    def digest(self) -> str:
        """sha256 of the bytes written."""
        return (self.stored_hash or self.sent_hash).hexdigest()

    def close(self) -> None:
        """Stop the writer and close the file (after success or failure alike)."""
        if self._writer is not None:
            with contextlib.suppress(CorralError):
                self._writer.close()
            self._writer = None
        self.file.close()

"""The sink every download goes through: decompression, sniffing, both digests, holes."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import tarfile
from pathlib import Path

import pytest

from corral.errors import InvalidInput
from corral.image.fetch.checksums import Checksum
from corral.image.fetch.stream import Sink, compression_of, sniff_not_an_image

COMPRESS = {"xz": lzma.compress, "gz": gzip.compress, "bz2": bz2.compress}


def feed_all(sink: Sink, data: bytes, step: int = 7919) -> None:
    for i in range(0, len(data), step):
        sink.feed(data[i : i + step])
    sink.finish()
    sink.close()


@pytest.mark.parametrize("kind", ["xz", "gz", "bz2"])
def test_decompresses_and_hashes_both_streams(tmp_path: Path, kind: str) -> None:
    plain = os.urandom(300_000) + bytes(5 << 20) + b"end"
    sent = COMPRESS[kind](plain)
    expected = Checksum("sha512", hashlib.sha512(sent).hexdigest())
    sink = Sink(tmp_path / "out", expected=expected, compression=kind, label="u")
    feed_all(sink, sent)
    assert (tmp_path / "out").read_bytes() == plain
    assert sink.sent_hexdigest(expected) == expected.hex
    assert sink.digest == hashlib.sha256(plain).hexdigest()
    assert (sink.sent_size, sink.size) == (len(sent), len(plain))


@pytest.mark.parametrize("kind", ["xz", "gz", "bz2"])
def test_concatenated_streams_and_magic_without_suffix(tmp_path: Path, kind: str) -> None:
    parts = [os.urandom(10_000), os.urandom(20_000)]
    sent = b"".join(COMPRESS[kind](p) for p in parts)
    if kind == "xz":
        sent += bytes(8)  # xz allows stream padding
    sink = Sink(tmp_path / "out", expected=None, compression=None, label="u")
    feed_all(sink, sent, step=3)
    assert (tmp_path / "out").read_bytes() == b"".join(parts)
    assert sink.kind == kind


def test_runs_of_zeros_become_holes(tmp_path: Path) -> None:
    plain = b"\x01" * 4096 + bytes(64 << 20) + b"\x02" * 4096
    sink = Sink(tmp_path / "out", expected=None, compression="xz", label="u")
    feed_all(sink, lzma.compress(plain), step=1 << 16)
    out = tmp_path / "out"
    assert out.stat().st_size == len(plain)
    assert out.stat().st_blocks * 512 < 8 << 20  # mostly holes
    assert hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256(plain).hexdigest()


def test_uncompressed_sha256_shares_one_hash(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    expected = Checksum("sha256", hashlib.sha256(data).hexdigest())
    sink = Sink(tmp_path / "out", expected=expected, compression=None, label="u")
    feed_all(sink, data)
    assert sink.stored_hash is None
    assert sink.digest == sink.sent_hexdigest(expected) == expected.hex


def test_reset_starts_over(tmp_path: Path) -> None:
    data = os.urandom(50_000)
    sink = Sink(tmp_path / "out", expected=None, compression=None, label="u")
    sink.feed(b"garbage" * 1000)
    sink.reset()
    feed_all(sink, data)
    assert (tmp_path / "out").read_bytes() == data


def _tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("disk.raw")
        info.size = 10
        tar.addfile(info, io.BytesIO(b"0123456789"))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"\n  <!DOCTYPE html><html><body>Not here</body></html>", "an HTML page"),
        (b"<html><head><title>404</title></head></html>", "an HTML page"),
        (b"<?xml version='1.0'?><Error>AccessDenied</Error>", "an HTML page"),
        (_tar(), "a tar archive"),
        (b"PK\x03\x04" + bytes(100), "a zip archive"),
        (lzma.compress(b"x" * 100), "xz-compressed data"),
    ],
)
def test_not_an_image_is_named(data: bytes, what: str) -> None:
    assert sniff_not_an_image(data) == what


def test_html_inside_gzip_is_caught_before_anything_is_written(tmp_path: Path) -> None:
    page = b"<!doctype html><html>" + b"x" * 10_000 + b"</html>"
    sink = Sink(tmp_path / "out", expected=None, compression="gz", label="http://h/x.img.gz")
    with pytest.raises(InvalidInput, match=r"http://h/x.img.gz is an HTML page, not a disk"):
        feed_all(sink, gzip.compress(page))
    sink.close()
    assert (tmp_path / "out").stat().st_size == 0


def test_raw_and_qcow2_heads_are_images() -> None:
    assert sniff_not_an_image(b"QFI\xfb" + bytes(500)) is None
    assert sniff_not_an_image(bytes(4096)) is None
    assert sniff_not_an_image(b"\xeb\x63\x90" + bytes(509)) is None


@pytest.mark.parametrize("kind", ["xz", "gz", "bz2"])
def test_truncated_or_corrupt_compressed_data(tmp_path: Path, kind: str) -> None:
    sent = COMPRESS[kind](os.urandom(50_000))
    sink = Sink(tmp_path / "a", expected=None, compression=kind, label="u")
    with pytest.raises(InvalidInput, match=f"u: corrupt {kind} data"):
        feed_all(sink, sent[: len(sent) // 2])
    sink = Sink(tmp_path / "b", expected=None, compression=kind, label="u")
    with pytest.raises(InvalidInput, match=f"u: corrupt {kind} data"):
        feed_all(sink, sent[:20] + bytes(100) + sent[120:])


def test_empty_is_not_an_image(tmp_path: Path) -> None:
    sink = Sink(tmp_path / "out", expected=None, compression=None, label="u")
    with pytest.raises(InvalidInput, match="u is empty"):
        feed_all(sink, b"")


def test_compression_of_names() -> None:
    assert compression_of("CentOS-7-x86_64-GenericCloud.qcow2.xz") == "xz"
    assert compression_of("disk.raw.GZ") == "gz"
    assert compression_of("x.img.bz2") == "bz2"
    assert compression_of("jammy-server-cloudimg-amd64.img") is None


def test_write_errors_are_one_clear_error(tmp_path: Path) -> None:
    import resource
    import signal

    from corral.errors import CorralError

    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, old_limit[1]))
    try:
        sink = Sink(tmp_path / "out", expected=None, compression=None, label="u")
        with pytest.raises(CorralError, match=r"cannot write .*/out: File too large"):
            feed_all(sink, os.urandom(4 << 20), step=1 << 16)
        sink.close()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)

"""Downloads against a real local HTTP server: Range resume, retries, errors, file:// URLs."""

from __future__ import annotations

import hashlib
import lzma
import os
import socket
import time
from pathlib import Path

import pytest

from corral.errors import InvalidInput, NotFound
from corral.image.fetch.checksums import Checksum
from corral.image.fetch.download import DownloadFailed, Fetcher, Options
from image.fetch.support import Server

FAST = Options(timeout=5, retries=3, retry_delay=0.01)
DATA = os.urandom(3 << 20)


def fetch(url: str, dest: Path, options: Options = FAST, **kwargs: object):
    with Fetcher(options) as fetcher:
        return fetcher.download(url, dest, **kwargs)  # type: ignore[arg-type]


def test_plain_download_hashes_while_writing(server: Server, tmp_path: Path) -> None:
    url = server.add("disk.img", DATA)
    seen: list[tuple[int, int | None]] = []
    result = fetch(url, tmp_path / "out", progress=lambda d, t: seen.append((d, t)))
    assert (tmp_path / "out").read_bytes() == DATA
    assert result.digest == result.sent_digest == hashlib.sha256(DATA).hexdigest()
    assert seen[-1] == (len(DATA), len(DATA))
    assert len(seen) >= 3  # progress arrives while downloading, not only at the end


def test_dropped_connection_is_resumed_with_range(server: Server, tmp_path: Path) -> None:
    url = server.add("disk.img", DATA)
    half = len(DATA) // 2
    server.route("disk.img", drop_after=half, drops=1)
    result = fetch(
        url, tmp_path / "out", expected=Checksum("sha256", hashlib.sha256(DATA).hexdigest())
    )
    assert (tmp_path / "out").read_bytes() == DATA
    assert result.sent_digest == hashlib.sha256(DATA).hexdigest()
    first, second = server.requests("disk.img")
    assert first.range is None
    # The second request asks for the rest, guarded by the first answer's ETag.
    assert second.range is not None and second.range.startswith("bytes=")
    assert 0 < int(second.range[6:].rstrip("-")) <= half
    assert second.if_range and second.if_range.startswith('"')


def test_resume_through_several_drops(server: Server, tmp_path: Path) -> None:
    url = server.add("disk.img", DATA)
    server.route("disk.img", drop_after=len(DATA) // 2, drops=2)
    fetch(url, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == DATA
    assert len(server.requests("disk.img")) == 3


def test_server_without_range_support_starts_over(server: Server, tmp_path: Path) -> None:
    url = server.add("disk.img", DATA)
    server.route("disk.img", drop_after=len(DATA) // 2, drops=1, ranges=False)
    result = fetch(url, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == DATA
    assert result.sent_size == len(DATA)  # the restart threw the first half away
    assert len(server.requests("disk.img")) == 2


def test_changed_file_is_fetched_again_from_the_start(server: Server, tmp_path: Path) -> None:
    url = server.add("disk.img", DATA)
    server.route("disk.img", drop_after=len(DATA) // 2, drops=1)
    new = os.urandom(len(DATA))

    def replace_file(done: int, total: int | None) -> None:
        if done >= len(DATA) // 4 and (server.root / "disk.img").read_bytes() != new:
            time.sleep(0.01)  # a distinct mtime, hence a distinct ETag
            (server.root / "disk.img").write_bytes(new)

    fetch(url, tmp_path / "out", progress=replace_file)
    assert (tmp_path / "out").read_bytes() == new  # If-Range did not match: full answer


def test_keeps_dropping_without_range_gives_up(server: Server, tmp_path: Path) -> None:
    url = server.add("disk.img", DATA)
    server.route("disk.img", drop_after=len(DATA) // 2, ranges=False)
    with pytest.raises(DownloadFailed) as info:
        fetch(url, tmp_path / "out")
    message = info.value.message
    assert message.startswith(f"cannot download {url}: ")
    assert "after 1.5 MiB of 3.0 MiB (4 attempts)" in message
    assert len(server.requests("disk.img")) == 4  # one try plus FAST.retries


def test_server_errors_are_retried_then_reported(server: Server, tmp_path: Path) -> None:
    url = server.add("disk.img", DATA)
    server.route("disk.img", status=503)
    with pytest.raises(DownloadFailed, match=r"HTTP 503 Service Unavailable \(4 attempts\)"):
        fetch(url, tmp_path / "out")


def test_not_found(server: Server, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"cannot download .*/missing.img: HTTP 404 Not Found"):
        fetch(server.url("missing.img"), tmp_path / "out")
    assert len(server.log) == 1  # a 404 is not retried


def test_html_by_content_type(server: Server, tmp_path: Path) -> None:
    url = server.add("download.php", b"<html><body>choose a mirror</body></html>" * 100)
    server.route("download.php", content_type="text/html; charset=utf-8")
    with pytest.raises(InvalidInput, match=r"is an HTML page \(Content-Type text/html\)"):
        fetch(url, tmp_path / "out")


def test_html_by_content_when_the_server_lies(server: Server, tmp_path: Path) -> None:
    url = server.add("disk.img", b"<!DOCTYPE html>\n<html>" + b"x" * 10_000)
    with pytest.raises(InvalidInput, match=r"disk.img is an HTML page, not a disk image"):
        fetch(url, tmp_path / "out")


def test_connection_refused_fails_at_once(closed_url: str, tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(DownloadFailed, match=r"cannot download .*: connection refused$"):
        fetch(closed_url, tmp_path / "out", Options(retries=5, retry_delay=1))
    assert time.monotonic() - start < 1  # no retries against a port nobody listens on


def test_no_answer_times_out(server: Server, tmp_path: Path) -> None:
    url = server.add("slow.img", DATA)
    server.route("slow.img", hang=True)
    start = time.monotonic()
    with pytest.raises(DownloadFailed, match=r"no answer within 0.5s"):
        fetch(url, tmp_path / "out", Options(timeout=0.5, retries=3, retry_delay=0.01))
    assert time.monotonic() - start < 3


def test_listening_socket_that_never_accepts(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/x.img"
        with pytest.raises(DownloadFailed, match=r"no answer within 0\.3s"):
            fetch(url, tmp_path / "out", Options(timeout=0.3, retries=1, retry_delay=0.01))


def test_file_urls(tmp_path: Path) -> None:
    src = tmp_path / "with space.img.xz"
    src.write_bytes(lzma.compress(DATA[:100_000], preset=0))
    result = fetch(src.as_uri(), tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == DATA[:100_000]
    assert result.compression == "xz"
    with pytest.raises(NotFound, match="no such file"):
        fetch((tmp_path / "nope.img").as_uri(), tmp_path / "out2")


def test_text_files_and_listings(server: Server, tmp_path: Path) -> None:
    server.add("d/SHA256SUMS", b"abc  x.img\n")
    server.add("d/x.img", b"x")
    with Fetcher(FAST) as fetcher:
        assert fetcher.fetch_text(server.url("d/SHA256SUMS")) == "abc  x.img\n"
        assert 'href="x.img"' in fetcher.fetch_text(server.url("d/"))
        assert 'href="x.img"' in fetcher.fetch_text((server.root / "d").as_uri())
        with pytest.raises(InvalidInput, match="larger than"):
            fetcher.fetch_text(server.url("d/SHA256SUMS"), limit=4)

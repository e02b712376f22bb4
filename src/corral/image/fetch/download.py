"""Downloads over HTTP(S) and file://: streamed, resumed with Range after a dropped connection.

Every byte goes through a `Sink` once (hashed as sent, decompressed, hashed as stored, written),
so nothing is read twice. A dropped connection is resumed where it stopped (`Range` plus
`If-Range`, so a file that changed on the server is fetched again from the start); a server
that ignores Range makes corral start over. Attempts are bounded. Errors name the URL and the
problem in one line: 404 and the like are the user's (NotFound / InvalidInput, exit 2), a
server or network that fails is DownloadFailed (exit 1).
"""

from __future__ import annotations

import os
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import BinaryIO

import httpx

from corral.errors import CorralError, InvalidInput, NotFound
from corral.image.fetch.checksums import Checksum
from corral.image.fetch.stream import Sink, compression_of
from corral.units import human_size

Progress = Callable[[int, int | None], None]  # (bytes received, total if known)

READ_CHUNK = 1 << 20
TEXT_LIMIT = 16 << 20  # checksum files and directory listings are small
_PROGRESS_STEP = 1 << 20


class DownloadFailed(CorralError):
    """The network or the server failed: refused, no answer, dropped too often, 5xx."""

    http_status = 502


@dataclass(frozen=True)
class Options:
    timeout: float = 30.0  # seconds without progress before an attempt is given up
    retries: int = 5  # further attempts after a dropped connection or a 5xx answer
    retry_delay: float = 0.5  # doubled after each failed attempt, at most 8 s


@dataclass(frozen=True)
class Downloaded:
    """The result of one complete download."""

    sent_digest: str  # in the expected checksum's algorithm (sha256 when none was given)
    sent_size: int
    digest: str  # sha256 of the bytes written (after decompression)
    size: int
    compression: str | None


def is_url(text: str) -> bool:
    return urllib.parse.urlsplit(text).scheme in ("http", "https", "file")


def url_filename(url: str) -> str:
    """The last path segment of a URL, unquoted: what checksum files call the file."""
    path = urllib.parse.urlsplit(url).path
    return urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1])


def file_url_path(url: str) -> Path:
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise InvalidInput(f"{url}: file:// URLs must name a local file (file:///path)")
    return Path(urllib.request.url2pathname(parts.path))


class Fetcher:
    """One HTTP client (connection reuse, redirects) and the retry policy."""

    def __init__(self, options: Options | None = None) -> None:
        self.options = options or Options()
        self._client: httpx.Client | None = None

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            from corral.version import __version__

            self._client = httpx.Client(
                follow_redirects=True,
                timeout=httpx.Timeout(self.options.timeout),
                headers={"User-Agent": f"corral/{__version__}", "Accept-Encoding": "identity"},
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- small text files ------------------------------------------------------------------

    def fetch_text(self, url: str, *, limit: int = TEXT_LIMIT) -> str:
        """A small text file (a checksum file, a directory listing) from http(s) or file://."""
        if url.startswith("file:"):
            path = file_url_path(url)
            if path.is_dir():
                return "".join(f'<a href="{urllib.parse.quote(p.name)}">\n' for p in path.iterdir())
            data = _read_local(path, limit)
        else:
            data = self._get_small(url, limit)
        return data.decode("utf-8", errors="replace")

    def _get_small(self, url: str, limit: int) -> bytes:
        attempt = 0
        answered = False
        while True:
            try:
                with self._request(url, {}) as resp:
                    answered = True
                    _raise_for_status(url, resp)
                    body = bytearray()
                    for chunk in resp.iter_raw():
                        body += chunk
                        if len(body) > limit:
                            raise InvalidInput(f"{url}: larger than {human_size(limit)}")
                    return bytes(body)
            except _Retry as exc:
                attempt = self._pause(url, attempt, str(exc))
            except httpx.TransportError as exc:
                reason = _describe(exc, self.options.timeout)
                if not answered:
                    raise _unreachable(url, reason) from exc
                attempt = self._pause(url, attempt, reason)

    # --- images ----------------------------------------------------------------------------

    def download(
        self,
        url: str,
        dest: Path,
        *,
        expected: Checksum | None = None,
        compression: str | None = None,
        progress: Progress | None = None,
    ) -> Downloaded:
        """Stream url into dest (decompressing by the URL's suffix or the data's magic number)."""
        compression = compression or compression_of(url_filename(url))
        sink = Sink(dest, expected=expected, compression=compression, label=url)
        report = _Reporter(progress)
        try:
            if url.startswith("file:"):
                self._from_file(file_url_path(url), sink, report)
            else:
                self._from_http(url, sink, report)
            sink.finish()
            report.done(sink.sent_size)
        finally:
            sink.close()
        return Downloaded(
            sent_digest=sink.sent_hexdigest(expected),
            sent_size=sink.sent_size,
            digest=sink.digest,
            size=sink.size,
            compression=sink.kind,
        )

    def _from_file(self, path: Path, sink: Sink, report: _Reporter) -> None:
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise NotFound(f"no such file: {path}") from None
        except OSError as exc:
            raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
        with f:
            total = _file_size(f)
            while chunk := f.read(READ_CHUNK):
                sink.feed(chunk)
                report(sink.sent_size, total)

    def _from_http(self, url: str, sink: Sink, report: _Reporter) -> None:
        attempt = 0
        validator: str | None = None  # what If-Range sends: the first answer's ETag or date
        total: int | None = None
        answered = False  # did the server ever answer? If not, retrying is pointless
        while True:
            offset = sink.sent_size
            headers = {}
            if offset:
                headers["Range"] = f"bytes={offset}-"
                if validator:
                    headers["If-Range"] = validator
            try:
                with self._request(url, headers) as resp:
                    answered = True
                    if offset and resp.status_code == 206 and _range_start(resp) == offset:
                        pass  # resumed where it stopped
                    elif resp.status_code == 206:
                        sink.reset()
                        raise _Retry("the server answered with the wrong part of the file")
                    elif resp.status_code == 416 and total is not None and offset == total:
                        return  # everything had arrived: only the connection's end was lost
                    else:
                        _raise_for_status(url, resp)
                        if offset:
                            sink.reset()  # the server cannot resume: start over
                        _check_content_type(url, resp)
                        validator = _validator(resp)
                        total = _length(resp)
                    for chunk in resp.iter_raw():
                        sink.feed(chunk)
                        report(sink.sent_size, total)
                if total is not None and sink.sent_size < total:
                    raise _Retry(f"the connection closed after {_of(sink.sent_size, total)}")
                return
            except _Retry as exc:
                attempt = self._pause(url, attempt, str(exc))
            except httpx.TransportError as exc:
                reason = _describe(exc, self.options.timeout)
                if not answered:
                    raise _unreachable(url, reason) from exc
                if sink.sent_size:
                    reason = f"{reason} after {_of(sink.sent_size, total)}"
                attempt = self._pause(url, attempt, reason)

    def _pause(self, url: str, attempt: int, reason: str) -> int:
        """Wait before the next attempt, or give up once the attempts are spent."""
        attempt += 1
        if attempt > self.options.retries:
            raise DownloadFailed(
                f"cannot download {url}: {reason} ({attempt} attempts)",
                hint="the server or the network keeps failing; try again later",
            )
        time.sleep(min(self.options.retry_delay * (2 ** (attempt - 1)), 8.0))
        return attempt

    @contextmanager
    def _request(self, url: str, headers: dict[str, str]) -> Iterator[httpx.Response]:
        try:
            with self.client.stream("GET", url, headers=headers) as resp:
                yield resp
        except httpx.UnsupportedProtocol as exc:
            raise InvalidInput(f"{url}: unsupported URL (use http, https or file)") from exc
        except httpx.InvalidURL as exc:
            raise InvalidInput(f"invalid URL {url!r}: {exc}") from exc
        except httpx.TooManyRedirects as exc:
            raise DownloadFailed(f"cannot download {url}: too many redirects") from exc


class _Retry(Exception):
    """A failure worth another attempt (a 5xx answer, a short body)."""


class _Reporter:
    """Calls the progress callback about once per MiB (and once at the end)."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.last = -_PROGRESS_STEP
        self.total: int | None = None

    def __call__(self, done: int, total: int | None) -> None:
        self.total = total
        if self.progress and (done - self.last >= _PROGRESS_STEP or done < self.last):
            self.last = done
            self.progress(done, total)

    def done(self, done: int) -> None:
        if self.progress:
            self.progress(done, self.total if self.total is not None else done)


def _unreachable(url: str, reason: str) -> DownloadFailed:
    return DownloadFailed(
        f"cannot download {url}: {reason}",
        hint="check the URL, and that the server answers from this host",
    )


def _raise_for_status(url: str, resp: httpx.Response) -> None:
    code = resp.status_code
    if 200 <= code < 300:
        return
    what = f"HTTP {code} {resp.reason_phrase}".strip()
    if code in (404, 410):
        raise NotFound(f"cannot download {url}: {what}", hint="check the URL")
    if code in (408, 429) or code >= 500:
        raise _Retry(what)
    raise InvalidInput(f"cannot download {url}: {what}")


def _check_content_type(url: str, resp: httpx.Response) -> None:
    kind = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("text/html", "application/xhtml+xml"):
        raise InvalidInput(
            f"{url} is an HTML page (Content-Type {kind}), not a disk image",
            hint="give the URL of the image file itself",
        )


def _validator(resp: httpx.Response) -> str | None:
    """What If-Range may carry: a strong ETag, else a valid Last-Modified date."""
    etag = resp.headers.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    modified = resp.headers.get("last-modified")
    if modified:
        try:
            parsedate_to_datetime(modified)
        except (TypeError, ValueError):
            return None
        return modified
    return None


def _length(resp: httpx.Response) -> int | None:
    value = resp.headers.get("content-length")
    return int(value) if value and value.isdigit() else None


def _range_start(resp: httpx.Response) -> int | None:
    """The first byte of a 206 answer: 'bytes 100-199/200' -> 100."""
    value = resp.headers.get("content-range", "")
    unit, _, spec = value.partition(" ")
    if unit.strip().lower() != "bytes":
        return None
    start = spec.split("-", 1)[0].strip()
    return int(start) if start.isdigit() else None


def _describe(exc: httpx.TransportError, timeout: float) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {timeout:g}s"
    text = str(exc)
    if "refused" in text.lower():
        return "connection refused"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the server closed the connection early"
    return text.split("] ", 1)[-1] or type(exc).__name__


def _of(done: int, total: int | None) -> str:
    return f"{human_size(done)} of {human_size(total)}" if total else human_size(done)


def _file_size(f: BinaryIO) -> int | None:
    try:
        return os.fstat(f.fileno()).st_size
    except OSError:
        return None


def _read_local(path: Path, limit: int) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise NotFound(f"no such file: {path}") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise InvalidInput(f"{path}: larger than {human_size(limit)}")
    return data

"""corral.webguard's pure parts: tokens out of log lines, and how a request frames its body."""

from __future__ import annotations

import logging

import pytest

from corral.webguard import RedactTokens, body_framing, redact, uvicorn_log_config

SECRET = "corral_0123456789ab_c2VjcmV0LXRva2Vu"


@pytest.mark.parametrize(
    ("line", "want"),
    [
        (f"/vms/x/console/stream?token={SECRET}", "/vms/x/console/stream?token=REDACTED"),
        (f"/a?x=1&token={SECRET}&y=2", "/a?x=1&token=REDACTED&y=2"),
        (f"/a?TOKEN={SECRET}", "/a?TOKEN=REDACTED"),
        (f"/a?%74oken={SECRET}", "/a?%74oken=REDACTED"),  # what Starlette reads as `token`
        (f"/a?access_token={SECRET}#frag", "/a?access_token=REDACTED#frag"),
        (f'"GET /a?token={SECRET} HTTP/1.1" 401', '"GET /a?token=REDACTED HTTP/1.1" 401'),
        ("/a?tokens=1&mytoken=2", "/a?tokens=1&mytoken=2"),  # other names are left alone
        ("/health", "/health"),
    ],
)
def test_redact(line: str, want: str) -> None:
    assert redact(line) == want


def test_the_filter_rewrites_uvicorn_records() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", f"/a?token={SECRET}", "1.1", 401), None,
    )  # fmt: skip
    assert RedactTokens().filter(record)
    assert record.getMessage() == '127.0.0.1:5 - "GET /a?token=REDACTED HTTP/1.1" 401'
    config = uvicorn_log_config()
    for name in ("uvicorn.access", "uvicorn.error"):
        assert "redact_tokens" in config["loggers"][name]["filters"]
    assert all("redact_tokens" in h["filters"] for h in config["handlers"].values())


@pytest.mark.parametrize(
    ("headers", "want"),
    [
        ([(b"content-length", b"12")], (12, False)),
        ([(b"transfer-encoding", b"chunked")], (None, True)),
        ([(b"content-length", b"-1")], (None, False)),
        ([], (None, False)),
    ],
)
def test_body_framing(headers: list[tuple[bytes, bytes]], want: tuple[int | None, bool]) -> None:
    assert body_framing(headers) == want

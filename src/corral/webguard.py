"""The door of corral's two HTTP servers (`corral serve`, `corral node`): credentials are
checked before a request's body is read, bodies are capped, and tokens stay out of the logs.
Its own refusals (401, 413) are in corral.wire's error shape, as the apps' other errors.

FastAPI reads a route's whole body before any dependency runs, so without this anyone who can
connect could make a server hold hundreds of MiB before its 401. `Guard` is a pure ASGI
middleware, cheap per request: one pass over the headers and one call of the app's
`authenticate`, whose answer (who the caller is, e.g. a token's role) it leaves in the scope
under PRINCIPAL for the routes, so a request is authenticated once.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any
from urllib.parse import unquote_plus

from starlette.exceptions import HTTPException

from corral.errors import CorralError, TooLarge, Unauthorized
from corral.wire import render, status_of

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]
# Who the caller is (e.g. a token's role); raises Unauthorized when credentials are missing or
# wrong. It runs before anything of the request's body has been read.
Authenticate = Callable[[Scope], Awaitable[str]]

PRINCIPAL = "corral.principal"  # scope key: what `authenticate` returned, None on open routes
DEFAULT_MAX_BODY = 1 << 20


def too_large(limit: int) -> TooLarge:
    return TooLarge(
        f"the request body is larger than this server's limit of {limit} bytes",
        hint="max_body_bytes in the server's configuration",
    )


class BodyTooLarge(HTTPException):
    """Raised from the guarded `receive` once a body passes the cap. An HTTPException because
    FastAPI passes those on to the app's error handlers (anything else raised while it reads a
    body it answers as a malformed body, 400)."""

    def __init__(self, limit: int) -> None:
        self.error = too_large(limit)
        super().__init__(413, self.error.message)


class Guard:
    """Authenticate, then refuse a body over `max_body_bytes`: a `Content-Length` over it at
    once, a chunked body as soon as it passes it. Paths in `public` are served without
    credentials (their caller's principal is then None, or who valid credentials name), and
    so are paths under `public_prefixes`."""

    def __init__(
        self,
        app: App,
        *,
        authenticate: Authenticate,
        max_body_bytes: int = DEFAULT_MAX_BODY,
        public: Collection[str] = (),
        public_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.authenticate = authenticate
        self.max_body_bytes = max_body_bytes
        self.public = frozenset(public)
        # Paths under these authenticate themselves (e.g. the dashboard, by its cookie).
        self.public_prefixes = public_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # websockets authenticate in their routes, before accepting
            await self.app(scope, receive, send)
            return
        length, chunked = body_framing(scope["headers"])
        has_body = chunked or bool(length)
        try:
            scope[PRINCIPAL] = await self.authenticate(scope)
        except Exception as exc:
            path = scope["path"]
            if path not in self.public and not path.startswith(self.public_prefixes):
                if not isinstance(exc, Unauthorized):
                    raise  # e.g. the database is down: a 500, as from a route
                # Unread, the body is not drained: the connection is closed after the answer.
                await self._refuse(send, exc, close=has_body)
                return
            scope[PRINCIPAL] = None  # served anyway (e.g. /health while the database is down)
        if length is not None and length > self.max_body_bytes:
            await self._refuse(send, too_large(self.max_body_bytes), close=True)
            return
        if not has_body:
            await self.app(scope, receive, send)
            return
        await self._capped(scope, receive, send)

    async def _capped(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit, seen, over, started = self.max_body_bytes, 0, False, False

        async def capped_receive() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    over = True
                    raise BodyTooLarge(limit)
            return message

        async def closing_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if over:  # the rest of the body is not read: end the connection
                    message = {**message, "headers": [*message.get("headers", ()), _CLOSE]}
            await send(message)

        try:
            await self.app(scope, capped_receive, closing_send)
        except BodyTooLarge as exc:  # an app that did not answer it itself
            if started:
                raise
            await self._refuse(send, exc.error, close=True)

    async def _refuse(self, send: Send, exc: CorralError, *, close: bool) -> None:
        body = render(exc)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if isinstance(exc, Unauthorized):
            headers.append((b"www-authenticate", b"Bearer"))
        if close:
            headers.append(_CLOSE)
        await send({"type": "http.response.start", "status": status_of(exc), "headers": headers})
        await send({"type": "http.response.body", "body": body})


_CLOSE = (b"connection", b"close")


def body_framing(headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """(Content-Length, chunked) of a request; a malformed length counts as none (the HTTP
    server refuses such requests before they reach the app)."""
    length, chunked = None, False
    for name, value in headers:
        if name == b"content-length":
            length = int(value) if value.isdigit() else None
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    return length, chunked


def header(scope: Scope, name: bytes) -> str | None:
    """One request header's value (`name` in lower case), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


# --- Allow, as the OpenAPI document says -----------------------------------------------------


def allowed_methods(app: Any, path: str) -> str:
    """The methods the OpenAPI document lists for `path`, for `Allow` (Starlette's own 405
    names only those of the first route that matched the path)."""
    table = getattr(app.state, "methods_by_path", None)
    if table is None:
        table = app.state.methods_by_path = _methods_by_path(app.openapi())
    methods = {"OPTIONS"}
    for pattern, listed in table:
        if pattern.fullmatch(path):
            methods |= listed
    return ", ".join(sorted(methods))


def _methods_by_path(document: dict[str, Any]) -> list[tuple[re.Pattern[str], set[str]]]:
    table = []
    for template, operations in document.get("paths", {}).items():
        parts = re.split(r"\{[^}/]+\}", template)
        pattern = re.compile("[^/]+".join(re.escape(part) for part in parts))
        table.append((pattern, {m.upper() for m in operations if m.upper() in _METHODS}))
    return table


_METHODS = {"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"}


# --- tokens out of the logs -------------------------------------------------------------------

_QUERY_PAIR = re.compile(r"([?&;])([^=&;?#\s\"]*)=([^&;#\s\"]*)")
SECRET_PARAMETERS = frozenset({"token", "access_token"})
REDACTED = "REDACTED"


def redact(text: str) -> str:
    """`text` with the value of every `token=` query parameter (however it is spelt or
    percent-encoded) replaced by REDACTED."""
    if "=" not in text:
        return text

    def hide(match: re.Match[str]) -> str:
        if unquote_plus(match[2]).lower() in SECRET_PARAMETERS:
            return f"{match[1]}{match[2]}={REDACTED}"
        return match[0]

    return _QUERY_PAIR.sub(hide, text)


class RedactTokens(logging.Filter):
    """Rewrites a record's message and string arguments with `redact`: uvicorn logs every
    request's path with its query string, and browsers' websockets carry `?token=`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redacted(v) for k, v in record.args.items()}
        return True


def _redacted(value: object) -> object:
    return redact(value) if isinstance(value, str) else value


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's logging configuration with RedactTokens on its loggers and handlers."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {**config.get("filters", {}), "redact_tokens": {"()": RedactTokens}}
    for name in ("uvicorn", "uvicorn.access", "uvicorn.error"):
        logger = config["loggers"].setdefault(name, {})
        logger["filters"] = [*logger.get("filters", []), "redact_tokens"]
    for handler in config["handlers"].values():
        handler["filters"] = [*handler.get("filters", []), "redact_tokens"]
    return config

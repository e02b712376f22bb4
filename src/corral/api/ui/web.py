"""What every dashboard route shares: the templates, the security headers, who is signed in,
the CSRF check and the form parser.

Everything on /ui is server-rendered with Jinja2 (autoescape on); the browser runs only the
vendored htmx and xterm.js and corral's own small files, all from /ui/static, under a strict
Content-Security-Policy: no inline script, no eval (htmx's allowEval is off), no framing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from corral.api.deps import token_role
from corral.api.ui.sessions import COOKIE, Session, Sessions
from corral.control.plane import ControlPlane
from corral.control.tokens import ADMIN, USER
from corral.errors import CorralError, Forbidden, InvalidInput
from corral.units import human_size
from corral.webguard import Receive, Scope, Send

HERE = Path(__file__).parent
# Who may sign in: exactly these roles (a role added later, e.g. one that may only read
# metrics, does not open the dashboard unless it is named here).
UI_ROLES = (ADMIN, USER)
TEMPLATES = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
# Styles: 'unsafe-inline' only because xterm.js writes its theme into a <style> element.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
TEMPLATES.filters["size"] = human_size
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
STATIC_HEADERS = [h for h in HEADERS if h[0] != b"cache-control"]
MAX_FORM = 256 * 1024  # bytes of a form body (user-data is the big field)


class SecurityHeaders:
    """Pure ASGI: the dashboard's headers on every answer (pages, fragments, assets)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = "/static/" in scope["path"]

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                extra = STATIC_HEADERS if static else HEADERS
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


class SignInNeeded(Exception):
    """No valid session: pages redirect to the sign-in form, fragments tell htmx to."""


def plane_of(request: Request) -> ControlPlane:
    plane: ControlPlane = request.app.state.plane  # set by create_ui
    return plane


def sessions_of(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions  # set by create_ui
    return sessions


async def valid_session(plane: ControlPlane, sessions: Sessions, cookie: str | None) -> Session:
    """The session of this cookie whose token is still valid (revoking a token ends it)."""
    session = sessions.get(cookie)
    if session is None:
        raise SignInNeeded
    role = await token_role(plane, session.token)
    if role not in UI_ROLES:
        sessions.close(session.id)
        raise SignInNeeded
    session.role = role
    return session


async def signed_in(request: Request) -> Session:
    """The route dependency: the caller's session, else SignInNeeded."""
    return await valid_session(plane_of(request), sessions_of(request), request.cookies.get(COOKIE))


async def admin(request: Request) -> Session:
    session = await signed_in(request)
    if session.role != ADMIN:
        raise Forbidden("this page needs an admin token")
    return session


def same_origin(request_host: str | None, origin: str | None) -> bool:
    """Whether an Origin header names the host the request was sent to (Origin's absence is
    judged by the caller: browsers send it on every websocket and cross-site POST)."""
    if origin is None or request_host is None:
        return False
    return urlsplit(origin).netloc.lower() == request_host.lower()


async def form(request: Request, session: Session | None) -> dict[str, list[str]]:
    """A POST's urlencoded fields, after the CSRF check: the session's token in the
    `csrf` field or the X-CSRF-Token header (htmx sends it), and no foreign Origin."""
    origin = request.headers.get("origin")
    if origin is not None and not same_origin(request.headers.get("host"), origin):
        raise Forbidden("cross-site request refused")
    body = await request.body()
    if len(body) > MAX_FORM:
        raise InvalidInput(f"the form is larger than {MAX_FORM} bytes")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and content_type != "application/x-www-form-urlencoded":
        raise InvalidInput("forms are sent as application/x-www-form-urlencoded")
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    if session is not None:
        sent = request.headers.get("x-csrf-token") or first(fields, "csrf")
        if not session.csrf_ok(sent):
            raise Forbidden("the form's CSRF token is missing or wrong: reload the page")
    return fields


def first(fields: dict[str, list[str]], name: str, default: str = "") -> str:
    values = fields.get(name)
    return values[0] if values else default


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def render(
    request: Request,
    template: str,
    session: Session | None = None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    html = TEMPLATES.get_template(template).render(
        session=session,
        csrf=session.csrf if session else "",
        is_admin=session is not None and session.role == ADMIN,
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code=status_code)


def error_text(exc: CorralError) -> str:
    return f"{exc.message} ({exc.hint})" if getattr(exc, "hint", None) else exc.message

"""The one JSON shape of an error on corral's HTTP wire: answered by both servers (`corral
serve`, `corral node`, see corral.weberrors) and read by both clients (the node client and
`corral --remote`):

    {"error": KIND, "detail": MESSAGE, "hint": HINT, "details": [LINE, ...]}

`error` is the corral error class's `kind` (`not_found`, `conflict`, ...), so a client raises
the class the server raised. `detail` is the one-line message, or, for a request that failed
validation, FastAPI's list of problems, each naming its field in `loc`. `hint` and `details`
(extra context lines, e.g. the last console lines) are there when there are some. The status
is the class's `http_status`; a failure with none of its own (500) happened below the server
(a node, QEMU, a host program) and is a 502, so a 500 only ever means a bug.

Standard library only: the CLI imports this on every remote command.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from corral.errors import (
    Conflict,
    CorralError,
    DeadlineExceeded,
    Forbidden,
    GuestError,
    InvalidInput,
    MissingDependency,
    NodeUnreachable,
    NotFound,
    QemuError,
    TooLarge,
    Unauthorized,
)

# The classes a kind decodes to; any other class travels as the nearest of these it derives from.
KINDS: dict[str, type[CorralError]] = {
    cls.kind: cls
    for cls in (
        CorralError, NotFound, Conflict, InvalidInput, MissingDependency, QemuError, GuestError,
        DeadlineExceeded, NodeUnreachable, Unauthorized, Forbidden, TooLarge,
    )
}  # fmt: skip
# The class of an answer that names no kind (Starlette's own, an older server, a proxy's page).
_BY_STATUS: dict[int, type[CorralError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: InvalidInput,
    409: Conflict,
    413: TooLarge,
    422: InvalidInput,
}
_FIELDS = frozenset({"error", "detail", "hint", "details"})
_PHRASES = {s.value: s.phrase for s in HTTPStatus}


def status_of(exc: CorralError) -> int:
    return 502 if exc.http_status == 500 else exc.http_status


def error_body(exc: CorralError) -> dict[str, Any]:
    body: dict[str, Any] = {"error": exc.kind, "detail": exc.message}
    if exc.hint is not None:
        body["hint"] = exc.hint
    if exc.details:
        body["details"] = list(exc.details)
    return body


def invalid_request(problems: list[Any]) -> dict[str, Any]:
    """The body of a 422 for a request that failed validation (FastAPI's problems, JSON-ready)."""
    return {"error": InvalidInput.kind, "detail": problems}


def render(exc: CorralError) -> bytes:
    """`error_body` as compact JSON bytes."""
    return json.dumps(error_body(exc), separators=(",", ":")).encode()


def status_class(status: int) -> type[CorralError]:
    """The class an error status stands for when the answer names no kind."""
    return _BY_STATUS.get(status, CorralError)


def reason(status: int) -> str:
    """The status's reason phrase, e.g. `Not Found`."""
    return _PHRASES.get(status, "unknown status")


def error_from(status: int, body: Any, *, require_kind: bool = False) -> CorralError | None:
    """The corral error an error answer stands for: its class (by kind, else by status),
    message, hint and details. None when `body` (parsed JSON) is not in this shape, e.g. a
    proxy's page: a client then names the status only, never repeating what it does not know.
    `require_kind`: only a body that names its kind is ours (a node always does)."""
    if not isinstance(body, dict) or not body.keys() <= _FIELDS:
        return None
    kind, detail, hint, details = (body.get(k) for k in ("error", "detail", "hint", "details"))
    if not isinstance(kind, str | None) or (require_kind and kind is None):
        return None
    if isinstance(detail, list):
        message = "; ".join(_problem(p) for p in detail)
    elif isinstance(detail, str):
        message = detail
    else:
        return None
    cls = KINDS.get(kind or "") or status_class(status)
    return cls(
        message,
        hint=hint if isinstance(hint, str) else None,
        details=[str(d) for d in details] if isinstance(details, list) else None,
    )


def _problem(problem: Any) -> str:
    """One validation problem as `body.field: what is wrong`."""
    if not isinstance(problem, dict):
        return str(problem)
    where = ".".join(str(part) for part in problem.get("loc") or ())
    return f"{where}: {problem.get('msg', 'invalid')}"

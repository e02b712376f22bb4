"""corral's error tree mapped to HTTP, once: status from the error class, JSON body
`{"detail": message, "hint": hint}`; a failure with no status of its own came from below (a
node, QEMU) and is a 502. Validation errors keep FastAPI's 422 shape (`detail` lists the
fields), and a body that is not JSON at all is one of them. Every answer is one the OpenAPI
document describes: 401, 413 and 422 on every route, 403 on the admin-only ones, and a 405
names in `Allow` every method of the path (OPTIONS answers 204 with it). Anything else is a
bug: logged, and answered with a bare 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException

from corral.errors import CorralError, InvalidInput
from corral.webguard import BodyTooLarge, allowed_methods

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    detail: str
    hint: str | None = None


class Problem(BaseModel):
    """One field a request got wrong (FastAPI's validation error)."""

    model_config = ConfigDict(extra="allow")  # `input`, `ctx`
    loc: list[str | int]
    msg: str
    type: str


class InvalidRequest(BaseModel):
    """A 422: the fields that failed validation, or the business rule that refused the request."""

    detail: str | list[Problem]
    hint: str | None = None


def _error(description: str, model: type[BaseModel] = ErrorBody) -> dict[str, Any]:
    return {"model": model, "description": description}


# Every route that needs a token (or aleph-vm's signature) may answer these.
ERRORS: dict[int | str, dict[str, Any]] = {
    401: _error("missing, unknown or revoked token"),
    404: _error("unknown id"),
    409: _error("conflicts with current state (e.g. a taken name)"),
    413: _error("the request body is larger than the server's `max_body_bytes`"),
    422: _error("invalid input: the fields, or the business rule that refused it", InvalidRequest),
}
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    403: _error("this route needs an admin token (`corral token create NAME --role admin`)"),
}
OPEN_ERRORS: dict[int | str, dict[str, Any]] = {413: ERRORS[413]}


def status_of(exc: CorralError) -> int:
    """The error's own status; a failure without one happened below us (a node, QEMU): 502."""
    return 502 if exc.http_status == 500 else exc.http_status


def render(exc: CorralError) -> bytes:
    """The JSON body of an error answer (also for corral.webguard's own refusals)."""
    body = ErrorBody(detail=exc.message, hint=exc.hint)
    return body.model_dump_json(exclude_none=True).encode()


def error_response(exc: CorralError) -> Response:
    status = status_of(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return Response(render(exc), status, headers, media_type="application/json")


def install(app: FastAPI) -> None:
    @app.exception_handler(CorralError)
    async def corral_error(request: Request, exc: CorralError) -> Response:
        if status_of(exc) >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc.message)
        return error_response(exc)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if isinstance(exc, BodyTooLarge):
            return error_response(exc.error)
        if exc.status_code == 405:
            allow = {"Allow": allowed_methods(app, request.url.path)}
            if request.method == "OPTIONS":
                return Response(status_code=204, headers=allow)
            return JSONResponse({"detail": "method not allowed"}, 405, headers=allow)
        if exc.status_code == 400:  # FastAPI could not read the body (e.g. not UTF-8)
            return error_response(InvalidInput("the request body is not valid JSON"))
        return JSONResponse({"detail": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed unexpectedly", request.method, request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)

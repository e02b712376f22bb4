"""corral's error tree mapped to HTTP, once: status from the error class, JSON body
`{"detail": message, "hint": hint}`; a failure with no status of its own came from below (a
node, QEMU) and is a 502. Validation errors keep FastAPI's 422 shape (they name the
field). Anything else is a bug: logged, and answered with a bare 500.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from corral.errors import CorralError

log = logging.getLogger(__name__)


class Unauthorized(CorralError):
    """No bearer token, or one that is unknown or revoked."""

    http_status = 401


class ErrorBody(BaseModel):
    detail: str
    hint: str | None = None


ERRORS = {
    401: {"model": ErrorBody, "description": "missing, unknown or revoked token"},
    404: {"model": ErrorBody, "description": "unknown id"},
    409: {"model": ErrorBody, "description": "conflicts with current state (e.g. a taken name)"},
    422: {"description": "invalid input: the field, or the business rule that refused it"},
}


def status_of(exc: CorralError) -> int:
    """The error's own status; a failure without one happened below us (a node, QEMU): 502."""
    return 502 if exc.http_status == 500 else exc.http_status


def error_response(exc: CorralError) -> JSONResponse:
    status = status_of(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    body = ErrorBody(detail=exc.message, hint=exc.hint).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(CorralError)
    async def corral_error(request: Request, exc: CorralError) -> JSONResponse:
        if status_of(exc) >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc.message)
        return error_response(exc)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed unexpectedly", request.method, request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)

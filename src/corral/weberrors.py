"""How corral's two HTTP servers (`corral serve`, `corral node`) answer errors: one set of
handlers, installed in both apps, that answers everything in corral.wire's shape.

A corral error gets its class's status and kind; a request that fails validation a 422 naming
its fields, and a body that is not JSON at all (or not UTF-8) is one of them; Starlette's own
answers (404 for an unknown path) keep their status; a 405 names in `Allow` every method of
the path, and OPTIONS answers 204 with it. Anything else is a bug: logged, and answered 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request, WebSocket
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from corral.errors import CorralError, InvalidInput
from corral.webguard import BodyTooLarge, allowed_methods
from corral.wire import invalid_request, render, status_class, status_of

log = logging.getLogger(__name__)


def install(app: FastAPI) -> None:
    app.exception_handler(CorralError)(_corral_error)
    app.exception_handler(RequestValidationError)(_invalid_request)
    app.exception_handler(HTTPException)(_http_error)
    app.exception_handler(Exception)(_unexpected)


def error_response(
    exc: CorralError, status: int | None = None, headers: Mapping[str, str] | None = None
) -> Response:
    status = status or status_of(exc)
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return Response(render(exc), status, headers, media_type="application/json")


async def deny_websocket(websocket: WebSocket, exc: CorralError) -> None:
    """Refuse a websocket upgrade with an HTTP answer in the wire's shape, which a client can
    read (its status and error), as an HTTP route would have answered."""
    try:
        await websocket.send_denial_response(error_response(exc))
    except RuntimeError:  # the server cannot send HTTP answers on websockets: a bare 403
        await websocket.close(1008)


async def _corral_error(request: Request, exc: CorralError) -> Response:
    if status_of(exc) >= 500:
        log.warning("%s %s: %s", request.method, request.url.path, exc.message)
    return error_response(exc)


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse(invalid_request(jsonable_encoder(exc.errors())), status_code=422)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    if isinstance(exc, BodyTooLarge):
        return error_response(exc.error)
    if exc.status_code == 400:  # FastAPI could not read the body (e.g. not UTF-8)
        return error_response(InvalidInput("the request body is not valid JSON"))
    if exc.status_code == 405:
        allow = {"Allow": allowed_methods(request.app, request.url.path)}
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=allow)
        return error_response(InvalidInput("method not allowed"), 405, allow)
    error = status_class(exc.status_code)(str(exc.detail))
    return error_response(error, exc.status_code, exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed unexpectedly", request.method, request.url.path)
    return error_response(CorralError("internal error"), 500)

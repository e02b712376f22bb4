"""What routes depend on: the control plane of this app, and the bearer-token check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, WebSocket
from fastapi.security import HTTPBearer

from corral.api.errors import Unauthorized
from corral.control.plane import ControlPlane


async def get_plane(request: Request) -> ControlPlane:
    # async: FastAPI would run a plain function in a worker thread, a hop per request.
    return request.app.state.plane  # type: ignore[no-any-return]


Plane = Annotated[ControlPlane, Depends(get_plane)]


async def token_valid(plane: ControlPlane, token: str | None) -> bool:
    if not token:
        return False
    if plane.tokens.cached(token):
        return True
    return await plane.call(plane.tokens.lookup, token)


class RequireToken(HTTPBearer):
    """The bearer-token check, as the one dependency of a route: it is also what OpenAPI
    shows as the routes' security scheme. (Sub-dependencies for the plane and the header
    cost FastAPI more per request than the check itself.)"""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("this route needs a bearer token", hint="corral token create NAME")
        if not await token_valid(request.app.state.plane, token.strip()):
            raise Unauthorized("unknown or revoked token")


Authenticated = Depends(
    RequireToken(
        scheme_name="HTTPBearer",
        auto_error=False,
        description="an API token (`corral token create NAME`)",
    )
)


def websocket_token(websocket: WebSocket) -> str | None:
    """Browsers cannot set headers on websockets: `?token=` is accepted there too."""
    header = websocket.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return websocket.query_params.get("token")

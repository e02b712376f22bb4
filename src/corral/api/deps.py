"""What routes depend on: the control plane of this app, and the bearer-token check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, WebSocket
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from corral.api.errors import Unauthorized
from corral.control.plane import ControlPlane

bearer = HTTPBearer(auto_error=False, description="an API token (`corral token create NAME`)")


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


async def require_token(
    plane: Plane,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    if credentials is None:
        raise Unauthorized("this route needs a bearer token", hint="corral token create NAME")
    if not await token_valid(plane, credentials.credentials):
        raise Unauthorized("unknown or revoked token")


Authenticated = Depends(require_token)


def websocket_token(websocket: WebSocket) -> str | None:
    """Browsers cannot set headers on websockets: `?token=` is accepted there too."""
    header = websocket.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return websocket.query_params.get("token")

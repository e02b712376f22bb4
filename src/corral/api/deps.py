"""What routes depend on: the control plane of this app, and who the caller is.

The caller is worked out once per request, before its body is read, by `authenticate` (run by
corral.webguard.Guard, see app.py): a bearer token's role (`admin`, `user` or `metrics`), or
SUPERVISOR for aleph-vm's supervisor signing with X-Auth-Signature. The route dependencies
below only compare that answer with what the route needs.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request, WebSocket
from fastapi.security import HTTPBearer

from corral.api.errors import ADMIN_ERRORS
from corral.control.plane import ControlPlane
from corral.control.tokens import ADMIN, API_ROLES, METRICS, ROLES
from corral.errors import Forbidden, Unauthorized
from corral.webguard import PRINCIPAL, Scope, header

SUPERVISOR = "supervisor"  # aleph-vm's supervisor, by the allocation token (X-Auth-Signature)
# Browsers cannot set headers on websockets: they offer these two subprotocols instead,
# `new WebSocket(url, ["bearer", TOKEN])`, and the server picks `bearer`.
BEARER_SUBPROTOCOL = "bearer"


async def get_plane(request: Request) -> ControlPlane:
    # async: FastAPI would run a plain function in a worker thread, a hop per request.
    return request.app.state.plane


Plane = Annotated[ControlPlane, Depends(get_plane)]


async def token_role(plane: ControlPlane, token: str | None) -> str | None:
    """The role of a valid token, else None (from the cache when it was seen just now)."""
    if not token:
        return None
    return plane.tokens.cached(token) or await plane.call(plane.tokens.lookup, token)


async def api_role(plane: ControlPlane, token: str | None) -> str | None:
    """The role of a valid token that may use the API (not a `metrics` token), else None."""
    role = await token_role(plane, token)
    return role if role in API_ROLES else None


def bearer(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


async def authenticate(plane: ControlPlane, scope: Scope) -> str:
    """Who sent this request: a token's role or SUPERVISOR; Unauthorized if nobody valid."""
    token = bearer(header(scope, b"authorization"))
    signature = header(scope, b"x-auth-signature")
    if token is not None:
        role = await token_role(plane, token)
        if role is not None:
            return role
        if signature is None:
            raise Unauthorized("unknown or revoked token", hint="corral token ls")
    if signature is not None:
        if plane.allocations.authorised(signature):
            return SUPERVISOR
        raise Unauthorized("X-Auth-Signature does not match the allocation token")
    raise Unauthorized("this route needs a bearer token", hint="corral token create NAME")


def principal(request: Request) -> str | None:
    return request.scope.get(PRINCIPAL)


class RequireRole(HTTPBearer):
    """A route's one dependency for who may call it, compared with what the guard found (it
    is also what OpenAPI shows as the route's security scheme)."""

    def __init__(self, *roles: str) -> None:
        self.roles = roles
        super().__init__(
            scheme_name="HTTPBearer",
            auto_error=False,
            description="an API token (`corral token create NAME [--role admin]`)",
        )

    async def __call__(self, request: Request) -> None:  # type: ignore[override]  # checks, returns no credentials
        role = request.scope.get(PRINCIPAL)
        if role in self.roles:
            return
        if role in ROLES:
            needed = " or ".join(r for r in self.roles if r in ROLES)
            raise Forbidden(
                f"this route needs an {needed} token, and this one is a {role} token",
                hint=f"corral token create NAME --role {self.roles[0]}",
            )
        raise Unauthorized("this route needs a bearer token", hint="corral token create NAME")


Authenticated = Depends(RequireRole(*API_ROLES))
AdminOnly = Depends(RequireRole(ADMIN))
MetricsReaders = Depends(RequireRole(ADMIN, METRICS))
ADMIN_ONLY: dict[str, Any] = {"dependencies": [AdminOnly], "responses": ADMIN_ERRORS}  # **kwargs


def websocket_credentials(websocket: WebSocket) -> tuple[str | None, str | None]:
    """(token, subprotocol to answer with): from `Authorization: Bearer`, from the
    subprotocols `bearer, TOKEN`, or (logged redacted) from `?token=`."""
    token = bearer(websocket.headers.get("authorization"))
    if token:
        return token, None
    offered = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",")]
    if BEARER_SUBPROTOCOL in offered[:-1]:
        return offered[offered.index(BEARER_SUBPROTOCOL) + 1] or None, BEARER_SUBPROTOCOL
    return websocket.query_params.get("token"), None

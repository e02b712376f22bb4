"""GET /health: is this control plane serving, and can it reach its database (no token).

Anyone may ask, so an anonymous caller learns only `ok` or `degraded`; a caller with a valid
token also gets the version, the database kind and, when it fails, the database's error.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from corral.api.deps import Plane, principal
from corral.api.errors import OPEN_ERRORS
from corral.control.tokens import METRICS
from corral.version import __version__

router = APIRouter(tags=["health"], responses=OPEN_ERRORS)


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str | None = None  # this and the others: only for a caller with a valid token
    database: str | None = None
    database_status: str | None = None


@router.get(
    "/health",
    response_class=JSONResponse,
    responses={
        200: {"model": Health, "description": "serving, and the database answers"},
        503: {"model": Health, "description": "`degraded`: the database does not answer"},
    },
)
async def health(request: Request, plane: Plane) -> JSONResponse:
    try:
        await plane.read(lambda s: s.execute(text("SELECT 1")).scalar())
        database = "ok"
    except Exception as exc:
        database = f"error: {str(exc)[:200]}"
    body = {"status": "ok" if database == "ok" else "degraded"}
    if principal(request) not in (None, METRICS):  # a metrics token reads /metrics only
        body |= {
            "version": __version__,
            "database": plane.db.dialect,
            "database_status": database,
        }
    return JSONResponse(body, status_code=200 if database == "ok" else 503)

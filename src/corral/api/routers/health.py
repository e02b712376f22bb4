"""GET /health: is this control plane serving, and can it reach its database (no token)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from corral import __version__
from corral.api.deps import Plane

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(plane: Plane) -> JSONResponse:
    try:
        await plane.read(lambda s: s.execute(text("SELECT 1")).scalar())
        database = "ok"
    except Exception as exc:
        database = f"error: {str(exc)[:200]}"
    body = {
        "status": "ok" if database == "ok" else "degraded",
        "version": __version__,
        "database": plane.db.dialect,
        "database_status": database,
    }
    return JSONResponse(body, status_code=200 if database == "ok" else 503)

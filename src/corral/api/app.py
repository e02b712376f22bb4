"""The control plane's FastAPI app: `create_app(settings)`.

Nothing is built at import time: each call makes its own ControlPlane (database engine, event
bus, node clients, job runner), started and stopped by the app's lifespan. OpenAPI 3.1 is served
at /openapi.json and Swagger UI at /swagger-ui; every other route except /health needs a bearer
token.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from corral import __version__
from corral.api import errors
from corral.api.routers import control, health, hosts, jobs, storage, vms
from corral.control.nodes import NodeFactory
from corral.control.plane import ControlPlane
from corral.control.settings import Settings

DESCRIPTION = """\
corral's control plane: hosts running node agents, storage pools and objects, boot sources,
and VMs scheduled onto hosts by free capacity. Long operations answer 202 with a job
(`GET /jobs/{id}`); `GET /events` streams every state change. aleph-vm's supervisor endpoints
live under `/control`.

Authenticate with `Authorization: Bearer TOKEN` (`corral token create NAME`).
"""


def create_app(settings: Settings, *, node_factory: NodeFactory | None = None) -> FastAPI:
    plane = ControlPlane(settings, node_factory=node_factory)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await plane.start()
        # What start-up built (modules, the schema, SQLAlchemy's and pydantic's caches) lives
        # as long as the server: keep it out of the collector's full passes, which otherwise
        # stall a request now and then for tens of milliseconds.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await plane.stop()

    app = FastAPI(
        title="corral",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url="/swagger-ui",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.plane = plane
    errors.install(app)
    for router in (
        health.router,
        hosts.router,
        storage.router,
        vms.router,
        jobs.router,
        control.router,
    ):
        app.include_router(router)
    return app

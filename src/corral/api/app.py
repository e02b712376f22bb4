"""The control plane's FastAPI app: `create_app(settings)`.

Nothing is built at import time: each call makes its own ControlPlane (database engine, event
bus, node clients, job runner), started and stopped by the app's lifespan. OpenAPI 3.1 is served
at /openapi.json and Swagger UI at /swagger-ui; every other route except /health needs a bearer
token (or, under /control, aleph-vm's X-Auth-Signature), checked by corral.webguard.Guard
before the request's body is read.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from corral import weberrors
from corral.api import deps
from corral.api.metrics import MetricsListener, RequestMetrics, request_histogram
from corral.api.metrics import router as metrics_router
from corral.api.routers import (
    control,
    health,
    hosts,
    images,
    jobs,
    networks,
    storage,
    tunnel,
    vms,
)
from corral.api.ui import create_ui
from corral.control.nodes import NodeFactory
from corral.control.plane import ControlPlane
from corral.control.settings import Settings
from corral.version import __version__
from corral.webguard import Guard, Scope

DESCRIPTION = """\
corral's control plane: hosts running node agents, storage pools and objects, boot sources,
and VMs scheduled onto hosts by free capacity. Long operations answer 202 with a job
(`GET /jobs/{id}`); `GET /events` streams every state change, `GET /events/recent` lists
those kept (7 days); `GET /images` asks the up hosts what images they have. aleph-vm's
supervisor endpoints live under `/control`.

Authenticate with `Authorization: Bearer TOKEN` (`corral token create NAME [--role admin]`).
A `user` token manages VMs and reads hosts, their images, storage, boot sources, jobs and
events; registering, changing, initialising and deleting hosts, and creating and deleting
storage pools, storage objects and boot sources need an `admin` token (otherwise 403).
Websockets take the token in the `Authorization` header, or, from browsers, as the subprotocols
`bearer, TOKEN` (`new WebSocket(url, ["bearer", TOKEN])`; the server answers with `bearer`), or
as `?token=` (kept out of the server's logs). Request bodies larger than the server's
`max_body_bytes` (1 MiB by default) are refused with 413 before they are read.
"""

# Served to anyone; a valid token still counts there (GET /health then tells more).
PUBLIC_PATHS = ("/health", "/openapi.json", "/swagger-ui", "/ui")
# The dashboard signs its users in itself (a session cookie, see corral.api.ui).
PUBLIC_PREFIXES = ("/ui/",)


def create_app(
    settings: Settings,
    *,
    node_factory: NodeFactory | None = None,
    metrics_port: int | None = None,
    open_metrics: bool = False,
) -> FastAPI:
    """The app; with `metrics_port`, connections to that local port (a second listener) get
    GET /metrics only, without a token when `open_metrics`."""
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
        swagger_ui_oauth2_redirect_url=None,
        lifespan=lifespan,
    )
    app.state.plane = plane
    weberrors.install(app)

    async def authenticate(scope: Scope) -> str:
        return await deps.authenticate(plane, scope)

    app.add_middleware(
        Guard,
        authenticate=authenticate,
        max_body_bytes=settings.max_body_bytes,
        public=PUBLIC_PATHS,
        public_prefixes=PUBLIC_PREFIXES,
    )
    # Outside the guard: its refusals are requests too.
    app.add_middleware(
        RequestMetrics,
        histogram=request_histogram(plane.metrics.registry),
        api=app,
    )
    if metrics_port is not None:
        app.add_middleware(
            MetricsListener, port=metrics_port, open_metrics=open_metrics, plane=plane
        )
    for router in (
        health.router,
        hosts.router,
        images.router,
        storage.router,
        networks.router,
        vms.router,
        tunnel.router,
        jobs.router,
        control.router,
        metrics_router,
    ):
        app.include_router(router)
    app.mount("/ui", create_ui(plane))
    return app

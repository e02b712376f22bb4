"""GET /metrics (Prometheus text format) and the API's request figures.

`RequestMetrics` is a pure ASGI middleware outside the guard, so refusals (401, 413) count
too. A request is labelled by its route's template (`/vms/{vm_id}`), never its path: ids
would make a new series per VM. Paths no route matches share `<unmatched>`. The latency is
the time until the answer's headers left, so an event stream counts as the time it took to
open, not as the hours it stayed open.

/metrics answers an `admin` or a `metrics` token: the role that reads these and nothing else.
"""

from __future__ import annotations

import re
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram

from corral import wire
from corral.api.deps import MetricsReaders
from corral.api.errors import ERRORS, METRICS_ERRORS
from corral.control.plane import ControlPlane
from corral.errors import NotFound
from corral.webguard import App, Message, Receive, Scope, Send

UNMATCHED = "<unmatched>"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[MetricsReaders],
    responses={
        **ERRORS,
        200: {"content": {"text/plain": {}}, "description": "the Prometheus text format"},
        **METRICS_ERRORS,
    },
)
async def metrics(request: Request) -> Response:
    """The fleet's state, this process's jobs, requests and event streams (and, on an embedded
    server, the local VMs' figures) for Prometheus."""
    return await render(request.app.state.plane)


async def render(plane: ControlPlane) -> Response:
    """The exposition, collected in a worker thread (it reads the database)."""
    local = await plane.metrics.local_vms()
    body = await plane.call(plane.metrics.text, local)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


class MetricsListener:
    """Requests that came in on the metrics listener (`corral serve --metrics-listen`): only
    `GET /metrics` is served there (404 for anything else, websockets refused), with the
    usual token unless the operator said `--metrics-no-auth`. The listener is told by the
    local port of the connection (`scope["server"]`, from the socket, not from a header)."""

    def __init__(self, app: App, *, port: int, open_metrics: bool, plane: ControlPlane) -> None:
        self.app = app
        self.port = port
        self.open_metrics = open_metrics
        self.plane = plane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        if scope["type"] == "lifespan" or not server or server[1] != self.port:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["path"] != "/metrics" or scope["method"] not in ("GET", "HEAD"):
            body = wire.render(NotFound("this address serves GET /metrics only"))
            answer = Response(body, status_code=404, media_type="application/json")
            await answer(scope, receive, send)
            return
        if not self.open_metrics:
            await self.app(scope, receive, send)  # the guard and the route check the token
            return
        await (await render(self.plane))(scope, receive, send)


def request_histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram(
        "corral_api_request_duration_seconds",
        "time until the API's answer started, by method, route template and status",
        ["method", "route", "status"],
        registry=registry,
    )


class RequestMetrics:
    """Times every HTTP request into `histogram`, labelled by route template and status."""

    def __init__(self, app: App, *, histogram: Histogram, api: Any) -> None:
        self.app = app
        self.histogram = histogram
        self.api = api  # the FastAPI app: its OpenAPI paths name the route of a refused request
        self._templates: list[tuple[re.Pattern[str], str]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status, elapsed = 500, None

        async def timed_send(message: Message) -> None:
            nonlocal status, elapsed
            if message["type"] == "http.response.start":
                status, elapsed = message["status"], time.perf_counter() - began
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.histogram.labels(method, self._template(scope), str(status)).observe(
                elapsed if elapsed is not None else time.perf_counter() - began
            )

    def _template(self, scope: Scope) -> str:
        path = getattr(scope.get("route"), "path", None)
        if isinstance(path, str):
            return path
        # Answered before routing (the guard's 401 and 413): the documented path it matches.
        if self._templates is None:
            self._templates = templates(self.api.openapi())
        for pattern, template in self._templates:
            if pattern.fullmatch(scope["path"]):
                return template
        return UNMATCHED


def templates(document: dict[str, Any]) -> list[tuple[re.Pattern[str], str]]:
    """(pattern, template) of each documented path, those with fewer parameters first (so
    `/vms/{vm_id}/start` wins over a `/vms/{vm_id}/{action}`)."""
    table = []
    for template in document.get("paths", {}):
        parts = re.split(r"\{[^}/]+\}", template)
        table.append((re.compile("[^/]+".join(re.escape(part) for part in parts)), template))
    return sorted(table, key=lambda entry: entry[1].count("{"))

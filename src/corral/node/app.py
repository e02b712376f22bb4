"""The node agent's HTTP API: the node protocol on the wire, with its models as bodies.

Routes are thin: each calls one LocalNode method. Every route but /health (the OpenAPI
document at /openapi.json included) needs the node's bearer token, checked before a request's
body is read; bodies over `max_body_bytes` are refused (413), see corral.webguard. There is no
Swagger UI: a browser could not give it the token, and the node's one client is a control
plane. Errors are answered as the control plane answers them (corral.weberrors, in
corral.wire's shape), which HttpNode turns back into the same error classes.

    GET    /health                       no token; {"status": "ok", ...}
    GET    /capacity                     Capacity
    GET    /images                       [NodeImage] (the image store's manifests)
    GET    /vms                          [NodeVm]
    POST   /vms                          NodeVmSpec -> 201 NodeVm
    GET    /vms/{name}                   NodeVm
    POST   /vms/{name}/start|stop|force-stop|pause|resume   NodeVm
    DELETE /vms/{name}                   204 (a running VM is ended first)
    GET    /vms/{name}/console           the serial log so far, text/plain
    WS     /vms/{name}/console/stream    new console output as binary messages, until the VM stops
    POST   /vms/{name}/console/input     type the body (raw bytes) on the serial console
    WS     /vms/{name}/tunnel?port=N     a TCP stream to port N of the VM, as binary messages
                                         (only ports the VM exposes: 22, its --forward ports)
    GET    /metrics                      this host's VMs' figures, Prometheus text format
    GET    /networks                     [NodeNetwork]
    POST   /networks                     NodeNetworkSpec -> 201 NodeNetwork
    DELETE /networks/{name}              204 (409 while a VM is attached)
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request, Response, WebSocket
from fastapi.security import HTTPBearer
from starlette.websockets import WebSocketDisconnect

from corral import weberrors
from corral.context import Context
from corral.errors import CorralError, InvalidInput, Unauthorized
from corral.node import metrics as node_metrics
from corral.node.local import LocalNode
from corral.node.protocol import (
    MAX_CONSOLE_INPUT,
    Capacity,
    NodeImage,
    NodeNetwork,
    NodeNetworkSpec,
    NodeVm,
    NodeVmSpec,
)
from corral.node.tunnel import splice, tunnel_port
from corral.version import __version__
from corral.webguard import PRINCIPAL, Guard, Scope, header

log = logging.getLogger("corral.node")

NODE = "node"  # the principal: whoever holds the node's token, i.e. its control plane
_REFUSED = "a valid bearer token is required"


def create_node_app(ctx: Context, token: str, *, max_body_bytes: int | None = None) -> FastAPI:
    """The node agent for the VMs of `ctx`'s state directory, guarded by `token`; request
    bodies up to `max_body_bytes` (default: the config's)."""
    if not token:
        raise InvalidInput("the node token must not be empty")
    app = FastAPI(
        title="corral node",
        version=__version__,
        description="One hypervisor host's VMs, for a corral control plane. Every route but "
        "/health needs `Authorization: Bearer TOKEN` (the node's token file).",
        docs_url=None,
        redoc_url=None,
    )
    app.state.node = LocalNode(ctx)
    secret = token.encode()

    async def authenticate(scope: Scope) -> str:
        scheme, _, given = (header(scope, b"authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and _same(given.strip(), secret):
            return NODE
        raise Unauthorized(_REFUSED)

    app.state.authenticate = authenticate
    app.include_router(_open)
    app.include_router(_guarded)
    app.add_api_websocket_route("/vms/{name}/console/stream", _console_stream)
    app.add_api_websocket_route("/vms/{name}/tunnel", _tunnel)
    weberrors.install(app)
    app.add_middleware(
        Guard,
        authenticate=authenticate,
        max_body_bytes=max_body_bytes or ctx.config.max_body_bytes,
        public=("/health",),
    )
    return app


# --- authentication and dependencies --------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="The token from the node's token file.")


def _same(given: str, secret: bytes) -> bool:
    # Constant time: a wrong token must not reveal how much of it was right.
    return hmac.compare_digest(given.encode(), secret)


async def _authorize(request: Request, _: Annotated[object, Depends(_bearer)]) -> None:
    """What the guard found (the dependency on _bearer puts the scheme in OpenAPI)."""
    if request.scope.get(PRINCIPAL) != NODE:
        raise Unauthorized(_REFUSED)


def _node(request: Request) -> LocalNode:
    return request.app.state.node


Node = Annotated[LocalNode, Depends(_node)]

_open = APIRouter()
_guarded = APIRouter(dependencies=[Depends(_authorize)])


# --- routes -----------------------------------------------------------------------------------


@_open.get("/health")
async def health(node: Node) -> dict[str, str]:
    return await node.health()


@_guarded.get("/capacity")
async def capacity(node: Node) -> Capacity:
    return await node.capacity()


@_guarded.get("/images")
async def list_images(node: Node) -> list[NodeImage]:
    return await node.list_images()


@_guarded.get("/vms")
async def list_vms(node: Node) -> list[NodeVm]:
    return await node.list_vms()


@_guarded.post("/vms", status_code=201)
async def create_vm(spec: NodeVmSpec, node: Node) -> NodeVm:
    return await node.create_vm(spec)


@_guarded.get("/vms/{name}")
async def get_vm(name: str, node: Node) -> NodeVm:
    return await node.get_vm(name)


@_guarded.post("/vms/{name}/start")
async def start_vm(name: str, node: Node) -> NodeVm:
    return await node.start_vm(name)


@_guarded.post("/vms/{name}/stop")
async def stop_vm(name: str, node: Node) -> NodeVm:
    """ACPI powerdown, then QMP quit, then SIGKILL, each after its own deadline."""
    return await node.stop_vm(name)


@_guarded.post("/vms/{name}/force-stop")
async def force_stop_vm(name: str, node: Node) -> NodeVm:
    """QMP quit, then SIGKILL: no clean shutdown of the guest."""
    return await node.stop_vm(name, force=True)


@_guarded.post("/vms/{name}/pause")
async def pause_vm(name: str, node: Node) -> NodeVm:
    return await node.pause_vm(name)


@_guarded.post("/vms/{name}/resume")
async def resume_vm(name: str, node: Node) -> NodeVm:
    return await node.resume_vm(name)


@_guarded.delete("/vms/{name}", status_code=204)
async def delete_vm(name: str, node: Node) -> Response:
    await node.delete_vm(name)
    return Response(status_code=204)


@_guarded.get("/metrics", response_class=Response)
async def metrics(node: Node) -> Response:
    """Per-VM figures for Prometheus: vCPU time, memory, disk and network traffic, uptime."""
    figures = await node_metrics.gather(node.ctx.home)
    return Response(node_metrics.render(figures), media_type=node_metrics.CONTENT_TYPE)


@_guarded.get("/networks")
async def list_networks(node: Node) -> list[NodeNetwork]:
    return await node.list_networks()


@_guarded.post("/networks", status_code=201)
async def create_network(spec: NodeNetworkSpec, node: Node) -> NodeNetwork:
    return await node.create_network(spec)


@_guarded.delete("/networks/{name}", status_code=204)
async def delete_network(name: str, node: Node) -> Response:
    await node.delete_network(name)
    return Response(status_code=204)


@_guarded.get("/vms/{name}/console", response_class=Response)
async def console_log(name: str, node: Node) -> Response:
    """The serial console's output so far (bytes as the guest wrote them)."""
    return Response(await node.console_log(name), media_type="text/plain")


@_guarded.post("/vms/{name}/console/input", status_code=204)
async def console_input(name: str, request: Request, node: Node) -> Response:
    """Type the request's body (raw bytes, at most 4096) on the VM's serial console."""
    data = await request.body()
    if len(data) > MAX_CONSOLE_INPUT:
        raise InvalidInput(f"at most {MAX_CONSOLE_INPUT} bytes of console input at once")
    await node.console_input(name, data)
    return Response(status_code=204)


async def _console_stream(websocket: WebSocket, name: str) -> None:
    """New console output as binary messages; closed (1000) when the VM stops."""
    node: LocalNode = websocket.app.state.node
    try:
        await websocket.app.state.authenticate(websocket.scope)
    except Unauthorized as exc:
        await _deny(websocket, exc)
        return
    try:
        await node.get_vm(name)  # refuse an unknown VM with a status, before the upgrade
    except CorralError as exc:
        await _deny(websocket, exc)
        return
    await websocket.accept()

    async def pump() -> None:
        async for chunk in node.console_stream(name):
            await websocket.send_bytes(chunk)

    async def until_disconnect() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    sender = asyncio.create_task(pump())
    watcher = asyncio.create_task(until_disconnect())
    try:
        done, _ = await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sender, watcher):
            task.cancel()
        for task in (sender, watcher):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if sender not in done:
        return  # the client went away
    failure = sender.exception()
    if isinstance(failure, WebSocketDisconnect):
        return
    if failure is None:
        code, reason = 1000, ""
    elif isinstance(failure, CorralError):
        # A close reason holds at most 123 bytes.
        code, reason = 1011, failure.message.encode()[:120].decode(errors="ignore")
    else:
        log.error("console stream of %s failed", name, exc_info=failure)
        code, reason = 1011, "internal error"
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await websocket.close(code, reason)


async def _tunnel(websocket: WebSocket, name: str) -> None:
    """A TCP stream to `?port=` of the VM in binary messages, refused with a status (401,
    404, 403 for a port the VM does not expose, 409 when it is not running) before the upgrade."""
    node: LocalNode = websocket.app.state.node
    try:
        await websocket.app.state.authenticate(websocket.scope)
        tunnel = await node.open_tunnel(name, tunnel_port(websocket.query_params.get("port")))
    except CorralError as exc:
        await _deny(websocket, exc)
        return
    try:
        await websocket.accept()
    except BaseException:
        await tunnel.close()
        raise
    await splice(websocket, tunnel)


async def _deny(websocket: WebSocket, exc: CorralError) -> None:
    await weberrors.deny_websocket(websocket, exc)

"""HttpNode: the node protocol as a client of a node agent (`corral node`, see app.py).

Error answers are in corral.wire's shape, `{"error": KIND, "detail": ..., "hint": ...}`, and
come back out as the same corral error classes, so a remote NotFound is a NotFound. A node
that cannot be reached (refused, timed out, broken connection) raises NodeUnreachable naming
its URL.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from corral import wire
from corral.errors import CorralError, InvalidInput, NodeUnreachable
from corral.node.protocol import (
    Capacity,
    NodeImage,
    NodeNetwork,
    NodeNetworkSpec,
    NodeVm,
    NodeVmSpec,
    Tunnel,
)
from corral.node.tunnel import MAX_FRAME, WebsocketTunnel

M = TypeVar("M", bound=BaseModel)
L = TypeVar("L")
_VMS = TypeAdapter(list[NodeVm])
_NETWORKS = TypeAdapter(list[NodeNetwork])
_IMAGES = TypeAdapter(list[NodeImage])


class HttpNode:
    """A node agent at `base_url`, authenticated with its bearer token.

    Holds one connection pool, made on first use in the running event loop: keep one HttpNode
    per node for the life of that loop, and `aclose()` it (or use `async with`).
    `timeout` bounds quick calls; `slow_timeout` bounds create, start, stop and delete, which
    may import a base disk or wait out a guest's shutdown.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float = 30.0,
        slow_timeout: float = 600.0,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise InvalidInput(f"a node URL starts with http:// or https://, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.slow_timeout = slow_timeout
        # No token (a host registered without one): no Authorization header at all.
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"HttpNode({self.base_url!r})"  # never the token

    async def __aenter__(self) -> HttpNode:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- the protocol ---------------------------------------------------------------------

    async def health(self) -> dict[str, str]:
        body = (await self._request("GET", "/health")).json()
        if not isinstance(body, dict):
            raise self._unexpected("GET /health", "not an object")
        return {str(k): str(v) for k, v in body.items()}

    async def capacity(self) -> Capacity:
        return self._parse(Capacity, await self._request("GET", "/capacity"))

    async def list_vms(self) -> list[NodeVm]:
        return await self._list(_VMS, "/vms")

    async def list_images(self) -> list[NodeImage]:
        return await self._list(_IMAGES, "/images")

    async def get_vm(self, name: str) -> NodeVm:
        return self._parse(NodeVm, await self._request("GET", _vm(name)))

    async def create_vm(self, spec: NodeVmSpec) -> NodeVm:
        response = await self._request("POST", "/vms", body=spec.model_dump(), slow=True)
        return self._parse(NodeVm, response)

    async def start_vm(self, name: str) -> NodeVm:
        return self._parse(NodeVm, await self._request("POST", _vm(name, "start"), slow=True))

    async def stop_vm(self, name: str, *, force: bool = False) -> NodeVm:
        action = "force-stop" if force else "stop"
        return self._parse(NodeVm, await self._request("POST", _vm(name, action), slow=True))

    async def pause_vm(self, name: str) -> NodeVm:
        return self._parse(NodeVm, await self._request("POST", _vm(name, "pause")))

    async def resume_vm(self, name: str) -> NodeVm:
        return self._parse(NodeVm, await self._request("POST", _vm(name, "resume")))

    async def delete_vm(self, name: str) -> None:
        await self._request("DELETE", _vm(name), slow=True)

    async def console_log(self, name: str) -> bytes:
        return (await self._request("GET", _vm(name, "console"))).content

    async def console_stream(self, name: str) -> AsyncIterator[bytes]:
        """New console output of the VM, until it stops (or the node closes the stream).

        To stop early, cancel the consuming task or use `contextlib.aclosing`: a bare `break`
        leaves the websocket open until the generator is garbage-collected.
        """
        from websockets.exceptions import ConnectionClosedError

        ws = await self._websocket(_vm(name, "console", "stream"))
        async with ws:
            try:
                async for message in ws:
                    yield message if isinstance(message, bytes) else message.encode()
            except ConnectionClosedError as exc:
                if exc.rcvd is not None and exc.rcvd.code == 1011:  # the node's own error
                    raise CorralError(exc.rcvd.reason or "the node ended the stream") from exc
                raise NodeUnreachable(
                    f"console stream from node {self.base_url} broke: {_reason(exc)}"
                ) from exc

    async def console_input(self, name: str, data: bytes) -> None:
        await self._request("POST", _vm(name, "console", "input"), content=data)

    async def open_tunnel(self, name: str, port: int) -> Tunnel:
        """A websocket to the node's tunnel: its refusals (403 for a port the VM does not
        expose, 404, 409) come back as the node's errors."""
        ws = await self._websocket(_vm(name, "tunnel") + f"?port={int(port)}", max_size=MAX_FRAME)
        return WebsocketTunnel(ws, f"node {self.base_url}")

    async def list_networks(self) -> list[NodeNetwork]:
        return await self._list(_NETWORKS, "/networks")

    async def create_network(self, spec: NodeNetworkSpec) -> NodeNetwork:
        response = await self._request("POST", "/networks", body=spec.model_dump(), slow=True)
        return self._parse(NodeNetwork, response)

    async def delete_network(self, name: str) -> None:
        await self._request("DELETE", "/networks/" + quote(name, safe=""), slow=True)

    async def _websocket(self, path: str, *, max_size: int = 4 << 20) -> Any:
        """An open websocket client connection to `path` of the node."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidHandshake, InvalidStatus

        url = "ws" + self.base_url.removeprefix("http") + path
        try:
            return await connect(
                url,
                additional_headers=self._auth,
                open_timeout=self.timeout,
                max_size=max_size,
                compression=None,  # bytes of an ssh session do not compress
            )
        except InvalidStatus as exc:
            response = exc.response
            raise self._error(
                response.status_code,
                bytes(response.body or b""),
                response.headers.get("content-type"),
            ) from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise NodeUnreachable(
                f"node {self.base_url} is unreachable: {_reason(exc)}", hint=_HINT
            ) from exc

    # --- the wire -------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                headers=self._auth,
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
            )
        return self._client

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        slow: bool = False,
        content: bytes | None = None,
    ) -> httpx.Response:
        timeout = self.slow_timeout if slow else self.timeout
        try:
            response = await self._http().request(
                method,
                path,
                json=body,
                content=content,
                timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            )
        except httpx.TimeoutException as exc:
            raise NodeUnreachable(
                f"node {self.base_url} did not answer {method} {path} within {timeout:g} s",
                hint=_HINT,
            ) from exc
        except httpx.TransportError as exc:
            raise NodeUnreachable(
                f"node {self.base_url} is unreachable: {_reason(exc)}", hint=_HINT
            ) from exc
        if response.is_error:
            raise self._error(
                response.status_code, response.content, response.headers.get("content-type")
            )
        return response

    def _error(self, status: int, body: bytes, content_type: str | None) -> CorralError:
        if status == 401:
            return NodeUnreachable(
                f"node {self.base_url} refused the token",
                hint="give the token from the node's token file (corral node --token-file)",
            )
        data: Any = None
        if content_type and content_type.startswith("application/json"):
            try:
                data = json.loads(body)
            except ValueError:
                data = None
        error = wire.error_from(status, data, require_kind=True)
        if error is not None:
            return error
        # Not a node's answer (a proxy's page, another service at that address): its status
        # and reason phrase only, never its body, which would carry whatever it serves.
        cls = NodeUnreachable if status in _GATEWAY else wire.status_class(status)
        return cls(f"node {self.base_url} answered HTTP {status} {wire.reason(status)}")

    def _parse(self, model: type[M], response: httpx.Response) -> M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            where = f"{response.request.method} {response.request.url.path}"
            raise self._unexpected(where, exc) from exc

    async def _list(self, adapter: TypeAdapter[list[L]], path: str) -> list[L]:
        response = await self._request("GET", path)
        try:
            return adapter.validate_json(response.content)
        except ValidationError as exc:
            raise self._unexpected(f"GET {path}", exc) from exc

    def _unexpected(self, where: str, why: object) -> CorralError:
        first = str(why).strip().splitlines()[0] if str(why).strip() else type(why).__name__
        return CorralError(f"node {self.base_url} sent an unexpected answer to {where}: {first}")


_HINT = "is `corral node` running there, and is the address right?"
_GATEWAY = (502, 503, 504)  # a proxy in front of the node could not reach it


def _vm(name: str, *parts: str) -> str:
    return "/".join(("/vms", quote(name, safe=""), *parts))


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

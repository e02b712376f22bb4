"""Reaching a VM through the control plane: `WS /vms/{id}/tunnel?port=N` carries a TCP stream
to port N of the VM (through its host's node agent) in binary messages, and `GET
/vms/{id}/ssh` says whom ssh logs in as there. `corral --remote ... ssh|exec|cp` use both.

A tunnel takes the token as the console websocket does (header, `bearer, TOKEN` subprotocols,
or `?token=`); an `admin` or a `user` token may open one, as both manage VMs. It is refused
with an HTTP answer in corral.wire's shape before the upgrade: 401 without a valid token, 404
for an unknown VM, 409 when it is not running, 403 for a port the VM does not expose (only its
SSH port 22 and the guest ports it forwards are reachable: never the node's own ports).
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, WebSocket
from pydantic import BaseModel

from corral import weberrors
from corral.api.deps import Authenticated, Plane, api_role, websocket_credentials
from corral.api.errors import ERRORS
from corral.control import tunnel
from corral.errors import CorralError, Unauthorized
from corral.node.tunnel import splice, tunnel_port

router = APIRouter(prefix="/vms", tags=["vms"], responses=ERRORS)


class SshLogin(BaseModel):
    user: str | None  # None: the VM's node did not say
    port: int = 22  # the guest port to tunnel to


@router.get("/{vm_id}/ssh", dependencies=[Authenticated])
async def ssh_login(vm_id: uuid.UUID, plane: Plane) -> SshLogin:
    """Whom ssh logs in as on the VM (its image's default user); reach it through
    `WS /vms/{id}/tunnel?port=22` with a key authorised at its launch."""
    return SshLogin(user=await tunnel.ssh_user(plane, vm_id))


@router.websocket("/{vm_id}/tunnel")
async def open_tunnel(websocket: WebSocket, vm_id: uuid.UUID) -> None:
    """A TCP stream to `?port=` of the VM, in binary messages both ways."""
    plane = websocket.app.state.plane
    token, subprotocol = websocket_credentials(websocket)
    try:
        if not await api_role(plane, token):
            raise Unauthorized("unknown, revoked or missing token", hint="corral token create NAME")
        stream = await tunnel.open_tunnel(
            plane, vm_id, tunnel_port(websocket.query_params.get("port"))
        )
    except CorralError as exc:
        await weberrors.deny_websocket(websocket, exc)
        return
    try:
        await websocket.accept(subprotocol=subprotocol)
    except BaseException:
        await stream.close()
        raise
    await splice(websocket, stream)

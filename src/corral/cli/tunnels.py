"""ssh, exec, cp and console against a VM on any host, through the control plane's tunnel
(corral.remote.tunnel): the guest session of local use (corral.guest.session) over a socket
whose far end is the VM's SSH port, and the system ssh with `corral tunnel-stdio` as its
ProxyCommand.

Which key: the user's own, never the node's. A VM launched with `--remote` authorises the
public keys given with `--ssh-key` (by default CORRAL_SSH_KEY); ssh, exec and cp log in with
the private key beside CORRAL_SSH_KEY (the same path without `.pub`), else the first of
~/.ssh/id_ed25519, id_ecdsa and id_rsa.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import asyncssh

from corral.errors import Conflict, GuestError, InvalidInput
from corral.guest.session import GuestSession
from corral.guest.ssh import SshTarget
from corral.instance.guestops import split_remote
from corral.remote.api import ControlPlaneClient
from corral.remote.tunnel import connected_socket

SSH_PORT = 22
DEFAULT_USER = "root"  # when the VM's node does not say (an older node)
_DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")
T = TypeVar("T")


def private_key(configured: Path | None) -> Path | None:
    """The private key to log in with: beside the configured public key, else ssh's usual."""
    if configured is not None:
        key = configured.with_suffix("") if configured.suffix == ".pub" else configured
        if not key.is_file():
            raise InvalidInput(
                f"no private key {key} beside CORRAL_SSH_KEY={configured}",
                hint="ssh, exec and cp through the control plane log in with that key",
            )
        return key
    for name in _DEFAULT_KEYS:
        key = Path.home() / ".ssh" / name
        if key.is_file():
            return key
    return None


class RemoteVm:
    """A running VM of the control plane, as ssh reaches it: its id, name and login user."""

    def __init__(self, client: ControlPlaneClient, name: str) -> None:
        vm = client.vm(name)
        if vm["status"] != "running":
            raise Conflict(f"VM {name!r} is {vm['status']}, not running")
        self.client = client
        self.id: str = vm["id"]
        self.name = name
        self.user = client.ssh_user(self.id) or DEFAULT_USER


def ssh_argv(
    vm: RemoteVm, key: Path | None, command: list[str]
) -> tuple[list[str], dict[str, str]]:
    """The system ssh's argv and environment: its ProxyCommand is `corral tunnel-stdio`, given
    the token in its environment (never on a command line, where `ps` would show it). Pure."""
    remote = vm.client.remote
    proxy = shlex.join(
        [sys.executable, "-m", "corral.cli.app", "--remote", remote.url, "tunnel-stdio",
         vm.id, str(SSH_PORT)]
    )  # fmt: skip
    env = {**os.environ, "CORRAL_TOKEN": remote.token}
    env.pop("CORRAL_REMOTE", None)
    identity = ["-i", str(key), "-o", "IdentitiesOnly=yes"] if key is not None else []
    argv = [
        "ssh",
        *identity,
        "-o", f"ProxyCommand={proxy.replace('%', '%%')}",
        "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR",
        f"{vm.user}@{vm.name}",
        *command,
    ]  # fmt: skip
    return argv, env


def in_guest(vm: RemoteVm, key: Path | None, work: Callable[[GuestSession], Awaitable[T]]) -> T:
    """Run `work` in one ssh session with the VM over a tunnel."""
    if key is None:
        raise InvalidInput(
            "no ssh key to log in with",
            hint="set CORRAL_SSH_KEY to the public key the VM was launched with (--ssh-key)",
        )
    target = SshTarget(port=SSH_PORT, user=vm.user, key=key, host=vm.name)

    async def go() -> T:
        async with (
            connected_socket(vm.client.remote, vm.id, SSH_PORT) as sock,
            await GuestSession.open(target, sock=sock, timeout=30) as session,
        ):
            return await work(session)

    try:
        return asyncio.run(go())
    except (OSError, asyncssh.Error) as exc:
        raise GuestError(
            f"ssh to {vm.name!r} through {vm.client.remote.url} failed: "
            f"{exc or type(exc).__name__}",
            hint=f"was it launched with your key (--ssh-key)? the key tried: {key}",
        ) from exc


def copy(client: ControlPlaneClient, key: Path | None, src: str, dst: str) -> None:
    """`cp` with one side NAME:/path, through a tunnel."""
    src_name, src_path = split_remote(src)
    dst_name, dst_path = split_remote(dst)
    if (src_name is None) == (dst_name is None):
        raise InvalidInput("exactly one of SRC and DST must be NAME:/path")
    vm = RemoteVm(client, src_name or dst_name or "")
    if src_name is None:
        in_guest(vm, key, lambda guest: guest.upload(Path(src_path), dst_path))
    else:
        in_guest(vm, key, lambda guest: guest.download(src_path, Path(dst_path)))

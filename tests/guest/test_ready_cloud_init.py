"""How readiness waits for cloud-init, against a real SSH server (asyncssh, on loopback) whose
`cloud-init` finishes a moment after the client connects: corral must notice within cloud-init's
own 0.25 s poll, and start only one `cloud-init` process in the guest to do so (under TCG each
costs a second of the CPU cloud-init itself is using)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from corral.errors import GuestError
from corral.guest.ready import wait_ready_async
from corral.guest.ssh import SshTarget

FINISHES_AFTER = 1.5  # seconds after the server starts


class Guest:
    """A stand-in guest: `cloud-init status [--wait]` answers like cloud-init 22.4."""

    def __init__(self, final: str) -> None:
        self.final = final
        self.done_at = time.monotonic() + FINISHES_AFTER
        self.commands: list[str] = []

    def status(self) -> str:
        return self.final if time.monotonic() >= self.done_at else "running"

    async def handle(self, process: asyncssh.SSHServerProcess) -> None:
        command = process.command or ""
        self.commands.append(command)
        if command.startswith("cloud-init status"):
            if "--wait" in command:
                while self.status() == "running":
                    process.stdout.write(".")
                    await asyncio.sleep(0.25)
                process.stdout.write("\n")
            status = self.status()
            process.stdout.write(f"status: {status}\n")
            process.exit(0 if status == "done" else 1)
        else:
            process.exit(127)


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[tuple[Path, asyncssh.SSHKey, Path]]:
    client = asyncssh.generate_private_key("ssh-ed25519")
    key_file = tmp_path / "id"
    key_file.write_bytes(client.export_private_key())
    key_file.chmod(0o600)
    authorized = tmp_path / "authorized_keys"
    authorized.write_bytes(client.export_public_key())
    yield key_file, asyncssh.generate_private_key("ssh-ed25519"), authorized


async def serve(guest: Guest, keys: tuple[Path, asyncssh.SSHKey, Path]) -> asyncssh.SSHAcceptor:
    _, host_key, authorized = keys
    return await asyncssh.listen(
        "127.0.0.1", 0, server_host_keys=[host_key], authorized_client_keys=str(authorized),
        process_factory=guest.handle,
    )  # fmt: skip


def wait_ready(guest: Guest, keys: tuple[Path, asyncssh.SSHKey, Path], **options: Any) -> float:
    """wait_ready_async against the stand-in guest; when it returned (monotonic)."""

    async def go() -> float:
        server = await serve(guest, keys)
        try:
            target = SshTarget(server.get_port(), "debian", keys[0])
            await wait_ready_async(target, timeout=30, alive=lambda: True, **options)
            return time.monotonic()
        finally:
            server.close()

    return asyncio.run(go())


def test_ready_within_cloud_inits_own_poll_with_one_process(keys) -> None:
    guest = Guest("done")
    noticed = wait_ready(guest, keys)
    assert guest.done_at <= noticed < guest.done_at + 0.6
    assert guest.commands == ["cloud-init status --wait"]


def test_an_error_is_reported_with_the_long_status(keys) -> None:
    guest = Guest("error")
    with pytest.raises(GuestError, match="cloud-init reported error"):
        wait_ready(guest, keys)
    assert guest.commands == ["cloud-init status --wait", "cloud-init status --long"]


def test_a_warm_clone_is_ready_when_ssh_answers_without_asking_cloud_init(keys) -> None:
    # Its template's cloud-init finished before the save: asking again would start a Python
    # process in the guest (seconds under TCG) to hear "done".
    guest = Guest("done")
    noticed = wait_ready(guest, keys, cloud_init=False)
    assert noticed < guest.done_at
    assert guest.commands == []

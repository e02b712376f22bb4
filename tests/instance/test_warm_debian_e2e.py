"""End to end with corral's Debian 12 image: a warm image made from it with `corral image
warm`, and one clone restored from it that is its own machine (name, the launch's key, its
user-data applied by the identity script) when ready."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import asyncssh
import pytest

from corral.context import Context
from helpers import corral
from instance.test_debian_e2e import log_tail, ssh_as

pytestmark = [pytest.mark.vm, pytest.mark.e2e]

WARM = "debian-12-warm-e2e"
USER_DATA = """#cloud-config
write_files:
  - path: /etc/corral-warm-e2e
    content: written at warm launch
runcmd:
  - [sh, -c, "echo ran >> /var/tmp/warm-runcmd-marker"]
"""


def test_a_warm_clone_of_debian_is_its_own_machine(debian_ctx: Context) -> None:
    ctx = debian_ctx
    work = Path(tempfile.mkdtemp(prefix="e2ew"))
    corral(ctx, "image", "rm", "--force", WARM)  # a run cut short may have left it
    try:
        (work / "user-data").write_text(USER_DATA)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "key")],
                       check=True)  # fmt: skip
        proc = corral(ctx, "image", "warm", "debian-12", "--as", WARM, "--type", "c2m1024",
                      "--timeout", "600")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        shown = corral(ctx, "image", "inspect", WARM).stdout
        assert "warm:          yes" in shown and "with a guest agent" in shown

        proc = corral(
            ctx, "launch", WARM, "--name", "debw1", "--user-data", str(work / "user-data"),
            "--ssh-key", str(work / "key.pub"), "--wait", "--timeout", "300",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr + "\n" + log_tail(ctx, "debw1")

        def run(command: str) -> str:
            result = corral(ctx, "exec", "debw1", "--", "sh", "-c", command)
            assert result.returncode == 0, result.stderr
            return result.stdout.strip()

        record = json.loads(corral(ctx, "inspect", "debw1", "--json").stdout)
        assert run("hostname") == "debw1"
        assert run("cat /etc/corral-warm-e2e") == "written at warm launch"
        assert run("cat /var/tmp/warm-runcmd-marker") == "ran"
        assert "10.0.2.15/24" in run("ip -o -4 addr show")
        mine = ssh_as(work / "key", record["ssh_port"], "debian", "hostname")
        assert (mine.returncode, mine.stdout.strip()) == (0, "debw1"), mine.stderr
        # sshd serves the clone's new host key (OpenSSH 9.2 reads it per connection: the
        # script does not restart it).
        served = asyncio.run(
            asyncssh.get_server_host_key(
                "127.0.0.1", record["ssh_port"], server_host_key_algs=["ssh-ed25519"]
            )
        )
        on_disk = run("cat /etc/ssh/ssh_host_ed25519_key.pub").split()[:2]
        assert served is not None and served.export_public_key().decode().split() == on_disk
    finally:
        corral(ctx, "rm", "--force", "debw1")
        corral(ctx, "image", "rm", "--force", WARM)
        shutil.rmtree(work, ignore_errors=True)

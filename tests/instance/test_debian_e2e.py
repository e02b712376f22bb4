"""End to end with the real Debian 12 image from `corral image build debian-12`: real
cloud-init must apply the seed (hostname, default user with keys, user-data, network-config),
and the disk must grow at first boot."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from corral.context import Context
from helpers import corral

pytestmark = [pytest.mark.vm, pytest.mark.e2e]

USER_DATA = """#cloud-config
runcmd:
  - [sh, -c, "echo ran >> /var/tmp/runcmd-marker"]
write_files:
  - path: /etc/corral-e2e
    content: written by cloud-init
"""

# cloud-init 22.4 ignores name globs in `match`; the image boots with net.ifnames=0, so the
# first NIC is always eth0.
NETWORK_CONFIG = """version: 2
ethernets:
  eth0:
    addresses: [10.0.2.15/24]
    gateway4: 10.0.2.2
    nameservers: {addresses: [10.0.2.3]}
    mtu: 1400
"""


def ssh_as(key: Path, port: int, user: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-i", str(key), "-p", str(port), "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes", f"{user}@127.0.0.1", command],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_cloud_init_applies_the_seed(debian_ctx: Context) -> None:
    ctx = debian_ctx
    work = Path(tempfile.mkdtemp(prefix="e2e"))
    try:
        (work / "user-data").write_text(USER_DATA)
        (work / "network-config").write_text(NETWORK_CONFIG)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "key")],
                       check=True)  # fmt: skip
        proc = corral(
            ctx, "launch", "debian-12", "--name", "deb1", "--type", "c2m1024",
            "--disk-size", "6G", "--user-data", str(work / "user-data"),
            "--network-config", str(work / "network-config"),
            "--ssh-key", str(work / "key.pub"), "--wait", "--timeout", "400",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr + "\n" + log_tail(ctx, "deb1")

        def run(command: str) -> str:
            result = corral(ctx, "exec", "deb1", "--", "sh", "-c", command)
            assert result.returncode == 0, result.stderr
            return result.stdout.strip()

        assert run("hostname") == "deb1"
        assert "status: done" in run("cloud-init status")
        assert run("cat /var/tmp/runcmd-marker") == "ran"
        assert run("cat /etc/corral-e2e") == "written by cloud-init"
        assert run("sudo -n id -u") == "0"
        assert run("id -un") == "debian"
        # network-config was rendered: the static address and the odd MTU are in place.
        assert "10.0.2.15/24" in run("ip -o -4 addr show")
        assert "mtu 1400" in run("ip -o link show | grep -v ' lo:'")
        # The root filesystem grew from the image's size to the 6 GiB disk.
        size = int(run("df -B1 --output=size / | tail -1"))
        assert 5 << 30 < size <= 6 << 30
        assert "en_US.utf8" in run("locale -a")

        record = json.loads(corral(ctx, "inspect", "deb1", "--json").stdout)
        # The user's own key logs in as the default user, with the system ssh client.
        mine = ssh_as(work / "key", record["ssh_port"], "debian", "hostname")
        assert (mine.returncode, mine.stdout.strip()) == (0, "deb1"), mine.stderr

        # A clean stop (ACPI) and start keep the instance's identity: cloud-init does not
        # treat the restart as a new instance, so runcmd does not run again.
        assert corral(ctx, "stop", "deb1", "--timeout", "120").returncode == 0
        proc = corral(ctx, "start", "deb1", "--wait", "--timeout", "400")
        assert proc.returncode == 0, proc.stderr
        assert run("cat /var/lib/cloud/data/instance-id") == record["instance_id"]
        assert run("cat /var/tmp/runcmd-marker") == "ran"
    finally:
        corral(ctx, "rm", "--force", "deb1")
        shutil.rmtree(work, ignore_errors=True)


def log_tail(ctx: Context, name: str) -> str:
    path = ctx.home.instance(name).serial_log
    return "\n".join(path.read_text(errors="replace").splitlines()[-40:]) if path.exists() else ""

"""A booted tiny guest made into another machine through its agent (corral.guest.identity).

One guest for the module: booted without a seed (so root trusts no key and is called "tiny"),
its clock set wrong, then reidentified once; each test checks one part of the result through
SSH or the agent. Real QEMU (TCG), the guest's own agent on a virtio-serial port.
"""

from __future__ import annotations

import asyncio
import base64
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import asyncssh
import pytest

from corral.errors import GuestError
from corral.guest.identity import CloneIdentity, NicIdentity, new_identity, reidentify
from corral.guest.reseed import reseed_program
from corral.layout import MachineFiles
from corral.machine.agent import ExecResult, GuestAgent
from corral.machine.spec import DirectBoot, Drive, Forward, MachineSpec
from corral.machine.vm import Vm

MAC = "52:54:00:ab:cd:ef"
TRICKY = 'it\'s "$(touch /run/pwned)" `touch /run/pwned` $HOME\nline two\n'
USER_DATA = f"""#cloud-config
write_files:
  - path: /etc/corral test/it's $(touch /run/pwned).conf
    content: {base64.b64encode(TRICKY.encode()).decode()}
    encoding: b64
    permissions: '0640'
  - path: /etc/motd
    content: "appended\\n"
    append: true
runcmd:
  - echo "ran as $(id -u)" >/run/runcmd-ran
  - [touch, "/run/argv $(id -u)"]
packages: [htop]
""".encode()


@dataclass
class Clone:
    vm: Vm
    files: MachineFiles
    port: int
    key: Path
    identity: CloneIdentity
    key_before: str
    seconds: float  # how long reidentify took


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _exec(files: MachineFiles, argv: list[str], stdin: bytes = b"") -> ExecResult:
    async with GuestAgent(files.agent) as agent:
        return await agent.exec(argv, stdin=stdin, timeout=60)


async def _host_key(port: int) -> str:
    algs = ["ssh-ed25519"]
    key = await asyncssh.get_server_host_key("127.0.0.1", port, server_host_key_algs=algs)
    assert key is not None
    return " ".join(key.export_public_key().decode().split()[:2])


async def _ssh(clone: Clone, command: str) -> str:
    async with asyncssh.connect(
        "127.0.0.1",
        clone.port,
        username="root",
        client_keys=[str(clone.key)],
        known_hosts=None,
        server_host_key_algs=["ssh-ed25519"],  # dropbear offers RSA without an RSA key
    ) as conn:
        result = await conn.run(command, check=True)
        return str(result.stdout)


async def _until_ssh(port: int, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while True:
        try:
            await _host_key(port)
            return
        except (OSError, asyncssh.Error):
            assert time.monotonic() < end, "no SSH server"
            await asyncio.sleep(0.2)


@contextmanager
def _booted(guest, tmp: Path) -> Iterator[tuple[Vm, MachineFiles, int]]:
    """The guest under QEMU (TCG) with an agent channel and an ssh forward; killed after."""
    qemu = shutil.which("qemu-system-x86_64")
    assert qemu and guest.kernel
    files = MachineFiles(tmp)
    disk = tmp / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", guest.disk,
                    "-F", "qcow2", disk], check=True)  # fmt: skip
    port = _free_port()
    spec = MachineSpec(
        name="identity-test", cpus=1, memory_mib=256, accelerator="tcg",
        drives=(Drive("disk0", disk, "qcow2"),), forwards=(Forward(port, 22),),
        qmp_socket=files.qmp, serial_socket=files.serial_socket,
        serial_log=files.serial_log, pidfile=files.pidfile, agent_socket=files.agent,
        boot=DirectBoot(guest.kernel, guest.initrd, guest.cmdline),
    )  # fmt: skip
    vm = asyncio.run(Vm.start(qemu, spec, files))
    try:
        yield vm, files, port
    finally:
        vm.kill()


@pytest.fixture(scope="module")
def clone(tiny_guest) -> Iterator[Clone]:
    with (
        tempfile.TemporaryDirectory(prefix="cid", dir="/tmp") as tmp,
        _booted(tiny_guest, Path(tmp)) as (vm, files, port),
    ):
        key = Path(tmp) / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
        asyncio.run(_until_ssh(port))
        key_before = asyncio.run(_host_key(port))
        wrong = asyncio.run(_exec(files, ["/bin/sh", "-c", "date -u -s @1000000000"]))
        assert wrong.exitcode == 0, wrong.stderr
        identity = new_identity(
            hostname="clone-7",
            instance_id="i-clone-7",
            user="root",
            authorized_keys=[key.with_suffix(".pub").read_text().strip()],
            nics=[NicIdentity(MAC)],  # slirp's DHCP server answers
            user_data=USER_DATA,
        )

        async def run() -> float:
            started = time.monotonic()
            async with GuestAgent(files.agent) as agent:
                await reidentify(agent, identity, timeout=120)
            return time.monotonic() - started

        seconds = asyncio.run(run())
        asyncio.run(_until_ssh(port))
        yield Clone(vm, files, port, key, identity, key_before, seconds)


def test_the_agent_runs_when_the_root_is_on_the_disk(tiny_disk_guest) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="cid", dir="/tmp") as tmp,
        _booted(tiny_disk_guest, Path(tmp)) as (_vm, files, _port),
    ):

        async def ask() -> tuple[bool, ExecResult]:
            async with GuestAgent(files.agent) as agent:
                await agent.sync(timeout=120)
                return await agent.ping(), await agent.exec(["/bin/cat", "/proc/mounts"])

        alive, mounts = asyncio.run(ask())
        assert alive and b"/dev/vda / ext4" in mounts.stdout


def test_ssh_serves_the_new_host_key_and_trusts_the_launch_key(clone: Clone) -> None:
    new = next(k for k in clone.identity.host_keys if k.algorithm == "ssh-ed25519")
    assert asyncio.run(_host_key(clone.port)) == new.public != clone.key_before
    assert asyncio.run(_ssh(clone, "cat /root/.ssh/authorized_keys")) == (
        clone.identity.authorized_keys[0] + "\n"
    )
    mode = asyncio.run(_ssh(clone, "stat -c %a /root/.ssh/authorized_keys /root/.ssh"))
    assert mode.split() == ["600", "700"]


def test_hostname_machine_id_and_clock(clone: Clone) -> None:
    out = asyncio.run(_ssh(clone, "hostname; cat /etc/hostname /etc/machine-id; date +%s"))
    hostname, etc_hostname, machine_id, now = out.split()
    assert hostname == etc_hostname == "clone-7"
    assert machine_id == clone.identity.machine_id
    assert abs(int(now) - time.time()) < 60  # it was 2001 in there before
    hosts = asyncio.run(_ssh(clone, "cat /etc/hosts"))
    assert "127.0.1.1\tclone-7\n" in hosts and "tiny" not in hosts
    assert clone.seconds < 60


def test_network_renewed_with_the_new_mac(clone: Clone) -> None:
    out = asyncio.run(_ssh(clone, "cat /sys/class/net/eth0/address; ip -4 -o addr show eth0"))
    mac, address = out.split("\n", 1)
    assert mac == MAC
    assert "10.0.2.15/24" in address  # a lease from slirp's DHCP server, for the new MAC
    assert "udhcpc" in asyncio.run(_ssh(clone, "ps"))


def test_user_data_written_literally_and_runcmd_ran(clone: Clone) -> None:
    path = "/etc/corral test/it's $(touch /run/pwned).conf"
    script = (
        f"cat {_quote(path)}; echo ==; stat -c %a {_quote(path)}; cat /run/runcmd-ran; "
        "ls /run; tail -n 1 /etc/motd"
    )
    out = asyncio.run(_ssh(clone, script))
    content, rest = out.split("==\n", 1)
    assert content == TRICKY
    mode, ran, *listing = rest.splitlines()
    assert mode == "640"
    assert ran == "ran as 0"
    assert "argv $(id -u)" in listing and "argv 0" not in listing and "pwned" not in listing
    assert listing[-1] == "appended"


def test_reseed_runs_in_the_guest(clone: Clone) -> None:
    script = 'cat >/tmp/reseed && chmod 700 /tmp/reseed && /tmp/reseed; echo "rc=$?"'
    result = asyncio.run(_exec(clone.files, ["/bin/sh", "-c", script], reseed_program()))
    assert result.stdout == b"rc=0\n"


def test_a_failing_script_raises_guest_error_with_its_reason(clone: Clone) -> None:
    # The same identity but a user the guest does not have: it stops at the authorized keys.
    other = replace(clone.identity, user="nosuchuser")

    async def run() -> None:
        async with GuestAgent(clone.files.agent) as agent:
            await reidentify(agent, other, timeout=120)

    with pytest.raises(GuestError, match="there is no user nosuchuser in this guest"):
        asyncio.run(run())


def _quote(text: str) -> str:
    return shlex.quote(text)

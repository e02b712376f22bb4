"""The tiny test guest: built once a session (cached in .cache/tiny-guest), booted under TCG."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from qemu.qmp import QMPClient

from corral.image.recipes.built import BuiltImage
from corral.image.recipes.tiny import MODULES, build_tiny_guest
from corral.seed.iso import write_seed_iso

CACHE = Path(__file__).resolve().parents[3] / ".cache" / "tiny-guest"
READY = b"corral-tiny: ready"


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    return key


@dataclass
class Vm:
    proc: subprocess.Popen[bytes]
    port: int
    dir: Path

    def serial(self) -> bytes:
        log = self.dir / "serial.log"
        return log.read_bytes() if log.exists() else b""

    def wait_serial(self, marker: bytes, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.serial():
            assert self.proc.poll() is None, f"QEMU exited: {self.serial().decode()[-2000:]}"
            assert time.monotonic() < deadline, f"no {marker!r}: {self.serial().decode()[-2000:]}"
            time.sleep(0.1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _boot(guest: BuiltImage, dir: Path, seed: Path | None = None) -> Iterator[Vm]:
    """Run the guest the way corral does (TCG, q35, virtio everything); kill QEMU at the end."""
    assert guest.kernel and guest.initrd and guest.cmdline
    disk = dir / "disk.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", guest.disk, "-F", "qcow2", disk],
        check=True,
    )
    port = _free_port()
    argv = [
        "qemu-system-x86_64", "-accel", "tcg", "-machine", "q35", "-cpu", "max", "-smp", "1",
        "-m", "256", "-nodefaults", "-no-user-config", "-display", "none",
        "-kernel", guest.kernel, "-initrd", guest.initrd, "-append", guest.cmdline,
        "-drive", f"if=none,id=disk0,file={disk},format=qcow2",
        "-device", "virtio-blk-pci,drive=disk0",
    ]  # fmt: skip
    if seed is not None:
        argv += ["-drive", f"if=none,id=seed,file={seed},format=raw,readonly=on"]
        argv += ["-device", "virtio-blk-pci,drive=seed"]
    argv += [
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=net0",
        "-device", "virtio-rng-pci",
        "-chardev", f"socket,id=ser0,path={dir}/serial.sock,server=on,wait=off,"
                    f"logfile={dir}/serial.log",
        "-serial", "chardev:ser0",
        "-qmp", f"unix:{dir}/qmp.sock,server=on,wait=off",
    ]  # fmt: skip
    with (dir / "qemu.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        yield Vm(proc, port, dir)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _ssh(
    vm: Vm, key: Path, command: str, input: bytes = b"", timeout: float = 30
) -> subprocess.CompletedProcess[bytes]:
    options = ["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "BatchMode=yes"]
    options += ["LogLevel=ERROR", "ConnectTimeout=5"]
    argv = ["ssh", "-i", str(key), "-p", str(vm.port), "root@127.0.0.1", command]
    for option in options:
        argv[1:1] = ["-o", option]
    return subprocess.run(argv, input=input, capture_output=True, timeout=timeout)


def _wait_ssh(vm: Vm, key: Path, timeout: float = 60) -> None:
    """Poll until sshd's banner comes through slirp's port forward, then until a login works."""
    deadline = time.monotonic() + timeout
    while True:
        assert vm.proc.poll() is None, f"QEMU exited: {vm.serial().decode()[-2000:]}"
        assert time.monotonic() < deadline, f"no ssh: {vm.serial().decode()[-2000:]}"
        try:
            with socket.create_connection(("127.0.0.1", vm.port), timeout=1) as s:
                if s.recv(4).startswith(b"SSH-") and _ssh(vm, key, "true").returncode == 0:
                    return
        except OSError:
            pass  # refused, reset or timed out: not up yet
        time.sleep(0.1)


async def _qmp(path: Path, command: str) -> None:
    qmp = QMPClient("corral-test")
    await qmp.connect(str(path))
    try:
        await qmp.execute(command)
    finally:
        await qmp.disconnect()


def _cpio_file(archive: Path, name: str) -> bytes:
    unpacked = subprocess.run(["gzip", "-dc", archive], capture_output=True, check=True).stdout
    argv = ["cpio", "-i", "--quiet", "--to-stdout", name]
    return subprocess.run(argv, input=unpacked, capture_output=True, check=True).stdout


def test_build_is_cached_and_complete(tiny_guest: BuiltImage) -> None:
    assert tiny_guest.kernel and tiny_guest.initrd
    outputs = [tiny_guest.disk, tiny_guest.kernel, tiny_guest.initrd]
    before = [p.stat().st_mtime_ns for p in outputs]
    started = time.monotonic()
    again = build_tiny_guest(tiny_guest.disk.parent, cache_dir=CACHE / "debs")
    assert again == tiny_guest
    assert [p.stat().st_mtime_ns for p in outputs] == before
    assert time.monotonic() - started < 5

    assert tiny_guest.disk_format == "qcow2" and tiny_guest.default_user == "root"
    assert "console=ttyS0" in (tiny_guest.cmdline or "")
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", tiny_guest.disk], capture_output=True, check=True
    )
    assert json.loads(info.stdout)["virtual-size"] == 256 << 20
    order = _cpio_file(tiny_guest.initrd, "lib/modules/load-order").decode().split()
    assert set(MODULES) <= set(order)
    assert order.index("virtio") < order.index("virtio_pci") < order.index("virtio_blk")
    assert _cpio_file(tiny_guest.initrd, "etc/init.d/rcS").startswith(b"#!/bin/sh")
    stamp = json.loads((tiny_guest.disk.parent / "stamp.json").read_text())
    assert {"busybox-static", "dropbear-bin", "libc6"} <= set(stamp["packages"])


@pytest.mark.vm
def test_guest_applies_seed_serves_ssh_and_powers_down(
    tiny_guest: BuiltImage, ssh_key: Path, tmp_path: Path
) -> None:
    public_key = ssh_key.with_suffix(".pub").read_text().strip()
    user_data = (
        "#cloud-config\n"
        'ssh_authorized_keys: ["ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 other@elsewhere"]\n'
        f"users:\n  - name: root\n    ssh_authorized_keys:\n      - {public_key}\n"
    )
    seed = tmp_path / "seed.iso"
    write_seed_iso(
        seed,
        {
            "meta-data": b"instance-id: i-1\nlocal-hostname: tiny1\n",
            "user-data": user_data.encode(),
        },
    )
    started = time.monotonic()
    with _boot(tiny_guest, tmp_path, seed) as vm:
        _wait_ssh(vm, ssh_key)
        print(f"boot to ssh: {time.monotonic() - started:.1f}s")

        assert _ssh(vm, ssh_key, "hostname").stdout == b"tiny1\n"
        assert _ssh(vm, ssh_key, "cat /run/instance-id").stdout == b"i-1\n"
        keys = _ssh(vm, ssh_key, "cat /root/.ssh/authorized_keys").stdout.decode().splitlines()
        assert keys == ["ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 other@elsewhere", public_key]

        status = _ssh(vm, ssh_key, "cloud-init status --wait")
        assert (status.returncode, status.stdout) == (0, b"status: done\n")
        status = _ssh(vm, ssh_key, "cloud-init status --format json")
        assert status.returncode == 0
        assert json.loads(status.stdout)["status"] == "done"
        assert json.loads(status.stdout)["errors"] == []

        result = _ssh(vm, ssh_key, "sh -c 'echo out; echo err >&2; exit 3'")
        assert (result.returncode, result.stdout, result.stderr) == (3, b"out\n", b"err\n")

        payload = b"corral tiny guest disk test\n"
        write = _ssh(vm, ssh_key, "dd of=/dev/vda bs=512 conv=sync,fsync && sync", input=payload)
        assert write.returncode == 0, write.stderr
        read = _ssh(vm, ssh_key, "dd if=/dev/vda bs=512 count=1 2>/dev/null")
        assert read.stdout[: len(payload)] == payload

        powerdown = time.monotonic()
        asyncio.run(_qmp(tmp_path / "qmp.sock", "system_powerdown"))
        assert vm.proc.wait(timeout=20) == 0
        print(f"system_powerdown to exit: {time.monotonic() - powerdown:.1f}s")


@pytest.mark.vm
def test_guest_boots_without_seed_to_a_console_shell(
    tiny_guest: BuiltImage, tmp_path: Path
) -> None:
    with _boot(tiny_guest, tmp_path) as vm:
        vm.wait_serial(READY, timeout=60)
        with socket.socket(socket.AF_UNIX) as console:
            console.connect(str(tmp_path / "serial.sock"))
            for _ in range(20):  # what is typed before the shell opens ttyS0 is lost
                console.sendall(b"echo console-$((6 * 7))\n")
                time.sleep(0.5)
                if b"console-42" in vm.serial():
                    break
            assert b"console-42" in vm.serial()
            console.sendall(b"poweroff\n")
            assert vm.proc.wait(timeout=20) == 0


@pytest.mark.vm
def test_root_on_disk_persists_what_the_guest_writes(vm_ctx, tiny_disk_guest) -> None:
    from helpers import corral

    g = tiny_disk_guest
    vm_ctx.store.import_image(g.disk, "tinyd", kernel=g.kernel, initrd=g.initrd,
                              cmdline=g.cmdline)  # fmt: skip
    assert vm_ctx.qemu_img.info(g.disk, "qcow2").virtual_size == 256 << 20
    proc = corral(vm_ctx, "launch", "tinyd", "--name", "d1", "--type", "c1m256", "--wait",
                  "--timeout", "120")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "/dev/vda on / type ext4" in corral(vm_ctx, "exec", "d1", "--", "mount").stdout
    corral(vm_ctx, "exec", "d1", "--", "sh", "-c", "echo kept > /root/file && sync")
    assert corral(vm_ctx, "restart", "d1", "--wait", "--timeout", "120").returncode == 0
    assert corral(vm_ctx, "exec", "d1", "--", "cat", "/root/file").stdout == "kept\n"


# The user-mode NIC's MAC when QEMU picks it (the first NIC of a machine gets ...:12:34:56).
USER_MODE_MAC = "52:54:00:12:34:56"


@pytest.mark.vm
def test_network_config_on_user_mode_applies_or_falls_back(
    tiny_guest: BuiltImage, ssh_key: Path, tmp_path: Path
) -> None:
    """A hand-written network-config (flow style, the NIC by MAC under another name) is applied;
    one that names no NIC of the guest leaves it on the user-mode defaults (10.0.2.15)."""
    public_key = ssh_key.with_suffix(".pub").read_text().strip()
    configs = {
        "applied": (
            "network:\n  version: 2\n  ethernets:\n    lan:\n"
            f"      match: {{macaddress: '{USER_MODE_MAC.upper()}'}}\n      set-name: eth0\n"
            "      addresses: [10.0.2.15/24]  # slirp's guest address\n"
            "      gateway4: 10.0.2.2\n      nameservers: {addresses: [10.0.2.3]}\n"
            "      mtu: 1400\n"
        ),
        "fallback": (
            "version: 2\nethernets:\n  eth0:\n    match:\n      macaddress: 52:54:00:99:99:99\n"
            "    addresses: [10.9.9.9/24]\n"
        ),
    }
    with ExitStack() as stack:
        vms = {}
        for name, config in configs.items():
            (tmp_path / name).mkdir()
            seed = tmp_path / name / "seed.iso"
            write_seed_iso(seed, {
                "meta-data": f"instance-id: i-{name}\nlocal-hostname: {name}\n".encode(),
                "user-data": f"#cloud-config\nssh_authorized_keys: [{public_key}]\n".encode(),
                "network-config": config.encode(),
            })  # fmt: skip
            vms[name] = stack.enter_context(_boot(tiny_guest, tmp_path / name, seed))
        for vm in vms.values():
            _wait_ssh(vm, ssh_key, timeout=120)

        def check(vm: Vm, command: str) -> str:
            result = _ssh(vm, ssh_key, command)
            assert result.returncode == 0, (command, result.stderr)
            return result.stdout.decode()

        applied, fallback = vms["applied"], vms["fallback"]
        assert "inet 10.0.2.15/24 " in check(applied, "ip -4 -o addr show dev eth0")
        assert check(applied, "cat /sys/class/net/eth0/mtu").strip() == "1400"
        assert check(applied, "cat /etc/resolv.conf") == "nameserver 10.0.2.3\n"
        assert check(applied, "ip route show default").split()[:3] == ["default", "via", "10.0.2.2"]

        assert "inet 10.0.2.15/24 " in check(fallback, "ip -4 -o addr show dev eth0")
        assert "10.9.9.9" not in check(fallback, "ip -4 -o addr show")
        assert check(fallback, "cat /sys/class/net/eth0/mtu").strip() == "1500"
        assert b"corral-net: no NIC of network-config was found" in fallback.serial()

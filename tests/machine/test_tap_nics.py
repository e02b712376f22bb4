"""Tiny guests on taps of one bridge, in a network namespace made for this module.

Three guests boot together and serve every test here: s1 and s2 configured statically from
the network-config corral renders, d1 by DHCP from a plain dnsmasq on the bridge (a
reservation for its MAC). They reach each other by address and by name, the host (the
namespace) reaches them, and corral's own SSH session runs commands at a guest's address.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral.guest.ready import wait_ready_async
from corral.guest.session import GuestSession
from corral.guest.ssh import ExecResult, SshTarget
from corral.layout import MachineFiles
from corral.machine.spec import DirectBoot, Drive, MachineSpec, TapNic
from corral.machine.vm import Vm
from corral.seed.iso import write_seed_iso
from corral.seed.netconfig import NicConfig, render_network_config
from corral.seed.render import SeedInput, render_seed_files
from netns import Netns, bridge_with_taps, network_namespace

pytestmark = pytest.mark.vm

BRIDGE = "br0"
GATEWAY = "10.80.0.1"
GATEWAY6 = "fd00:80::1"  # the bridge's IPv6 address; dnsmasq advertises its prefix (SLAAC)
DHCP_MTU = 1400  # what dnsmasq tells DHCP guests
STATIC_MTU = 1450  # what s1's network-config asks for


@dataclass(frozen=True)
class Guest:
    name: str
    tap: str
    mac: str
    address: str  # s1, s2: static; d1: its DHCP reservation
    static: bool


GUESTS = (
    Guest("s1", "t1", "52:54:00:80:00:11", "10.80.0.11", static=True),
    Guest("s2", "t2", "52:54:00:80:00:12", "10.80.0.12", static=True),
    Guest("d1", "t3", "52:54:00:80:00:21", "10.80.0.21", static=False),
)


def address6(guest: Guest) -> str:
    """A static guest's IPv6 address (fd00:80::11 for 10.80.0.11)."""
    return f"fd00:80::{guest.address.rsplit('.', 1)[1]}"


S1, S2, D1 = GUESTS


def network_config(guest: Guest) -> bytes:
    if not guest.static:
        return render_network_config([NicConfig(guest.mac)])
    nic = NicConfig(
        guest.mac,
        addresses=(f"{guest.address}/24", f"{address6(guest)}/64"),
        gateway4=GATEWAY,
        nameservers=(GATEWAY,),
        search=("corral",),
        mtu=STATIC_MTU if guest is S1 else None,
    )
    return render_network_config([nic])


def dnsmasq_argv(work: Path) -> list[str]:
    """A plain dnsmasq on the bridge: DHCP (a reservation per guest) and DNS for the names it
    learns from DHCP requests, nothing forwarded upstream. A static guest never asks, and a
    reservation's name enters DNS only with a lease: its name is a host record."""
    argv = [
        "/usr/sbin/dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-hosts",
        "--no-resolv", f"--interface={BRIDGE}", "--bind-interfaces", "--except-interface=lo",
        "--user=root", "--group=root", "--pid-file", f"--dhcp-leasefile={work / 'leases'}",
        "--dhcp-range=10.80.0.100,10.80.0.150,255.255.255.0,1h", "--dhcp-authoritative",
        f"--dhcp-option=option:mtu,{DHCP_MTU}", "--domain=corral", "--local=/corral/",
        "--enable-ra", f"--dhcp-range=::,constructor:{BRIDGE},ra-only,64,1h",
        "--log-dhcp", f"--log-facility={work / 'dnsmasq.log'}",
    ]  # fmt: skip
    for g in GUESTS:
        argv.append(f"--dhcp-host={g.mac},{g.address}")
        if g.static:
            argv.append(f"--host-record={g.name},{g.name}.corral,{g.address}")
    return argv


@dataclass
class Lan:
    ns: Netns
    key: Path
    work: Path
    vms: dict[str, Vm]

    def target(self, guest: Guest) -> SshTarget:
        return SshTarget.at(guest.address, user="root", key=self.key)

    def run(self, guest: Guest, command: str) -> ExecResult:
        """A command in the guest, through corral's SSH session at the guest's address."""

        async def go() -> ExecResult:
            async with await GuestSession.open(self.target(guest)) as session:
                return await session.run(command, timeout=60)

        return self.ns.call_in_thread(asyncio.run, go())

    def check(self, guest: Guest, command: str) -> str:
        result = self.run(guest, command)
        assert result.exit_code == 0, (command, result.stdout, result.stderr)
        return result.stdout.decode()

    def serial(self, guest: Guest) -> str:
        return (self.work / guest.name / "serial.log").read_text(errors="replace")


def _seed(guest: Guest, key: Path, path: Path) -> None:
    seed = SeedInput(
        instance_id=f"i-{guest.name}",
        hostname=guest.name,
        user="root",
        ssh_keys=(key.with_suffix(".pub").read_text().strip(),),
        network_config=network_config(guest),
    )
    write_seed_iso(path, render_seed_files(seed))


def _spec(guest: Guest, files: MachineFiles, image) -> MachineSpec:
    return MachineSpec(
        name=guest.name,
        cpus=1,
        memory_mib=256,
        accelerator="tcg",
        drives=(Drive("seed", files.seed, "raw", readonly=True),),
        forwards=(),
        qmp_socket=files.qmp,
        serial_socket=files.serial_socket,
        serial_log=files.serial_log,
        pidfile=files.pidfile,
        boot=DirectBoot(image.kernel, image.initrd, image.cmdline),
        nics=(TapNic(guest.tap, guest.mac),),
    )


@pytest.fixture(scope="module")
def lan(tiny_guest) -> Iterator[Lan]:
    qemu = shutil.which("qemu-system-x86_64")
    assert qemu is not None
    work = Path(tempfile.mkdtemp(prefix="tn", dir="/tmp"))  # short: socket paths
    vms: dict[str, Vm] = {}
    try:
        key = work / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
        with network_namespace() as ns:
            bridge_with_taps(
                ns, BRIDGE, [f"{GATEWAY}/24", f"{GATEWAY6}/64"], [g.tap for g in GUESTS]
            )
            ns.spawn(*dnsmasq_argv(work), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            lan = Lan(ns, key, work, vms)

            async def boot(guest: Guest) -> None:
                files = MachineFiles(work / guest.name)
                files.dir.mkdir()
                _seed(guest, key, files.seed)
                prefix = ns.argv()
                vms[guest.name] = await Vm.start(qemu, _spec(guest, files, tiny_guest), files,
                                                 prefix=prefix)  # fmt: skip

            async def boot_all() -> None:
                await asyncio.gather(*(boot(g) for g in GUESTS))

            asyncio.run(boot_all())

            async def ready_all() -> None:
                await asyncio.gather(
                    *(wait_ready_async(lan.target(g), timeout=180, alive=vms[g.name].alive)
                      for g in GUESTS)
                )  # fmt: skip

            try:
                ns.call_in_thread(asyncio.run, ready_all())
            except Exception as exc:
                logs = "\n".join(f"--- {g.name}\n{lan.serial(g)[-1500:]}" for g in GUESTS)
                raise AssertionError(f"guests not ready: {exc}\n{logs}") from exc
            try:
                yield lan
            finally:
                for vm in vms.values():
                    vm.kill()
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- static addresses --------------------------------------------------------------------


def test_static_guests_ping_each_other_by_address(lan: Lan) -> None:
    assert " 0% packet loss" in lan.check(S1, f"ping -c 2 -W 5 {S2.address}")
    assert " 0% packet loss" in lan.check(S2, f"ping -c 2 -W 5 {S1.address}")


def test_the_host_reaches_each_guest_at_its_address(lan: Lan) -> None:
    def banner(address: str) -> bytes:
        with socket.create_connection((address, 22), timeout=10) as conn:
            return conn.recv(4)

    for guest in GUESTS:
        assert lan.ns.call_in_thread(banner, guest.address) == b"SSH-", guest


def test_network_config_sets_address_route_resolver_and_mtu(lan: Lan) -> None:
    addresses = lan.check(S1, "ip -4 -o addr show dev eth0")
    assert f"inet {S1.address}/24 " in addresses
    assert lan.check(S1, "ip route show default").split()[:3] == ["default", "via", GATEWAY]
    resolv = lan.check(S1, "cat /etc/resolv.conf").splitlines()
    assert resolv == ["search corral", f"nameserver {GATEWAY}"]
    assert lan.check(S1, "cat /sys/class/net/eth0/mtu").strip() == str(STATIC_MTU)
    assert lan.check(S2, "cat /sys/class/net/eth0/mtu").strip() == "1500"


def test_the_requested_mac_is_the_one_the_guest_sees(lan: Lan) -> None:
    for guest in GUESTS:
        assert lan.check(guest, "cat /sys/class/net/eth0/address").strip() == guest.mac


def test_corral_ssh_session_at_a_guest_address(lan: Lan) -> None:
    """A GuestSession aimed at ADDRESS:22 (no forward) runs commands and copies files."""

    async def go() -> tuple[ExecResult, bytes]:
        async with await GuestSession.open(lan.target(S2)) as session:
            result = await session.run(["hostname"])
            await session.run("echo over-the-bridge > /tmp/f")
            local = lan.work / "copied"
            await session.download("/tmp/f", local)
            return result, local.read_bytes()

    result, copied = lan.ns.call_in_thread(asyncio.run, go())
    assert (result.exit_code, result.stdout) == (0, b"s2\n")
    assert copied == b"over-the-bridge\n"


# --- DHCP and DNS from dnsmasq ------------------------------------------------------------


def test_a_dhcp_guest_gets_its_reservation_route_resolver_and_mtu(lan: Lan) -> None:
    assert f"inet {D1.address}/24 " in lan.check(D1, "ip -4 -o addr show dev eth0")
    assert lan.check(D1, "ip route show default").split()[:3] == ["default", "via", GATEWAY]
    resolv = lan.check(D1, "cat /etc/resolv.conf").splitlines()
    assert resolv == ["search corral", f"nameserver {GATEWAY}"]
    assert lan.check(D1, "cat /sys/class/net/eth0/mtu").strip() == str(DHCP_MTU)
    # It sent its hostname: dnsmasq's lease names it (its reservation gives no name).
    leases = (lan.work / "leases").read_text().split("\n")
    assert any(line.split()[1:4] == [D1.mac, D1.address, D1.name] for line in leases if line)


def test_guests_resolve_each_other_by_name_through_dnsmasq(lan: Lan) -> None:
    # d1's name is the one its DHCP request carried (its reservation has none); s1's a record.
    assert D1.address in lan.check(S1, f"nslookup {D1.name}.corral")
    assert S1.address in lan.check(D1, f"nslookup {S1.name}.corral")
    # The resolver (search corral) finds the short names too.
    assert " 0% packet loss" in lan.check(S1, f"ping -c 1 -W 5 {D1.name}")
    assert " 0% packet loss" in lan.check(D1, f"ping -c 1 -W 5 {S1.name}")


def test_ipv6_static_addresses_and_slaac_from_router_advertisements(lan: Lan) -> None:
    assert f"inet6 {address6(S1)}/64 " in lan.check(S1, "ip -6 -o addr show dev eth0")
    # d1 has no IPv6 in its network-config: the kernel takes dnsmasq's advertised prefix.
    slaac = "fd00:80::5054:ff:fe80:21"  # EUI-64 of 52:54:00:80:00:21
    assert f"inet6 {slaac}/64 " in lan.check(D1, "ip -6 -o addr show dev eth0")
    assert " 0% packet loss" in lan.check(S1, f"ping -6 -c 1 -W 5 {address6(S2)}")
    assert " 0% packet loss" in lan.check(S2, f"ping -6 -c 1 -W 5 {slaac}")

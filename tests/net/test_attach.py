"""The host side of VMs on managed networks (corral.net.attach) without QEMU: taps on the
bridge, DHCP reservations, DNS answers from dnsmasq, published ports (a veth into a second
namespace stands in for the VM). Each test runs in its own network namespace."""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corral.errors import Conflict, InvalidInput, NotFound
from corral.layout import Home
from corral.net import attach as net
from corral.net.manage import reconcile
from corral.net.model import tap_name
from corral.net.registry import home_id
from netns import Netns

SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen()
print("ready", flush=True)
while True:
    c, peer = s.accept()
    c.sendall(b"hello from the vm, you are " + peer[0].encode())
    c.close()
"""


def dns_a(server: str, name: str) -> list[str]:
    """The A records a DNS server answers for name (a hand-made UDP query)."""
    qid = 0x1234
    query = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    query += struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(query, (server, 53))
        reply = s.recv(1500)
    an = struct.unpack(">HHHHHH", reply[:12])[3]
    pos = 12 + len(query) - 12  # the question, echoed back
    out = []
    for _ in range(an):
        pos += 2 if reply[pos] & 0xC0 == 0xC0 else reply.index(b"\0", pos) + 1 - pos
        rtype, _, _, length = struct.unpack(">HHIH", reply[pos : pos + 10])
        pos += 10
        if rtype == 1:
            out.append(socket.inet_ntoa(reply[pos : pos + length]))
        pos += length
    return out


def fetch(addr: str, port: int) -> bytes:
    with socket.create_connection((addr, port), timeout=3) as s:
        return s.recv(200)


def nobody_alive(owner: str) -> bool:
    return False


def link(ns: Netns, name: str) -> dict | None:
    proc = ns.run(["ip", "-j", "-d", "link", "show", name], check=False)
    return json.loads(proc.stdout)[0] if proc.returncode == 0 else None


@pytest.fixture
def web(netns: Netns, home: Path) -> Home:
    proc = netns.corral(home, "network", "create", "web", "--subnet", "10.83.0.0/24",
                        "--mtu", "1400")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return Home(home)


def test_attach_reserves_and_answers_dns_then_detach_removes_it(netns: Netns, web: Home) -> None:
    a = netns.call(net.attach, web, "web", "vm1")
    assert (a.ipv4, a.prefix, a.gateway, a.dns, a.mtu) == ("10.83.0.2", 24, "10.83.0.1",
                                                            "10.83.0.1", 1400)  # fmt: skip
    assert a.mac.startswith("52:54:00:") and a.tap.startswith("crt") and len(a.tap) == 15
    tap = link(netns, a.tap)
    assert tap is not None and tap["master"] == "crl-web" and tap["mtu"] == 1400
    assert tap["linkinfo"]["info_kind"] == "tun"
    files = web.network("web")
    assert files.dhcp_hosts.read_text() == f"{a.mac},10.83.0.2,vm1\n"
    assert netns.call(dns_a, "10.83.0.1", "vm1.corral") == ["10.83.0.2"]

    b = netns.call(net.attach, web, "web", "vm2", mac="52:54:00:AA:bb:01", ip="10.83.0.50")
    assert (b.mac, b.ipv4) == ("52:54:00:aa:bb:01", "10.83.0.50")
    assert netns.call(dns_a, "10.83.0.1", "vm2.corral") == ["10.83.0.50"]
    info = json.loads(netns.corral(web.root, "network", "inspect", "web", "--json").stdout)
    assert [(v["name"], v["mac"], v["ipv4"]) for v in info["vms"]] == [
        ("vm1", a.mac, "10.83.0.2"), ("vm2", b.mac, "10.83.0.50")]  # fmt: skip
    assert netns.call(net.attachments, web, "vm2") == [b]

    rm = netns.corral(web.root, "network", "rm", "web")
    assert rm.returncode == 2 and "in use by vm1, vm2" in rm.stderr

    assert netns.call(net.detach, web, "vm1") == ["web"]
    assert link(netns, a.tap) is None
    assert files.dhcp_hosts.read_text() == f"{b.mac},10.83.0.50,vm2\n"
    assert netns.call(dns_a, "10.83.0.1", "vm1.corral") == []
    assert netns.call(net.detach, web, "vm1") == []  # nothing left: a no-op
    netns.call(net.detach, web, "vm2")
    assert netns.corral(web.root, "network", "rm", "web").returncode == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"ip": "10.83.1.5"}, InvalidInput, "not a host address of network web"),
        ({"ip": "10.83.0.255"}, InvalidInput, "not a host address"),
        ({"ip": "10.83.0.1"}, InvalidInput, "gateway"),
        ({"ip": "10.83.0.2"}, Conflict, "10.83.0.2 is taken"),
        ({"ip": "10.83.0.x"}, InvalidInput, "invalid IPv4 address"),
        ({"mac": "52:54:00:00:00:01"}, Conflict, "MAC 52:54:00:00:00:01 is taken"),
        ({"mac": "53:54:00:00:00:02"}, InvalidInput, "multicast"),
        ({"mac": "52:54:00:00:00:02\n"}, InvalidInput, "invalid MAC"),
        ({"owner": "vm1"}, Conflict, "already has a NIC"),
        ({"owner": "Bad_Name"}, InvalidInput, "invalid VM name"),
        ({"network": "ghost"}, NotFound, "no network named 'ghost'"),
        ({"network": "../x"}, InvalidInput, "invalid network name"),
    ],
)  # fmt: skip
def test_attach_refuses(netns: Netns, web: Home, kwargs: dict, error: type, words: str) -> None:
    netns.call(net.attach, web, "web", "vm1", mac="52:54:00:00:00:01")
    before = sorted(p.name for p in web.network("web").attachments.iterdir())
    owner = kwargs.pop("owner", "vm9")
    network = kwargs.pop("network", "web")
    with pytest.raises(error, match=words):
        netns.call(net.attach, web, network, owner, **kwargs)
    assert sorted(p.name for p in web.network("web").attachments.iterdir()) == before


def test_attach_brings_a_downed_network_back(netns: Netns, web: Home) -> None:
    a = netns.call(net.attach, web, "web", "vm1")
    netns.run(["ip", "link", "del", "crl-web"])  # a host restart took bridge and taps
    netns.run(["ip", "link", "del", a.tap], check=False)
    for pid in netns.pids():
        if Path(f"/proc/{pid}/comm").read_text().strip() == "dnsmasq":
            netns.run(["kill", "-9", str(pid)])
    netns.run(["nft", "delete", "table", "inet", "corral"])
    netns.call(net.attach, web, "web", "vm2")
    assert link(netns, "crl-web") is not None
    assert link(netns, a.tap)["master"] == "crl-web"  # type: ignore[index]
    assert netns.call(dns_a, "10.83.0.1", "vm1.corral") == ["10.83.0.2"]
    netns.run(["nft", "list", "table", "inet", "corral"])


def test_published_port_answers_from_the_host(netns: Netns, web: Home) -> None:
    a = netns.call(net.attach, web, "web", "vm1")
    vm = netns.child()  # the VM: a veth on the bridge, its far end in another namespace
    netns.run(["ip", "link", "add", "vh1", "type", "veth", "peer", "name", "vg1",
               "netns", vm.name])  # fmt: skip
    netns.run(["ip", "link", "set", "vh1", "master", "crl-web", "up"])
    vm.run(["ip", "addr", "add", f"{a.ipv4}/24", "dev", "vg1"])
    vm.run(["ip", "link", "set", "vg1", "up"])
    vm.run(["ip", "route", "add", "default", "via", a.gateway])
    server = vm.popen([sys.executable, "-c", SERVER, a.ipv4, "8080"], stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None and server.stdout.readline() == b"ready\n"
        netns.call(net.publish, web, "vm1", "web", "127.0.0.1", 18080, 8080)
        netns.call(net.publish, web, "vm1", "web", "0.0.0.0", 18081, 8080)
        assert netns.call(fetch, "127.0.0.1", 18080).startswith(b"hello from the vm")
        assert netns.call(fetch, "10.83.0.1", 18081).startswith(b"hello from the vm")
        with pytest.raises(Conflict, match="already published to vm1"):
            netns.call(net.publish, web, "vm1", "web", "127.0.0.1", 18081, 22)
        with pytest.raises(InvalidInput, match="not a host address"):
            netns.call(net.publish, web, "vm1", "web", "127.0.0.1", 18082, 22,
                       guest_ip="192.168.1.1")  # fmt: skip
        with pytest.raises(InvalidInput, match="invalid host address"):
            netns.call(net.publish, web, "vm1", "web", "localhost", 18082, 22)
        # route_localnet is on for crl-web now; the VM still cannot reach the host's loopback.
        secret = netns.popen([sys.executable, "-c", SERVER, "127.0.0.53", "9999"],
                             stdout=subprocess.PIPE)  # fmt: skip
        try:
            assert secret.stdout is not None and secret.stdout.readline() == b"ready\n"
            assert netns.call(fetch, "127.0.0.53", 9999).startswith(b"hello")  # it listens
            assert _vm_reaches_host_loopback(vm, "127.0.0.53", 9999) is False
        finally:
            secret.kill()
            secret.wait()
        netns.call(net.detach, web, "vm1")
        table = netns.run(["nft", "-j", "list", "table", "inet", "corral"]).stdout
        assert '"dnat": {' not in table  # no DNAT rule left (ct status dnat stays)
        with pytest.raises(OSError):
            netns.call(fetch, "127.0.0.1", 18080)
    finally:
        server.kill()
        server.wait()


def _vm_reaches_host_loopback(vm: Netns, addr: str, port: int) -> bool:
    """The attack: a VM routes a packet for 127.x to the host over the bridge."""
    vm.run(["ip", "route", "del", "local", "127.0.0.0/8", "dev", "lo", "table", "local"])
    vm.run(["sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/vg1/route_localnet"])
    vm.run(["ip", "route", "add", f"{addr}/32", "via", "10.83.0.1", "dev", "vg1"])
    code = (
        "import socket, sys\n"
        "try:\n"
        f"    socket.create_connection(({addr!r}, {port}), timeout=1.5).recv(10)\n"
        "    print('reached')\n"
        "except OSError:\n"
        "    print('blocked')\n"
    )
    return vm.run([sys.executable, "-c", code]).stdout.strip() == "reached"


def test_kill_9_during_attach_leaves_nothing_after_reconcile(netns: Netns, web: Home) -> None:
    code = (
        "import sys; from corral.layout import Home; from corral.net.attach import attach; "
        "attach(Home(sys.argv[1]), 'web', sys.argv[2])"
    )
    for n, delay in enumerate([None, 0.05, 0.2, 0.4, 0.8]):
        owner = f"vm{n}"
        proc = netns.popen([sys.executable, "-c", code, str(web.root), owner])
        if delay is None:  # right after the tap appears
            deadline = time.monotonic() + 20
            while proc.poll() is None and not _taps(netns) and time.monotonic() < deadline:
                time.sleep(0.005)
        else:
            time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # The next network command completes nothing half-made: 'creating' attachments go.
        assert netns.corral(web.root, "network", "ls").returncode == 0
        records = {p.stem for p in web.network("web").attachments.glob("*.json")}
        assert set(_taps(netns)) == {tap_name(home_id(web), "web", o) for o in records}
        # The instance layer's reconcile drops those of VMs that no longer exist.
        netns.call(reconcile, web, nobody_alive)
        assert _taps(netns) == []
        assert not list(web.network("web").attachments.glob("*.json"))
        assert web.network("web").dhcp_hosts.read_text() == ""


def _taps(ns: Netns) -> list[str]:
    return [x["ifname"] for x in json.loads(ns.run(["ip", "-j", "link"]).stdout)
            if x["ifname"].startswith("crt")]  # fmt: skip


def test_reattach_brings_back_a_vms_tap_after_a_restart(netns: Netns, web: Home) -> None:
    a = netns.call(net.attach, web, "web", "vm1", uid=1234, gid=1234)  # QEMU's user
    assert link(netns, a.tap)["linkinfo"]["info_data"]["user"] == 1234  # type: ignore[index]
    netns.run(["ip", "link", "del", a.tap])
    netns.run(["ip", "link", "del", "crl-web"])
    assert netns.call(net.reattach, web, "vm1") == [a]
    tap = link(netns, a.tap)
    assert tap is not None and tap["master"] == "crl-web"
    assert tap["linkinfo"]["info_data"]["user"] == 1234
    assert netns.call(net.reattach, web, "nobody") == []


def test_inspect_shows_the_leased_address(netns: Netns, web: Home) -> None:
    a = netns.call(net.attach, web, "web", "vm1")
    # What dnsmasq writes once the guest's DHCP client has asked (no guest here).
    web.network("web").leases.write_text(f"1999999999 {a.mac} {a.ipv4} vm1 01:{a.mac}\n")
    info = json.loads(netns.corral(web.root, "network", "inspect", "web", "--json").stdout)
    assert [(v["name"], v["leased"]) for v in info["vms"]] == [("vm1", a.ipv4)]

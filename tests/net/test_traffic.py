"""Real traffic through corral's rules: NAT out, isolation between networks, an isolated
network with no way out, the host reaching a VM by address. Stand-in VMs are namespaces at the
far end of veths on the bridges; "outside" is another namespace behind an uplink veth. All of it
lives inside the test's namespace."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corral.layout import Home
from corral.net import attach as net
from netns import Netns

SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9000))
s.listen()
print("ready", flush=True)
while True:
    c, peer = s.accept()
    c.sendall(peer[0].encode())
    c.close()
"""
CLIENT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], 9000), timeout=1.5) as s:
        print(s.recv(100).decode())
except OSError as exc:
    print("failed:", type(exc).__name__)
"""


class Lab:
    def __init__(self, ns: Netns, home: Home) -> None:
        self.ns, self.home = ns, home
        self.servers: list[subprocess.Popen[bytes]] = []
        self.n = 0

    def vm(self, network: str, owner: str) -> tuple[Netns, str]:
        """A stand-in VM on `network`: its address from attach, a default route via .1."""
        a = self.ns.call(net.attach, self.home, network, owner)
        child = self.ns.child()
        self.n += 1
        host_end, far_end = f"vh{self.n}", f"vg{self.n}"
        self.ns.run(["ip", "link", "add", host_end, "type", "veth", "peer", "name", far_end,
                     "netns", child.name])  # fmt: skip
        bridge = f"crl-{network}"
        self.ns.run(["ip", "link", "set", host_end, "master", bridge, "up"])
        child.run(["ip", "addr", "add", a.cidr, "dev", far_end])
        child.run(["ip", "link", "set", far_end, "up"])
        gateway = a.gateway or a.dns  # an isolated network gives none: try anyway
        child.run(["ip", "route", "add", "default", "via", gateway])
        return child, a.ipv4

    def serve(self, where: Netns) -> None:
        proc = where.popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE)
        self.servers.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"

    def connect(self, where: Netns | None, addr: str) -> str:
        argv = [sys.executable, "-c", CLIENT, addr]
        ns = where or self.ns
        return ns.run(argv).stdout.strip()

    def close(self) -> None:
        for proc in self.servers:
            proc.kill()
            proc.wait()


@pytest.fixture
def lab(netns: Netns, home: Path):
    for name, subnet, extra in (("a", "10.84.0.0/24", ()), ("b", "10.85.0.0/24", ()),
                                ("q", "10.86.0.0/24", ("--isolated",))):  # fmt: skip
        proc = netns.corral(home, "network", "create", name, "--subnet", subnet, *extra)
        assert proc.returncode == 0, proc.stderr
    made = Lab(netns, Home(home))
    try:
        yield made
    finally:
        made.close()


def test_nat_isolation_and_no_way_out(lab: Lab) -> None:
    ns = lab.ns
    outside = ns.child()  # the world beyond the host's uplink
    ns.run(["ip", "link", "add", "up0", "type", "veth", "peer", "name", "wan0", "netns",
            outside.name])  # fmt: skip
    ns.run(["ip", "addr", "add", "172.31.99.1/24", "dev", "up0"])
    ns.run(["ip", "link", "set", "up0", "up"])
    outside.run(["ip", "addr", "add", "172.31.99.2/24", "dev", "wan0"])
    outside.run(["ip", "link", "set", "wan0", "up"])
    lab.serve(outside)

    va, ip_a = lab.vm("a", "va")
    va2, ip_a2 = lab.vm("a", "va2")
    vb, ip_b = lab.vm("b", "vb")
    vq, ip_q = lab.vm("q", "vq")
    vq2, ip_q2 = lab.vm("q", "vq2")
    for server in (va, va2, vb, vq2):
        lab.serve(server)

    # NAT: the outside world sees the host's uplink address, not the VM's.
    assert lab.connect(va, "172.31.99.2") == "172.31.99.1"
    # Same network: direct. The host reaches a VM by its address.
    assert lab.connect(va, ip_a2) == ip_a
    assert lab.connect(None, ip_a) == "10.84.0.1"
    # Different networks: never, either way.
    assert lab.connect(va, ip_b).startswith("failed")
    assert lab.connect(vb, ip_a).startswith("failed")
    assert lab.connect(vq, ip_a).startswith("failed")
    # Isolated: no way out, but its VMs and the host reach each other.
    assert lab.connect(vq, "172.31.99.2").startswith("failed")
    assert lab.connect(vq, ip_q2) == ip_q
    assert lab.connect(None, ip_q2) == "10.86.0.1"
    # The outside cannot open connections to a NAT network's VMs (only to published ports).
    outside.run(["ip", "route", "add", "10.84.0.0/24", "via", "172.31.99.1"])
    assert lab.connect(outside, ip_a).startswith("failed")
    # ... and a published port answers from outside through the uplink.
    ns.call(net.publish, lab.home, "va", "a", "0.0.0.0", 9000, 9000)
    assert lab.connect(outside, "172.31.99.1") == "172.31.99.2"


def test_ipv6_router_advertisements_give_vms_an_address(netns: Netns, home: Path) -> None:
    proc = netns.corral(home, "network", "create", "six", "--subnet", "10.87.0.0/24",
                        "--ipv6", "fd00:87::/64")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lab = Lab(netns, Home(home))
    vm, _ = lab.vm("six", "v6")
    deadline = time.monotonic() + 20
    addrs: list[str] = []
    while time.monotonic() < deadline:
        data = json.loads(vm.run(["ip", "-j", "-6", "addr", "show", "dev", "vg1"]).stdout)
        addrs = [a["local"] for a in data[0]["addr_info"] if a.get("scope") == "global"]
        if any(a.startswith("fd00:87::") for a in addrs):
            break
        time.sleep(0.2)
    assert any(a.startswith("fd00:87::") for a in addrs), addrs
    routes = json.loads(vm.run(["ip", "-j", "-6", "route", "show", "default"]).stdout)
    assert routes and routes[0]["dev"] == "vg1"  # the bridge is its IPv6 router

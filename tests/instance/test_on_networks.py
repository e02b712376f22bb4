"""VMs on managed networks through the `corral` CLI, in a network namespace made for this
module: launch --network (DHCP, or a requested address and MAC), --publish, inspect, exec and
cp at the VM's address, isolation between networks, stop/start/rm, failed and killed launches.

Three tiny guests boot together and serve the tests that need a running guest: a1 (DHCP) and
a2 (static address and MAC, port 8080 published to its 80) on n1, b1 on n2. The other tests
make VMs that are never waited for (QEMU started, or --no-start).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from conftest import CACHE, TINY
from corral.config import Config
from corral.context import Context
from corral.layout import Home
from corral.net.caps import NEED_MESSAGE
from corral.net.registry import home_id
from netns import Netns, network_namespace
from seed.test_iso import read_seed_iso

pytestmark = pytest.mark.vm

ENV = {"CORRAL_CACHE_DIR": str(CACHE / "host")}
A2_IP, A2_MAC = "10.91.0.50", "52:54:00:91:00:50"


@dataclass
class World:
    ns: Netns
    home: Path

    def corral(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return self.ns.corral(self.home, *args, env=ENV, **kwargs)  # type: ignore[arg-type]

    def ok(self, *args: str) -> str:
        proc = self.corral(*args)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc.stdout

    def exec(self, vm: str, command: str) -> subprocess.CompletedProcess[str]:
        return self.corral("exec", vm, "--", "sh", "-c", command)

    def inspect(self, vm: str) -> dict:
        return json.loads(self.ok("inspect", vm, "--json"))

    def address(self, vm: str) -> str:
        return self.inspect(vm)["address"]

    def our_links(self) -> list[str]:
        """Interfaces whose alias says this state directory made them (bridges and taps)."""
        links = json.loads(self.ns.run(["ip", "-j", "-d", "link", "show"]).stdout)
        tag = f"corral {home_id_of(self.home)} tap "
        return [link["ifname"] for link in links if link.get("ifalias", "").startswith(tag)]

    def dnat_rules(self) -> list[dict]:
        """The rules of corral's table that DNAT (published ports)."""
        proc = self.ns.run(["nft", "-j", "list", "table", "inet", "corral"], check=False)
        if proc.returncode != 0:
            return []
        items = json.loads(proc.stdout)["nftables"]
        return [i["rule"] for i in items if "rule" in i
                and any("dnat" in e for e in i["rule"]["expr"])]  # fmt: skip

    def network_vms(self, network: str) -> list[str]:
        return [v["name"] for v in json.loads(self.ok("network", "inspect", network, "--json"))
                ["vms"]]  # fmt: skip


def cmdline(pid: int) -> bytes:
    """A process's command line; empty once it has gone (it may, between listing and reading)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def home_id_of(home: Path) -> str:
    return home_id(Home(home))


def make_world(ns: Netns, tiny_guest) -> tuple[World, Path]:
    home = Path(tempfile.mkdtemp(prefix="cw", dir="/tmp"))  # short: socket paths
    ctx = Context(replace(Config(), home=home, cache_dir=CACHE / "host"))
    ctx.store.import_image(tiny_guest.disk, TINY, kernel=tiny_guest.kernel,
                           initrd=tiny_guest.initrd, cmdline=tiny_guest.cmdline,
                           default_user=tiny_guest.default_user)  # fmt: skip
    return World(ns, home), home


@pytest.fixture(scope="module")
def world(tiny_guest) -> Iterator[World]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    with network_namespace("cv") as ns:
        w, home = make_world(ns, tiny_guest)
        try:
            w.ok("network", "create", "n1", "--subnet", "10.91.0.0/24")
            w.ok("network", "create", "n2", "--subnet", "10.92.0.0/24")
            launches = {
                "a1": ["--network", "n1"],
                "a2": ["--network", f"n1,ip={A2_IP},mac={A2_MAC}", "--publish", "8080:80"],
                "b1": ["--network", "n2"],
            }
            procs = [
                ns.corral_popen(home, "launch", TINY, "--name", name, "--type", "c1m256", *args)
                for name, args in launches.items()
            ]
            for proc in procs:
                _, err = proc.communicate(timeout=120)
                assert proc.returncode == 0, err
            waits = [ns.corral_popen(home, "wait", name, "--timeout", "240")
                     for name in launches]  # fmt: skip
            for name, proc in zip(launches, waits, strict=True):
                _, err = proc.communicate(timeout=300)
                assert proc.returncode == 0, (name, err)
            yield w
        finally:
            for files in (home / "instances").glob("*"):
                w.corral("rm", "-f", files.name)
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def spare(tiny_guest) -> Iterator[World]:
    """A namespace and state directory of its own, for tests that make and break VMs."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    with network_namespace("cs") as ns:
        w, home = make_world(ns, tiny_guest)
        try:
            yield w
        finally:
            for files in (home / "instances").glob("*"):
                w.corral("rm", "-f", files.name)
            shutil.rmtree(home, ignore_errors=True)


# --- running guests ------------------------------------------------------------------------


def test_two_vms_on_one_network_ping_each_other_by_name_and_address(world: World) -> None:
    a1 = world.address("a1")
    for vm, peer in (("a1", "a2"), ("a2", "a1"), ("a1", A2_IP), ("a2", a1)):
        proc = world.exec(vm, f"ping -c 1 -W 5 {peer}")
        assert proc.returncode == 0 and " 0% packet loss" in proc.stdout, (vm, peer, proc)
    assert A2_IP in world.exec("a1", "nslookup a2.corral").stdout


def test_a_requested_address_and_mac_are_honoured(world: World) -> None:
    assert world.exec("a2", "cat /sys/class/net/eth0/address").stdout.strip() == A2_MAC
    assert f"inet {A2_IP}/24 " in world.exec("a2", "ip -4 -o addr show dev eth0").stdout
    nic = world.inspect("a2")["networks"][0]
    assert (nic["network"], nic["mac"], nic["ipv4"], nic["addresses"]) == (
        "n1", A2_MAC, A2_IP, [A2_IP])  # fmt: skip
    assert nic["leased"] == []  # configured statically from corral's network-config: no DHCP


def test_inspect_and_ls_show_each_nic_with_its_leased_address(world: World) -> None:
    a1 = world.inspect("a1")
    assert a1["ssh_port"] == 0 and a1["forwards"] == []
    (nic,) = a1["networks"]
    assert nic["network"] == "n1" and nic["mac"].startswith("52:54:00:")
    assert nic["leased"] == [nic["ipv4"]] == [a1["address"]]  # DHCP: the reservation
    listed = {i["name"]: i for i in json.loads(world.ok("ls", "--json"))}
    assert listed["a2"]["networks"][0]["ipv4"] == A2_IP
    assert listed["a2"]["published"] == ["127.0.0.1:8080->80/tcp"]
    assert listed["b1"]["networks"][0]["network"] == "n2"


def test_the_host_reaches_a_vm_at_its_address(world: World, tmp_path: Path) -> None:
    def banner(address: str) -> bytes:
        with socket.create_connection((address, 22), timeout=10) as conn:
            return conn.recv(4)

    assert world.ns.call_in_thread(banner, world.address("a1")) == b"SSH-"
    (tmp_path / "up").write_text("over the bridge\n")
    world.ok("cp", str(tmp_path / "up"), "a1:/tmp/up")
    world.ok("cp", "a1:/tmp/up", str(tmp_path / "down"))
    assert (tmp_path / "down").read_text() == "over the bridge\n"


def test_a_published_port_answers_from_the_host(world: World) -> None:
    serve = "mkdir -p /w && echo hello-from-a2 > /w/index.html && httpd -p 80 -h /w"
    assert world.exec("a2", serve).returncode == 0

    def get(url: str) -> bytes:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as reply:
                    return reply.read()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    assert world.ns.call_in_thread(get, "http://127.0.0.1:8080/") == b"hello-from-a2\n"
    assert len(world.dnat_rules()) == 2  # prerouting and output, both for a2 in corral's table


def test_vms_on_two_networks_cannot_reach_each_other(world: World) -> None:
    b1, a1 = world.address("b1"), world.address("a1")
    assert world.exec("a1", f"ping -c 1 -W 2 {b1}").returncode != 0
    assert world.exec("b1", f"ping -c 1 -W 2 {a1}").returncode != 0
    assert world.exec("b1", "ping -c 1 -W 2 a1.corral").returncode != 0


# --- VMs that are not waited for -----------------------------------------------------------


def test_network_rm_is_refused_while_a_vm_is_attached_and_works_after_rm(spare: World) -> None:
    spare.ok("network", "create", "n3", "--subnet", "10.93.0.0/24")
    mine = spare.home / "mine.yaml"
    mine.write_text("version: 2\nethernets: {}\n")
    launch = ("launch", TINY, "--name", "c1", "--type", "c1m256", "--network", "n3", "--no-start")
    proc = spare.corral(*launch, "--network-config", str(mine))
    assert proc.returncode == 0, proc.stderr
    assert "using your --network-config as given" in proc.stderr  # the user's wins: said so
    seed = read_seed_iso(spare.home / "instances" / "c1" / "seed.iso")
    assert seed["network-config"] == mine.read_bytes()
    refused = spare.corral("network", "rm", "n3")
    assert refused.returncode == 2 and "in use by c1" in refused.stderr
    spare.ok("rm", "c1")
    assert spare.our_links() == []
    spare.ok("network", "rm", "n3")


def test_stop_keeps_the_nic_start_brings_its_tap_back_rm_removes_it(spare: World) -> None:
    spare.ok("network", "create", "n4", "--subnet", "10.94.0.0/24")
    spare.ok("launch", TINY, "--name", "d1", "--type", "c1m256", "--network", "n4")
    (tap,) = spare.our_links()
    spare.ok("stop", "--force", "d1")
    assert spare.network_vms("n4") == ["d1"]
    spare.ns.run(["ip", "link", "del", tap])  # as a host restart would
    spare.ok("start", "d1")
    assert spare.our_links() == [tap]
    assert spare.inspect("d1")["state"] == "running"
    spare.ok("rm", "-f", "d1")
    assert spare.our_links() == [] and spare.network_vms("n4") == []


def test_a_failed_launch_leaves_no_tap_reservation_or_rule(spare: World) -> None:
    spare.ok("network", "create", "iso", "--subnet", "10.95.0.0/24", "--isolated")
    cases = [
        (["--network", "iso", "--publish", "8081:80"], "isolated: it publishes no ports"),
        (["--network", "iso,ip=10.96.0.5"], "not a host address of network iso"),
        (["--network", "iso", "--forward", "8082:80"], "--forward needs the user-mode NIC"),
        (["--network", "ghost"], "no network named 'ghost'"),
    ]
    for args, words in cases:
        proc = spare.corral("launch", TINY, "--name", "e1", "--type", "c1m256", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert words in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert not (spare.home / "instances" / "e1").exists()
        assert spare.our_links() == [] and spare.network_vms("iso") == []
    assert spare.dnat_rules() == []


def test_kill_9_during_a_launch_with_network_leaves_nothing(spare: World) -> None:
    spare.ok("network", "create", "n5", "--subnet", "10.97.0.0/24")
    home = spare.home
    attachments = Home(home).network("n5").attachments

    points = {
        "record written": lambda name: (home / "instances" / name / "instance.json").exists(),
        "attachment written": lambda name: Home(home).network("n5").attachment(name).exists(),
        "tap made": lambda name: bool(spare.our_links()),
        "qemu started": lambda name: (home / "instances" / name / "qemu.pid").exists(),
    }
    landed = []
    for index, (point, reached) in enumerate(points.items()):
        name = f"k{index}"
        launch = ("launch", TINY, "--name", name, "--type", "c1m256", "--network", "n5")
        proc = spare.ns.corral_popen(home, *launch, "--publish", f"{9000 + index}:80")
        deadline = time.monotonic() + 60
        while proc.poll() is None and not reached(name) and time.monotonic() < deadline:
            time.sleep(0.002)
        if proc.poll() is None:
            landed.append(point)
            os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        assert proc.returncode in (0, -signal.SIGKILL), err
        spare.ok("ls")  # the next command cleans up
        left = home / "instances" / name / "instance.json"
        assert not (home / "instances" / name).exists(), (point, proc.returncode, left.exists()
                                                          and left.read_text())  # fmt: skip
        assert spare.our_links() == [], point
        assert not attachments.exists() or list(attachments.iterdir()) == [], point
        assert attachments.parent.is_dir()  # the network itself stays
        assert spare.network_vms("n5") == [], point
        assert spare.dnat_rules() == [], point
        assert not [p for p in spare.ns.pids() if b"qemu" in cmdline(p)], point
    assert len(landed) >= 2, landed  # most kills landed midway, not after the launch ended


def test_without_net_admin_launch_network_fails_in_one_line_and_user_mode_works(
    spare: World,
) -> None:
    spare.ok("network", "create", "n6", "--subnet", "10.98.0.0/24")
    drop = ("setpriv", "--inh-caps=-all", "--bounding-set=-net_admin")
    proc = spare.ns.corral(spare.home, "launch", TINY, "--name", "f1", "--type", "c1m256",
                           "--network", "n6", env=ENV, prefix=drop)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == f"error: {NEED_MESSAGE}"
    assert not (spare.home / "instances" / "f1").exists()
    proc = spare.ns.corral(spare.home, "launch", TINY, "--name", "f2", "--type", "c1m256",
                           env=ENV, prefix=drop)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert spare.inspect("f2")["ssh_port"] > 0
    spare.ok("rm", "-f", "f2")


def test_a_vm_on_a_network_and_on_a_tap_of_its_own(spare: World) -> None:
    """--network NICs first, then --tap NICs; rm removes corral's tap and leaves the caller's."""
    spare.ok("network", "create", "n7", "--subnet", "10.99.0.0/24")
    spare.ns.run(["ip", "tuntap", "add", "dev", "mytap0", "mode", "tap"])
    spare.ok("launch", TINY, "--name", "g1", "--type", "c1m256", "--network", "n7",
             "--tap", "mytap0,mac=52:54:00:99:00:01")  # fmt: skip
    (ours,) = spare.our_links()
    view = spare.inspect("g1")
    assert [(n["network"], n["tap"]) for n in view["nics"]] == [("n7", ours), (None, "mytap0")]
    assert view["nics"][1]["mac"] == "52:54:00:99:00:01"
    argv = (spare.home / "instances" / "g1" / "qemu.stderr").read_text().splitlines()[0]
    assert argv.index(f"ifname={ours}") < argv.index("ifname=mytap0")
    assert "hostfwd" not in argv
    spare.ok("rm", "-f", "g1")
    assert spare.our_links() == []
    assert spare.ns.run(["ip", "link", "show", "mytap0"], check=False).returncode == 0


def test_a_vm_on_taps_alone_has_no_ssh_port_and_says_why_exec_cannot_reach_it(
    spare: World,
) -> None:
    spare.ns.run(["ip", "tuntap", "add", "dev", "mytap1", "mode", "tap"])
    spare.ok("launch", TINY, "--name", "h1", "--type", "c1m256", "--tap", "mytap1")
    assert spare.inspect("h1")["ssh_port"] == 0  # no user-mode NIC: no port held for nothing
    proc = spare.exec("h1", "true")
    assert proc.returncode == 2
    assert "has no SSH forward, and corral knows no address of it" in proc.stderr
    spare.ok("rm", "-f", "h1")

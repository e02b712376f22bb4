"""`corral network create|ls|inspect|rm|up` on real bridges, dnsmasq and nftables, each test
in its own network namespace."""

from __future__ import annotations

import json
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from netns import Netns

FOREIGN = {"nftables": [
    {"add": {"table": {"family": "inet", "name": "theirs"}}},
    {"add": {"chain": {"family": "inet", "table": "theirs", "name": "fwd", "type": "filter",
                       "hook": "forward", "prio": 5, "policy": "accept"}}},
    {"add": {"rule": {"family": "inet", "table": "theirs", "chain": "fwd", "expr": [
        {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "eth9"}},
        {"counter": None}, {"accept": None}]}}},
]}  # fmt: skip


def ruleset(ns: Netns) -> str:
    return ns.run(["nft", "-j", "list", "ruleset"]).stdout


def links(ns: Netns) -> list[str]:
    data = json.loads(ns.run(["ip", "-j", "link"]).stdout)
    return sorted(link["ifname"] for link in data)


def dnsmasqs(ns: Netns) -> list[int]:
    return [p for p in ns.pids() if Path(f"/proc/{p}/comm").read_text().strip() == "dnsmasq"]


def ok(proc) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def refused(proc, words: str, code: int = 2) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and words in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert all(ln.startswith(("error: ", "hint: ")) for ln in lines), proc.stderr


def test_create_inspect_rm_leave_the_ruleset_as_it_was(netns: Netns, home: Path) -> None:
    netns.run(["nft", "-j", "-f", "-"], input=json.dumps(FOREIGN))
    before, links_before = ruleset(netns), links(netns)
    ok(netns.corral(home, "network", "create", "web", "--subnet", "10.81.0.0/24"))
    ok(netns.corral(home, "network", "create", "iso", "--isolated", "--ipv6",
                    "fd00:81::/64", "--mtu", "1400", "--domain", "lab.test"))  # fmt: skip

    listed = json.loads(ok(netns.corral(home, "network", "ls", "--json")))
    assert [(n["name"], n["up"], n["vms"]) for n in listed] == [("iso", True, 0), ("web", True, 0)]
    info = json.loads(ok(netns.corral(home, "network", "inspect", "web", "--json")))
    assert info["bridge"] == "crl-web" and info["gateway"] == "10.81.0.1"
    assert (info["dhcp_start"], info["dhcp_end"]) == ("10.81.0.128", "10.81.0.254")
    assert info["nat"] and not info["isolated"] and info["vms"] == []
    iso = json.loads(ok(netns.corral(home, "network", "inspect", "iso", "--json")))
    assert iso["gateway6"] == "fd00:81::1" and not iso["nat"] and iso["mtu"] == 1400

    addrs = json.loads(netns.run(["ip", "-j", "addr", "show", "crl-iso"]).stdout)[0]
    assert addrs["mtu"] == 1400
    assert {"10.80.0.1", "fd00:81::1"} <= {a["local"] for a in addrs["addr_info"]}
    table = json.loads(netns.run(["nft", "-j", "list", "table", "inet", "corral"]).stdout)
    rules = [r["rule"] for r in table["nftables"] if "rule" in r]
    masq = [r for r in rules if r["chain"] == "postrouting"]
    assert len(masq) == 1 and "10.81.0.0" in json.dumps(masq)  # web only: iso has no NAT
    assert len(dnsmasqs(netns)) == 2
    assert netns.run(["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip() == "1"
    for path in (home / "networks", home / "networks" / "web"):
        assert path.stat().st_mode & 0o777 == 0o700  # private: leases, VM names and MACs
    assert (home / "networks" / "web" / "dnsmasq.conf").stat().st_mode & 0o777 == 0o600
    text = ok(netns.corral(home, "network", "inspect", "web"))
    assert "10.81.0.128 - 10.81.0.254" in text

    ok(netns.corral(home, "network", "rm", "web"))
    ok(netns.corral(home, "network", "rm", "iso"))
    assert ruleset(netns) == before  # the foreign table untouched, corral's gone
    assert links(netns) == links_before
    assert dnsmasqs(netns) == []
    assert list((home / "networks").iterdir()) == []


def test_default_subnet_avoids_routes_and_other_networks(netns: Netns, home: Path) -> None:
    netns.run(["ip", "link", "add", "dummy0", "type", "bridge"])
    netns.run(["ip", "addr", "add", "10.80.0.5/16", "dev", "dummy0"])
    netns.run(["ip", "link", "set", "dummy0", "up"])
    ok(netns.corral(home, "network", "create", "a"))
    ok(netns.corral(home, "network", "create", "b"))
    nets = {n["name"]: n["subnet"] for n in json.loads(ok(netns.corral(home, "network", "ls",
                                                                       "--json")))}  # fmt: skip
    assert nets == {"a": "10.81.0.0/24", "b": "10.81.1.0/24"}


def test_concurrent_creates_get_different_subnets(netns: Netns, home: Path) -> None:
    procs = [netns.corral_popen(home, "network", "create", f"n{i}") for i in range(3)]
    for proc in procs:
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    nets = json.loads(ok(netns.corral(home, "network", "ls", "--json")))
    assert sorted(n["subnet"] for n in nets) == ["10.80.0.0/24", "10.80.1.0/24", "10.80.2.0/24"]
    assert all(n["up"] for n in nets)


def test_overlaps_are_refused_with_nothing_made(netns: Netns, home: Path) -> None:
    netns.run(["ip", "link", "add", "dummy0", "type", "bridge"])
    netns.run(["ip", "link", "set", "dummy0", "up"])
    netns.run(["ip", "route", "add", "192.168.40.0/22", "dev", "dummy0"])
    ok(netns.corral(home, "network", "create", "a", "--subnet", "10.90.0.0/24"))
    before = (ruleset(netns), links(netns))
    refused(netns.corral(home, "network", "create", "b", "--subnet", "192.168.41.0/24"),
            "overlaps 192.168.40.0/22, a route this host already has")  # fmt: skip
    refused(netns.corral(home, "network", "create", "b", "--subnet", "10.90.0.128/25"),
            "overlaps network a")  # fmt: skip
    refused(netns.corral(home, "network", "create", "a", "--subnet", "10.91.0.0/24"),
            "already exists")  # fmt: skip
    assert (ruleset(netns), links(netns)) == before
    assert sorted(p.name for p in (home / "networks").iterdir()) == ["a"]


@pytest.mark.parametrize(
    ("words", "args"),
    [
        ("invalid network name", ["create", "Bad_Name"]),
        ("invalid network name", ["create", "../x"]),
        ("invalid network name", ["create", "a\nb"]),
        ("invalid network name", ["create", "x" * 40]),
        ("invalid subnet", ["create", "n", "--subnet", "10.0.0.1/24"]),
        ("invalid subnet", ["create", "n", "--subnet", "8.8.8.0/24"]),
        ("invalid subnet", ["create", "n", "--subnet", "10.0.0.0/8"]),
        ("invalid subnet", ["create", "n", "--subnet", "10.0.0.0/24; rm -rf /"]),
        ("invalid IPv6 subnet", ["create", "n", "--ipv6", "2001:db8::/64"]),
        ("invalid IPv6 subnet", ["create", "n", "--ipv6", "fd00::/48"]),
        ("invalid domain", ["create", "n", "--domain", "a..b"]),
        ("invalid domain", ["create", "n", "--domain", "x/#\nserver=1.2.3.4"]),
        ("invalid MTU", ["create", "n", "--mtu", "100"]),
        ("invalid MTU", ["create", "n", "--ipv6", "fd00:1::/64", "--mtu", "1000"]),
        ("no network named 'ghost'", ["inspect", "ghost"]),
        ("no network named 'ghost'", ["rm", "ghost"]),
        ("no network named 'ghost'", ["up", "ghost"]),
    ],
)  # fmt: skip
def test_bad_input_is_refused(netns: Netns, home: Path, words: str, args: list[str]) -> None:
    before = (ruleset(netns), links(netns))
    refused(netns.corral(home, "network", *args), words)
    assert (ruleset(netns), links(netns)) == before
    assert not (home / "networks").exists() or list((home / "networks").iterdir()) == []


def test_without_cap_net_admin_one_line(netns: Netns, home: Path) -> None:
    ok(netns.corral(home, "network", "create", "a"))
    drop = ("setpriv", "--inh-caps=-all", "--bounding-set=-net_admin")
    for args in (("create", "b"), ("rm", "a"), ("up",)):
        proc = netns.corral(home, "network", *args, prefix=drop)
        refused(proc, "managed networks need CAP_NET_ADMIN")
        assert "user-mode networking keeps working" in proc.stderr
    # Reading needs no capability.
    assert json.loads(ok(netns.corral(home, "network", "ls", "--json", prefix=drop)))[0]["up"]


def test_netlink_eperm_is_the_same_one_line(netns: Netns, home: Path) -> None:
    """Past the capability check (e.g. a capability lost in between), netlink's EPERM and
    nft's refusal become the same error, not a traceback."""
    code = (
        "from corral.net import links, nft\n"
        "from corral.net.caps import NeedsNetAdmin\n"
        "for step in (lambda: links.make_bridge('crl-x', 'a', 1500, []),\n"
        "             lambda: nft.apply(nft.ruleset([], []))):\n"
        "    try:\n"
        "        step()\n"
        "    except NeedsNetAdmin as exc:\n"
        "        print('refused:', exc)\n"
    )
    drop = ["setpriv", "--inh-caps=-all", "--bounding-set=-net_admin"]
    out = netns.run([*drop, sys.executable, "-c", code]).stdout.splitlines()
    assert out == ["refused: managed networks need CAP_NET_ADMIN (run as root, or with that "
                   "capability); user-mode networking keeps working"] * 2  # fmt: skip
    assert "crl-x" not in links(netns)


def test_up_recreates_what_a_restart_took_away(netns: Netns, home: Path) -> None:
    ok(netns.corral(home, "network", "create", "a", "--subnet", "10.82.0.0/24"))
    # A host restart: no dnsmasq, no bridge, no rules.
    for pid in dnsmasqs(netns):
        netns.run(["kill", "-9", str(pid)])
    netns.run(["ip", "link", "del", "crl-a"])
    netns.run(["nft", "delete", "table", "inet", "corral"])
    time.sleep(0.1)
    listed = json.loads(ok(netns.corral(home, "network", "ls", "--json")))
    assert listed[0]["up"] is False
    assert "network a is up on crl-a" in ok(netns.corral(home, "network", "up"))
    assert json.loads(ok(netns.corral(home, "network", "ls", "--json")))[0]["up"] is True
    assert "crl-a" in links(netns) and len(dnsmasqs(netns)) == 1
    netns.run(["nft", "list", "table", "inet", "corral"])


def test_kill_9_during_create_leaves_nothing_after_the_next_command(
    netns: Netns, home: Path
) -> None:
    netns.run(["nft", "-j", "-f", "-"], input=json.dumps(FOREIGN))
    before, links_before = ruleset(netns), links(netns)
    rng = random.Random(13)
    # Kill at varied points, observed from outside (no hook in corral): once the record is
    # written, once the bridge exists, once corral's table exists, once dnsmasq has written
    # its pid; then at random times.
    points: list[Callable[[str], bool] | float] = [
        lambda name: (home / "networks" / name / "network.json").exists(),
        lambda name: f"crl-{name}" in links(netns),
        lambda name: (
            netns.run(["nft", "list", "table", "inet", "corral"], check=False).returncode == 0
        ),
        lambda name: (home / "networks" / name / "dnsmasq.pid").exists(),
        *(rng.uniform(0.05, 0.6) for _ in range(4)),
    ]
    midway = 0
    for n, point in enumerate(points):
        name = f"k{n}"
        proc = netns.corral_popen(home, "network", "create", name)
        if callable(point):
            deadline = time.monotonic() + 20
            while proc.poll() is None and not point(name) and time.monotonic() < deadline:
                time.sleep(0.002)
        else:
            time.sleep(point)
        delay = point if not callable(point) else f"point {n}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        record = home / "networks" / name / "network.json"
        midway += record.exists() and json.loads(record.read_text())["state"] == "creating"
        # The next command cleans up (or the create had finished: then rm removes it).
        ok(netns.corral(home, "network", "ls"))
        leftover = json.loads(ok(netns.corral(home, "network", "ls", "--json")))
        for net in leftover:
            ok(netns.corral(home, "network", "rm", net["name"]))
        assert ruleset(netns) == before, f"kill after {delay}"
        assert links(netns) == links_before, f"kill after {delay}"
        assert dnsmasqs(netns) == [], f"kill after {delay}"
        assert list((home / "networks").iterdir()) == []
    assert midway >= 2  # the kills did land in the middle, not only before or after


def test_kill_9_during_rm_is_finished_by_the_next_command(netns: Netns, home: Path) -> None:
    netns.run(["nft", "-j", "-f", "-"], input=json.dumps(FOREIGN))
    before, links_before = ruleset(netns), links(netns)
    for n, delay in enumerate([0.0, 0.15, 0.3, 0.5, 0.8]):
        ok(netns.corral(home, "network", "create", f"r{n}"))
        proc = netns.corral_popen(home, "network", "rm", f"r{n}")
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left = json.loads(ok(netns.corral(home, "network", "ls", "--json")))
        if left:  # killed before it began: the network is whole and rm works
            assert [(x["name"], x["up"]) for x in left] == [(f"r{n}", True)]
            ok(netns.corral(home, "network", "rm", f"r{n}"))
        assert ruleset(netns) == before, f"kill after {delay}"
        assert links(netns) == links_before, f"kill after {delay}"
        assert dnsmasqs(netns) == []

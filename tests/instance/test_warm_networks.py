"""Warm clones on a managed network, in a network namespace made for this module: each clone
takes its own MAC and address (a DHCP lease, or the static one asked for), never the
template's, and the clones reach each other."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import TINY
from instance.test_on_networks import World, make_world
from netns import network_namespace

pytestmark = pytest.mark.vm

STATIC = "10.93.0.77"


@pytest.fixture(scope="module")
def world(tiny_guest) -> Iterator[World]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    with network_namespace("cw") as ns:
        w, home = make_world(ns, tiny_guest)
        try:
            w.ok("network", "create", "n1", "--subnet", "10.93.0.0/24")
            w.ok("launch", TINY, "--name", "tmpl", "--type", "c1m256", "--network", "n1",
                 "--wait", "--timeout", "240")  # fmt: skip
            w.ok("snapshot", "tmpl", "--memory", "--as", "tw")  # it runs on, on its address
            yield w
        finally:
            for files in (home / "instances").glob("*"):
                w.corral("rm", "-f", files.name)
            shutil.rmtree(home, ignore_errors=True)


def guest_address(w: World, vm: str) -> str:
    proc = w.exec(vm, "ip -4 -o addr show dev eth0 | awk '{print $4}'")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def guest_mac(w: World, vm: str) -> str:
    proc = w.exec(vm, "cat /sys/class/net/eth0/address")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_clones_on_a_network_get_their_own_addresses(world: World) -> None:
    w = world
    template_ip = w.address("tmpl")
    w.ok("launch", "tw", "--name", "k1", "--network", "n1", "--wait", "--timeout", "120")
    w.ok("launch", "tw", "--name", "k2", "--network", f"n1,ip={STATIC}", "--wait",
         "--timeout", "120")  # fmt: skip
    # Before anything talks to the template again: the bridge still sends its MAC to its own
    # tap (a clone announcing the saved MAC would have taken it over).
    tmpl = w.inspect("tmpl")["nics"][0]
    fdb = json.loads(w.ns.run(["bridge", "-j", "fdb", "show"]).stdout)
    ports = {e.get("ifname") for e in fdb if e.get("mac") == tmpl["mac"] and "master" in e}
    assert ports <= {tmpl["tap"]}, (ports, tmpl)
    k1 = w.inspect("k1")
    assert k1["address"] != template_ip
    assert guest_address(w, "k1") == f"{k1['address']}/24"
    assert guest_address(w, "k2") == f"{STATIC}/24"
    assert guest_address(w, "tmpl") == f"{template_ip}/24"
    macs = {guest_mac(w, vm) for vm in ("tmpl", "k1", "k2")}
    assert len(macs) == 3
    assert guest_mac(w, "k1") == w.inspect("k1")["networks"][0]["mac"]
    for src, dst in (("k1", STATIC), ("k2", k1["address"]), ("k1", template_ip)):
        proc = w.exec(src, f"ping -c 1 -W 3 {dst}")
        assert proc.returncode == 0, (src, dst, proc.stdout, proc.stderr)
    assert w.exec("k2", "hostname").stdout.strip() == "k2"


def test_a_clone_that_does_not_fit_takes_no_address(world: World, tmp_path: Path) -> None:
    before = sorted(p.name for p in (world.home / "instances").iterdir())
    proc = world.corral("launch", "tw", "--name", "k3", "--network", "n1", "--volume", "1G")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[0].startswith("error: cannot restore warm image 'tw': devices:")
    assert sorted(p.name for p in (world.home / "instances").iterdir()) == before
    assert "k3" not in world.network_vms("n1")

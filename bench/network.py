"""Managed networks: `corral network create` and `corral network rm` against a plain shell
script doing the same ip/nft/dnsmasq work (bench/floor_network.sh, the floor), and `corral
launch --network` of the tiny guest (no --wait: until QMP answers, like launch_overhead.py)
against bench/floor_network_launch.sh (a tap on the bridge, the reservation in dnsmasq's hosts
files and a reload, the overlay, the same QEMU command, a QMP poll), as ratios.

Runs itself inside a network namespace it creates and removes (nothing touches the host's
interfaces or firewall). Median of N runs each; the order of corral and the floor alternates
from round to round.

    .venv/bin/python bench/network.py [--runs 10]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from common import (
    BENCH,
    CORRAL,
    TINY,
    TYPE,
    Home,
    floor_python,
    kill_pidfile,
    log,
    machine,
    now,
    print_header,
    print_table,
    qemu_argv,
    retarget_argv,
    summary,
    timed,
    tiny_guest,
    write_results,
)

INSIDE = "CORRAL_BENCH_NETNS"
FLOOR = str(BENCH / "floor_network.sh")
SUBNET = "10.77.0.0/24"
LAN = "10.78.0.0/24"  # the network VMs are launched on
FLOOR_LAUNCH = str(BENCH / "floor_network_launch.sh")


def floor_files(workdir: Path) -> tuple[Path, Path]:
    """The floor's inputs: the nftables document and dnsmasq.conf corral makes for a network
    like the one timed (a bridge named crl-floor)."""
    from corral.net import dnsmasq, nft
    from corral.net.model import define

    record = define("floor", ipaddress.IPv4Network(SUBNET)).replace(state="ready")
    rules, conf = workdir / "rules.json", workdir / "dnsmasq.conf"
    rules.write_text(json.dumps(nft.ruleset([record], [])))
    conf.write_text(dnsmasq.render_conf(record))
    return rules, conf


def inside(runs: int) -> dict[str, Any]:
    started = now()
    with Home() as home:
        info = machine(home.env)
        print_header(
            "managed networks: network create / rm, launch --network vs floors", info, started
        )
        workdir = home.path / "floor"
        workdir.mkdir()
        rules, conf = floor_files(workdir)
        create_floor = [FLOOR, "create", str(workdir), "crl-floor", "10.77.0.1/24", str(rules),
                        str(conf)]  # fmt: skip
        rm_floor = [FLOOR, "rm", str(workdir), "crl-floor"]
        create_cli = [str(CORRAL), "network", "create", "floor", "--subnet", SUBNET]
        rm_cli = [str(CORRAL), "network", "rm", "floor"]
        keys = ("cli create", "cli rm", "floor create", "floor rm")
        samples: dict[str, list[float]] = {k: [] for k in keys}
        # Warm-up, not timed: page cache, imports.
        timed(create_cli, home.env), timed(rm_cli, home.env)
        timed(create_floor, home.env), timed(rm_floor, home.env)
        for run in range(runs):
            log(f"round {run + 1}/{runs}")
            order = ("cli", "floor") if run % 2 == 0 else ("floor", "cli")
            for method in order:
                create, rm = (create_cli, rm_cli) if method == "cli" else (create_floor, rm_floor)
                samples[f"{method} create"].append(timed(create, home.env))
                time.sleep(0.05)
                samples[f"{method} rm"].append(timed(rm, home.env))
        version = [timed([str(CORRAL), "version"], home.env) for _ in range(runs)]
        samples.update(launch_samples(home, runs))
    stats = {k: summary(v) for k, v in samples.items()}
    stats["corral version"] = summary(version)
    rows = []
    for op in ("create", "rm"):
        cli, floor = stats[f"cli {op}"]["median"], stats[f"floor {op}"]["median"]
        rows.append((f"network {op}", cli, floor, f"{cli / floor:.2f}x"))
    pair_cli = stats["cli create"]["median"] + stats["cli rm"]["median"]
    pair_floor = stats["floor create"]["median"] + stats["floor rm"]["median"]
    rows.append(("create + rm", pair_cli, pair_floor, f"{pair_cli / pair_floor:.2f}x"))
    cli, floor = stats["cli launch"]["median"], stats["floor launch"]["median"]
    rows.append(("launch --network (no --wait)", cli, floor, f"{cli / floor:.2f}x"))
    print(f"median of {runs} runs each, seconds (wall clock)")
    print_table(("operation", "corral CLI", "floor", "CLI/floor"), rows)
    print(
        f"`corral version` alone (interpreter + imports): {stats['corral version']['median']:.3f} s"
    )
    results = {
        "benchmark": "network",
        "date": started.isoformat(timespec="seconds"),
        "machine": info,
        "runs": runs,
        **stats,
        "create_over_floor": stats["cli create"]["median"] / stats["floor create"]["median"],
        "rm_over_floor": stats["cli rm"]["median"] / stats["floor rm"]["median"],
        "launch_over_floor": stats["cli launch"]["median"] / stats["floor launch"]["median"],
    }
    write_results("network", started, results)
    return results


class Launches:
    """`corral launch --network lan` and its floor, each VM removed after it was timed."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self.seq = 0
        self.netdir = home.path / "networks" / "lan"
        self.net = json.loads((self.netdir / "network.json").read_text())
        manifest = json.loads((home.path / "images" / "manifests" / f"{TINY}.json").read_text())
        digest = manifest["digest"].removeprefix("sha256:")
        self.base = home.path / "images" / "blobs" / "sha256" / digest
        self.format, self.size = manifest["format"], manifest["virtual_size"]
        self.template: tuple[Path, list[str], str, str] | None = None  # dir, argv, tap, mac
        self.seed = home.path / "seed-template.iso"

    def cli(self) -> float:
        self.seq += 1
        name = f"c{self.seq}"
        argv = [str(CORRAL), "launch", TINY, "--name", name, "--type", TYPE, "--network", "lan"]
        try:
            elapsed = timed(argv, self.home.env)
            if self.template is None:
                files = self.home.instance_dir(name)
                record = json.loads((files / "instance.json").read_text())
                nic = record["networks"][0]
                template = self.home.path / "template"
                self.template = (files, qemu_argv(files), nic["tap"], nic["mac"])
                template.mkdir()
                shutil.copyfile(files / "seed.iso", self.seed)
            return elapsed
        finally:
            self.home.remove(name)

    def floor(self) -> float:
        assert self.template is not None
        self.seq += 1
        name, tap = f"f{self.seq}", f"flt{self.seq}"
        mac, ip = f"52:54:00:7f:{self.seq // 256:02x}:{self.seq % 256:02x}", "10.78.0.100"
        old_dir, argv, old_tap, old_mac = self.template
        workdir = self.home.path / "floor" / name
        workdir.mkdir(parents=True)
        shutil.copyfile(self.seed, workdir / "seed.iso")
        qemu = [
            a.replace(f"ifname={old_tap}", f"ifname={tap}").replace(f"mac={old_mac}", f"mac={mac}")
            for a in retarget_argv(argv, old_dir, workdir, 0)
        ]
        script = [
            "bash", FLOOR_LAUNCH, str(self.netdir), self.net["bridge"], str(self.net["mtu"]), tap,
            mac, ip, name, "--", str(workdir), str(self.base), self.format, str(self.size), "--",
            *qemu,
        ]  # fmt: skip
        env = {**self.home.env, "POLL_PYTHON": floor_python()}
        try:
            return timed(script, env)
        finally:
            kill_pidfile(workdir / "qemu.pid")
            time.sleep(0.05)
            subprocess.run(["ip", "link", "del", tap], check=False, capture_output=True)
            for hosts in ("dhcp-hosts", "dns-hosts"):
                path = self.netdir / hosts
                kept = [line for line in path.read_text().splitlines() if name not in line]
                path.write_text("".join(f"{line}\n" for line in kept))
            shutil.rmtree(workdir, ignore_errors=True)


def launch_samples(home: Home, runs: int) -> dict[str, list[float]]:
    log("importing the tiny guest; creating network lan")
    home.import_tiny(tiny_guest())
    home.corral("network", "create", "lan", "--subnet", LAN)
    launches = Launches(home)
    launches.cli(), launches.floor()  # warm-up, not timed; gives the floor its QEMU command
    samples: dict[str, list[float]] = {"cli launch": [], "floor launch": []}
    for run in range(runs):
        log(f"launch round {run + 1}/{runs}")
        for method in ("cli", "floor") if run % 2 == 0 else ("floor", "cli"):
            samples[f"{method} launch"].append(getattr(launches, method)())
            time.sleep(0.05)
    home.corral("network", "rm", "lan")
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    if os.environ.get(INSIDE):
        inside(args.runs)
        return 0
    if os.geteuid() != 0:
        sys.exit("needs root: it makes a network namespace")
    ns = f"crlbench-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        env = {**os.environ, INSIDE: ns}
        argv = ["ip", "netns", "exec", ns, sys.executable, __file__, "--runs", str(args.runs)]
        return subprocess.run(argv, env=env, check=False).returncode
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    raise SystemExit(main())

"""Managed networks: `corral network create` and `corral network rm` against a plain shell
script doing the same ip/nft/dnsmasq work (bench/floor_network.sh, the floor), as ratios.

Runs itself inside a network namespace it creates and removes (nothing touches the host's
interfaces or firewall). Median of N create+rm pairs each; the order of corral and the floor
alternates from round to round. No VMs.

    .venv/bin/python bench/network.py [--runs 10]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from common import (
    BENCH,
    CORRAL,
    Home,
    log,
    machine,
    now,
    print_header,
    print_table,
    summary,
    timed,
    write_results,
)

INSIDE = "CORRAL_BENCH_NETNS"
FLOOR = str(BENCH / "floor_network.sh")
SUBNET = "10.77.0.0/24"


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
        print_header("managed networks: corral network create / rm vs the floor", info, started)
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
    stats = {k: summary(v) for k, v in samples.items()}
    stats["corral version"] = summary(version)
    rows = []
    for op in ("create", "rm"):
        cli, floor = stats[f"cli {op}"]["median"], stats[f"floor {op}"]["median"]
        rows.append((f"network {op}", cli, floor, f"{cli / floor:.2f}x"))
    pair_cli = stats["cli create"]["median"] + stats["cli rm"]["median"]
    pair_floor = stats["floor create"]["median"] + stats["floor rm"]["median"]
    rows.append(("create + rm", pair_cli, pair_floor, f"{pair_cli / pair_floor:.2f}x"))
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
    }
    write_results("network", started, results)
    return results


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

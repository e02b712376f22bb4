"""Time to ready of the tiny test guest: `corral launch --wait` against the floor.

The floor (bench/floor_ready.sh) creates the overlay, starts the very QEMU command corral ran
(files moved to its own directory, another ssh host port, a seed ISO corral wrote) and polls
`ssh ... true` until it succeeds. Median of 5 each, interleaved (corral, floor, corral, ...),
after one untimed warm-up of each. Goal: corral <= 1.10 x the floor.

    .venv/bin/python bench/time_to_ready.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from typing import Any

from common import (
    BENCH,
    CORRAL,
    TINY,
    TYPE,
    Home,
    Noise,
    free_port,
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

GOAL_RATIO = 1.10


class Bench:
    def __init__(self, home: Home) -> None:
        self.home = home
        manifest = json.loads((home.path / "images" / "manifests" / f"{TINY}.json").read_text())
        digest = manifest["digest"].removeprefix("sha256:")
        self.base = home.path / "images" / "blobs" / "sha256" / digest
        self.base_format = manifest["format"]
        self.size = manifest["virtual_size"]
        self.user = manifest["default_user"]
        self.key = home.path / "ssh" / "id_ed25519"
        self.seed = home.path / "seed-template.iso"
        self.argv: list[str] = []
        self.template = home.path
        self.seq = 0

    def corral(self) -> float:
        self.seq += 1
        name = f"r{self.seq}"
        argv = [str(CORRAL), "launch", TINY, "--name", name, "--type", TYPE, "--wait"]
        try:
            elapsed = timed(argv, self.home.env)
            if not self.argv:
                self.template = self.home.instance_dir(name)
                self.argv = qemu_argv(self.template)
                shutil.copyfile(self.template / "seed.iso", self.seed)
            return elapsed
        finally:
            self.home.remove(name)

    def floor(self) -> float:
        self.seq += 1
        workdir = self.home.path / "floor" / f"f{self.seq}"
        workdir.mkdir(parents=True)
        shutil.copyfile(self.seed, workdir / "seed.iso")
        port = free_port()
        qemu = retarget_argv(self.argv, self.template, workdir, port)
        script = [
            "bash", str(BENCH / "floor_ready.sh"), str(workdir), str(self.base),
            self.base_format, str(self.size), str(port), str(self.key), self.user, "--", *qemu,
        ]  # fmt: skip
        try:
            return timed(script, self.home.env)
        finally:
            kill_pidfile(workdir / "qemu.pid")
            time.sleep(0.05)
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    started = now()
    guest = tiny_guest()
    samples: dict[str, list[float]] = {"corral": [], "floor": []}
    with Home() as home:
        home.import_tiny(guest)
        info = machine(home.env)
        print_header("time to ready: corral launch --wait vs. the floor", info, started)
        noise = Noise(home)
        bench = Bench(home)
        log("warm-up (not timed)")
        bench.corral()
        bench.floor()
        for run in range(args.runs):
            log(f"round {run + 1}/{args.runs}")
            noise.sample()
            samples["corral"].append(bench.corral())
            noise.sample()
            samples["floor"].append(bench.floor())
        noise.sample()
        qemu_command = bench.argv

    stats = {k: summary(v) for k, v in samples.items()}
    ratio = stats["corral"]["median"] / stats["floor"]["median"]
    print(f"tiny guest, {TYPE}; median of {args.runs} interleaved runs, seconds (wall clock)")
    print_table(
        ("", "median", "min", "max"),
        [
            ("corral launch --wait", *(stats["corral"][k] for k in ("median", "min", "max"))),
            ("floor (floor_ready.sh)", *(stats["floor"][k] for k in ("median", "min", "max"))),
        ],
    )
    print(
        f"ratio corral/floor: {ratio:.3f} "
        f"(goal <= {GOAL_RATIO:.2f}: {'met' if ratio <= GOAL_RATIO else 'NOT met'}); "
        f"difference {1000 * (stats['corral']['median'] - stats['floor']['median']):.0f} ms"
    )
    results: dict[str, Any] = {
        "benchmark": "time_to_ready",
        "date": started.isoformat(timespec="seconds"),
        "machine": info,
        "image": "tiny guest",
        "instance_type": TYPE,
        "runs": args.runs,
        **stats,
        "ratio": ratio,
        "goal_ratio": GOAL_RATIO,
        "goal_met": ratio <= GOAL_RATIO,
        "qemu_command": qemu_command,
        "floor_script": "bench/floor_ready.sh",
    }
    results["noise"] = noise.report()
    write_results("time_to_ready", started, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

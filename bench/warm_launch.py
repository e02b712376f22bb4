"""Launch to ready from a warm image against a cold boot: both `corral launch ... --wait`.

One template is launched, waited for and saved with `corral snapshot NAME --memory --as
IMAGE-warm --stop` (timed: the save; the state's size is read from the manifest). Then, after
one untimed warm-up of each, rounds alternate: a cold `corral launch IMAGE --wait` and a warm
`corral launch IMAGE-warm --wait` (restore, re-identify through the guest agent, ssh), each
instance removed after it is timed. Median of 5 each. Goals (issue 14, Debian under TCG):
warm <= 3 s and <= 0.1 x cold.

    .venv/bin/python bench/warm_launch.py [--runs 5]                   # the tiny guest
    .venv/bin/python bench/warm_launch.py --from .cache/e2e-home:debian-12 --type c1m1500
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    CORRAL,
    TINY,
    TYPE,
    Home,
    Noise,
    log,
    machine,
    now,
    print_header,
    print_table,
    summary,
    timed,
    tiny_guest,
    write_results,
)

GOAL_SECONDS = 3.0
GOAL_RATIO = 0.1


def import_from(home: Home, spec: str) -> str:
    """Import image NAME of another state directory (`DIR:NAME`): its disk, flattened by
    qemu-img into the import, with its kernel, initrd, command line and user."""
    other, name = spec.rsplit(":", 1)
    root = Path(other).resolve()
    manifest = json.loads((root / "images" / "manifests" / f"{name}.json").read_text())
    blobs = root / "images" / "blobs" / "sha256"
    args = ["image", "import", str(blobs / manifest["digest"]), "--name", name,
            "--user", manifest["default_user"]]  # fmt: skip
    if manifest.get("parent"):
        raise SystemExit(f"{spec}: a layered image; export it first (corral image export)")
    if manifest.get("kernel"):
        args += ["--kernel", str(blobs / manifest["kernel"])]
    if manifest.get("initrd"):
        args += ["--initrd", str(blobs / manifest["initrd"])]
    if manifest.get("cmdline"):
        args += ["--cmdline", manifest["cmdline"]]
    home.corral(*args, timeout=1800)
    return str(name)


class Bench:
    def __init__(self, home: Home, image: str, itype: str) -> None:
        self.home = home
        self.image = image
        self.warm = f"{image}-warm"
        self.itype = itype
        self.seq = 0

    def save(self) -> tuple[float, int]:
        """Launch the template, wait, and time its save; (seconds, state bytes)."""
        self.home.corral("launch", self.image, "--name", "tmpl", "--type", self.itype, "--wait",
                         "--timeout", "900")  # fmt: skip
        argv = [str(CORRAL), "snapshot", "tmpl", "--memory", "--as", self.warm, "--stop"]
        try:
            elapsed = timed(argv, self.home.env)
        finally:
            self.home.remove("tmpl")
        path = self.home.path / "images" / "manifests" / f"{self.warm}.json"
        return elapsed, int(json.loads(path.read_text())["warm"]["state_size"])

    def launch(self, warm: bool) -> float:
        self.seq += 1
        name = f"{'w' if warm else 'c'}{self.seq}"
        argv = [str(CORRAL), "launch", self.warm if warm else self.image, "--name", name,
                "--wait", "--timeout", "900"]  # fmt: skip
        if not warm:
            argv += ["--type", self.itype]  # a warm launch takes the saved size
        try:
            return timed(argv, self.home.env, timeout=1000)
        finally:
            self.home.remove(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--from", dest="source", help="DIR:IMAGE of another state directory")
    parser.add_argument("--type", dest="itype", default=TYPE)
    args = parser.parse_args()
    started = now()
    samples: dict[str, list[float]] = {"cold": [], "warm": []}
    with Home() as home:
        if args.source:
            image = import_from(home, args.source)
        else:
            home.import_tiny(tiny_guest())
            image = TINY
        info = machine(home.env)
        print_header("launch to ready: warm (restore) vs. cold (boot)", info, started)
        noise = Noise(home)
        bench = Bench(home, image, args.itype)
        log("template: launch, wait, save (the save is timed)")
        save_seconds, state_bytes = bench.save()
        log("warm-up (not timed)")
        bench.launch(False)
        bench.launch(True)
        for run in range(args.runs):
            log(f"round {run + 1}/{args.runs}")
            noise.sample()
            samples["cold"].append(bench.launch(False))
            noise.sample()
            samples["warm"].append(bench.launch(True))
        noise.sample()

    stats = {k: summary(v) for k, v in samples.items()}
    ratio = stats["warm"]["median"] / stats["cold"]["median"]
    print(f"{image}, {args.itype}; median of {args.runs} interleaved runs, seconds (wall clock)")
    print_table(
        ("", "median", "min", "max"),
        [
            ("cold: launch --wait", *(stats["cold"][k] for k in ("median", "min", "max"))),
            ("warm: launch --wait", *(stats["warm"][k] for k in ("median", "min", "max"))),
        ],
    )
    met = stats["warm"]["median"] <= GOAL_SECONDS and ratio <= GOAL_RATIO
    print(
        f"ratio warm/cold: {ratio:.3f}; goal warm <= {GOAL_SECONDS:g} s and <= {GOAL_RATIO:g} x "
        f"cold: {'met' if met else 'NOT met'}"
    )
    state_mib = state_bytes / 2**20
    print(f"save (snapshot --memory --stop): {save_seconds:.2f} s; state {state_mib:.1f} MiB")
    results: dict[str, Any] = {
        "benchmark": "warm_launch",
        "date": started.isoformat(timespec="seconds"),
        "machine": info,
        "image": image,
        "instance_type": args.itype,
        "runs": args.runs,
        **stats,
        "ratio": ratio,
        "goal_seconds": GOAL_SECONDS,
        "goal_ratio": GOAL_RATIO,
        "goal_met": met,
        "save_seconds": save_seconds,
        "state_bytes": state_bytes,
        "finished": time.time(),
    }
    results["noise"] = noise.report()
    write_results("warm_launch", started, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Launch overhead: `corral launch` without --wait, until QEMU runs and QMP answers.

Median of 10 per base image (qcow2 of 1 GiB and of 20 GiB virtual size, each holding 200 MiB of
written data, plus a raw 1 GiB), each time as a CLI process, through the Python API in-process,
and as the floor (bench/floor_launch.sh: qemu-img create + the same QEMU command + QMP poll).
Goal: the CLI in <= 0.3 s, the same for every image size.

    .venv/bin/python bench/launch_overhead.py [--runs 10]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    BENCH,
    CORRAL,
    TYPE,
    Home,
    Noise,
    floor_python,
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

GOAL_SECONDS = 0.3
DATA_MIB = 200  # written into every base image, half at the start and half at the end
# name, format, virtual size
IMAGES = (("q1g", "qcow2", 1 << 30), ("q20g", "qcow2", 20 << 30), ("raw1g", "raw", 1 << 30))
METHODS = ("cli", "api", "floor")


def make_image(path: Path, fmt: str, size: int) -> None:
    """A base image of `size` bytes with DATA_MIB MiB of real (allocated, non-zero) data."""
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), str(size)], check=True)
    half = DATA_MIB // 2
    for offset, pattern in ((0, "0xa5"), (size - (half << 20), "0x5a")):
        subprocess.run(
            ["qemu-io", "-f", fmt, "-c", f"write -q -P {pattern} {offset} {half}M", str(path)],
            check=True,
        )


def blob_of(home: Home, image: str) -> tuple[Path, str, int]:
    """The stored blob, format and virtual size of an imported image."""
    import json

    manifest = json.loads((home.path / "images" / "manifests" / f"{image}.json").read_text())
    digest = manifest["digest"].removeprefix("sha256:")
    return (
        home.path / "images" / "blobs" / "sha256" / digest,
        manifest["format"],
        manifest["virtual_size"],
    )


class Bench:
    def __init__(self, home: Home, runs: int) -> None:
        self.home = home
        self.runs = runs
        self.argv: dict[str, list[str]] = {}  # the QEMU command corral ran, per image
        self.seed = home.path / "seed-template.iso"  # a seed ISO corral wrote, for the floor
        self.seq = 0

    def _name(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}{self.seq}"

    def cli(self, image: str) -> float:
        name = self._name("c")
        argv = [str(CORRAL), "launch", image, "--name", name, "--type", TYPE]
        try:
            elapsed = timed(argv, self.home.env)
            files = self.home.instance_dir(name)
            self.argv.setdefault(image, qemu_argv(files))
            if not self.seed.exists():
                shutil.copyfile(files / "seed.iso", self.seed)
            return elapsed
        finally:
            self.home.remove(name)

    def api(self, image: str) -> float:
        import corral

        name = self._name("a")
        start = time.perf_counter()
        try:
            corral.Corral(home=self.home.path).launch(image, name=name, instance_type=TYPE)
            return time.perf_counter() - start
        finally:
            self.home.remove(name)

    def floor(self, image: str) -> float:
        base, fmt, size = blob_of(self.home, image)
        template = self.home.instance_dir(self.argv[image][self.argv[image].index("-name") + 1])
        workdir = self.home.path / "floor" / self._name("f")
        workdir.mkdir(parents=True)
        shutil.copyfile(self.seed, workdir / "seed.iso")
        qemu = retarget_argv(self.argv[image], template, workdir, free_port())
        script = [
            "bash", str(BENCH / "floor_launch.sh"), str(workdir), str(base), fmt, str(size), "--",
            *qemu,
        ]  # fmt: skip
        env = {**self.home.env, "POLL_PYTHON": floor_python()}
        try:
            return timed(script, env)
        finally:
            kill_pidfile(workdir / "qemu.pid")
            time.sleep(0.05)
            shutil.rmtree(workdir, ignore_errors=True)


def startup_costs(home: Home, runs: int) -> dict[str, Any]:
    """What a CLI process costs before any work: the interpreter, then corral's imports."""
    python = str(CORRAL.parent / "python")
    return {
        "python -c pass": summary([timed([python, "-c", "pass"], home.env) for _ in range(runs)]),
        "corral version": summary([timed([str(CORRAL), "version"], home.env) for _ in range(runs)]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    started = now()
    guest = tiny_guest()
    samples: dict[str, dict[str, list[float]]] = {i[0]: {m: [] for m in METHODS} for i in IMAGES}
    with Home() as home, tempfile.TemporaryDirectory(prefix="cbimg", dir="/var/tmp") as tmp:
        home.import_tiny(guest)
        info = machine(home.env)
        print_header("launch overhead: corral launch (no --wait) until QMP answers", info, started)
        for name, fmt, size in IMAGES:
            path = Path(tmp) / f"{name}.{fmt}"
            log(f"making {name}: {fmt}, {size >> 30} GiB virtual, {DATA_MIB} MiB data")
            make_image(path, fmt, size)
            log(f"importing {name}")
            home.import_tiny(guest, name=name, disk=path)
            path.unlink()
        noise = Noise(home)
        bench = Bench(home, args.runs)
        # Warm-up, not timed: page cache, imports, each image's QEMU command and a seed ISO.
        for name, _, _ in IMAGES:
            bench.cli(name)
            bench.api(name)
            bench.floor(name)
        for run in range(args.runs):
            log(f"round {run + 1}/{args.runs}")
            for k in range(len(IMAGES) * len(METHODS)):
                noise.sample()
                # Rotate the order every round so no method always follows another.
                slot = (k + run) % (len(IMAGES) * len(METHODS))
                image, method = IMAGES[slot // len(METHODS)][0], METHODS[slot % len(METHODS)]
                samples[image][method].append(getattr(bench, method)(image))
        startup = startup_costs(home, args.runs)
        noise.sample()
        qemu_command = bench.argv[IMAGES[0][0]]

    results: dict[str, Any] = {"images": {}}
    rows = []
    for name, fmt, size in IMAGES:
        stats = {m: summary(samples[name][m]) for m in METHODS}
        floor = stats["floor"]["median"]
        entry = {
            "format": fmt,
            "virtual_size": size,
            "data_mib": DATA_MIB,
            **stats,
            "cli_over_floor": stats["cli"]["median"] / floor,
            "api_over_floor": stats["api"]["median"] / floor,
        }
        results["images"][name] = entry
        rows.append(
            (
                f"{name} ({fmt}, {size >> 30} GiB)",
                stats["cli"]["median"],
                stats["api"]["median"],
                floor,
                f"{entry['cli_over_floor']:.2f}x",
                f"{entry['api_over_floor']:.2f}x",
            )
        )
    print(f"median of {args.runs} runs each, seconds (wall clock)")
    print_table(("image", "corral CLI", "Python API", "floor", "CLI/floor", "API/floor"), rows)
    print_table(
        ("start-up alone (no launch)", "median", "min", "max"),
        [(k, v["median"], v["min"], v["max"]) for k, v in startup.items()],
    )
    cli_medians = [results["images"][n]["cli"]["median"] for n, _, _ in IMAGES]
    spread = max(cli_medians) - min(cli_medians)
    worst = max(cli_medians)
    verdict = "met" if worst <= GOAL_SECONDS else "NOT met"
    print(f"goal: CLI <= {GOAL_SECONDS} s for every size: {verdict} (worst median {worst:.3f} s)")
    print(f"size independence: CLI medians differ by {spread * 1000:.0f} ms across image sizes")
    print(
        "start-up share: `corral version` takes "
        f"{startup['corral version']['median']:.3f} s of the CLI's {worst:.3f} s"
    )
    results.update(
        {
            "benchmark": "launch_overhead",
            "date": started.isoformat(timespec="seconds"),
            "machine": info,
            "instance_type": TYPE,
            "runs": args.runs,
            "goal_seconds": GOAL_SECONDS,
            "goal_met": worst <= GOAL_SECONDS,
            "cli_spread_seconds": spread,
            "startup": startup,
            "qemu_command": qemu_command,
            "floor_script": "bench/floor_launch.sh",
        }
    )
    results["noise"] = noise.report()
    write_results("launch_overhead", started, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

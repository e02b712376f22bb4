"""Cold boot to ready of corral's Debian 12 image: `corral launch --wait` against QEMU run with
its own defaults (bench/floor_cold.sh) and against pycloudlib, in one run.

Every method boots the same image (disk, kernel, initrd, command line) with 1 vCPU and
1500 MiB under TCG and ends when cloud-init reports done over ssh. Methods, one boot each per
round, the order rotated from round to round; median of --runs rounds (default 3):

  floor           bench/floor_cold.sh: QEMU's defaults (pc, qemu64, ...), cloud-localds seed
  floor-cpu-max   the same with `-cpu max` (what corral passed under TCG before)
  floor-cpu-Nehalem  the same with `-cpu Nehalem` (what corral passes now)
  corral          `corral launch debian-12 --name N --type c1m1500 --wait` (this tree)
  corral-before   the same CLI on the sources of --before (a commit; default: the last before
                  this work), put first on PYTHONPATH
  corral@REF      the same on the sources of REF (any commit, e.g. main), like corral-before
  pycloudlib      bench/pycloudlib_launch.py with --pycloudlib-python (skipped if missing)

For each boot it also reads, from the guest's console, the guest uptime at which cloud-init
said it finished ("... finished at ... Up N seconds"): the wall time minus that is what the
method spends around the guest (starting QEMU before the clock starts, noticing the end).

    .venv/bin/python bench/cold_boot.py [--runs 3] [--source-home .cache/e2e-home]
        [--methods floor,corral,...] [--pycloudlib-python bench/.venv-pycloudlib/bin/python]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from common import (
    BENCH,
    CACHE,
    CORRAL,
    REPO,
    Home,
    Noise,
    free_port,
    log,
    machine,
    now,
    pids_mentioning,
    print_header,
    print_table,
    summary,
    write_results,
)

IMAGE = "debian-12"
TYPE = "c1m1500"
CPUS, MEMORY = 1, 1500
GOAL_RATIO = 1.05
TIMEOUT = 1700  # seconds; a shared, loaded host under TCG is slow
BEFORE = "8e89228"  # main when this work began: -cpu max, `cloud-init status` polled
METHODS = (
    "floor", "floor-cpu-max", "floor-cpu-Nehalem", "corral", "corral-before", "pycloudlib",
)  # fmt: skip
FINISHED = re.compile(r"Cloud-init v\. \S+ finished at .*?Up ([0-9.]+) seconds")


def round_ratios(method: list[float], floor: list[float]) -> list[float]:
    """Each round's time over the floor's in the same round: this machine's speed drifts over
    minutes, and a round's methods run close together (or at once, with --parallel)."""
    return [m / f for m, f in zip(method, floor, strict=False)]


def cloud_init_up(console: str) -> float | None:
    """The guest uptime at which cloud-init's final stage said it finished."""
    found = FINISHED.findall(console)
    return float(found[-1]) if found else None


class Image:
    """debian-12 from another state directory: its blob paths there."""

    def __init__(self, source: Path) -> None:
        manifest = json.loads((source / "images" / "manifests" / f"{IMAGE}.json").read_text())
        blobs = source / "images" / "blobs" / "sha256"
        self.disk = blobs / manifest["digest"].removeprefix("sha256:")
        self.kernel = blobs / manifest["kernel"]
        self.initrd = blobs / manifest["initrd"]
        self.cmdline = manifest["cmdline"]
        self.size = manifest["virtual_size"]
        self.user = manifest["default_user"]
        self.digest = manifest["digest"]


class Bench:
    def __init__(self, home: Home, image: Image, sources: dict[str, Path], pycloudlib: str | None):
        self.home = home
        self.image = image
        self.sources = sources  # method -> corral's sources for it
        self.pycloudlib = pycloudlib
        self.key = home.path / "user-key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True
        )
        self.seq = itertools.count(1)
        self.consoles: dict[str, list[float | None]] = {}

    def run(self, method: str) -> float:
        seq = next(self.seq)
        if method.startswith("floor"):
            cpu = method.removeprefix("floor").removeprefix("-cpu-")
            return self.floor(seq, f"-cpu {cpu}" if cpu else "")
        if method.startswith("corral"):
            return self.corral(seq, method)
        return self.pycloudlib_launch()

    def _timed(self, argv: list[str], env: dict[str, str]) -> tuple[float, str]:
        start = time.perf_counter()
        proc = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=TIMEOUT + 100,
            stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[:3]} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        return elapsed, proc.stdout

    def note(self, method: str, console: str) -> None:
        self.consoles.setdefault(method, []).append(cloud_init_up(console))

    def floor(self, seq: int, extra: str) -> float:
        workdir = self.home.path / "floor" / f"f{seq}"
        workdir.mkdir(parents=True)
        i = self.image
        script = [
            "bash", str(BENCH / "floor_cold.sh"), str(workdir), str(i.disk), str(i.kernel),
            str(i.initrd), i.cmdline, str(i.size), str(CPUS), str(MEMORY), str(free_port()),
            str(self.key), i.user,
        ]  # fmt: skip
        env = {**self.home.env, "FLOOR_QEMU_ARGS": extra}
        pid = None
        try:
            elapsed, out = self._timed(script, env)
            pid = int(out.split()[-1])
            self.note("floor" + (f"-cpu-{extra.split()[-1]}" if extra else ""), _read(workdir))
            return elapsed
        finally:
            for stray in [pid] if pid else pids_mentioning(str(workdir)):
                _kill(stray)
            shutil.rmtree(workdir, ignore_errors=True)

    def corral(self, seq: int, method: str) -> float:
        name = f"c{seq}"
        env = dict(self.home.env)
        if method in self.sources:
            env["PYTHONPATH"] = str(self.sources[method])
        argv = [str(CORRAL), "launch", IMAGE, "--name", name, "--type", TYPE, "--wait"]
        argv += ["--timeout", str(TIMEOUT)]
        try:
            elapsed, _ = self._timed(argv, env)
            serial = self.home.instance_dir(name) / "serial.log"
            self.note(method, _read_file(serial))
            return elapsed
        finally:
            self.home.remove(name)

    def pycloudlib_launch(self) -> float:
        assert self.pycloudlib is not None
        workdir = Path(tempfile.mkdtemp(prefix="pcl", dir=self.home.path))
        i = self.image
        # pycloudlib's root disk is -hda (IDE: /dev/sda); its seed is the first virtio disk.
        cmdline = i.cmdline.replace("root=/dev/vda", "root=/dev/sda")
        argv = [
            self.pycloudlib, str(BENCH / "pycloudlib_launch.py"), str(workdir), str(i.disk),
            str(i.kernel), str(i.initrd), cmdline, TYPE, str(self.key), i.user,
        ]  # fmt: skip
        try:
            start = time.perf_counter()
            _, out = self._timed(argv, self.home.env)
            elapsed = time.perf_counter() - start  # the whole process, like the others
            self.note("pycloudlib", out)
            return elapsed
        finally:
            for stray in pids_mentioning(str(workdir)):
                _kill(stray)
            shutil.rmtree(workdir, ignore_errors=True)


def _read(workdir: Path) -> str:
    return _read_file(workdir / "console.log")


def _read_file(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


def before_sources(commit: str, into: Path) -> Path:
    """corral's sources at `commit` (git archive), for corral-before."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "src"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def _commit(ref: str) -> str:
    out = subprocess.run(["git", "-C", str(REPO), "rev-parse", ref], capture_output=True, text=True)
    return out.stdout.strip() or ref


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--source-home", type=Path, default=CACHE / "e2e-home")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--before", default=BEFORE)
    parser.add_argument(
        "--parallel",
        action="store_true",
        help="boot all methods of a round at once (a loaded host's noise then hits all alike)",
    )
    parser.add_argument(
        "--pycloudlib-python", default=str(BENCH / ".venv-pycloudlib" / "bin" / "python")
    )
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    unknown = {m for m in methods if not m.startswith("corral@")} - set(METHODS)
    if unknown:
        parser.error(f"unknown methods: {', '.join(sorted(unknown))}")
    skipped: dict[str, str] = {}
    pycloudlib: str | None = args.pycloudlib_python
    if "pycloudlib" in methods and not Path(args.pycloudlib_python).exists():
        skipped["pycloudlib"] = f"{args.pycloudlib_python} not found"
        methods.remove("pycloudlib")
        pycloudlib = None
    for tool in ("cloud-localds", "genisoimage"):
        if shutil.which(tool) is None:
            print(f"error: {tool} not found: apt-get install cloud-image-utils genisoimage")
            return 2
    started = now()
    image = Image(args.source_home)
    samples: dict[str, list[float]] = {m: [] for m in methods}
    with Home() as home:
        home.corral(
            "image", "import", str(image.disk), "--name", IMAGE, "--kernel", str(image.kernel),
            "--initrd", str(image.initrd), "--cmdline", image.cmdline, "--user", image.user,
        )  # fmt: skip
        info = machine(home.env)
        print_header("cold boot to ready (Debian 12): corral vs. the floor", info, started)
        noise = Noise(home)
        refs = {m: m.removeprefix("corral@") for m in methods if m.startswith("corral@")}
        if "corral-before" in methods:
            refs["corral-before"] = args.before
        sources = {
            m: before_sources(ref, Path(tempfile.mkdtemp(dir=home.path))) for m, ref in refs.items()
        }
        bench = Bench(home, image, sources, pycloudlib)
        for run in range(args.runs):
            order = methods[run % len(methods) :] + methods[: run % len(methods)]
            if args.parallel:
                noise.sample()
                log(f"round {run + 1}/{args.runs}: {', '.join(order)} at once")
                with ThreadPoolExecutor(len(order)) as pool:
                    futures = {pool.submit(bench.run, m): m for m in order}
                    for future in as_completed(futures):
                        samples[futures[future]].append(future.result())
                        log(f"  {futures[future]}: {samples[futures[future]][-1]:.1f} s")
                continue
            for method in order:
                noise.sample()
                log(f"round {run + 1}/{args.runs}: {method} (load {os.getloadavg()[0]:.1f})")
                samples[method].append(bench.run(method))
                log(f"  {samples[method][-1]:.1f} s")
        noise.sample()
        consoles = bench.consoles

    stats = {m: summary(v) for m, v in samples.items()}
    floor = stats["floor"]["median"] if "floor" in stats else None
    rows = []
    for m, s in stats.items():
        ups = [u for u in consoles.get(m, []) if u is not None]
        up = sorted(ups)[len(ups) // 2] if ups else None
        ratio = s["median"] / floor if floor else None
        paired = round_ratios(samples[m], samples["floor"]) if floor else []
        per_round = sorted(paired)[len(paired) // 2] if paired else None
        rows.append((m, s["median"], s["min"], s["max"], ratio, per_round, up))
        s["ratio_to_floor"] = ratio
        s["ratio_to_floor_by_round"] = paired
        s["cloud_init_finished_uptime"] = consoles.get(m, [])
    print(f"Debian 12, {CPUS} vCPU, {MEMORY} MiB, TCG; median of {args.runs} rounds, seconds")
    print("(x floor: of the medians; x floor by round: the median of each round's own ratio)")
    header = ("", "median", "min", "max", "x floor", "x floor by round", "cloud-init done (uptime)")
    print_table(header, rows)
    if floor and "corral" in stats:
        r = stats["corral"]["median"] / floor
        verdict = "met" if r <= GOAL_RATIO else "NOT met"
        print(f"corral/floor: {r:.3f} (goal <= {GOAL_RATIO}: {verdict})")
    for m, why in skipped.items():
        print(f"skipped {m}: {why}")
    results: dict[str, Any] = {
        "benchmark": "cold_boot",
        "date": started.isoformat(timespec="seconds"),
        "machine": info,
        "image": {"name": IMAGE, "digest": image.digest, "cmdline": image.cmdline},
        "instance_type": TYPE,
        "runs": args.runs,
        "parallel": args.parallel,
        "before": args.before,
        "sources": {m: _commit(ref) for m, ref in refs.items()},
        "methods": stats,
        "skipped": skipped,
        "goal_ratio": GOAL_RATIO,
        "floor_script": "bench/floor_cold.sh",
        "noise": noise.report(),
    }
    write_results("cold_boot", started, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

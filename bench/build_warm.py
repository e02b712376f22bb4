"""`corral build` of 10 uncached `run` steps starting warm against starting cold (issue 14).

Warm: the build VM is restored from the base image's warm state (made once, untimed, by
`corral build warm`). Cold: `corral build --cold`, today's one-boot build. Each run gets a
fresh first step, so all 10 steps run. Measured per build: the whole `corral build` process,
and the time from its start until the first step's command prints (the VM's start, warm or
cold). Interleaved, median of --runs (3) on the tiny guest (root on disk, 1 cpu, 256 MiB), and
of --debian-runs (1) on corral's Debian 12 image when the e2e cache holds it
(.cache/e2e-home; it is never built here: `.venv/bin/pytest -m e2e` or `corral image build
debian-12` makes it). Goals: warm <= 0.5 x cold for the tiny guest; <= 5 s to the first step
on the Debian base.

    .venv/bin/python bench/build_warm.py [--runs 3] [--debian-runs 1] [--no-debian]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import selectors
import subprocess
import time
from typing import Any

from common import (
    CACHE,
    CORRAL,
    Home,
    Noise,
    log,
    machine,
    now,
    print_header,
    print_table,
    summary,
    write_results,
)

STEPS = 10
RATIO_GOAL = 0.5
DEBIAN_FIRST_STEP_GOAL = 5.0
DEBIAN_HOME = CACHE / "e2e-home"
MARK = "first-step-runs"


def tiny_disk() -> Any:
    from corral.image.recipes.tiny import build_tiny_guest

    return build_tiny_guest(CACHE / "tiny-disk" / "guest", cache_dir=CACHE / "tiny-guest" / "debs",
                            root_on_disk=True)  # fmt: skip


def spec(image: str, nonce: str) -> str:
    steps = "\n".join(f' (run (shell "echo {i} > /root/step-{i}"))' for i in range(2, STEPS + 1))
    first = f' (run (shell "echo {MARK}; echo {nonce} > /root/step-1"))'
    return f"((from {image})\n{first}\n{steps})\n"


def timed_build(argv: list[str], env: dict[str, str], timeout: float = 1800) -> tuple[float, float]:
    """Seconds until the first step's command printed, and until the build ended (it must
    succeed)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    seen, errors, first = b"", b"", None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    selector.register(proc.stderr, selectors.EVENT_READ)
    open_streams = 2
    while open_streams:
        if time.perf_counter() - start > timeout:
            proc.kill()
            raise RuntimeError(f"{argv} took longer than {timeout} s")
        for key, _ in selector.select(timeout=1):
            chunk = os.read(key.fd, 65536)
            if not chunk:
                selector.unregister(key.fileobj)
                open_streams -= 1
            elif key.fileobj is proc.stdout:
                seen += chunk
                if first is None and f"\n{MARK}\n".encode() in seen:
                    first = time.perf_counter() - start
            else:
                errors += chunk
    code = proc.wait()
    total = time.perf_counter() - start
    if code != 0 or first is None:
        raise RuntimeError(f"{argv} exited {code}:\n{seen.decode()}{errors.decode()}".strip())
    return first, total


def debian_image() -> dict[str, Any] | None:
    """Corral's Debian 12 image as the e2e tests left it (manifest and blob paths), if there."""
    manifest = DEBIAN_HOME / "images" / "manifests" / "debian-12.json"
    if not manifest.is_file():
        return None
    data = json.loads(manifest.read_text())
    blobs = DEBIAN_HOME / "images" / "blobs" / "sha256"
    paths = {k: blobs / data[k] for k in ("digest", "kernel", "initrd") if data.get(k)}
    if set(paths) != {"digest", "kernel", "initrd"} or not all(p.is_file() for p in paths.values()):
        return None
    return {**data, "paths": paths}


def measure(home: Home, noise: Noise, image: str, shape: list[str], runs: int,
            label: str) -> dict[str, Any]:  # fmt: skip
    """Make the warm state (timed once), then `runs` interleaved warm and cold builds."""
    specs = home.path / "specs"
    specs.mkdir(exist_ok=True)

    def build(mode: str) -> tuple[float, float]:
        nonce = secrets.token_hex(4)
        path = specs / f"{image}-{nonce}.spec"
        path.write_text(spec(image, nonce))
        argv = [str(CORRAL), "build", "-f", str(path), *shape, str(specs)]  # shape: options
        if mode == "cold":
            argv.insert(2, "--cold")
        noise.sample()
        result = timed_build(argv, home.env)
        noise.sample()
        return result

    log(f"{label}: making the warm state (timed once)")
    started = time.perf_counter()
    home.corral("build", "warm", image, *shape, timeout=3600)
    make = time.perf_counter() - started
    samples: dict[str, list[tuple[float, float]]] = {"warm": [], "cold": []}
    out: dict[str, Any] = {"make_warm_state": make}
    try:  # a build that fails (a busy host can miss the boot deadline) ends the rounds
        for run in range(runs):
            for mode in ("warm", "cold"):
                log(f"{label}: round {run + 1}/{runs}, {mode}")
                samples[mode].append(build(mode))
    except RuntimeError as exc:
        log(f"{label}: stopped: {str(exc)[-300:]}")
        out["error"] = str(exc)[-2000:]
    for mode, pairs in samples.items():
        if pairs:
            out[mode] = {"first_step": summary([p[0] for p in pairs]),
                         "total": summary([p[1] for p in pairs])}  # fmt: skip
    if "warm" in out and "cold" in out:
        out["ratio"] = out["warm"]["total"]["median"] / out["cold"]["total"]["median"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--debian-runs", type=int, default=1)
    parser.add_argument("--no-debian", action="store_true")
    parser.add_argument(
        "--boot-timeout",
        type=float,
        default=900.0,
        help="seconds for the Debian build VM to reach SSH (a busy host is slow)",
    )
    args = parser.parse_args()
    started = now()
    g = tiny_disk()
    debian = None if args.no_debian else debian_image()
    results: dict[str, Any] = {}
    with Home() as home:
        noise = Noise(home)
        home.corral("image", "import", str(g.disk), "--name", "tinyd", "--kernel", str(g.kernel),
                    "--initrd", str(g.initrd), "--cmdline", g.cmdline)  # fmt: skip
        info = machine(home.env)
        print_header("build: 10 uncached run steps, warm start against cold", info, started)
        results["tiny"] = measure(home, noise, "tinyd", ["--cpus", "1", "--memory", "256M"],
                                  args.runs, "tiny guest")  # fmt: skip
        if debian is not None:
            p = debian["paths"]
            home.corral("image", "import", str(p["digest"]), "--name", "debian-12", "--kernel",
                        str(p["kernel"]), "--initrd", str(p["initrd"]), "--cmdline",
                        debian["cmdline"], "--user", debian["default_user"])  # fmt: skip
            try:  # a slow host can miss the boot deadline: the tiny guest's results stand
                results["debian"] = measure(
                    home, noise, "debian-12",
                    ["--cpus", "1", "--memory", "1536M", "--boot-timeout", str(args.boot_timeout)],
                    args.debian_runs, "debian-12",
                )  # fmt: skip
            except (RuntimeError, subprocess.SubprocessError) as exc:  # making the warm state
                log(f"debian-12: not measured: {str(exc)[-300:]}")
                results["debian_error"] = str(exc)[-2000:]
        else:
            log(
                "no Debian image in .cache/e2e-home: the Debian base is not measured "
                "(make it with `.venv/bin/pytest -m e2e -k debian`, or `corral image build`)"
            )
    rows = []
    for name, r in results.items():
        if name == "debian_error":
            continue
        for mode in [m for m in ("warm", "cold") if m in r]:
            first, total = r[mode]["first_step"], r[mode]["total"]
            rows.append((f"{name}: {mode}, to the first step", first["median"], first["min"],
                         first["max"]))  # fmt: skip
            rows.append((f"{name}: {mode}, whole build", total["median"], total["min"],
                         total["max"]))  # fmt: skip
        rows.append((f"{name}: making the warm state (once)", r["make_warm_state"], "", ""))
    print_table(("", "median", "min", "max"), rows)
    ratio = results["tiny"].get("ratio")
    if ratio is not None:
        print(f"tiny guest: warm / cold = {ratio:.2f} (goal <= {RATIO_GOAL}: "
              f"{'met' if ratio <= RATIO_GOAL else 'NOT met'})")  # fmt: skip
    if "debian" in results and "warm" in results["debian"]:
        first = results["debian"]["warm"]["first_step"]["median"]
        print(f"debian-12: warm start to the first step {first:.1f} s (goal <= "
              f"{DEBIAN_FIRST_STEP_GOAL} s: {'met' if first <= DEBIAN_FIRST_STEP_GOAL else 'NOT met'})")  # fmt: skip  # noqa: E501
    results["noise"] = noise.report()
    write_results("build_warm", started, {"machine": info, **results})


if __name__ == "__main__":
    main()

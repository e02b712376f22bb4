"""`corral build` of 10 trivial `run` steps on the tiny guest (root on disk).

1. Fully cached: time to `Got:` of a spec whose 10 steps are all in the cache (median of 5).
   Goal: <= 1 s.
2. Uncached: the same spec with a fresh first step each run (so all 10 steps run), against
   the floor of a one-boot build (one boot to ssh plus 10 trivial ssh commands) and against
   10 boot-per-step runs (obuilder's way), interleaved, median of 3. Goal: <= 1.3 x the
   one-boot floor.

    .venv/bin/python bench/build.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import time

from common import (
    BENCH,
    CACHE,
    CORRAL,
    Home,
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
    write_results,
)

STEPS = 10
CACHED_GOAL = 1.0
RATIO_GOAL = 1.3


def tiny_disk():
    from corral.image.recipes.tiny import build_tiny_guest

    return build_tiny_guest(CACHE / "tiny-disk" / "guest", cache_dir=CACHE / "tiny-guest" / "debs",
                            root_on_disk=True)  # fmt: skip


def spec(nonce: str) -> str:
    steps = "\n".join(f' (run (shell "echo {i} > /root/step-{i}"))' for i in range(2, STEPS + 1))
    return f'((from tinyd)\n (run (shell "echo {nonce} > /root/step-1"))\n{steps})\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    started = now()
    g = tiny_disk()
    with Home() as home:
        home.corral("image", "import", str(g.disk), "--name", "tinyd", "--kernel", str(g.kernel),
                    "--initrd", str(g.initrd), "--cmdline", g.cmdline)  # fmt: skip
        info = machine(home.env)
        print_header("build: 10 trivial run steps", info, started)
        manifest = json.loads((home.path / "images/manifests/tinyd.json").read_text())
        base = home.path / "images/blobs/sha256" / manifest["digest"]
        specs = home.path / "specs"
        specs.mkdir()

        def build(nonce: str) -> float:
            path = specs / f"{nonce}.spec"
            path.write_text(spec(nonce))
            argv = [str(CORRAL), "build", "-f", str(path), "--cpus", "1", "--memory", "256M",
                    str(specs)]  # fmt: skip
            return timed(argv, home.env)

        log("the QEMU command line (one launch, not timed)")
        home.corral("launch", "tinyd", "--name", "tmpl", "--type", "c1m256")
        template = home.instance_dir("tmpl")
        argv = qemu_argv(template)
        seed = home.path / "seed.iso"
        shutil.copyfile(template / "seed.iso", seed)
        home.remove("tmpl")
        key = home.path / "ssh" / "id_ed25519"

        def floor(mode: str) -> float:
            work = home.path / "floor" / secrets.token_hex(4)
            work.mkdir(parents=True)
            shutil.copyfile(seed, work / "seed.iso")
            port = free_port()
            qemu = retarget_argv(argv, template, work, port)
            script = ["bash", str(BENCH / "floor_build_steps.sh"), mode, str(STEPS), str(work),
                      str(base), manifest["format"], str(manifest["virtual_size"]), str(port),
                      str(key), "root", "--", *qemu]  # fmt: skip
            try:
                return timed(script, home.env, timeout=1200)
            finally:
                for pidfile in work.rglob("qemu.pid"):
                    kill_pidfile(pidfile)
                time.sleep(0.05)
                shutil.rmtree(work, ignore_errors=True)

        log("warm-up (not timed)")
        build("warm")
        cached = []
        for run in range(5):
            log(f"cached build {run + 1}/5")
            cached.append(build("warm"))
        uncached, one_boot, per_step = [], [], []
        for run in range(args.runs):
            log(f"round {run + 1}/{args.runs}")
            uncached.append(build(secrets.token_hex(4)))
            one_boot.append(floor("one-boot"))
            per_step.append(floor("per-step"))
    c, u, o, p = (summary(x) for x in (cached, uncached, one_boot, per_step))
    print_table(
        ("", "median", "min", "max"),
        [("fully cached build (10 steps)", c["median"], c["min"], c["max"]),
         ("uncached build (10 steps, one boot)", u["median"], u["min"], u["max"]),
         ("floor: one boot + 10 ssh commands", o["median"], o["min"], o["max"]),
         ("obuilder's way: 10 boots", p["median"], p["min"], p["max"])],
    )  # fmt: skip
    ratio = u["median"] / o["median"]
    print(f"cached: {c['median']:.3f} s (goal <= {CACHED_GOAL} s: "
          f"{'met' if c['median'] <= CACHED_GOAL else 'NOT met'})")  # fmt: skip
    print(f"uncached / one-boot floor: {ratio:.2f} (goal <= {RATIO_GOAL}: "
          f"{'met' if ratio <= RATIO_GOAL else 'NOT met'}); boot-per-step / corral: "
          f"{p['median'] / u['median']:.1f}x")  # fmt: skip
    write_results("build", started, {"machine": info, "cached": c, "uncached": u, "one_boot": o,
                                     "per_step": p, "ratio": ratio})  # fmt: skip


if __name__ == "__main__":
    main()

"""`corral image build debian-12` against its floor: the same mmdebstrap bootstrap and the
same ext4 + qcow2 steps in a plain shell script. Each runs twice, cold (empty apt cache: every
package is downloaded) and warm (packages cached), in fresh directories.

The issue's requirement: a build finishes in under 4 minutes on the 2-core machine.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from common import BENCH, Home, log, machine, now, print_header, print_table, timed, write_results
from corral.image.recipes.debian import PACKAGES

GOAL = 240.0


def main() -> None:
    started = now()
    with Home() as home:
        info = machine(home.env)
        print_header("image build: corral image build debian-12 vs plain mmdebstrap", info, started)
        corral_runs = []
        for label in ("cold", "warm"):
            log(f"corral image build debian-12 ({label} apt cache)")
            argv = [str(BENCH.parent / ".venv/bin/corral"), "image", "build", "debian-12",
                    "--replace"]  # fmt: skip
            corral_runs.append((label, timed(argv, home.env, timeout=1200)))
        floor_runs = []
        work = Path(tempfile.mkdtemp(prefix="floor-build-"))
        try:
            for label in ("cold", "warm"):
                log(f"floor_build.sh ({label} apt cache)")
                out = work / label
                argv = [str(BENCH / "floor_build.sh"), str(out), str(work / "apt"),
                        ",".join(PACKAGES)]  # fmt: skip
                floor_runs.append((label, timed(argv, home.env, timeout=1200)))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    rows = [
        (label, c, f, c / f, "met" if c <= GOAL else "MISSED")
        for (label, c), (_, f) in zip(corral_runs, floor_runs, strict=True)
    ]
    print_table(("apt cache", "corral (s)", "floor (s)", "ratio", "< 240 s"), rows)
    write_results(
        "image_build",
        started,
        {"machine": info, "corral": dict(corral_runs), "floor": dict(floor_runs), "goal_s": GOAL},
    )


if __name__ == "__main__":
    main()

"""`corral image configure` of the tiny guest against the guest's bare time to ready.

Configure does everything a launch to ready does, then sysprep (optional, not here), a clean
ACPI shutdown, a layer snapshot and the removal of its throw-away instance. The bare time to
ready (`corral launch --wait`) is measured in the same run, interleaved, median of 5 each.

    .venv/bin/python bench/configure.py [--runs 5]
"""

from __future__ import annotations

import argparse

from common import (
    CORRAL,
    TINY,
    TYPE,
    Home,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    started = now()
    with Home() as home:
        home.import_tiny(tiny_guest())
        info = machine(home.env)
        print_header("configure of the tiny guest vs its bare time to ready", info, started)
        user_data = home.path / "user-data"
        user_data.write_text("#cloud-config\nruncmd: [[touch, /var/tmp/configured]]\n")
        ready, configure = [], []
        for run in range(args.runs + 1):  # the first round warms up and is not counted
            log(f"round {run}/{args.runs}" if run else "warm-up (not timed)")
            launch = [str(CORRAL), "launch", TINY, "--name", f"r{run}", "--type", TYPE, "--wait"]
            took_ready = timed(launch, home.env)
            home.remove(f"r{run}")
            conf = [str(CORRAL), "image", "configure", TINY, "--user-data", str(user_data),
                    "--as", f"c{run}", "--type", TYPE, "--quiet"]  # fmt: skip
            took_configure = timed(conf, home.env)
            if run:
                ready.append(took_ready)
                configure.append(took_configure)
    r, c = summary(ready), summary(configure)
    print_table(
        ("", "median", "min", "max"),
        [("launch --wait (bare time to ready)", r["median"], r["min"], r["max"]),
         ("image configure", c["median"], c["min"], c["max"])],
    )  # fmt: skip
    ratio = c["median"] / r["median"]
    print(f"ratio configure/ready: {ratio:.2f}; configure costs {c['median'] - r['median']:.2f} s "
          "more than reaching ready (shutdown, snapshot, cleanup)")  # fmt: skip
    write_results("configure", started, {"machine": info, "ready": r, "configure": c,
                                         "ratio": ratio})  # fmt: skip


if __name__ == "__main__":
    main()

"""`corral image pull` of a 2 GiB image from a local HTTP server, against its floor.

corral streams the file into the store, hashing while it writes (one pass), then checks it with
`qemu-img check` and names it. The floor (bench/floor_pull.sh) is `curl -o FILE URL` followed by
`sha256sum FILE`: two passes. Both fetch the same file from the same server (a thread of this
process serving with sendfile from the page cache). Median of 3 each, interleaved (corral,
floor, corral, ...) after one untimed warm-up of each; `sync` before every run so that one
run's write-back does not land in the next. Goal: corral <= 1.0 x the floor.

    .venv/bin/python bench/pull.py [--runs 3] [--size-mib 2048]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from common import (
    BENCH,
    CORRAL,
    Home,
    Noise,
    log,
    machine,
    now,
    print_header,
    print_table,
    summary,
    timed,
    write_results,
)

GOAL_RATIO = 1.0


def make_image(path: Path, size_mib: int) -> str:
    """A qcow2 full of random data (nothing for the network or a filesystem to skip)."""
    raw = path.with_suffix(".raw")
    with open(raw, "wb") as f:
        for _ in range(size_mib // 64):
            f.write(os.urandom(64 << 20))
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(path)],
                   check=True)  # fmt: skip
    raw.unlink()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def serve(path: Path) -> tuple[ThreadingHTTPServer, str]:
    """Serve one file at /<name> with sendfile (the server should not be the bottleneck)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path != f"/{path.name}":
                self.send_error(404)
                return
            size = path.stat().st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.flush()
            with open(path, "rb") as f:
                self.connection.sendfile(f)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/{path.name}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=2048)
    args = parser.parse_args()
    started = now()
    work = Path(tempfile.mkdtemp(prefix="pull-bench-", dir="/tmp"))
    samples: dict[str, list[float]] = {"corral": [], "floor": []}
    try:
        with Home() as home:
            info = machine(home.env)
            print_header("image pull: corral image pull vs curl + sha256sum", info, started)
            image = work / "image.qcow2"
            log(f"making a {args.size_mib} MiB qcow2 of random data")
            digest = make_image(image, args.size_mib)
            size = image.stat().st_size
            httpd, url = serve(image)
            noise = Noise(home)
            seq = 0

            def run_corral() -> float:
                nonlocal seq
                seq += 1
                name = f"p{seq}"
                os.sync()
                argv = [str(CORRAL), "image", "pull", url, "--checksum", f"sha256:{digest}",
                        "--name", name]  # fmt: skip
                elapsed = timed(argv, home.env, timeout=1200)
                home.corral("image", "rm", name)  # frees the blob: the next pull downloads again
                return elapsed

            def run_floor() -> float:
                out = work / "floor.qcow2"
                os.sync()
                elapsed = timed([str(BENCH / "floor_pull.sh"), url, str(out), digest], home.env,
                                timeout=1200)  # fmt: skip
                out.unlink()
                return elapsed

            log("warm-up (untimed)")
            run_corral()
            run_floor()
            for n in range(args.runs):
                log(f"round {n + 1}/{args.runs}")
                noise.sample()
                samples["corral"].append(run_corral())
                noise.sample()
                samples["floor"].append(run_floor())
            httpd.shutdown()
            noise_report = noise.report()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    stats = {k: summary(v) for k, v in samples.items()}
    ratio = stats["corral"]["median"] / stats["floor"]["median"]
    rate = size / stats["corral"]["median"] / (1 << 20)
    print(f"{size / (1 << 30):.2f} GiB qcow2, median of {args.runs} runs each, seconds")
    print_table(
        ("method", "median", "min", "max"),
        [
            ("corral image pull", stats["corral"]["median"], stats["corral"]["min"],
             stats["corral"]["max"]),
            ("floor: curl + sha256sum", stats["floor"]["median"], stats["floor"]["min"],
             stats["floor"]["max"]),
        ],
    )  # fmt: skip
    verdict = "met" if ratio <= GOAL_RATIO else "NOT met"
    print(
        f"corral / floor = {ratio:.2f} (goal <= {GOAL_RATIO}: {verdict}); corral: {rate:.0f} MiB/s"
    )
    write_results(
        "pull",
        started,
        {
            "benchmark": "pull",
            "date": started.isoformat(timespec="seconds"),
            "machine": info,
            "image_bytes": size,
            "runs": args.runs,
            **stats,
            "ratio": ratio,
            "goal_ratio": GOAL_RATIO,
            "goal_met": ratio <= GOAL_RATIO,
            "floor_script": "bench/floor_pull.sh",
            "noise": noise_report,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Shared plumbing for the benchmarks: a throw-away state directory, the tiny guest, the
machine description, timing helpers, result tables and JSON files, and cleanup.

Not a test module and not imported by corral: the benchmarks run on demand only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENV_BIN = REPO / ".venv" / "bin"
CORRAL = VENV_BIN / "corral"
RESULTS = BENCH / "results"
CACHE = REPO / ".cache"
HOST_CACHE = CACHE / "host"
TINY_CACHE = CACHE / "tiny-guest"
TINY = "tiny"
TYPE = "c1m256"
ENV_KEYS = ("CORRAL_HOME", "CORRAL_CACHE_DIR", "CORRAL_CONFIG")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the state directory ---------------------------------------------------------------------


class Home:
    """A fresh, short CORRAL_HOME under /tmp (unix socket paths must fit in 108 bytes).

    `env` is what every corral subprocess gets; the benchmark process itself is pointed at the
    same directory (for the in-process API runs). On exit every instance is removed and every
    process still naming the directory on its command line (a QEMU we started) is killed.
    """

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="cb", dir="/tmp"))
        self.env = {
            **os.environ,
            "CORRAL_HOME": str(self.path),
            "CORRAL_CACHE_DIR": str(HOST_CACHE),
            # No user configuration: every run sees the defaults plus the two settings above.
            "CORRAL_CONFIG": str(self.path / "no-config.toml"),
        }
        self.env.pop("CORRAL_DEBUG", None)
        self._saved = {k: os.environ.get(k) for k in ENV_KEYS}

    def __enter__(self) -> Home:
        for key in ENV_KEYS:
            os.environ[key] = self.env[key]
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.cleanup()
        finally:
            for key, value in self._saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def corral(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(CORRAL), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"corral {shlex.join(args)} exited {proc.returncode}:\n{proc.stderr.strip()}"
            )
        return proc

    def instance_dir(self, name: str) -> Path:
        return self.path / "instances" / name

    def remove(self, name: str) -> None:
        self.corral("rm", "-f", name, check=False)

    def instances(self) -> list[str]:
        root = self.path / "instances"
        return sorted(p.name for p in root.iterdir()) if root.is_dir() else []

    def cleanup(self) -> None:
        for name in self.instances():
            with contextlib.suppress(Exception):
                self.remove(name)
        for pid in pids_mentioning(str(self.path)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while pids_mentioning(str(self.path)) and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(self.path, ignore_errors=True)

    def import_tiny(self, guest: Any, name: str = TINY, disk: Path | None = None) -> None:
        """Import `disk` (default: the tiny guest's own) with the tiny guest's kernel and initrd."""
        self.corral(
            "image", "import", str(disk or guest.disk), "--name", name,
            "--kernel", str(guest.kernel), "--initrd", str(guest.initrd),
            "--cmdline", guest.cmdline, "--user", guest.default_user,
        )  # fmt: skip


def tiny_guest() -> Any:
    """The tiny test guest (built once from Debian packages, cached under .cache/tiny-guest)."""
    from corral.image.recipes.tiny import build_tiny_guest

    return build_tiny_guest(TINY_CACHE / "guest", cache_dir=TINY_CACHE / "debs")


# --- processes --------------------------------------------------------------------------------


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def all_pids() -> list[int]:
    return sorted(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())


def pids_mentioning(text: str) -> list[int]:
    """Processes (other than this one) with `text` somewhere in their command line."""
    me = os.getpid()
    return [pid for pid in all_pids() if pid != me and any(text in a for a in cmdline(pid))]


class Noise:
    """Other work on the host while a benchmark runs: QEMUs (under TCG each steals a core or
    more), other corral commands, test runs and image builds. Sampled between measurements,
    reported as a warning and in the JSON; the load average is recorded too."""

    WATCH = ("corral", "pytest", "mmdebstrap")

    def __init__(self, home: Home) -> None:
        self.home = str(home.path)
        self.mine = ancestors()
        self.seen: dict[int, str] = {}
        self.load = [os.getloadavg()[0]]

    def sample(self) -> None:
        self.load.append(os.getloadavg()[0])
        for pid in all_pids():
            if pid in self.mine or pid in self.seen:
                continue
            argv = cmdline(pid)
            if not argv or any(self.home in a for a in argv):
                continue
            qemu = Path(argv[0]).name.startswith("qemu-system")
            if qemu or any(w in a for a in argv[:4] for w in self.WATCH):
                self.seen[pid] = " ".join(argv)[:200]

    def report(self) -> dict[str, Any]:
        if self.seen:
            print(
                f"WARNING: {len(self.seen)} other QEMU/corral/test process(es) ran during the "
                "benchmark; the numbers may be noisy (see 'noise' in the JSON):"
            )
            for pid, argv in self.seen.items():
                print(f"  {pid}: {argv[:110]}")
        return {"other_processes": self.seen, "loadavg_1min": self.load}


def ancestors() -> set[int]:
    """This process and its ancestors (the shell that ran the benchmark may say 'corral')."""
    out, pid = set(), os.getpid()
    while pid > 1:
        out.add(pid)
        pid = int(proc_status(pid).get("PPid", "0"))
    return out


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def kib(value: str | None) -> int | None:
    """'123456 kB' -> 123456."""
    return int(value.split()[0]) if value else None


def kill_pidfile(pidfile: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def qemu_argv(instance_dir: Path) -> list[str]:
    """The QEMU command corral ran, from the `+ argv` line it writes first to qemu.stderr."""
    first = (instance_dir / "qemu.stderr").read_text().splitlines()[0]
    assert first.startswith("+ "), first
    return shlex.split(first[2:])


def retarget_argv(argv: Sequence[str], old_dir: Path, new_dir: Path, ssh_port: int) -> list[str]:
    """The same QEMU command with the instance's files in new_dir and another ssh host port."""
    out = []
    for arg in argv:
        arg = arg.replace(f"{old_dir}/", f"{new_dir}/")
        if arg.startswith("user,id=net0,"):
            rules = arg.split(",")
            for i, rule in enumerate(rules):
                if rule.startswith("hostfwd=tcp:127.0.0.1:") and rule.endswith("-:22"):
                    rules[i] = f"hostfwd=tcp:127.0.0.1:{ssh_port}-:22"
            arg = ",".join(rules)
        out.append(arg)
    return out


def floor_python() -> str:
    """The interpreter the floor scripts poll with: the system one (no pyenv shim start-up)."""
    for candidate in ("/usr/bin/python3", sys.executable):
        if Path(candidate).is_file():
            return candidate
    return "python3"


# --- timing and reporting --------------------------------------------------------------------


def timed(argv: Sequence[str], env: dict[str, str], timeout: float = 600) -> float:
    """Wall-clock seconds of one subprocess, which must succeed."""
    start = time.perf_counter()
    proc = subprocess.run(
        list(argv), env=env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(argv)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}".strip()
        )
    return elapsed


def summary(samples: Sequence[float]) -> dict[str, Any]:
    return {
        "n": len(samples),
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": list(samples),
    }


def machine(env: dict[str, str]) -> dict[str, Any]:
    """nproc, CPU model, kernel, QEMU version and corral's accelerator (from `corral doctor`).

    Run it in the benchmark's state directory once the tiny image is imported: the accelerator
    probe is then done (and cached) before anything is timed.
    """
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    qemu = subprocess.run(
        ["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    doctor = subprocess.run(
        [str(CORRAL), "doctor", "--json"], capture_output=True, text=True, env=env, check=False
    )
    try:
        accel = json.loads(doctor.stdout)["accelerator"]
    except (ValueError, KeyError):
        accel = f"unknown ({doctor.stderr.strip()})"
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "os": _os_release(),
        "qemu": qemu[0] if qemu else "unknown",
        "accelerator": accel,
        "python": platform.python_version(),
    }


def _os_release() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return platform.platform()


def now() -> dt.datetime:
    return dt.datetime.now().astimezone()


def print_header(title: str, info: dict[str, Any], started: dt.datetime) -> None:
    print(f"# {title}")
    print(f"date:        {started.isoformat(timespec='seconds')}")
    print(f"machine:     {info['nproc']} x {info['cpu']}")
    print(f"os/kernel:   {info['os']} / {info['kernel']}")
    print(f"qemu:        {info['qemu']}")
    print(f"accelerator: {info['accelerator']}")
    print()


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(c) for c in columns]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for n, row in enumerate(cells):
        # The first column (labels) left-aligned, the numbers right-aligned.
        padded = [
            v.ljust(w) if i == 0 else v.rjust(w)
            for i, (v, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(padded).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def write_results(name: str, started: dt.datetime, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stem = f"{name}-{started.date().isoformat()}"
    path, n = RESULTS / f"{stem}.json", 1
    while path.exists():  # a second run on the same day keeps the first
        n += 1
        path = RESULTS / f"{stem}.{n}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"results: {path.relative_to(REPO)}")
    return path

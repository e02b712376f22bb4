"""Memory: corral keeps no resident process per VM besides QEMU; QEMU's RSS per VM.

Launches 4 tiny guests (c1m256) with --wait, lets them settle, then lists every process whose
command line mentions the state directory (expected: exactly the 4 QEMUs, each re-parented
away from the corral command that started it) and every other process that looks like corral,
and reads VmRSS (plus VmHWM, RssAnon/RssFile and PSS) of each QEMU from /proc.

    .venv/bin/python bench/memory.py [--vms 4] [--settle 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    TYPE,
    Home,
    all_pids,
    ancestors,
    cmdline,
    kib,
    log,
    machine,
    now,
    pids_mentioning,
    print_header,
    print_table,
    proc_status,
    tiny_guest,
    write_results,
)

GUEST_RAM_MIB = int(TYPE.split("m", 1)[1])


def pss_kib(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return None


def rss_by_mapping(pid: int, guest_ram_bytes: int) -> dict[str, int]:
    """QEMU's RSS by mapping, in KiB: guest RAM, TCG code buffer, QEMU's binary and libs, rest.

    Guest RAM is the anonymous mapping of exactly the guest's memory size; the TCG translation
    cache is the anonymous writable+executable one.
    """
    out = {"guest_ram": 0, "tcg_code": 0, "qemu_files": 0, "other_anon": 0}
    kind = "other_anon"
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
                start, end = (int(x, 16) for x in head[0].split("-"))
                anonymous = len(head) == 5 or not head[5].startswith("/")
                if not anonymous:
                    kind = "qemu_files"
                elif end - start == guest_ram_bytes:
                    kind = "guest_ram"
                elif "x" in head[1] and "w" in head[1]:
                    kind = "tcg_code"
                else:
                    kind = "other_anon"
            elif head[0] == "Rss:":
                out[kind] += int(head[1])
    return out


def describe(pid: int) -> dict[str, Any]:
    status = proc_status(pid)
    argv = cmdline(pid)
    name = argv[argv.index("-name") + 1] if "-name" in argv else None
    return {
        "pid": pid,
        "ppid": int(status.get("PPid", "0")),
        "comm": status.get("Name"),
        "instance": name,
        "argv0": argv[0] if argv else "",
        "vm_rss_kib": kib(status.get("VmRSS")),
        "vm_hwm_kib": kib(status.get("VmHWM")),
        "rss_anon_kib": kib(status.get("RssAnon")),
        "rss_file_kib": kib(status.get("RssFile")),
        "pss_kib": pss_kib(pid),
        "threads": int(status.get("Threads", "0")),
        "rss_by_mapping_kib": rss_by_mapping(pid, GUEST_RAM_MIB << 20),
    }


def other_processes_of(home: Home, qemus: set[int]) -> list[dict[str, Any]]:
    """Processes besides the QEMUs that carry this state directory in their environment.

    Every corral command, and anything corral would leave behind, inherits CORRAL_HOME; the
    benchmark itself and its ancestors are not counted.
    """
    skip = ancestors() | qemus
    marker = f"CORRAL_HOME={home.path}".encode()
    found = []
    for pid in all_pids():
        if pid in skip:
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environ:
            found.append({"pid": pid, "argv": cmdline(pid)})
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=4)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds to wait once ready")
    args = parser.parse_args()
    started = now()
    guest = tiny_guest()
    with Home() as home:
        home.import_tiny(guest)
        info = machine(home.env)
        print_header("memory: resident processes and QEMU RSS per VM", info, started)
        names = [f"m{i}" for i in range(1, args.vms + 1)]
        for name in names:
            log(f"launching {name} --wait")
            home.corral("launch", "tiny", "--name", name, "--type", TYPE, "--wait")
        time.sleep(args.settle)
        procs = [describe(pid) for pid in pids_mentioning(str(home.path))]
        qemu_pids = {p["pid"] for p in procs if p["comm"] and p["comm"].startswith("qemu")}
        others = other_processes_of(home, qemu_pids)
        # A launch in progress is recorded with the launcher's pid; a finished one clears it.
        launchers = {
            name: json.loads((home.instance_dir(name) / "instance.json").read_text()).get(
                "launcher_pid"
            )
            for name in names
        }

    qemus = [p for p in procs if p["comm"] and p["comm"].startswith("qemu")]
    non_qemu = [p for p in procs if p not in qemus]
    rows = [
        (
            p["instance"], p["pid"], p["ppid"], p["vm_rss_kib"] / 1024, p["vm_hwm_kib"] / 1024,
            p["rss_anon_kib"] / 1024, p["rss_file_kib"] / 1024, (p["pss_kib"] or 0) / 1024,
        )
        for p in sorted(qemus, key=lambda p: p["instance"] or "")
    ]  # fmt: skip
    print(
        f"{args.vms} tiny guests, {TYPE} ({GUEST_RAM_MIB} MiB guest RAM), "
        f"{args.settle:g} s after ready; MiB"
    )
    print_table(("VM", "pid", "ppid", "VmRSS", "VmHWM", "RssAnon", "RssFile", "PSS"), rows)
    parts = ("guest_ram", "tcg_code", "qemu_files", "other_anon")
    print(
        "where the RSS is (MiB): guest RAM touched, TCG translation cache, "
        "QEMU's binary and libraries, the rest"
    )
    print_table(
        ("VM", *parts),
        [
            (p["instance"], *(p["rss_by_mapping_kib"][k] / 1024 for k in parts))
            for p in sorted(qemus, key=lambda p: p["instance"] or "")
        ],
    )
    rss = [p["vm_rss_kib"] / 1024 for p in qemus]
    print(
        f"QEMU RSS per VM: median {statistics.median(rss):.1f} MiB, "
        f"min {min(rss):.1f}, max {max(rss):.1f}, total {sum(rss):.1f} MiB"
    )
    print(
        f"processes naming the state directory: {len(procs)} "
        f"({len(qemus)} QEMU, {len(non_qemu)} other)"
    )
    for p in non_qemu:
        print(f"  other: pid {p['pid']} {p['comm']} {p['argv0']}")
    print(f"other processes with this CORRAL_HOME: {len(others) or 'none'}")
    pending = {k: v for k, v in launchers.items() if v is not None}
    print(f"launcher pids still recorded: {pending or 'none'}")
    for p in others:
        print(f"  pid {p['pid']}: {' '.join(p['argv'])}")
    print()
    no_extra = not non_qemu and not others and not pending and len(qemus) == args.vms
    results: dict[str, Any] = {
        "benchmark": "memory",
        "date": started.isoformat(timespec="seconds"),
        "machine": info,
        "instance_type": TYPE,
        "vms": args.vms,
        "settle_seconds": args.settle,
        "qemu": qemus,
        "other_processes_naming_home": non_qemu,
        "other_processes_with_home_in_env": others,
        "launcher_pid_in_records": launchers,
        "qemu_rss_mib": {
            "median": statistics.median(rss),
            "min": min(rss),
            "max": max(rss),
            "total": sum(rss),
        },
        "only_qemu_resident": no_extra,
    }
    write_results("memory", started, results)
    return 0 if no_extra else 1


if __name__ == "__main__":
    sys.exit(main())

"""Network throughput and round-trip latency of tiny guests, all in one run: VM->VM on a
managed network's bridge, host->VM on the bridge, and host->VM through a user-mode forward.

Runs itself inside a network namespace it creates and removes (the "host" is that namespace).
Three tiny guests (c1m256): v1 and v2 on network `tp`, u1 on user-mode networking with two
forwards. The tiny guest has busybox (nc, dd, ping) and no iperf3, so:

- throughput: N MiB over one TCP connection. host->VM: Python in the namespace sends zeros to
  a sink (`nc -ll -e` running `cat >/dev/null` in the guest), timed from connect until the sink
  closes after the last byte. VM->host: Python fetches a file of N MiB from the guest's busybox
  httpd. VM->VM: v1 fetches v2's file with busybox wget, timed in v1 with /proc/uptime (busybox
  nc is too slow a sender under TCG to measure a network with). Median of R rounds.
- latency: a 1-byte TCP request/response to an echo server (`nc -ll -e cat`) in the guest,
  over one connection, median of 200 (host->VM, bridge and forward); and ICMP ping, average of
  20 (VM->VM and host->VM on the bridge; a user-mode forward carries no ICMP).

    .venv/bin/python bench/network_throughput.py [--mib 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import struct
import subprocess
import sys
import time
import uuid
from typing import Any

from common import (
    CORRAL,
    TINY,
    TYPE,
    Home,
    free_port,
    log,
    machine,
    now,
    print_header,
    print_table,
    tiny_guest,
    write_results,
)

INSIDE = "CORRAL_BENCH_NETNS"
SUBNET = "10.79.0.0/24"
SINK, ECHO, HTTP = 5001, 5003, 80
CHUNK = 256 << 10


def servers(mib: int) -> str:
    """A sink, an echo server and busybox httpd serving /w/big (MIB MiB, in the guest's RAM)."""
    return (
        "printf '#!/bin/sh\\nexec cat >/dev/null\\n' > /sink && chmod +x /sink && "
        f"(setsid nc -ll -p {SINK} -e /sink </dev/null >/dev/null 2>&1 &) && "
        f"(setsid nc -ll -p {ECHO} -e /bin/cat </dev/null >/dev/null 2>&1 &) && "
        f"mkdir -p /w && dd if=/dev/zero of=/w/big bs=1048576 count={mib} 2>/dev/null && "
        f"(setsid httpd -p {HTTP} -h /w </dev/null >/dev/null 2>&1 &)"
    )


def exec_(home: Home, vm: str, command: str, timeout: float = 600) -> str:
    return home.corral("exec", vm, "--", "sh", "-c", command, timeout=timeout).stdout


def send(addr: str, port: int, size: int) -> float:
    """Seconds to push `size` bytes to a sink and see it close (all of them received)."""
    data = bytes(CHUNK)
    start = time.perf_counter()
    with socket.create_connection((addr, port), timeout=60) as conn:
        left = size
        while left > 0:
            left -= conn.send(data[: min(left, CHUNK)])
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(4096):
            pass
    return time.perf_counter() - start


def echo_rtt(addr: str, port: int, count: int = 200) -> list[float]:
    """Round trips of 1 byte on one connection to an echo server, in seconds."""
    out = []
    with socket.create_connection((addr, port), timeout=30) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(b"x")  # the first (the echo process starting) is not counted
        conn.recv(1)
        for _ in range(count):
            start = time.perf_counter()
            conn.sendall(b"x")
            if conn.recv(1) != b"x":
                raise RuntimeError("the echo server did not echo")
            out.append(time.perf_counter() - start)
    return out


def ping_avg_ms(output: str) -> float:
    """The average of busybox's `round-trip min/avg/max` or iputils' `rtt min/avg/max/mdev`."""
    match = re.search(r"min/avg/max(?:/mdev)? = [\d.]+/([\d.]+)/", output)
    if match is None:
        raise RuntimeError(f"no ping summary in: {output!r}")
    return float(match[1])


def _checksum(data: bytes) -> int:
    total = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data) - 1, 2))
    if len(data) % 2:
        total += data[-1] << 8
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp_ping_ms(addr: str, count: int = 20) -> float:
    """The average ICMP echo round trip from here, in ms (a raw socket: the namespace has no
    ping binary of its own to rely on)."""
    ident, times = os.getpid() & 0xFFFF, []
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.settimeout(5)
        for seq in range(count):
            header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            payload = bytes(56)
            packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload
            start = time.perf_counter()
            sock.sendto(packet, (addr, 0))
            while True:
                reply = sock.recv(1500)
                ihl = (reply[0] & 0x0F) * 4
                kind, _, _, rid, rseq = struct.unpack("!BBHHH", reply[ihl : ihl + 8])
                if kind == 0 and (rid, rseq) == (ident, seq):
                    break
            times.append(time.perf_counter() - start)
            time.sleep(0.2)
    return statistics.mean(times) * 1000


def fetch(addr: str, port: int, size: int) -> float:
    """Seconds to GET /big (`size` bytes) from the guest's httpd, all of it read."""
    start = time.perf_counter()
    with socket.create_connection((addr, port), timeout=60) as conn:
        conn.sendall(f"GET /big HTTP/1.0\r\nHost: {addr}\r\n\r\n".encode())
        got = 0
        while chunk := conn.recv(CHUNK):
            got += len(chunk)
    if got < size:
        raise RuntimeError(f"got {got} bytes of {size}")
    return time.perf_counter() - start


def vm_to_vm(home: Home, peer: str) -> float:
    """v1 fetches v2's /big with busybox wget (busybox nc as a sender manages ~6 MB/s even on
    loopback under TCG, so it would measure nc, not the network), timed with /proc/uptime."""
    out = exec_(
        home,
        "v1",
        f"s=$(cut -d' ' -f1 /proc/uptime); wget -q -O /dev/null http://{peer}/big || exit 1; "
        "e=$(cut -d' ' -f1 /proc/uptime); echo $s $e",
    )
    start, end = (float(x) for x in out.split())
    return end - start


def inside(mib: int, rounds: int) -> dict[str, Any]:
    started = now()
    size = mib << 20
    with Home() as home:
        home.import_tiny(tiny_guest())
        info = machine(home.env)
        print_header("network throughput and latency: bridge vs user-mode forward", info, started)
        home.corral("network", "create", "tp", "--subnet", SUBNET)
        fwd_sink, fwd_echo, fwd_http = free_port(), free_port(), free_port()
        vms = {
            "v1": ["--network", "tp"],
            "v2": ["--network", "tp"],
            "u1": ["--forward", f"{fwd_sink}:{SINK}", "--forward", f"{fwd_echo}:{ECHO}",
                   "--forward", f"{fwd_http}:{HTTP}"],
        }  # fmt: skip
        log("launching v1, v2 (network tp) and u1 (user-mode)")
        procs = []
        for name, args in vms.items():
            argv = [str(CORRAL), "launch", TINY, "--name", name, "--type", TYPE, *args, "--wait"]
            procs.append(subprocess.Popen(argv, env=home.env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE))  # fmt: skip
        for proc in procs:
            _, err = proc.communicate(timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"launch failed: {err.decode()}")
        for vm in ("v2", "u1"):
            exec_(home, vm, servers(mib))
        v2 = json.loads(home.corral("inspect", "v2", "--json").stdout)["address"]
        time.sleep(0.5)
        paths = {
            "VM->VM (bridge)": lambda: vm_to_vm(home, v2),
            "host->VM (bridge)": lambda: send(v2, SINK, size),
            "host->VM (user-mode forward)": lambda: send("127.0.0.1", fwd_sink, size),
            "VM->host (bridge)": lambda: fetch(v2, HTTP, size),
            "VM->host (user-mode forward)": lambda: fetch("127.0.0.1", fwd_http, size),
        }
        seconds: dict[str, list[float]] = {k: [] for k in paths}
        for run in range(rounds):
            log(f"throughput round {run + 1}/{rounds}: {mib} MiB per path")
            for name, measure in paths.items():
                seconds[name].append(measure())
        log("latency")
        rtt = {
            "host->VM (bridge)": echo_rtt(v2, ECHO),
            "host->VM (user-mode forward)": echo_rtt("127.0.0.1", fwd_echo),
        }
        ping = {
            "VM->VM (bridge)": ping_avg_ms(exec_(home, "v1", f"ping -c 20 -i 0.2 {v2}")),
            "host->VM (bridge)": icmp_ping_ms(v2),
        }
    rows = []
    results: dict[str, Any] = {"paths": {}}
    for name, samples in seconds.items():
        mbps = [size / s / 1e6 for s in samples]
        entry: dict[str, Any] = {
            "seconds": samples,
            "MB_per_s": mbps,
            "median_MB_per_s": statistics.median(mbps),
            "echo_rtt_ms": statistics.median(rtt[name]) * 1000 if name in rtt else None,
            "ping_avg_ms": ping.get(name),
        }
        results["paths"][name] = entry
        rows.append(
            (name, f"{entry['median_MB_per_s']:.1f}", _ms(entry["echo_rtt_ms"]),
             _ms(entry["ping_avg_ms"]))
        )  # fmt: skip
    ratios = {}
    for way in ("host->VM", "VM->host"):
        bridge = results["paths"][f"{way} (bridge)"]["median_MB_per_s"]
        user = results["paths"][f"{way} (user-mode forward)"]["median_MB_per_s"]
        ratios[way] = bridge / user
    print(f"{mib} MiB per transfer, median of {rounds}; TCP echo RTT median of 200; ping avg of 20")
    print_table(("path", "MB/s", "TCP echo RTT ms", "ping ms"), rows)
    for way, ratio in ratios.items():
        print(f"{way} throughput, bridge over user-mode forward: {ratio:.2f}x (goal >= 3x)")
    results.update(
        benchmark="network_throughput",
        date=started.isoformat(timespec="seconds"),
        machine=info,
        mib=mib,
        rounds=rounds,
        bridge_over_user_mode=ratios,
    )
    write_results("network_throughput", started, results)
    return results


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if os.environ.get(INSIDE):
        inside(args.mib, args.rounds)
        return 0
    if os.geteuid() != 0:
        sys.exit("needs root: it makes a network namespace")
    ns = f"crlbench-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        env = {**os.environ, INSIDE: ns}
        argv = ["ip", "netns", "exec", ns, sys.executable, __file__, "--mib", str(args.mib),
                "--rounds", str(args.rounds)]  # fmt: skip
        return subprocess.run(argv, env=env, check=False).returncode
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    raise SystemExit(main())

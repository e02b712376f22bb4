"""Per-VM figures of this host for Prometheus (and `corral top`): vCPU time, resident memory,
disk and network traffic, uptime, read when asked and never kept.

A VM's QEMU is believed only as corral.machine.vm believes it: the pidfile's process must be
alive and name the instance's QMP socket (`Vm.attach`); its start time is read with its
figures and read again at the end, so a pid reused meanwhile is dropped, not reported. vCPU
time is the CPU time of the vCPU threads QMP names (`query-cpus-fast`), so QEMU's I/O
threads do not count; disks are QMP `query-blockstats` by drive id; network bytes are known
for NICs on host taps (from the tap's counters, turned round: what the tap sends, the guest
receives) and not for user-mode NICs. A VM whose QMP does not answer in time still has its
/proc figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from corral.errors import QemuError
from corral.instance import registry
from corral.instance.record import InstanceRecord
from corral.layout import Home
from corral.machine.qmp import Qmp
from corral.machine.vm import Vm

QMP_TIMEOUT = 2.0  # per VM: a scrape must not hang on one stuck QEMU
CONCURRENCY = 16  # QMP conversations at once
TAP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")
CONTENT_TYPE = CONTENT_TYPE_LATEST
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class DiskFigures:
    device: str  # the drive id: disk0, seed, vol0...
    read_bytes: int
    write_bytes: int
    read_ops: int
    write_ops: int


@dataclass(frozen=True)
class NicFigures:
    tap: str
    receive_bytes: int  # by the guest
    transmit_bytes: int  # by the guest


@dataclass(frozen=True)
class VmFigures:
    name: str
    pid: int
    uptime_seconds: float
    resident_bytes: int
    cpu_seconds: float  # the whole QEMU process
    vcpu_seconds: float | None  # its vCPU threads; None when QMP did not say
    vcpus: int | None
    disks: tuple[DiskFigures, ...] = ()
    nics: tuple[NicFigures, ...] = ()


@dataclass(frozen=True)
class _Proc:
    """What /proc says of one QEMU at one instant."""

    start: int  # clock ticks after boot
    cpu_ticks: int
    resident_pages: int


async def gather(home: Home, *, timeout: float = QMP_TIMEOUT) -> list[VmFigures]:
    """The figures of every running instance of `home`, by name."""
    found = await asyncio.to_thread(_running, home)
    limit = asyncio.Semaphore(CONCURRENCY)

    async def ask(vm: Vm) -> dict[str, Any]:
        async with limit:
            return await _qmp_figures(vm.files.qmp, timeout)

    answers = await asyncio.gather(*(ask(vm) for _, vm, _ in found))
    return await asyncio.to_thread(_figures, found, answers)


def _running(home: Home) -> list[tuple[InstanceRecord, Vm, _Proc]]:
    out = []
    for files, record in registry.records(home):
        vm = Vm.attach(files)
        proc = _proc(vm.pid) if vm is not None else None
        if vm is not None and proc is not None:
            out.append((record, Vm(files, vm.pid, proc.start), proc))
    return out


async def _qmp_figures(socket: Path, timeout: float) -> dict[str, Any]:
    """query-blockstats and query-cpus-fast over one connection; {} if QMP did not answer."""
    try:
        async with asyncio.timeout(timeout), await Qmp(socket).connect(timeout) as qmp:
            return {
                "blockstats": await qmp.execute("query-blockstats", timeout=timeout),
                "cpus": await qmp.execute("query-cpus-fast", timeout=timeout),
            }
    except (QemuError, TimeoutError):
        return {}


def _figures(
    found: Sequence[tuple[InstanceRecord, Vm, _Proc]], answers: Sequence[dict[str, Any]]
) -> list[VmFigures]:
    uptime = _system_uptime()
    out = []
    for (record, vm, proc), answer in zip(found, answers, strict=True):
        threads = [c["thread-id"] for c in answer.get("cpus", ()) if "thread-id" in c]
        vcpu_ticks = sum(_thread_ticks(vm.pid, tid) for tid in threads) if threads else None
        if _proc(vm.pid) is None or not vm.alive():
            continue  # it ended, or its pid is someone else's now: nothing of it is reported
        taps = [n.tap for n in record.nics] + [n.tap for n in record.networks]
        out.append(
            VmFigures(
                name=record.name,
                pid=vm.pid,
                uptime_seconds=max(0.0, uptime - proc.start / TICKS),
                resident_bytes=proc.resident_pages * PAGE,
                cpu_seconds=proc.cpu_ticks / TICKS,
                vcpu_seconds=None if vcpu_ticks is None else vcpu_ticks / TICKS,
                vcpus=len(threads) or None,
                disks=tuple(_disks(answer.get("blockstats", ()))),
                nics=tuple(n for n in map(_tap, taps) if n is not None),
            )
        )
    return out


def _proc(pid: int) -> _Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        statm = Path(f"/proc/{pid}/statm").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    # fields[0] is field 3 (state): utime, stime are 14, 15; starttime is 22.
    return _Proc(
        start=int(fields[19]),
        cpu_ticks=int(fields[11]) + int(fields[12]),
        resident_pages=int(statm.split()[1]),
    )


def _thread_ticks(pid: int, tid: Any) -> int:
    if not isinstance(tid, int) or tid <= 0:
        return 0
    try:
        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def _system_uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def _disks(blockstats: Iterable[Any]) -> Iterable[DiskFigures]:
    for entry in blockstats:
        device, stats = entry.get("device") or entry.get("qdev"), entry.get("stats")
        if not isinstance(device, str) or not device or not isinstance(stats, dict):
            continue
        yield DiskFigures(
            device=device,
            read_bytes=int(stats.get("rd_bytes", 0)),
            write_bytes=int(stats.get("wr_bytes", 0)),
            read_ops=int(stats.get("rd_operations", 0)),
            write_ops=int(stats.get("wr_operations", 0)),
        )


def _tap(tap: str) -> NicFigures | None:
    """A tap's counters from sysfs (the record's name checked before it makes a path)."""
    if not TAP_NAME.fullmatch(tap):
        return None
    base = Path("/sys/class/net", tap, "statistics")
    with contextlib.suppress(OSError, ValueError):
        sent = int((base / "tx_bytes").read_text())  # by the host: to the guest
        received = int((base / "rx_bytes").read_text())
        return NicFigures(tap, receive_bytes=sent, transmit_bytes=received)
    return None


def vm_families(figures: Sequence[VmFigures]) -> list[Metric]:
    """The Prometheus families of one gathering (pure)."""

    def counter(name: str, doc: str, labels: Sequence[str] = ()) -> CounterMetricFamily:
        return CounterMetricFamily(name, doc, labels=["vm", *labels])

    def gauge(name: str, doc: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=["vm"])

    up = gauge("corral_vm_uptime_seconds", "seconds since the VM's QEMU started")
    rss = gauge("corral_vm_resident_memory_bytes", "resident memory of the VM's QEMU")
    vcpus = gauge("corral_vm_vcpus", "vCPU threads of the VM")
    cpu = counter("corral_vm_cpu_seconds", "CPU time of the VM's whole QEMU process")
    vcpu = counter("corral_vm_vcpu_seconds", "CPU time of the VM's vCPU threads")
    disk_bytes = counter(
        "corral_vm_disk_bytes", "bytes read and written by the guest", ["device", "op"]
    )
    disk_ops = counter(
        "corral_vm_disk_operations", "read and write requests of the guest", ["device", "op"]
    )
    net = counter(
        "corral_vm_network_bytes", "bytes the guest received and sent on tap NICs", ["nic", "dir"]
    )
    for f in figures:
        up.add_metric([f.name], f.uptime_seconds)
        rss.add_metric([f.name], f.resident_bytes)
        cpu.add_metric([f.name], f.cpu_seconds)
        if f.vcpu_seconds is not None:
            vcpu.add_metric([f.name], f.vcpu_seconds)
        if f.vcpus is not None:
            vcpus.add_metric([f.name], f.vcpus)
        for d in f.disks:
            disk_bytes.add_metric([f.name, d.device, "read"], d.read_bytes)
            disk_bytes.add_metric([f.name, d.device, "write"], d.write_bytes)
            disk_ops.add_metric([f.name, d.device, "read"], d.read_ops)
            disk_ops.add_metric([f.name, d.device, "write"], d.write_ops)
        for n in f.nics:
            net.add_metric([f.name, n.tap, "receive"], n.receive_bytes)
            net.add_metric([f.name, n.tap, "transmit"], n.transmit_bytes)
    return [up, rss, vcpus, cpu, vcpu, disk_bytes, disk_ops, net]


class Families(Collector):
    """Families gathered beforehand (asynchronously), for prometheus_client to render."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def render(figures: Sequence[VmFigures]) -> bytes:
    """The Prometheus text of one gathering."""
    return generate_latest(Families(vm_families(figures)))

"""The control plane's Prometheus figures: the fleet's state read from the database at scrape
time, and what this process saw happen (job durations, event-stream subscribers).

State (hosts' capacity and reservations, VMs by status and per host) is never kept in counters
beside the database: `FleetCollector` asks the database when Prometheus asks, one query per
family whatever the fleet's size (no query per host or VM), each answered from an index alone
(vms.status, vms.host_id): about a millisecond for 10,000 VMs on SQLite, where a GROUP BY of
both, or of the jobs table (which only grows), reads every row. What happens (a job ends
after so long) is observed where it happens into a histogram of this process, and the jobs
still running are this process's; with several control-plane processes, Prometheus adds them
up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from corral.db.engine import Database
from corral.db.models import Host, Vm
from corral.layout import Home
from corral.node.metrics import gather, vm_families

# Jobs are node calls: from milliseconds (a pause) to minutes (a create that imports a disk).
JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, float("inf"))


@dataclass(frozen=True)
class HostRow:
    name: str
    status: str
    cpus: int
    memory: int
    disk: int
    used_vcpus: int
    used_memory: int


@dataclass(frozen=True)
class FleetState:
    """What one scrape read: every host, and the counts of VMs."""

    hosts: tuple[HostRow, ...]
    vms: tuple[tuple[str, int], ...]  # (status, count)
    per_host: tuple[tuple[str, int], ...]  # (host name, count)


def read_fleet(session: Session) -> FleetState:
    """Three queries: the hosts, and two counts each read from an index."""
    hosts = session.execute(
        select(
            Host.id,
            Host.name,
            Host.status,
            Host.cpus,
            Host.memory,
            Host.disk,
            Host.used_vcpus,
            Host.used_memory,
        )
    ).all()
    names = {row.id: row.name for row in hosts}
    vms = session.execute(select(Vm.status, func.count()).group_by(Vm.status)).all()
    per_host = session.execute(select(Vm.host_id, func.count()).group_by(Vm.host_id)).all()
    return FleetState(
        hosts=tuple(HostRow(*row[1:]) for row in hosts),
        vms=tuple((status, n) for status, n in vms),
        per_host=tuple((names.get(host_id, str(host_id)), n) for host_id, n in per_host),
    )


def fleet_families(state: FleetState) -> list[Metric]:
    """The Prometheus families of one reading (pure: tested without a database)."""

    def gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=labels)

    status = gauge("corral_host_status", "1 for each host's current status", ["host", "status"])
    cpus = gauge("corral_host_cpus", "CPUs of the host, as its node reported them", ["host"])
    memory = gauge("corral_host_memory_bytes", "memory of the host", ["host"])
    disk = gauge("corral_host_disk_free_bytes", "free disk of the host at its init", ["host"])
    vcpus = gauge("corral_host_reserved_vcpus", "vCPUs its VMs (not shut down) reserve", ["host"])
    reserved = gauge(
        "corral_host_reserved_memory_bytes", "memory its VMs (not shut down) reserve", ["host"]
    )
    for h in state.hosts:
        status.add_metric([h.name, h.status], 1)
        cpus.add_metric([h.name], h.cpus)
        memory.add_metric([h.name], h.memory)
        disk.add_metric([h.name], h.disk)
        vcpus.add_metric([h.name], h.used_vcpus)
        reserved.add_metric([h.name], h.used_memory)
    per_host = gauge("corral_host_vms", "VMs placed on the host, whatever their status", ["host"])
    for host, n in state.per_host:
        per_host.add_metric([host], n)
    vms = gauge("corral_vms", "VMs of the fleet by status", ["status"])
    for vm_status, n in sorted(state.vms):
        vms.add_metric([vm_status], n)
    return [status, cpus, memory, disk, vcpus, reserved, per_host, vms]


class FleetCollector(Collector):
    """Reads the fleet from the database each time the registry is collected (in the caller's
    thread: collect in a worker thread, not on the event loop)."""

    def __init__(
        self, db: Database, subscribers: Callable[[], int], running: Callable[[], int]
    ) -> None:
        self.db = db
        self.subscribers = subscribers
        self.running = running

    def collect(self) -> Iterator[Metric]:
        with self.db.read() as session:
            state = read_fleet(session)
        yield from fleet_families(state)
        streams = GaugeMetricFamily(
            "corral_event_subscribers", "clients following GET /events on this process"
        )
        streams.add_metric([], self.subscribers())
        yield streams
        jobs = GaugeMetricFamily("corral_jobs_running", "jobs this process is running")
        jobs.add_metric([], self.running())
        yield jobs


class PlaneMetrics:
    """The registry of one control plane (not prometheus_client's global one: each app, and
    each test, has its own) and what the plane observes into it; an embedded control plane
    (`local_home`: the state directory of its in-process node) adds its VMs' figures."""

    def __init__(
        self,
        db: Database,
        subscribers: Callable[[], int],
        running: Callable[[], int],
        local_home: Callable[[], Home] | None = None,
    ) -> None:
        self.local_home = local_home
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(FleetCollector(db, subscribers, running))
        self.job_duration = Histogram(
            "corral_job_duration_seconds",
            "how long jobs of this process took, by kind and outcome (completed, failed)",
            ["kind", "outcome"],
            buckets=JOB_BUCKETS,
            registry=self.registry,
        )

    def job_finished(self, kind: str, outcome: str, seconds: float) -> None:
        self.job_duration.labels(kind, outcome).observe(seconds)

    def register(self, collector: Any) -> None:
        self.registry.register(collector)

    async def local_vms(self) -> list[Metric]:
        """The in-process node's per-VM families ([] without one)."""
        if self.local_home is None:
            return []
        return vm_families(await gather(self.local_home()))

    def text(self, extra: Iterable[Metric] = ()) -> bytes:
        """The whole exposition; blocking (it reads the database): call it in a worker thread."""
        return generate_latest(Joined(self.registry, extra))


class Joined(Collector):
    """A registry's families, then some gathered beforehand."""

    def __init__(self, registry: CollectorRegistry, extra: Iterable[Metric]) -> None:
        self.registry, self.extra = registry, list(extra)

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
        yield from self.extra

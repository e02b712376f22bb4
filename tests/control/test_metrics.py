"""GET /metrics of the control plane: it parses as Prometheus text, and its figures are the
state's (hosts' capacity and reservations, VMs by status, jobs), on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from control.conftest import MIB, Api
from control.livesrv import LiveServer
from corral.control.metrics import FleetState, HostRow, fleet_families


def scrape(api: Api, **kw: Any) -> dict[str, list[tuple[dict[str, str], float]]]:
    """{sample name: [(labels, value)]} of one scrape."""
    response = api.client.get("/metrics", **kw)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def by(samples: list[tuple[dict[str, str], float]], *labels: str) -> dict[tuple[str, ...], float]:
    return {tuple(s[0][label] for label in labels): s[1] for s in samples}


def test_the_figures_are_the_state(api: Api) -> None:
    one = api.host("one", cpus=8, memory_mib=16384)
    api.host("two", cpus=2, memory_mib=4096)
    vms = [api.vm(f"web{i}", vcpus=2, memory_mib=1024) for i in range(3)]
    api.act(vms[0]["id"], "start")
    api.act(vms[1]["id"], "start")
    api.act(vms[1]["id"], "pause")

    samples = scrape(api)
    listed = api.ok("GET", "/vms")
    assert by(samples["corral_vms"], "status") == {
        (status,): n for status, n in Counter(v["status"] for v in listed).items()
    }
    assert by(samples["corral_vms"], "status")[("running",)] == 1
    assert by(samples["corral_vms"], "status")[("paused",)] == 1
    per_host = Counter(v["host_id"] for v in listed)
    names = {h["id"]: h["name"] for h in api.ok("GET", "/hosts")}
    assert by(samples["corral_host_vms"], "host") == {(names[h],): n for h, n in per_host.items()}
    for host in api.ok("GET", "/hosts"):
        name = (host["name"],)
        assert by(samples["corral_host_cpus"], "host")[name] == host["cpus"]
        assert by(samples["corral_host_memory_bytes"], "host")[name] == host["memory"]
        assert by(samples["corral_host_reserved_vcpus"], "host")[name] == host["used_vcpus"]
        assert by(samples["corral_host_reserved_memory_bytes"], "host")[name] == host["used_memory"]
        assert by(samples["corral_host_status"], "host", "status")[(host["name"], "up")] == 1
    assert by(samples["corral_host_cpus"], "host")[("one",)] == 8 == one["cpus"]
    reserving = [v for v in listed if v["status"] != "shutdown"]
    assert sum(v for _, v in samples["corral_host_reserved_vcpus"]) == 2 * len(reserving) > 0

    jobs = Counter((j["kind"], j["status"]) for j in api.ok("GET", "/jobs?limit=1000"))
    assert samples["corral_jobs_running"] == [({}, 0.0)]
    # Durations: one observation per job this process finished, by kind and outcome.
    durations = by(samples["corral_job_duration_seconds_count"], "kind", "outcome")
    assert durations == dict(jobs)
    assert (
        by(samples["corral_job_duration_seconds_bucket"], "kind", "outcome", "le")[
            ("vm.create", "completed", "+Inf")
        ]
        == 3
    )


def test_requests_are_counted_by_route_template_never_by_path(api: Api) -> None:
    api.host()
    vm = api.vm("web")
    for _ in range(3):
        api.ok("GET", f"/vms/{vm['id']}")
    api.client.get("/vms/not-a-uuid")  # 422
    api.client.get("/no/such/thing/1234")  # 404
    api.client.get("/hosts", headers={"Authorization": "Bearer nonsense"})  # the guard's 401

    samples = scrape(api)
    counts = by(samples["corral_api_request_duration_seconds_count"], "method", "route", "status")
    assert counts[("GET", "/vms/{vm_id}", "200")] == 3
    assert counts[("GET", "/vms/{vm_id}", "422")] == 1
    assert counts[("GET", "/hosts", "401")] == 1
    assert counts[("POST", "/vms", "201")] == 1
    assert counts[("GET", "<unmatched>", "404")] == 1
    labels = " ".join(v for s in samples.values() for labels, _ in s for v in labels.values())
    assert vm["id"] not in labels and "not-a-uuid" not in labels and "1234" not in labels
    assert samples["corral_event_subscribers"] == [({}, 0.0)]


def test_event_stream_subscribers_are_counted(live: LiveServer) -> None:
    token = live.token("scraper", "metrics")
    auth = {"Authorization": f"Bearer {token}"}
    admin = {"Authorization": f"Bearer {live.token('root', 'admin')}"}

    def subscribers() -> float:
        text = httpx.get(f"{live.url}/metrics", headers=auth, timeout=10).text
        family = next(
            f for f in text_string_to_metric_families(text) if f.name == "corral_event_subscribers"
        )
        return family.samples[0].value

    assert subscribers() == 0
    with httpx.stream("GET", f"{live.url}/events", headers=admin, timeout=10) as stream:
        lines = stream.iter_lines()  # kept: a dropped iterator closes the connection
        assert next(lines) == "retry: 2000"
        assert subscribers() == 1
    deadline = time.monotonic() + 10
    while subscribers() != 0:  # the server notices the client has gone
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_fleet_families_from_a_reading() -> None:
    """The pure part: one reading, its families."""
    state = FleetState(
        hosts=(HostRow("a", "up", 4, 8192 * MIB, 10, 2, 512 * MIB),),
        vms=(("running", 5), ("shutdown", 1)),
        per_host=(("a", 3), ("b", 3)),
    )
    families = {f.name: f for f in fleet_families(state)}
    vms = {s.labels["status"]: s.value for s in families["corral_vms"].samples}
    assert vms == {"running": 5, "shutdown": 1}
    assert [s.labels["host"] for s in families["corral_host_vms"].samples] == ["a", "b"]
    assert [s.value for s in families["corral_host_reserved_memory_bytes"].samples] == [512 * MIB]


def test_the_grafana_dashboard_names_only_metrics_that_exist(api: Api) -> None:
    """contrib/grafana-dashboard.json drifts from the code otherwise."""
    import json
    import re
    from pathlib import Path

    from corral.node.metrics import VmFigures, vm_families

    api.host()
    api.vm("web")
    known = set(scrape(api))
    vm = VmFigures("v", 1, 1.0, 1, 1.0, 1.0, 1)
    known |= {s.name for f in vm_families([vm]) for s in f.samples}
    known |= {f"{f.name}_total" for f in vm_families([vm]) if f.type == "counter"}  # (no NICs)
    dashboard = Path(__file__).parents[2] / "contrib" / "grafana-dashboard.json"
    exprs = [t["expr"] for p in json.loads(dashboard.read_text())["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"\bcorral_[a-z_]+", e)}
    assert used and used <= known, used - known

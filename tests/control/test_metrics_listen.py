"""`corral serve --metrics-listen HOST:PORT [--metrics-no-auth]`, as an operator runs it: the
second address serves GET /metrics and nothing else, with a token unless told otherwise."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from control.postgres import free_port

CORRAL = [sys.executable, "-m", "corral.cli.app"]


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CORRAL_HOME": str(home), "CORRAL_CONFIG": "/nonexistent"}
    return subprocess.run([*CORRAL, *args], env=env, capture_output=True, text=True, timeout=60)


@contextmanager
def serving(home: Path, *args: str) -> Iterator[tuple[str, str]]:
    """`corral serve` on two loopback ports: (API URL, metrics URL); ended by its pid."""
    api, metrics = free_port(), free_port()
    env = {**os.environ, "CORRAL_HOME": str(home), "CORRAL_CONFIG": "/nonexistent"}
    argv = [*CORRAL, "serve", "--database", f"sqlite:///{home}/cp.db", "--listen",
            f"127.0.0.1:{api}", "--metrics-listen", f"127.0.0.1:{metrics}", *args]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    urls = f"http://127.0.0.1:{api}", f"http://127.0.0.1:{metrics}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{urls[0]}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
            time.sleep(0.1)
        yield urls
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def token(home: Path, role: str) -> dict[str, str]:
    made = run(
        home, "token", "create", role, "--role", role, "--database", f"sqlite:///{home}/cp.db"
    )
    assert made.returncode == 0, made.stderr
    return {"Authorization": f"Bearer {made.stdout.strip()}"}


def test_the_metrics_address_serves_metrics_only_and_with_a_token(tmp_path: Path) -> None:
    metrics, admin = token(tmp_path, "metrics"), token(tmp_path, "admin")
    with serving(tmp_path) as (api, scrape):
        assert httpx.get(f"{scrape}/metrics").status_code == 401
        answer = httpx.get(f"{scrape}/metrics", headers=metrics)
        assert answer.status_code == 200 and "corral_vms" in answer.text
        for path in ("/vms", "/hosts", "/health", "/openapi.json", "/swagger-ui"):
            refused = httpx.get(f"{scrape}{path}", headers=admin)
            assert refused.status_code == 404, path
            assert refused.json()["error"] == "not_found"
        assert httpx.post(f"{scrape}/metrics", headers=admin).status_code == 404
        # The API's own address serves it too, with a token as ever.
        assert httpx.get(f"{api}/metrics", headers=metrics).status_code == 200
        assert httpx.get(f"{api}/metrics").status_code == 401
        assert httpx.get(f"{api}/vms", headers=admin).status_code == 200


def test_metrics_no_auth_opens_only_the_metrics_address(tmp_path: Path) -> None:
    with serving(tmp_path, "--metrics-no-auth") as (api, scrape):
        answer = httpx.get(f"{scrape}/metrics")
        assert answer.status_code == 200 and "corral_event_subscribers" in answer.text
        assert httpx.get(f"{scrape}/vms").status_code == 404
        assert httpx.get(f"{api}/metrics").status_code == 401  # the API's address still guarded
        assert httpx.get(f"{api}/vms").status_code == 401


def test_bad_metrics_options_are_one_line_and_exit_2(tmp_path: Path) -> None:
    for args, message in [
        (["--metrics-no-auth"], "--metrics-no-auth applies to --metrics-listen"),
        (["--listen", "127.0.0.1:8123", "--metrics-listen", "127.0.0.1:8123"], "other than"),
        (["--metrics-listen", "nonsense"], "expected HOST:PORT"),
    ]:
        proc = run(tmp_path, "serve", "--database", f"sqlite:///{tmp_path}/cp.db", *args)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: ") and message in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "cp.db").exists()  # refused before anything was made

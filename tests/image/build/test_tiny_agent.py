"""The tiny guest's agent protocol (tiny-agent.awk), run by the guest's own busybox awk over
pipes: what corral's GuestAgent sends is answered as qemu-ga would, anything else refused.
(tests/guest/test_identity_vm.py drives it in a booted guest over the virtio-serial port.)"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

AWK = resources.files("corral.image.recipes").joinpath("tiny-agent.awk")


class Agent:
    def __init__(self, busybox: Path, state: Path) -> None:
        argv = [busybox, "awk", "-v", f"state={state}", AWK.read_text()]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def send(self, raw: bytes) -> bytes:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(raw)
        self.proc.stdin.flush()
        return self.proc.stdout.readline()

    def ask(self, request: object) -> dict:
        return json.loads(self.send(json.dumps(request).encode()))


@pytest.fixture
def agent(busybox: Path, tmp_path: Path) -> Iterator[Agent]:
    state = tmp_path / "state"
    state.mkdir()
    agent = Agent(busybox, state)
    yield agent
    agent.proc.kill()
    agent.proc.wait()


def test_sync_ping_and_requests_split_anywhere(agent: Agent) -> None:
    # qemu-ga's delimited sync: the client's 0xFF flushes, the answer starts with 0xFF.
    assert agent.send(b'\xff{"execute": "guest-sync-delimited", "arguments": {"id": 42}}') == (
        b'\xff{"return": 42}\n'
    )
    assert agent.ask({"execute": "guest-sync", "arguments": {"id": -7}}) == {"return": -7}
    assert agent.ask({"execute": "guest-ping"}) == {"return": {}}
    # No newline between requests, a "}" inside a string, a request in two writes.
    assert agent.send(b'\n{"execute":"guest-ping","arguments":{}}') == b'{"return": {}}\n'
    assert agent.proc.stdin is not None
    agent.proc.stdin.write(b'{"execute": "guest-sync", "arg')
    agent.proc.stdin.flush()
    assert agent.send(b'uments": {"id": 5}}') == b'{"return": 5}\n'
    # Half a request, then a client that starts afresh with 0xFF (a "}" inside the garbage).
    agent.proc.stdin.write(b'{"execute": "guest-exec", "arguments": {"path": "/bin/}sh", ')
    agent.proc.stdin.flush()
    assert agent.send(b'\xff{"execute": "guest-sync-delimited", "arguments": {"id": 9}}') == (
        b'\xff{"return": 9}\n'
    )


@pytest.mark.parametrize(
    "raw",
    [
        b'{"execute": "guest-shutdown"}',
        b'{"execute": "guest-file-open", "arguments": {"path": "/etc/shadow"}}',
        b'{"execute": "guest-ping", "arguments": {"x": 1}}',
        b'{"execute": "guest-sync", "arguments": {"id": "1; reboot"}}',
        b'{"execute": "guest-sync", "arguments": {"id": 1.5}}',
        b'{"execute": "guest-exec", "arguments": {"path": "/bin/sh", "env": ["A=1"]}}',
        b'{"execute": "guest-exec", "arguments": {"path": "/bin/sh", "input-data": "$(reboot)"}}',
        b'{"execute": "guest-exec", "arguments": {"path": "/bin/sh", "arg": "-c"}}',
        b'{"execute": "guest-exec", "arguments": {"path": "/bin/sh", "arg": [1]}}',
        b'{"execute": "guest-exec-status", "arguments": {"pid": 999999}}',
        b'{"execute": "guest-ping", "execute": "guest-exec"}',
        b'{"execute": ["guest-ping"]}',
        b'{"execute": "guest-ping",, }',
        b'{"execute": "guest-p\\u0000ing"}',
    ],
)
def test_anything_else_is_refused(agent: Agent, raw: bytes) -> None:
    answer = json.loads(agent.send(raw))
    assert set(answer) == {"error"} and answer["error"]["class"] in {
        "GenericError",
        "CommandNotFound",
    }
    assert agent.ask({"execute": "guest-ping"}) == {"return": {}}  # and it goes on answering


def test_exec_runs_argv_literally_with_stdin(agent: Agent, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    tricky = f"\"}}{{'$(touch {marker})`touch {marker}`\n\u00e9"
    request = {
        "execute": "guest-exec",
        "arguments": {
            "path": "/bin/sh",
            "arg": ["-c", 'cat; printf "%s" "$1" >&2; exit 3', "sh", tricky],
            "input-data": base64.b64encode(b"stdin bytes \xff\x00}").decode(),
            "capture-output": True,
        },
    }
    pid = agent.ask(request)["return"]["pid"]
    deadline = time.monotonic() + 10
    while not (
        status := agent.ask({"execute": "guest-exec-status", "arguments": {"pid": pid}})["return"]
    )["exited"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert status["exitcode"] == 3
    assert base64.b64decode(status["out-data"]) == b"stdin bytes \xff\x00}"
    assert base64.b64decode(status["err-data"]).decode() == tricky
    assert not marker.exists()
    # Reported once, then forgotten (its directory is gone).
    gone = agent.ask({"execute": "guest-exec-status", "arguments": {"pid": pid}})
    assert "error" in gone
    assert [p.name for p in (tmp_path / "state").iterdir()] == []

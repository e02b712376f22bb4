"""`corral build` on real QEMU with the tiny guest whose root is on its disk."""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from build_helpers import run_build
from corral.builds import executor as executor_module
from corral.builds.executor import BuildFailed
from corral.builds.store import BuildStore, prune
from corral.context import Context

pytestmark = pytest.mark.vm


@pytest.fixture
def boots(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts build VM boots (each a QEMU start)."""
    count: list[int] = []
    real = executor_module.BuildVm.boot

    async def counting(*args: object, **kw: object):
        count.append(1)
        return await real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(executor_module.BuildVm, "boot", counting)
    return count


def guest(ctx: Context, layer: str, command: str) -> str:
    """Boot an instance from a build result and run a command in it."""
    from corral.client import Corral

    c = Corral(ctx.config)
    c.ctx = ctx
    vm = c.launch(f"build:{layer}", name=f"chk-{layer[:8]}", instance_type="c1m256", wait=True,
                  timeout=120)  # fmt: skip
    try:
        result = vm.execute(["sh", "-c", command])
        assert result.exit_code == 0, result.stderr
        return result.stdout.decode()
    finally:
        vm.delete()


def test_steps_env_workdir_user_one_boot_and_cache(bctx: Context, tmp_path: Path,
                                                   boots: list[int]) -> None:  # fmt: skip
    spec = """
    ((from tinyd)
     (run (shell "echo 'builder:x:1001:1001::/home/builder:/bin/sh' >> /etc/passwd
                  echo 'builder:x:1001:' >> /etc/group; mkdir -p /home/builder
                  chown 1001:1001 /home/builder"))
     (env B "2")
     (env A "1")
     (env B "3")
     (workdir "/srv")
     (workdir "app")
     (run (shell "env | grep -E '^(A|B)=' > /srv/app/env.txt; pwd > /srv/app/pwd.txt"))
     (user (name builder))
     (run (shell "id -u > /home/builder/named; echo $HOME > /home/builder/home"))
     (user (uid 1234) (gid 4321))
     (run (shell "id -u; id -g")))
    """
    final, out = run_build(bctx, spec, tmp_path)
    assert len(boots) == 1  # four uncached steps, one boot
    assert re.findall(r'---> saved as "([0-9a-f]{64})"', out)[-1] == final
    assert out.endswith(f'Got: "{final}"\n')
    assert "/srv/app: (run (shell " in out  # obuilder's WORKDIR: (op ...) lines
    assert "1234\n4321\n" in out
    files = guest(bctx, final, "cat /srv/app/env.txt /srv/app/pwd.txt /home/builder/named "
                               "/home/builder/home")  # fmt: skip
    assert files == "A=1\nB=3\n/srv/app\n1001\n/home/builder\n"  # env in the spec's order

    again, out = run_build(bctx, spec, tmp_path)
    assert again == final
    assert len(boots) == 1  # fully cached: no VM at all
    assert out.count("from cache") == 5  # the base and the four steps
    assert "1234\n4321\n" in out  # the cached step's log is replayed


def test_failed_step_is_not_cached_and_retried(bctx: Context, tmp_path: Path) -> None:
    flag = tmp_path / "fail"
    flag.write_text("1")
    spec = """
    ((from tinyd)
     (run (shell "echo first > /root/first"))
     (copy (src "fail") (dst "/root/fail"))
     (run (shell "test \\"$(cat /root/fail)\\" = 0 || { echo boom; exit 3; }")))
    """
    with pytest.raises(BuildFailed, match="exit code 3"):
        run_build(bctx, spec, tmp_path)
    store = BuildStore(bctx.home)
    published = {m.id for m in store.all_meta()}
    assert not list(store.layers.glob("tmp-*"))  # the failed step left no disk behind
    assert not list(store.runs.iterdir())  # nor a VM
    flag.write_text("0")  # changes the copy's manifest: the copy and what follows rebuild
    final, out = run_build(bctx, spec, tmp_path)
    assert out.count("from cache") == 2  # the base and the first run step
    assert final not in published


def test_copy_exclude_symlink_and_from_a_child_build(bctx: Context, tmp_path: Path) -> None:
    (tmp_path / "src" / ".git").mkdir(parents=True)
    (tmp_path / "src" / ".git" / "HEAD").write_text("ref")
    (tmp_path / "src" / "main.c").write_text("int main;")
    (tmp_path / "src" / "link").symlink_to("main.c")
    spec = """
    ((build dev
       ((from tinyd)
        (run (shell "mkdir -p /out && echo built-in-dev > /out/artifact"))))
     (from tinyd)
     (copy (src "src") (dst "/app/") (exclude ".git"))
     (copy (from (build dev)) (src "/out/artifact") (dst "/app/artifact")))
    """
    final, out = run_build(bctx, spec, tmp_path)
    listing = guest(bctx, final, "cd /app && ls -a | sort | tr '\\n' ' '; readlink link; "
                                 "cat artifact")  # fmt: skip
    assert listing == ". .. artifact link main.c main.c\nbuilt-in-dev\n"
    (tmp_path / "src" / ".git" / "HEAD").write_text("changed")  # excluded: no rebuild
    again, out = run_build(bctx, spec, tmp_path)
    assert again == final and "saved as" not in out


def test_cache_persists_across_builds(bctx: Context, tmp_path: Path) -> None:
    spec = """
    ((from tinyd)
     (run (cache (counter (target "/var/cache/counter")))
          (shell "n=$(cat /var/cache/counter/n 2>/dev/null || echo 0); echo $((n+1)) > /var/cache/counter/n; cat /var/cache/counter/n")))
    """  # noqa: E501
    _, first = run_build(bctx, spec, tmp_path)
    assert "\n1\n" in first
    assert prune(BuildStore(bctx.home), keep_bytes=0)  # the step must run again...
    _, second = run_build(bctx, spec, tmp_path)
    assert "\n2\n" in second  # the cache kept what the first build left in it


def test_secrets_never_reach_a_layer(bctx: Context, tmp_path: Path) -> None:
    secret = b"corral-very-secret-value-5f2a"
    spec = """
    ((from tinyd)
     (run (secrets (token (target "/run/token")))
          (shell "cat /run/token > /dev/null; test -s /run/token && echo secret-seen")))
    """
    _, out = run_build(bctx, spec, tmp_path, secrets={"token": secret})
    assert "secret-seen" in out
    store = BuildStore(bctx.home)
    layers = [store.layer_dir(m.id) / "disk.qcow2" for m in store.all_meta() if m.parent]
    assert layers
    for disk in layers:  # the layer files as stored, and the whole disk as a guest sees it
        assert secret not in disk.read_bytes()
        flat = tmp_path / "flat.raw"
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(disk), str(flat)],
                       check=True)  # fmt: skip
        assert secret not in flat.read_bytes()
    with pytest.raises(Exception, match="secret 'token' is not given"):
        run_build(bctx, spec.replace("token", "token"), tmp_path)


@pytest.fixture
def host_server() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"reached-the-host")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def test_network_only_when_asked(bctx: Context, tmp_path: Path, host_server: int) -> None:
    url = f"http://10.0.3.2:{host_server}/"
    spec = f"""
    ((from tinyd)
     (run (shell "timeout 5 wget -q -O - {url} || echo no-network"))
     (run (network host) (shell "timeout 20 wget -q -O - {url}; echo")))
    """
    _, out = run_build(bctx, spec, tmp_path)
    first, second = out.split("(network host)")
    assert "no-network" in first
    assert "reached-the-host" in second


def test_two_identical_builds_at_once_run_each_step_once(bctx: Context, tmp_path: Path) -> None:
    spec = """
    ((from tinyd)
     (run (shell "sleep 2; echo slow-step-done > /root/a"))
     (run (shell "cat /root/a")))
    """
    results: dict[int, tuple[str, str]] = {}

    def one(i: int) -> None:
        results[i] = run_build(bctx, spec, tmp_path)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    (a, out_a), (b, out_b) = results[0], results[1]
    assert a == b
    assert out_a.count("saved as") + out_b.count("saved as") == 2  # each step ran once
    assert "slow-step-done" in out_a and "slow-step-done" in out_b  # the other followed it


def test_a_guest_that_never_answers_fails_with_its_console(bctx: Context, tmp_path: Path) -> None:
    spec = '((from tinyd) (run (shell "true")))'
    with pytest.raises(Exception, match=r"did not answer SSH within 0\.5s") as info:
        run_build(bctx, spec, tmp_path, boot_timeout=0.5)
    assert "last console lines:" in info.value.details  # type: ignore[attr-defined]
    store = BuildStore(bctx.home)
    assert not list(store.layers.glob("tmp-*")) and not list(store.runs.iterdir())


def test_interrupted_build_leaves_no_temporary_layer(bctx: Context, tmp_path: Path) -> None:
    import os
    import signal
    import sys
    import time

    (tmp_path / "spec").write_text('((from tinyd) (run (shell "sleep 60")))')
    env = {**os.environ, "CORRAL_HOME": str(bctx.home.root),
           "CORRAL_CACHE_DIR": str(bctx.config.cache_dir)}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral.cli.app", "build", "-f", str(tmp_path / "spec"),
         "--cpus", "1", "--memory", "256M", str(tmp_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    store = BuildStore(bctx.home)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (store.runs.is_dir() and any(store.runs.iterdir())):
        time.sleep(0.1)
    time.sleep(4)  # the VM boots and the step starts
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert b"Got:" not in stdout and b"saved as" not in stdout  # stopped, not run to the end
    assert not list(store.layers.glob("tmp-*"))
    assert not list(store.runs.iterdir())
    assert [m for m in store.all_meta() if m.parent] == []


def test_build_store_commands(bctx: Context, tmp_path: Path) -> None:
    import json

    from helpers import corral

    (tmp_path / "spec").write_text(
        '((from tinyd) (run (shell "echo a > /a")) (run (shell "echo b > /b")))'
    )
    proc = corral(bctx, "build", "-f", str(tmp_path / "spec"), "--cpus", "1", "--memory",
                  "256M", str(tmp_path))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    final = re.findall(r'Got: "([0-9a-f]{64})"', proc.stdout)[0]
    layers = json.loads(corral(bctx, "build", "ls", "--json").stdout)
    assert {layer["id"] for layer in layers} >= {final}
    parent = next(layer["parent"] for layer in layers if layer["id"] == final)
    refused = corral(bctx, "build", "rm", parent)
    assert refused.returncode == 1 and "child layer" in refused.stderr
    assert corral(bctx, "image", "import-build", final[:12], "--name", "built").returncode == 0
    assert corral(bctx, "build", "rm", final).returncode == 0
    assert corral(bctx, "build", "prune", "--keep-bytes", "0").returncode == 0
    assert [layer for layer in json.loads(corral(bctx, "build", "ls", "--json").stdout)
            if layer["parent"]] == []  # fmt: skip
    health = corral(bctx, "build", "healthcheck", "--image", "tinyd")
    assert (health.returncode, health.stdout.strip()) == (0, "ok")
    bad = corral(bctx, "build", "-f", str(tmp_path / "missing.spec"), str(tmp_path))
    assert bad.returncode == 2 and bad.stderr.startswith("error: cannot read")
    (tmp_path / "typo.spec").write_text('((from tinyd)\n (run (shel "x")))')
    bad = corral(bctx, "build", "-f", str(tmp_path / "typo.spec"), str(tmp_path))
    assert bad.returncode == 2
    assert "typo.spec:2:" in bad.stderr and "did you mean 'shell'" in bad.stderr


def test_a_long_chain_of_steps(bctx: Context, tmp_path: Path, boots: list[int]) -> None:
    steps = "\n".join(f' (run (shell "echo {i} > /root/s{i}"))' for i in range(12))
    final, out = run_build(bctx, f"((from tinyd)\n{steps})", tmp_path)
    assert len(boots) == 1 and out.count("saved as") == 12
    assert guest(bctx, final, "cat /root/s0 /root/s11") == "0\n11\n"
    disk = BuildStore(bctx.home).layer_dir(final) / "disk.qcow2"
    chain = json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", "--backing-chain", "-f", "qcow2", str(disk)],
        check=True, capture_output=True,
    ).stdout)  # fmt: skip
    assert len(chain) == 14  # twelve layers, the warm state's disk and the base image
    names = [link["backing-filename"] for link in chain[:-2]]  # the layers' own headers
    assert all(re.fullmatch(r"\.\./[0-9a-f]{64}/disk\.qcow2", name) for name in names[:-1])
    assert re.fullmatch(r"\.\./\.\./warm/[0-9a-f]{32}/disk\.qcow2", names[-1])  # the first's


def test_jobs_bounds_the_build_vms_at_once(bctx: Context, tmp_path: Path) -> None:
    from helpers import qemu_pids

    most = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            most[0] = max(most[0], len(qemu_pids(bctx)))
            done.wait(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    specs = [f'((from tinyd) (run (shell "echo {i} > /root/j; sleep 1")))' for i in range(2)]
    threads = [threading.Thread(target=run_build, args=(bctx, s, tmp_path), kwargs={"jobs": 1})
               for s in specs]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    done.set()
    watcher.join()
    assert most[0] == 1
    assert len([m for m in BuildStore(bctx.home).all_meta() if m.parent]) == 2  # both built


def start_then_kill(
    ctx: Context, tmp_path: Path, word: str, *, stop_qemu: bool
) -> tuple[int, Path]:
    """Run `corral build` until its step runs in the VM, then SIGKILL it; its QEMU's pid and
    run directory. With stop_qemu, QEMU is SIGSTOPped first: it then cannot act on the
    parent-death signal, as if it had missed it, and only the sweep can end it."""
    import os
    import select
    import signal
    import time

    from corral.fsutil import pid_alive
    from corral.layout import MachineFiles
    from corral.machine.process import read_pid
    from helpers import corral_popen

    spec = tmp_path / f"{word}.spec"
    spec.write_text(f'((from tinyd) (run (shell "echo {word}-$((6*7)); sleep 300")))')
    proc = corral_popen(ctx, "build", "-f", str(spec), "--cpus", "1", "--memory", "256M",
                        str(tmp_path))  # fmt: skip
    try:
        seen, deadline = b"", time.monotonic() + 120
        while f"{word}-42".encode() not in seen and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 1)[0]:
                seen += os.read(proc.stdout.fileno(), 65536)  # type: ignore[union-attr]
        assert f"{word}-42".encode() in seen, seen  # the step runs in the VM
        (rundir,) = [p for p in BuildStore(ctx.home).runs.iterdir()
                     if p.name.startswith(f"{proc.pid}-")]  # fmt: skip
        qemu = read_pid(MachineFiles(rundir).pidfile)
        assert qemu and pid_alive(qemu)
        if stop_qemu:
            os.kill(qemu, signal.SIGSTOP)
        proc.kill()
    finally:
        proc.kill()
        proc.wait()
    return qemu, rundir


def test_a_killed_build_leaves_no_vm_behind(bctx: Context, tmp_path: Path) -> None:
    """Issue 11, finding 10: `kill -9` of `corral build` must not leave its QEMU running."""
    import time

    from corral.fsutil import pid_alive
    from helpers import corral

    # QEMU gets the parent-death signal: it ends by itself, at once.
    qemu, rundir = start_then_kill(bctx, tmp_path, "alone", stop_qemu=False)
    deadline = time.monotonic() + 20
    while pid_alive(qemu) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(qemu)

    # One that missed it is stopped by the next build, which then removes the run directories.
    orphan, orphan_dir = start_then_kill(bctx, tmp_path, "orphan", stop_qemu=True)
    time.sleep(1)
    assert pid_alive(orphan)  # the orphan the issue describes
    _, out = run_build(bctx, "((from tinyd))", tmp_path)
    assert f"QEMU pid {orphan})" in out
    assert not pid_alive(orphan)
    assert not rundir.exists() and not orphan_dir.exists()

    # ...and by `corral build prune`.
    orphan, orphan_dir = start_then_kill(bctx, tmp_path, "pruned", stop_qemu=True)
    assert pid_alive(orphan)
    proc = corral(bctx, "build", "prune", "--older-than", "365d")
    assert proc.returncode == 0, proc.stderr
    assert f"QEMU pid {orphan})" in proc.stdout
    assert not pid_alive(orphan)
    assert not orphan_dir.exists()
    store = BuildStore(bctx.home)
    assert not list(store.runs.iterdir()) and not list(store.layers.glob("tmp-*"))


def test_a_build_never_takes_a_port_a_stopped_instance_holds(bctx: Context, tmp_path: Path) -> None:
    """Host ports are host-wide: a stopped instance keeps its port, and a build VM (which
    picks from the same range) must leave it alone even though nothing is bound to it."""
    from dataclasses import replace

    from corral.errors import Conflict
    from corral.instance.launch import launch
    from corral.instance.options import LaunchRequest
    from corral.machine.ports import pick_ports

    (port,) = pick_ports((19000, 19999), (), 1)
    bctx.config = replace(bctx.config, port_range=(port, port))
    options = LaunchRequest(name="holder", instance_type="c1m256").options()
    record = launch(bctx, "tinyd", options, start=False)
    assert record.ssh_port == port
    with pytest.raises(Conflict, match="no free port"):
        run_build(bctx, '((from tinyd) (run (shell "true")))', tmp_path)
    assert not list(BuildStore(bctx.home).runs.iterdir())

"""Builds that start warm: the build VM restored from the base's saved state (issue 14, part 4).

Real QEMU with the tiny guest whose root is on its disk, as in test_build_vm.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from build_helpers import run_build
from corral.builds.executor import BuildOptions, Runner
from corral.builds.store import BuildStore
from corral.context import Context

pytestmark = pytest.mark.vm

SPEC = """
((from tinyd)
 (run (shell "mkdir -p /srv/out && echo one > /srv/out/a && date +%Y > /srv/out/year"))
 (workdir "/srv/out")
 (run (cache (shared (target "/var/cache/shared")))
      (shell "n=$(cat /var/cache/shared/n 2>/dev/null || echo 0); echo $((n+1)) > /var/cache/shared/n; echo count-$((n+1)); echo mounted > seen"))
 (run (shell "ln -s a link && head -c 100 /dev/urandom | wc -c > bytes; echo clock-$(date +%s)")))
"""  # noqa: E501
FILES = "cd /srv/out && ls -l | awk '{print $1, $NF}' && cat a bytes seen && readlink link"


def layer_ids(out: str) -> list[str]:
    return re.findall(r'---> (?:saved as|using) "([0-9a-f]{64})"', out)


def result_files(ctx: Context, layer: str) -> str:
    """What a VM booted on the layer sees (a VM on a layer that is no base boots cold)."""
    store = BuildStore(ctx.home)
    runner = Runner(ctx, store, BuildOptions(Path(), cpus=1, memory_mib=256, boot_timeout=120),
                    store.meta(layer).boot, [])  # fmt: skip

    async def look() -> bytes:
        try:
            vm = await runner.on(layer)
            return await vm.output(FILES)
        finally:
            await runner.close()

    return asyncio.run(look()).decode()


def forget_layers(store: BuildStore) -> None:
    """Remove every step layer (children first), keeping the base and the warm states."""
    while steps := [m for m in store.all_meta() if m.parent and m.id not in store.children()]:
        for meta in steps:
            store.remove(meta.id)


def test_warm_and_cold_builds_give_the_same_layers_and_files(bctx: Context, tmp_path: Path) -> None:
    """Built cold, then (every layer removed) warm: the same IDs, the same files in the
    result; and a cache written in one warm build is read in the next."""
    store = BuildStore(bctx.home)
    final_cold, out = run_build(bctx, SPEC, tmp_path, warm=False)
    assert "warm state" not in out and store.warm_states() == []
    assert "count-1" in out
    cold_ids, cold_files = layer_ids(out), result_files(bctx, final_cold)

    forget_layers(store)
    final_warm, out = run_build(bctx, SPEC, tmp_path)
    assert "(making the warm state of tinyd" in out
    assert "count-2" in out  # the cache the cold build wrote, seen by the restored guest
    (warm,) = store.warm_states()
    assert (warm.cpus, warm.memory_mib, warm.cache_slots) == (1, 256, 1)
    assert layer_ids(out) == cold_ids and final_warm == final_cold
    first_step = store.meta(cold_ids[1])
    assert first_step.warm == warm.id  # it stands on the warm state's disk, which it keeps
    assert result_files(bctx, final_warm) == cold_files
    assert "one\n100\nmounted\na\n" in cold_files

    forget_layers(store)
    age = (datetime.now(UTC) - datetime.fromisoformat(warm.created_at)).total_seconds()
    time.sleep(max(0.0, 20 - age))  # the guest's clock would be that far behind
    again, out = run_build(bctx, SPEC, tmp_path)
    assert "making the warm state" not in out  # restored from the one made above
    assert "count-3" in out  # written in one warm build, read in the next
    assert again == final_cold
    # The guest's clock stood still from the save (20 s and more ago) to the restore: set.
    (clock,) = re.findall(r"clock-(\d+)", out)
    assert abs(int(clock) - time.time()) < 10


def test_a_warm_state_that_does_not_fit_is_passed_over(bctx: Context, tmp_path: Path) -> None:
    """One made by another QEMU is ignored and another made; one that fails to restore is
    marked and the build boots instead. Neither is an error."""
    store = BuildStore(bctx.home)
    spec = '((from tinyd) (run (shell "echo ran-$((6*7))")))'
    _, out = run_build(bctx, spec, tmp_path)
    (old,) = store.warm_states()
    meta_file = store.warm_dir(old.id) / "meta.json"
    data = json.loads(meta_file.read_text())
    data["requirements"]["qemu_version"] = "6.2.0"  # as if saved by an older QEMU
    meta_file.write_text(json.dumps(data))

    forget_layers(store)
    _, out = run_build(bctx, spec, tmp_path)
    assert "(making the warm state of tinyd" in out and "ran-42" in out
    new = next(w for w in store.warm_states() if w.id != old.id)
    assert {w.id for w in store.warm_states()} == {old.id, new.id}

    (store.warm_dir(new.id) / "state").write_bytes(b"not a migration stream")
    forget_layers(store)
    _, out = run_build(bctx, spec, tmp_path)
    assert "did not restore" in out and "booting" in out and "ran-42" in out
    assert not store.warm_usable(new.id)
    assert not list(store.runs.iterdir()) and not list(store.layers.glob("tmp-*"))

    from corral.builds.store import prune

    removed = {m.id for m in prune(store, keep_bytes=0)}
    assert {old.id, new.id} <= removed  # pruned once no layer stands on them
    assert store.warm_states() == [] and not any(store.warm.iterdir())


def test_a_killed_warm_up_leaves_nothing_half_made(bctx: Context, tmp_path: Path) -> None:
    """`kill -9` of `corral build warm` while it saves: no warm state is published, its QEMU
    ends, and the next build removes the leftovers and makes the state anew."""
    from helpers import corral, corral_popen, qemu_pids

    store = BuildStore(bctx.home)
    proc = corral_popen(bctx, "build", "warm", "tinyd", "--cpus", "1", "--memory", "256M")
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if any(store.warm.glob("tmp-*/state")):
                break  # the save has begun
            time.sleep(0.005)
        assert proc.poll() is None, proc.communicate()
        proc.kill()
    finally:
        proc.kill()
        proc.wait()
    assert store.warm_states() == []
    assert list(store.warm.glob("tmp-*"))  # what the killed one left behind
    deadline = time.monotonic() + 20
    while qemu_pids(bctx) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not qemu_pids(bctx)  # its QEMU followed it

    done = corral(bctx, "build", "warm", "tinyd", "--cpus", "1", "--memory", "256M")
    assert done.returncode == 0, done.stderr
    assert re.search(r"warm state [0-9a-f]{16} of tinyd \(1 cpus, 256 MiB, 0 cache slots, .*\):"
                     r" made in", done.stdout)  # fmt: skip
    assert len(store.warm_states()) == 1 and not list(store.warm.glob("tmp-*"))
    again = corral(bctx, "build", "warm", "tinyd", "--cpus", "1", "--memory", "256M")
    assert again.returncode == 0 and "already made" in again.stdout

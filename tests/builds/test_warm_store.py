"""Warm states in the build store: found only when they fit, kept while a layer stands on one,
pruned with it, half-made ones removed. No VM boots here (test_build_warm.py boots them)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from corral.builds.commands import resumed_script
from corral.builds.store import Boot, BuildStore, LayerMeta, WarmMeta, prune
from corral.builds.warm import Shape, family, find, wanted
from corral.context import Context

BOOT = Boot("img", "a" * 64, "qcow2", "b" * 64, "c" * 64, "console=ttyS0", "root")
BASE = "d" * 64
SHAPE = Shape(1, 256, 1)


def warm_state(store: BuildStore, ctx: Context, *, qemu: str | None = None,
               when: str = "2026-01-01T00:00:00+00:00") -> WarmMeta:  # fmt: skip
    """A published warm state (files with made-up contents) of BOOT in a VM of SHAPE."""
    want = wanted(ctx, BOOT, SHAPE).to_dict()
    if qemu is not None:
        want["qemu_version"] = qemu
    tmp = store.new_warm_tmp()
    (tmp / "disk.qcow2").write_bytes(b"d" * 1000)
    (tmp / "state").write_bytes(b"s" * 3000)
    meta = WarmMeta(os.urandom(16).hex(), family(BOOT, BASE, SHAPE, "key"), BASE, BOOT, 1, 256,
                    1, want, created_at=when, last_used_at=when)  # fmt: skip
    store.publish_warm(tmp, meta)
    return store.warm_meta(meta.id)


def layer(store: BuildStore, layer_id: str, parent: str | None, warm: str | None) -> None:
    tmp = store.new_tmp()
    store.publish(tmp, LayerMeta(layer_id, parent, "(run)", BOOT, warm=warm), b"")


def test_only_a_state_that_fits_is_found(ctx: Context, store: BuildStore) -> None:
    fam = family(BOOT, BASE, SHAPE, "key")
    want = wanted(ctx, BOOT, SHAPE)
    assert find(store, fam, want) is None
    old = warm_state(store, ctx, qemu="6.2.0")  # saved by another QEMU: passed over
    assert find(store, fam, want) is None
    good = warm_state(store, ctx)
    assert find(store, fam, want) == good
    assert find(store, family(BOOT, BASE, Shape(1, 512, 1), "key"), want) is None
    assert find(store, family(BOOT, BASE, SHAPE, "another key"), want) is None
    bigger = wanted(ctx, BOOT, Shape(1, 512, 1))
    assert find(store, fam, bigger) is None  # the memory differs
    store.mark_warm_broken(good.id, "QEMU refused it")
    assert find(store, fam, want) is None
    assert {w.id for w in store.warm_states()} == {old.id, good.id}  # both kept for now


def test_a_warm_state_is_kept_while_a_layer_stands_on_it(ctx: Context, store: BuildStore) -> None:
    warm = warm_state(store, ctx, when="2020-01-01T00:00:00+00:00")  # long unused
    assert warm.size == 4000
    layer(store, BASE, None, None)
    layer(store, "e" * 64, BASE, warm.id)
    assert prune(store, older_than_s=3600) == []  # the layer is new, and the state under it
    assert store.warm_states() == [warm]
    assert BOOT.kernel in store.referenced_blobs()
    store.remove("e" * 64)
    assert [m.id for m in prune(store, older_than_s=3600)] == [warm.id]  # now it goes
    assert store.warm_states() == [] and not (store.warm / warm.id).exists()
    fresh = warm_state(store, ctx, when="2020-01-01T00:00:00+00:00")
    store.touch_warm(fresh.id)
    assert prune(store, older_than_s=3600) == []  # just used


def test_prune_removes_the_layer_before_the_warm_state_under_it(
    ctx: Context, store: BuildStore
) -> None:
    warm = warm_state(store, ctx, when="2020-01-01T00:00:00+00:00")  # older than the layer
    layer(store, BASE, None, None)
    layer(store, "e" * 64, BASE, warm.id)
    order = [m.id for m in prune(store, keep_bytes=0)]
    assert order.index("e" * 64) < order.index(warm.id)


def test_a_half_made_warm_state_of_a_dead_process_is_removed(store: BuildStore) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = store.warm / f"tmp-{dead.pid}-cafe"
    mine = store.new_warm_tmp()
    for path in (gone, mine):
        path.mkdir(exist_ok=True)
        (path / "state").write_bytes(b"half")
    store.purge_tmp()
    assert not gone.exists() and mine.exists()
    assert store.warm_states() == []


def test_a_damaged_warm_meta_is_passed_over(ctx: Context, store: BuildStore) -> None:
    warm = warm_state(store, ctx)
    meta = store.warm_dir(warm.id) / "meta.json"
    data = json.loads(meta.read_text())
    data["requirements"] = {"qemu_version": 7}
    meta.write_text(json.dumps(data))
    assert find(store, warm.family, wanted(ctx, BOOT, SHAPE)) is None
    with pytest.raises(Exception, match="invalid warm state ID"):
        store.warm_dir("../layers")


def test_the_script_of_a_restored_guest() -> None:
    """It sets the clock, takes randomness from stdin and drops the cache disks' buffers."""
    script = resumed_script(["cc1234", "cc5678"], 1_800_000_000)
    assert "date -u -s @1800000000" in script
    assert "cat > /dev/urandom" in script
    assert script.count("blockdev --flushbufs") == 2
    assert "= cc5678 ]" in script

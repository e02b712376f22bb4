"""Snapshots on real QEMU: as new images (running and stopped VMs) and internal tags."""

from __future__ import annotations

import pytest

from corral.client import Corral
from corral.context import Context
from corral.errors import Conflict, NotFound
from corral.instance import snapshot

pytestmark = pytest.mark.vm

WRITE = "printf '{}' | dd of=/dev/vda bs=512 seek=2048 conv=notrunc 2>/dev/null && sync"
READ = "dd if=/dev/vda bs=512 skip=2048 count=1 2>/dev/null | head -c {}"


def api(ctx: Context) -> Corral:
    corral = Corral(ctx.config)
    corral.ctx = ctx
    return corral


def mark(vm, text: str) -> None:
    assert vm.execute(WRITE.format(text)).exit_code == 0


def read(vm, n: int) -> bytes:
    return vm.execute(READ.format(n)).stdout


def test_snapshot_running_and_stopped_as_images(vm_ctx: Context) -> None:
    c = api(vm_ctx)
    vm = c.launch("tiny", name="s1", instance_type="c1m256", wait=True, timeout=120)
    mark(vm, "RUNNING-MARK")
    live = vm.snapshot("tiny-live")  # QMP drive-backup while the guest runs
    assert live.default_user == "root" and live.kernel is not None
    assert vm.state == "running"
    mark(vm, "STOPPED-MARK")
    vm.stop(timeout=30)
    cold = vm.snapshot("tiny-cold")
    assert vm_ctx.qemu_img.info(vm_ctx.store.blob(cold.digest), "qcow2").backing_file is None

    for image, expected in (("tiny-live", b"RUNNING-MARK"), ("tiny-cold", b"STOPPED-MARK")):
        other = c.launch(image, name=f"from-{image}", instance_type="c1m256", wait=True,
                         timeout=120)  # fmt: skip
        assert read(other, len(expected)) == expected
        other.delete()
    with pytest.raises(Conflict, match="already exists"):
        vm.snapshot("tiny-cold")


def test_internal_snapshots_need_a_stopped_vm(vm_ctx: Context) -> None:
    vm = api(vm_ctx).launch("tiny", name="t1", instance_type="c1m256", wait=True, timeout=120)
    with pytest.raises(Conflict, match="need a stopped VM"):
        snapshot.create_tag(vm_ctx, "t1", "before")
    mark(vm, "BEFORE")
    vm.stop(timeout=30)
    snapshot.create_tag(vm_ctx, "t1", "before")
    assert [t["tag"] for t in snapshot.list_tags(vm_ctx, "t1")] == ["before"]
    with pytest.raises(Conflict, match="already has a snapshot"):
        snapshot.create_tag(vm_ctx, "t1", "before")

    vm.start(wait=True, timeout=120)
    mark(vm, "AFTER!")
    vm.stop(timeout=30)
    snapshot.restore_tag(vm_ctx, "t1", "before")
    vm.start(wait=True, timeout=120)
    assert read(vm, 6) == b"BEFORE"
    vm.stop(timeout=30)
    snapshot.delete_tag(vm_ctx, "t1", "before")
    assert snapshot.list_tags(vm_ctx, "t1") == []
    with pytest.raises(NotFound, match="no snapshot 'before'"):
        snapshot.restore_tag(vm_ctx, "t1", "before")

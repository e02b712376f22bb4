"""Snapshots on real QEMU: as new images (running and stopped VMs) and internal tags."""

from __future__ import annotations

import subprocess

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


def import_with_data(ctx: Context, tiny_guest, name: str) -> None:
    """The tiny guest's kernel on a disk holding 16 MiB of data, so that layers pay off."""
    disk = ctx.home.root / f"{name}.qcow2"
    ctx.qemu_img.create(disk, 256 << 20)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 64M 16M", str(disk)],
                   check=True, capture_output=True)  # fmt: skip
    ctx.store.import_image(disk, name, kernel=tiny_guest.kernel, initrd=tiny_guest.initrd,
                           cmdline=tiny_guest.cmdline)  # fmt: skip


def test_snapshot_running_and_stopped_as_images(vm_ctx: Context, tiny_guest) -> None:
    c = api(vm_ctx)
    import_with_data(vm_ctx, tiny_guest, "base")
    vm = c.launch("base", name="s1", instance_type="c1m256", wait=True, timeout=120)
    mark(vm, "RUNNING-MARK")
    live = vm.snapshot("tiny-live")  # QMP drive-backup while the guest runs
    assert live.default_user == "root" and live.kernel is not None
    assert vm.state == "running"
    mark(vm, "STOPPED-MARK")
    vm.stop(timeout=30)
    cold = vm.snapshot("tiny-cold")
    # Both are layers on the base image: only what the instance wrote is stored.
    tiny = vm_ctx.store.get("base")
    for layer in (live, cold):
        assert layer.parent == tiny.digest
        info = vm_ctx.qemu_img.info(vm_ctx.store.blob(layer.digest), "qcow2")
        assert info.backing_file == str(vm_ctx.store.blob(tiny.digest))
        assert vm_ctx.store.chain(layer.digest) == [layer.digest, tiny.digest]

    for image, expected in (("tiny-live", b"RUNNING-MARK"), ("tiny-cold", b"STOPPED-MARK")):
        other = c.launch(image, name=f"from-{image}", instance_type="c1m256", wait=True,
                         timeout=120)  # fmt: skip
        assert read(other, len(expected)) == expected
        other.delete()
    with pytest.raises(Conflict, match="already exists"):
        vm.snapshot("tiny-cold")

    # A layer on a layer: launch the snapshot, change it, snapshot again.
    child = c.launch("tiny-cold", name="grandchild", instance_type="c1m256", wait=True,
                     timeout=120)  # fmt: skip
    mark(child, "THIRD-MARK")
    third = child.snapshot("tiny-third")
    child.delete()
    assert vm_ctx.store.chain(third.digest) == [third.digest, cold.digest, tiny.digest]
    vm.delete()
    vm_ctx.store.collect_garbage(keep=())  # keeps every blob a named image stands on
    again = c.launch("tiny-third", name="third", instance_type="c1m256", wait=True, timeout=120)
    assert read(again, 10) == b"THIRD-MARK"
    # The base's own data is visible through the whole chain.
    assert (
        again.execute("dd if=/dev/vda bs=1M skip=64 count=1 2>/dev/null | head -c 4").stdout
        == b"ZZZZ"
    )


def test_a_layer_that_saves_nothing_is_flattened(vm_ctx: Context) -> None:
    # The tiny image is an empty qcow2: any layer on it is larger than the image itself.
    vm = api(vm_ctx).launch("tiny", name="f1", instance_type="c1m256", wait=True, timeout=120)
    mark(vm, "FLAT")
    vm.stop(timeout=30)
    flat = vm.snapshot("tiny-flat")
    assert flat.parent is None
    assert vm_ctx.qemu_img.info(vm_ctx.store.blob(flat.digest), "qcow2").backing_file is None
    assert vm_ctx.store.chain(flat.digest) == [flat.digest]


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

"""Warm images on real QEMU with the tiny guest: a template saved with its memory once per
module, clones restored from it, refusals that leave nothing, and saves killed midway."""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import CACHE, TINY, kill_all
from corral.client import Corral, Instance
from corral.config import Config
from corral.context import Context
from corral.image_holders import image_holders
from corral.machine.vm import Vm
from helpers import corral, corral_popen, qemu_pids
from instance.test_snapshot import READ, WRITE, import_with_data

pytestmark = pytest.mark.vm

SIZE = "c1m256"
WARM = "tiny-warm"


@pytest.fixture(scope="module")
def wctx(tiny_guest) -> Iterator[Context]:
    """One state directory for the module, holding the tiny guest as image 'tiny'."""
    home = Path(tempfile.mkdtemp(prefix="cw", dir="/tmp"))
    ctx = Context(replace(Config(), home=home, cache_dir=CACHE / "host"))
    import_with_data(ctx, tiny_guest, TINY)  # 16 MiB on its disk: a template's layer pays off
    try:
        yield ctx
    finally:
        kill_all(ctx)
        shutil.rmtree(home, ignore_errors=True)


def api(ctx: Context) -> Corral:
    c = Corral(ctx.config)
    c.ctx = ctx
    return c


@pytest.fixture(scope="module")
def template(wctx: Context) -> Instance:
    """A running tiny guest, saved warm as WARM through the CLI; it runs on afterwards."""
    vm = api(wctx).launch(TINY, name="tmpl", instance_type=SIZE, wait=True, timeout=180)
    vm.execute("echo template-was-here > /run/marker")
    assert vm.execute(WRITE.format("TEMPLATE-DISK")).exit_code == 0
    proc = corral(wctx, "snapshot", "tmpl", "--memory", "--as", WARM)
    assert proc.returncode == 0, proc.stderr
    assert f"saved tmpl warm as image {WARM}" in proc.stdout
    return vm


def test_the_template_runs_on_and_the_image_says_what_it_requires(
    wctx: Context, template: Instance
) -> None:
    assert template.state == "running"
    assert template.execute("cat /run/marker").stdout == b"template-was-here\n"
    manifest = wctx.store.get(WARM)
    assert manifest.warm is not None and manifest.warm.agent
    req = manifest.warm.requirements
    assert (req.cpus, req.memory_mib) == (1, 256)
    assert "agent:virtio-serial" in req.devices and "vmgenid" in req.devices
    # Zero pages cost nothing: the state is far smaller than the 256 MiB of RAM.
    assert 0 < manifest.warm.state_size < 128 << 20
    assert wctx.store.blob(manifest.warm.state).stat().st_size == manifest.warm.state_size
    assert manifest.parent == wctx.store.get(TINY).digest  # the disk: a layer on the image
    shown = corral(wctx, "image", "inspect", WARM).stdout
    assert "warm:          yes" in shown and "1 cpus, 256 MiB" in shown


def test_a_warm_launch_restores_and_reaches_ready(wctx: Context, template: Instance) -> None:
    began = time.monotonic()
    clone = api(wctx).launch(WARM, name="w1", wait=True, timeout=120)  # size: the saved one
    took = time.monotonic() - began
    assert clone.record.memory_mib == 256 and clone.record.cpus == 1
    # It woke up with the template's memory: what was in its tmpfs is there, no boot happened.
    assert clone.execute("cat /run/marker").stdout == b"template-was-here\n"
    assert b"corral-tiny: ready" not in clone.serial_log.read_bytes()  # no boot
    assert clone.execute(READ.format(13)).stdout == b"TEMPLATE-DISK"
    clone.delete()
    assert took < 60, took


def test_a_restore_with_other_memory_is_refused_and_leaves_nothing(
    wctx: Context, template: Instance
) -> None:
    before = qemu_pids(wctx)
    proc = corral(wctx, "launch", WARM, "--name", "big", "--memory", "512M")
    assert proc.returncode == 2, proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first == (
        f"error: cannot restore warm image {WARM!r}: memory: saved 256 MiB, this launch 512 MiB"
    )
    assert "Traceback" not in proc.stderr
    assert not wctx.home.instance("big").dir.exists()
    assert qemu_pids(wctx) == before
    # --cold-if-needed boots it instead: a fresh boot of the saved disk, at the size asked for.
    proc = corral(wctx, "launch", WARM, "--name", "big", "--memory", "512M",
                  "--cold-if-needed", "--wait", "--timeout", "180")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    vm = api(wctx).get("big")
    assert b"corral-tiny: ready" in vm.serial_log.read_bytes()  # it booted
    assert vm.execute("cat /run/marker").exit_code != 0  # tmpfs: the template's memory is not
    vm.delete()


def _blobs(ctx: Context) -> set[str]:
    return {p.name for p in ctx.home.blobs.iterdir()}


@pytest.mark.parametrize("stage", ["start", "saving", "storing"])
def test_kill_9_during_a_save_leaves_no_half_warm_image(
    wctx: Context, template: Instance, stage: str
) -> None:
    """The manifest is written last: a save killed before it leaves no image, and what it
    had written goes with the next garbage collection and temporary-file purge."""
    before = _blobs(wctx)
    proc = corral_popen(wctx, "snapshot", "tmpl", "--memory", "--as", "half")
    assert proc.stderr is not None
    try:
        if stage != "start":
            while line := proc.stderr.readline():
                if f"tmpl: {stage}".encode() in line:
                    break
            else:
                pytest.fail(f"the save never reached {stage!r}")
        else:
            time.sleep(0.3)  # the command has started, perhaps no more
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert not wctx.store.exists("half")
    assert all(m.name != "half" for m in wctx.store.list())
    wctx.store.purge_tmp()
    wctx.store.collect_garbage(image_holders(wctx).keep)
    assert _blobs(wctx) == before
    assert list(wctx.home.image_tmp.iterdir()) == []
    # The template may have been left paused mid-save (its next save would resume it).
    _cont(wctx)
    assert template.execute("true").exit_code == 0


def _cont(ctx: Context) -> None:
    vm = Vm.attach(ctx.home.instance("tmpl"))
    assert vm is not None
    asyncio.run(vm.resume())


def test_a_save_after_one_killed_midway_works(wctx: Context, template: Instance) -> None:
    proc = corral_popen(wctx, "snapshot", "tmpl", "--memory", "--as", "half2")
    assert proc.stderr is not None
    while line := proc.stderr.readline():
        if b"tmpl: saving" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    template.snapshot("whole", memory=True)  # a leftover disk job or migration is cleared
    assert wctx.store.get("whole").warm is not None
    assert template.execute("true").exit_code == 0


def test_export_with_state_and_rm(wctx: Context, template: Instance, tmp_path: Path) -> None:
    proc = corral(wctx, "image", "export", WARM, str(tmp_path / "w.qcow2"), "--with-state")
    assert proc.returncode == 0, proc.stderr
    manifest = wctx.store.get(WARM)
    assert manifest.warm is not None
    assert (tmp_path / "w.qcow2.state").stat().st_size == manifest.warm.state_size
    refused = corral(wctx, "image", "rm", TINY)
    assert refused.returncode != 0 and "has dependants" in refused.stderr

"""Warm images on real QEMU with the tiny guest: a template saved with its memory once per
module, clones restored from it, refusals that leave nothing, and saves killed midway."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
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
from corral.errors import Conflict
from corral.image_holders import image_holders
from corral.instance import lifecycle, registry
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


USER_DATA = b"""#cloud-config
write_files:
  - path: /run/warm-user-data
    content: written at warm launch
runcmd:
  - [sh, -c, "echo ran > /run/warm-runcmd"]
"""

FACTS = {
    "hostname": "hostname",
    "machine_id": "cat /etc/machine-id 2>/dev/null || echo none",  # the tiny guest has none
    "host_key": "dropbearkey -y -f /etc/dropbear/dropbear_ed25519_host_key | grep ^ssh-",
    "address": "ip -4 -o addr show dev eth0 | awk '{print $4}'",
    "random": "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'",
    "clock": "date +%s",
}


def facts(vm: Instance) -> dict[str, str]:
    out = {}
    for key, command in FACTS.items():
        result = vm.execute(command)
        assert result.exit_code == 0, (key, result.stderr)
        out[key] = result.stdout.decode().strip()
    return out


def ssh_with(key: Path, port: int, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-i", str(key), "-p", str(port), "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes", "root@127.0.0.1", command],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_two_clones_run_at_once_each_its_own_machine(
    wctx: Context, template: Instance, tmp_path: Path
) -> None:
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    c = api(wctx)
    one = c.launch(WARM, name="one", ssh_keys=[f"{key}.pub"], user_data=USER_DATA, wait=True,
                   timeout=120)  # fmt: skip
    two = c.launch(WARM, name="two", wait=True, timeout=120)
    try:
        a, b, t = facts(one), facts(two), facts(template)
        assert (a["hostname"], b["hostname"]) == ("one", "two")
        for fact in ("machine_id", "host_key", "random"):
            assert len({a[fact], b[fact], t[fact]}) == 3, fact
        assert len(a["machine_id"]) == 32
        # User-mode NICs: each clone is 10.0.2.15 behind its own QEMU, like cold VMs.
        assert a["address"] == b["address"] == "10.0.2.15/24"
        for seen in (a, b):
            assert abs(int(seen["clock"]) - time.time()) < 30  # the clock was set, not saved
        # The launch's key works, and is not the template's corral key alone.
        proc = ssh_with(key, one.ssh_port, "hostname; cat /run/warm-runcmd /run/warm-user-data")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "one\nran\nwritten at warm launch"  # content as given
        authorized = one.execute("cat /root/.ssh/authorized_keys").stdout.decode()
        assert key.with_suffix(".pub").read_text().split()[1] in authorized
        assert ssh_with(key, two.ssh_port, "true").returncode != 0  # not two's key
        assert two.execute("test -e /run/warm-user-data").exit_code != 0
    finally:
        one.delete()
        two.delete()


def test_a_stopped_clone_starts_cold_as_itself(wctx: Context, template: Instance) -> None:
    vm = api(wctx).launch(WARM, name="later", wait=True, timeout=120)
    assert registry.load_named(wctx.home, "later")[1].warm  # its readiness skipped cloud-init
    vm.stop(timeout=30)
    vm.start(wait=True, timeout=180)
    assert b"corral-tiny: ready" in vm.serial_log.read_bytes()  # a real boot, from its seed
    assert not registry.load_named(wctx.home, "later")[1].warm  # this run's readiness did not
    assert vm.execute("hostname").stdout == b"later\n"
    vm.delete()


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
    # A VM whose guest agent does not answer is not saved warm: its clones could not be
    # made their own machines.
    vm.execute("kill -9 $(ps | grep '[c]orral-agent' | cut -c1-6)")  # no pkill in the guest
    assert b"corral-agent" not in vm.execute("ps").stdout
    proc = corral(wctx, "snapshot", "big", "--memory", "--as", "mute")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: the guest agent of 'big' does not answer")
    assert not wctx.store.exists("mute") and vm.state == "running"
    vm.delete()


def test_user_data_a_warm_launch_cannot_apply(wctx: Context, tmp_path: Path) -> None:
    """MIME user-data is refused before anything exists (or boots cold, if allowed); modules
    that apply only at first boot are named in a note."""
    mime = tmp_path / "mime"
    mime.write_text('Content-Type: multipart/mixed; boundary="x"\n\n--x--\n')
    proc = corral(wctx, "launch", WARM, "--name", "mime", "--user-data", str(mime))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(
        f"error: cannot restore warm image {WARM!r}: user-data at warm launch must be"
    )
    assert not wctx.home.instance("mime").dir.exists()
    config = tmp_path / "config"
    config.write_text("#cloud-config\npackages: [jq]\nruncmd:\n  - touch /run/ran\n")
    proc = corral(wctx, "launch", WARM, "--name", "noted", "--user-data", str(config), "--wait")
    assert proc.returncode == 0, proc.stderr
    assert "noted: restored from warm image" in proc.stderr
    assert "noted: cloud-config packages: applied at a first boot only" in proc.stderr
    assert api(wctx).get("noted").execute("test -e /run/ran").exit_code == 0
    api(wctx).get("noted").delete()


def test_image_warm_boots_saves_and_leaves_no_instance(wctx: Context, template: Instance) -> None:
    proc = corral(wctx, "image", "warm", TINY, "--as", "tiny-warm2", "--type", SIZE)
    assert proc.returncode == 0, proc.stderr
    manifest = wctx.store.get("tiny-warm2")
    assert manifest.warm is not None and manifest.warm.requirements.memory_mib == 256
    assert not [n for n in registry.names(wctx.home) if n.startswith("warm-")]
    refused = corral(wctx, "image", "warm", TINY, "--as", "tiny-warm2")
    assert refused.returncode == 2 and "already exists" in refused.stderr
    assert corral(wctx, "image", "rm", "tiny-warm2").returncode == 0
    with pytest.raises(Conflict, match="already exists"):  # the Python API checks first too
        api(wctx).warm_image(TINY, WARM, instance_type=SIZE)
    assert not [n for n in registry.names(wctx.home) if n.startswith("warm-")]


def test_image_warm_killed_outright_leaves_no_instance_running(
    wctx: Context, template: Instance
) -> None:
    """kill -9 of `image warm` while its template boots: the instance it made is a throwaway,
    removed (QEMU and all) by the next command that looks; no image is made."""
    before = qemu_pids(wctx)
    proc = corral_popen(wctx, "image", "warm", TINY, "--as", "tiny-warm3", "--type", SIZE)
    assert proc.stderr is not None
    try:
        while line := proc.stderr.readline():
            if f"warm {TINY}: ssh".encode() in line:
                break
        else:
            pytest.fail("image warm never reached the ssh stage")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    (left,) = [n for n in registry.names(wctx.home) if n.startswith("warm-")]
    assert len(qemu_pids(wctx) - before) == 1  # its template still runs, for now
    listed = corral(wctx, "ls")
    assert listed.returncode == 0 and left not in listed.stdout
    assert left not in registry.names(wctx.home)
    assert qemu_pids(wctx) == before
    assert not wctx.store.exists("tiny-warm3")


def _blobs(ctx: Context) -> set[str]:
    return {p.name for p in ctx.home.blobs.iterdir()}


@pytest.mark.parametrize("stage", ["start", "saving", "storing", "storing --stop"])
def test_kill_9_during_a_save_leaves_no_half_warm_image(
    wctx: Context, template: Instance, stage: str
) -> None:
    """The manifest is written last: a save killed before it leaves no image, and what it
    had written goes with the next garbage collection and temporary-file purge."""
    before = _blobs(wctx)
    stage, _, stop = stage.partition(" ")
    proc = corral_popen(wctx, "snapshot", "tmpl", "--memory", "--as", "half", *filter(None, [stop]))
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
    # The template may have been left paused mid-save: then the record says so (never
    # `running` for a paused VM), and `corral resume` continues it.
    _migration_settled(wctx)  # QEMU finishes the killed save's migration on its own
    seen = lifecycle.status(wctx, "tmpl")[1]
    if stop:  # saved, to be stopped next: certainly held paused when killed
        assert _paused(wctx) and seen.state == "paused"
    if _paused(wctx):
        assert seen.state == "paused" and "corral resume" in (seen.reason or ""), seen
    if seen.state == "paused":
        resumed = corral(wctx, "resume", "tmpl")
        assert resumed.returncode == 0, resumed.stderr
    assert not _paused(wctx) and lifecycle.status(wctx, "tmpl")[1].state == "running"
    assert template.execute("true").exit_code == 0


def _qmp(ctx: Context, command: str) -> dict:
    vm = Vm.attach(ctx.home.instance("tmpl"))
    assert vm is not None
    return asyncio.run(vm.execute(command))  # type: ignore[no-any-return]


def _paused(ctx: Context) -> bool:
    return not _qmp(ctx, "query-status")["running"]


def _migration_settled(ctx: Context) -> None:
    deadline = time.monotonic() + 30
    while _qmp(ctx, "query-migrate").get("status") in ("setup", "active", "device"):
        assert time.monotonic() < deadline, "the migration never ended"
        time.sleep(0.1)


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
    assert lifecycle.status(wctx, "tmpl")[1].state == "running" and not _paused(wctx)
    assert template.execute("true").exit_code == 0


def test_export_with_state_and_rm(wctx: Context, template: Instance, tmp_path: Path) -> None:
    proc = corral(wctx, "image", "export", WARM, str(tmp_path / "w.qcow2"), "--with-state")
    assert proc.returncode == 0, proc.stderr
    manifest = wctx.store.get(WARM)
    assert manifest.warm is not None
    assert (tmp_path / "w.qcow2.state").stat().st_size == manifest.warm.state_size
    refused = corral(wctx, "image", "rm", TINY)
    assert refused.returncode != 0 and "has dependants" in refused.stderr

"""Host checks: QEMU discovery and the functional KVM probe (real QEMU, real kernel)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from corral.config import Config
from corral.context import Context
from corral.errors import MissingDependency
from corral.host import probe
from corral.host.probe import choose_accelerator, find_qemu, probe_kvm
from helpers import corral


def test_finds_qemu_and_reads_versions(config: Config) -> None:
    qemu = find_qemu(config)
    assert Path(qemu.path).name == "qemu-system-x86_64"
    assert qemu.version[0].isdigit()


def test_missing_binary_names_the_package(config: Config) -> None:
    with pytest.raises(MissingDependency, match="not found") as info:
        find_qemu(replace(config, qemu_system="/nonexistent/qemu"))
    assert "qemu-system-x86" in (info.value.hint or "")


def test_configured_accelerator_skips_the_probe(config: Config) -> None:
    qemu = find_qemu(config)
    assert choose_accelerator(replace(config, accelerator="tcg"), qemu)[0] == "tcg"


@pytest.mark.vm
def test_probe_boots_a_real_kernel_and_is_cached(
    config: Config, tiny_guest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not Path("/dev/kvm").exists():
        pytest.skip("no /dev/kvm on this host: the probe is not needed")
    config = replace(config, cache_dir=tmp_path)
    qemu = find_qemu(config)
    direct_ok, why = probe_kvm(Path(qemu.path), tiny_guest.kernel)
    accel, note, warning = choose_accelerator(config, qemu, [tiny_guest.kernel])
    assert accel == ("kvm" if direct_ok else "tcg")
    if accel == "tcg":
        assert warning and note == f"/dev/kvm exists but {why}: using tcg"
    (entry,) = json.loads((tmp_path / "accelerator.json").read_text()).values()
    assert entry["accelerator"] == accel

    def no_second_probe(*args: object, **kw: object) -> None:
        raise AssertionError("the cached result should have been used")

    monkeypatch.setattr(probe, "probe_kvm", no_second_probe)
    assert choose_accelerator(config, qemu, [tiny_guest.kernel])[0] == accel


@pytest.mark.vm
def test_probe_gives_up_at_its_deadline(config: Config, tiny_guest) -> None:
    """A guest that cannot finish in time (here: TCG with a tiny deadline) is abandoned, not
    waited for, and its QEMU is not left behind."""
    qemu = find_qemu(config)
    before = {p.name for p in Path("/proc").iterdir() if p.name.isdigit()}
    ok, why = probe_kvm(Path(qemu.path), tiny_guest.kernel, deadline=0.3, accel="tcg")
    assert (ok, why) == (False, "a probe guest did not boot within 0.3s")
    after = {p.name for p in Path("/proc").iterdir() if p.name.isdigit()}
    leaked = [p for p in after - before if b"-no-reboot" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert leaked == []
    ok, why = probe_kvm(Path(qemu.path), tiny_guest.kernel, accel="tcg")
    assert ok, why  # given time, the same probe boots the kernel to its panic and exits


@pytest.mark.vm
def test_doctor_json_and_warning(vm_ctx: Context) -> None:
    proc = corral(vm_ctx, "doctor", "--json", timeout=60)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["accelerator"] in ("kvm", "tcg")
    assert Path(data["qemu"]["path"]).name == "qemu-system-x86_64"
    assert data["qemu"]["version"] and data["qemu_img"]["version"]
    human = corral(vm_ctx, "doctor", timeout=60)
    assert f"accelerator: {data['accelerator']}" in human.stdout
    if data["warning"]:
        (line,) = human.stderr.strip().splitlines()
        assert line.startswith("warning: ") and "using tcg" in line

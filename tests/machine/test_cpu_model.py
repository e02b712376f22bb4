"""The CPU model corral picks: asked of the real QEMU (query-cpu-model-expansion), not assumed."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from corral.machine.argv import X86_64_V2, cpu_model

QEMU = shutil.which("qemu-system-x86_64")
# What TCG emulates slowly and a guest would use if offered.
SLOW_UNDER_TCG = ("avx", "avx2", "xsave", "la57", "x2apic")


def expand(option: str) -> dict[str, object]:
    """The full property list, from QEMU under TCG, of a `-cpu` option (`model,+flag,...`)."""
    assert QEMU is not None
    name, *adds = option.split(",")
    props = {add.removeprefix("+"): True for add in adds}
    expansion = {"type": "full", "model": {"name": name, "props": props}}
    script = [
        {"execute": "qmp_capabilities"},
        {"execute": "query-cpu-model-expansion", "arguments": expansion},
        {"execute": "quit"},
    ]
    proc = subprocess.run(
        [QEMU, "-machine", "none", "-accel", "tcg", "-display", "none", "-nodefaults",
         "-qmp", "stdio"],
        input="\n".join(json.dumps(c) for c in script), capture_output=True, text=True,
        timeout=30, check=True,
    )  # fmt: skip
    for line in proc.stdout.splitlines():
        answer = json.loads(line).get("return")
        if isinstance(answer, dict) and "model" in answer:
            return dict(answer["model"]["props"])
    raise AssertionError(f"no expansion in QEMU's answer: {proc.stdout}{proc.stderr}")


def test_kvm_keeps_the_hosts_cpu() -> None:
    assert cpu_model("kvm") == "host"


@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")
def test_the_tcg_model_has_what_x86_64_v2_needs() -> None:
    props = expand(cpu_model("tcg"))
    assert {flag: props.get(flag) for flag in X86_64_V2} == dict.fromkeys(X86_64_V2, True)


@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")
def test_the_tcg_model_leaves_out_what_tcg_runs_slowly() -> None:
    props = expand(cpu_model("tcg"))
    assert [flag for flag in SLOW_UNDER_TCG if props.get(flag)] == []
    # ... whereas `max`, the model before, offers them.
    assert any(expand("max").get(flag) for flag in SLOW_UNDER_TCG)


@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")
def test_the_tcg_model_is_not_intel_so_guests_skip_page_table_isolation() -> None:
    # Linux turns on Meltdown's page-table isolation for Intel CPUs that do not say RDCL_NO;
    # under TCG every syscall then pays a full TLB flush (Nehalem, the model before, did).
    assert expand(cpu_model("tcg"))["vendor"] == "AuthenticAMD"
    assert expand("Nehalem")["vendor"] == "GenuineIntel"

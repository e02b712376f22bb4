"""Host facts: which QEMU binaries we use, their versions, and which accelerator works.

KVM is trusted only after a functional probe: a real Linux kernel is booted under KVM with no
root filesystem and `panic=-1`, so a working KVM reaches the root-mount panic and QEMU exits on
its own within a second or two. On hosts where /dev/kvm exists but guests hang, the probe misses
its deadline and corral falls back to TCG instead of hanging. A boot-sector probe is not enough:
on such hosts a 16-bit or even long-mode boot sector completes, while Linux hangs early in boot.
The result is cached per host, keyed by everything that could change it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from corral.config import Config
from corral.errors import MissingDependency
from corral.run import run, which

log = logging.getLogger("corral.host")

PROBE_DEADLINE = 6.0


@dataclass(frozen=True)
class Tool:
    path: str
    version: str


@dataclass(frozen=True)
class HostFacts:
    """What corral learned about this host, probed once and passed down as a value."""

    qemu: Tool
    qemu_img: Tool
    accelerator: str  # "kvm" or "tcg"
    accelerator_note: str  # why; a warning when KVM exists but was rejected
    warning: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "accelerator": self.accelerator,
            "accelerator_note": self.accelerator_note,
            "warning": self.warning,
            "qemu": asdict(self.qemu),
            "qemu_img": asdict(self.qemu_img),
        }


def find_tool(program: str, *, package: str, cache_dir: Path | None = None) -> Tool:
    """Resolve a QEMU tool and read its version; missing tools name the package to install.

    Versions are cached by the binary's path, size and mtime: every launch needs the tools,
    and running `--version` twice would cost more than the rest of a launch's bookkeeping.
    """
    path = which(program)
    if path is None:
        raise MissingDependency(
            f"{program} not found", hint=f"install it: apt-get install {package}"
        )
    stat = path.stat()
    key = f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
    cache = cache_dir / "tools.json" if cache_dir else None
    known = _read_json(cache) if cache else {}
    if key in known:
        return Tool(str(path), known[key])
    out = run([path, "--version"], timeout=20).stdout.decode(errors="replace")
    first = out.strip().splitlines()[0] if out.strip() else ""
    version = next((w for w in first.split() if w[:1].isdigit()), first)
    if cache:
        _write_cache(cache, {**known, key: version})
    return Tool(str(path), version)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def find_qemu(config: Config) -> Tool:
    return find_tool(config.qemu_system, package="qemu-system-x86", cache_dir=config.cache_dir)


def find_qemu_img(config: Config) -> Tool:
    return find_tool(config.qemu_img, package="qemu-utils", cache_dir=config.cache_dir)


def probe_kernels(extra: Iterable[Path] = ()) -> list[Path]:
    """Linux kernels we may boot for the probe: given ones first, then the host's own."""
    found = [p for p in extra if p.is_file() and os.access(p, os.R_OK)]
    boot = Path("/boot")
    if boot.is_dir():
        release = platform.release()
        candidates = [boot / f"vmlinuz-{release}", *sorted(boot.glob("vmlinuz-*"), reverse=True)]
        found += [p for p in candidates if p.is_file() and os.access(p, os.R_OK)]
    return list(dict.fromkeys(found))


def kvm_usable_device() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def probe_kvm(
    qemu: Path, kernel: Path, *, deadline: float = PROBE_DEADLINE, accel: str = "kvm"
) -> tuple[bool, str]:
    """Boot `kernel` as launches would (KVM: -cpu host); say whether and why it worked.

    Success is QEMU exiting by itself, with status 0, before the deadline: the kernel got as far
    as its root-mount panic and rebooted, and -no-reboot turned that into an exit.
    """
    argv = [
        str(qemu), "-accel", accel, "-machine", "q35",
        "-cpu", "host" if accel == "kvm" else "max", "-m", "128",
        "-nodefaults", "-no-user-config", "-display", "none", "-serial", "null",
        "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1 loglevel=0",
        "-no-reboot",
    ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        code = proc.wait(timeout=deadline)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False, f"a probe guest did not boot within {deadline:g}s"
    if code != 0:
        return False, f"QEMU failed a probe guest under {accel} (exit status {code})"
    return True, f"a probe guest booted in {time.monotonic() - started:.1f}s"


def _cache_key(qemu: Tool, kernel: Path) -> str:
    """What the probe result depends on: host, kernel release, QEMU, and the probe kernel.

    The kernel counts by content: store blobs are named by their sha256, so the same kernel
    in another state directory hits the same entry; other files count by size and mtime.
    """
    stat = kernel.stat()
    name = kernel.name
    ident = (
        name
        if len(name) == 64 and all(c in "0123456789abcdef" for c in name)
        else (f"{kernel}:{stat.st_size}:{stat.st_mtime_ns}")
    )
    parts = [platform.node(), platform.release(), qemu.path, qemu.version, ident]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def choose_accelerator(
    config: Config, qemu: Tool, kernels: Iterable[Path] = ()
) -> tuple[str, str, bool]:
    """Return (accelerator, note, is_warning), probing KVM once per host and caching it."""
    if config.accelerator != "auto":
        return config.accelerator, f"{config.accelerator} chosen by configuration", False
    if not Path("/dev/kvm").exists():
        return "tcg", "no /dev/kvm: using tcg (software emulation, slower)", False
    if not kvm_usable_device():
        return "tcg", "/dev/kvm is not accessible to this user: using tcg", True
    candidates = probe_kernels(kernels)
    if not candidates:
        return "tcg", "no Linux kernel to probe KVM with: using tcg", True
    kernel = candidates[0]
    cache = config.cache_dir / "accelerator.json"
    key = _cache_key(qemu, kernel)
    known = _read_json(cache)
    if isinstance(known.get(key), dict):
        hit = known[key]
        return hit["accelerator"], hit["note"], hit["warning"]
    ok, why = probe_kvm(Path(qemu.path), kernel)
    result = (
        ("kvm", f"kvm: {why}", False)
        if ok
        else ("tcg", f"/dev/kvm exists but {why}: using tcg", True)
    )
    entry = {"accelerator": result[0], "note": result[1], "warning": result[2]}
    _write_cache(cache, {**known, key: entry})
    return result


def _write_cache(path: Path, data: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def detect_host(config: Config, kernels: Iterable[Path] = ()) -> HostFacts:
    """Probe everything corral needs to know about this host."""
    qemu = find_qemu(config)
    qemu_img = find_qemu_img(config)
    accel, note, warning = choose_accelerator(config, qemu, kernels)
    return HostFacts(qemu, qemu_img, accel, note, warning)

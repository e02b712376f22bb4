"""Helpers for tests that drive the real `corral` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from corral.context import Context


def corral(ctx: Context, *args: str, input: bytes | None = None, timeout: float = 600,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run the corral CLI against ctx's state directory and return the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "corral.cli.app", *args],
        input=input.decode() if input is not None else None,
        capture_output=True,
        text=True,
        env=_env(ctx, env),
        timeout=timeout,
    )


def corral_popen(ctx: Context, *args: str) -> subprocess.Popen[bytes]:
    """Start the corral CLI against ctx's state directory; stdout is a pipe (stderr too)."""
    return subprocess.Popen(
        [sys.executable, "-m", "corral.cli.app", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(ctx, None),
    )


def _env(ctx: Context, extra: dict[str, str] | None) -> dict[str, str]:
    return {
        **os.environ,
        "CORRAL_HOME": str(ctx.config.home),
        "CORRAL_CACHE_DIR": str(ctx.config.cache_dir),
        "CORRAL_CONFIG": "/nonexistent",
        **(extra or {}),
    }


def qemu_pids(ctx: Context) -> set[int]:
    """The qemu-system processes running a VM of ctx's state directory."""
    out = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            home = str(ctx.home.root).encode()
            if argv[0].endswith(b"qemu-system-x86_64") and any(home in a for a in argv):
                out.add(int(proc.name))
    return out


def holds_bytes(top: Path, data: bytes) -> bool:
    """Whether any file under `top` (symlinks not followed) contains `data`."""
    return any(
        data in (Path(folder) / name).read_bytes()
        for folder, _, names in os.walk(top)
        for name in names
        if not (Path(folder) / name).is_symlink()
    )

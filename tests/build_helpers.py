"""Helpers of the build tests (tests/builds/): a build run in-process, its output kept."""

from __future__ import annotations

from pathlib import Path

from corral.builds.executor import BuildOptions, build
from corral.builds.spec import parse_spec
from corral.context import Context


def run_build(ctx: Context, text: str, context: Path, **kw: object) -> tuple[str, str]:
    """Build `text` in a small VM (1 cpu, 256 MiB); the final layer and everything printed."""
    out = bytearray()
    options = BuildOptions(
        **{"context": context, "cpus": 1, "memory_mib": 256, "boot_timeout": 120, **kw}
    )  # type: ignore[arg-type]
    final = build(ctx, parse_spec(text), options, out.extend)
    return final, out.decode()

"""Parsing of sizes and instance types: pure functions with one-line errors."""

from __future__ import annotations

import re
from dataclasses import dataclass

from corral.errors import InvalidInput

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_TYPE_RE = re.compile(r"^c(\d+)m(\d+)$")

MIN_MEMORY_MIB = 64
MAX_CPUS = 255


def parse_size(
    text: str | int, *, default_unit: str = "", what: str = "size", allow_zero: bool = False
) -> int:
    """Parse '20G', '512M', '1.5G' or a plain number (in default_unit) into bytes."""
    if isinstance(text, int):
        return text * _UNITS[default_unit]
    match = _SIZE_RE.match(text)
    if not match:
        raise InvalidInput(f"invalid {what} {text!r}: expected a number with K, M, G or T suffix")
    number, unit = match.groups()
    unit = unit.upper() or default_unit
    value = int(float(number) * _UNITS[unit])
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidInput(f"invalid {what} {text!r}: must be greater than zero")
    return value


def parse_memory_mib(text: str | int) -> int:
    """Parse a memory size into MiB; a plain number means MiB, as with qemu -m."""
    size = parse_size(text, default_unit="M", what="memory size")
    if size % (1 << 20):
        raise InvalidInput(f"invalid memory size {text!r}: must be a whole number of MiB")
    return size >> 20


def format_size(size: int) -> str:
    """Render bytes as the shortest exact binary-suffixed size, e.g. 2147483648 -> '2G'."""
    for unit in ("T", "G", "M", "K"):
        if size and size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)


def human_size(size: float) -> str:
    """Render bytes approximately for people, e.g. '1.5 GiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


@dataclass(frozen=True)
class InstanceType:
    """pycloudlib's instance type: c<cpus>m<memory MiB>."""

    cpus: int
    memory_mib: int

    @property
    def name(self) -> str:
        return f"c{self.cpus}m{self.memory_mib}"


def parse_instance_type(text: str) -> InstanceType:
    """Parse 'c2m2048' into an InstanceType; reject zero, garbage and missing parts."""
    match = _TYPE_RE.match(text.strip())
    if not match:
        raise InvalidInput(
            f"invalid instance type {text!r}: expected c<cpus>m<memory MiB>, e.g. c2m2048"
        )
    cpus, memory = (int(g) for g in match.groups())
    try:
        return InstanceType(check_cpus(cpus), check_memory(memory))
    except InvalidInput as exc:
        raise InvalidInput(f"invalid instance type {text!r}: {exc.message}") from None


def check_cpus(cpus: int) -> int:
    if not 1 <= cpus <= MAX_CPUS:
        raise InvalidInput(f"invalid cpu count {cpus}: must be between 1 and {MAX_CPUS}")
    return cpus


def check_memory(memory_mib: int) -> int:
    if memory_mib < MIN_MEMORY_MIB:
        raise InvalidInput(
            f"too little memory: {memory_mib} MiB (a guest needs at least {MIN_MEMORY_MIB} MiB)"
        )
    return memory_mib

"""Checksums: `ALGO:HEX` specs and the checksum files distributions publish next to images.

Both line styles of SHA256SUMS / SHA512SUMS / CHECKSUM files are read: GNU (`HEX  name`,
`HEX *name`) and BSD (`SHA256 (name) = HEX`), including Fedora's PGP clear-signed files. Any
hashlib algorithm is accepted. Pure functions: fetching the files is the caller's job.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from corral.errors import InvalidInput

ALGORITHMS = frozenset(a.lower() for a in hashlib.algorithms_available)

# A GNU-style line names no algorithm: the digest length tells the usual ones apart.
_BY_LENGTH = {32: "md5", 40: "sha1", 56: "sha224", 64: "sha256", 96: "sha384", 128: "sha512"}
_HEX_RE = re.compile(r"^[0-9a-fA-F]+$")
_BSD_RE = re.compile(r"^(?P<algo>[A-Za-z0-9_-]+) ?\((?P<name>.+)\) ?= ?(?P<hex>[0-9a-fA-F]+)$")
_GNU_RE = re.compile(r"^(?P<esc>\\?)(?P<hex>[0-9a-fA-F]{32,}) [ *](?P<name>.+)$")
_ALGO_IN_NAME_RE = re.compile(r"(?i)(sha3[_-]?\d+|sha\d+|md5|blake2[bs])")


def check_algorithm(name: str) -> str:
    """The hashlib name for `name` ('SHA256', 'sha-256' and 'sha3-256' are accepted too)."""
    key = name.strip().lower()
    for candidate in (key, key.replace("-", ""), key.replace("-", "_")):
        if candidate in ALGORITHMS:
            return candidate
    raise InvalidInput(
        f"unknown algorithm {name!r}",
        hint=f"use one of: {', '.join(sorted(ALGORITHMS))}",
    )


def hex_length(algo: str) -> int | None:
    """Digest length in hex digits; None for variable-length (shake) algorithms."""
    size = hashlib.new(algo).digest_size
    return size * 2 if size else None


@dataclass(frozen=True)
class Checksum:
    """An expected digest: a hashlib algorithm and its lower-case hex value."""

    algo: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algo}:{self.hex}"

    def hasher(self) -> Any:
        return hashlib.new(self.algo)

    def hexdigest(self, hasher: Any) -> str:
        """The hasher's digest at this checksum's length (shake algorithms need one)."""
        if hex_length(self.algo) is None:
            return hasher.hexdigest(len(self.hex) // 2)
        return hasher.hexdigest()


def make_checksum(algo: str, value: str) -> Checksum:
    """Validate an algorithm and a hex value into a Checksum."""
    algo = check_algorithm(algo)
    value = value.strip().lower()
    if not _HEX_RE.match(value):
        raise InvalidInput(f"invalid {algo} value {value!r}: expected hexadecimal digits")
    want = hex_length(algo)
    if want is not None and len(value) != want:
        raise InvalidInput(
            f"invalid {algo} value: {len(value)} hex digits, a {algo} digest has {want}"
        )
    if want is None and len(value) % 2:
        raise InvalidInput(f"invalid {algo} value: an odd number of hex digits")
    return Checksum(algo, value)


def parse_spec(spec: str) -> Checksum:
    """Parse 'ALGO:HEX' (e.g. 'sha256:9f86d0...')."""
    algo, sep, value = spec.partition(":")
    if not sep or not algo or not value:
        raise InvalidInput(f"invalid checksum {spec!r}: expected ALGO:HEX, e.g. sha256:9f86d0...")
    return make_checksum(algo, value)


def algorithm_from_filename(name: str) -> str | None:
    """'SHA512SUMS' -> 'sha512', 'sha256sum.txt' -> 'sha256', 'CHECKSUM' -> None."""
    match = _ALGO_IN_NAME_RE.search(name.rsplit("/", 1)[-1])
    if not match:
        return None
    try:
        return check_algorithm(match.group(1))
    except InvalidInput:
        return None


@dataclass(frozen=True)
class Entry:
    """One line of a checksum file: a file name and its expected digest."""

    name: str
    checksum: Checksum


def parse_checksum_file(text: str, *, default_algo: str | None = None) -> list[Entry]:
    """Every entry of a checksum file; comments, PGP armour and unknown lines are skipped.

    GNU lines carry no algorithm: `default_algo` (from the file's name) is used when the
    digest has its length, else the length decides (64 hex digits: sha256, 128: sha512...).
    """
    entries = []
    for line in _signed_body(text.splitlines()):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entry = _parse_line(line, default_algo)
        if entry is not None:
            entries.append(entry)
    return entries


def _signed_body(lines: list[str]) -> Iterable[str]:
    """The signed text of a PGP clear-signed message, or all lines if it is not one."""
    if not any(ln.strip() == "-----BEGIN PGP SIGNED MESSAGE-----" for ln in lines):
        yield from lines
        return
    state = "before"
    for line in lines:
        stripped = line.strip()
        if state == "before":
            if stripped == "-----BEGIN PGP SIGNED MESSAGE-----":
                state = "headers"
        elif state == "headers":
            if not stripped:
                state = "body"
        elif stripped.startswith("-----BEGIN PGP SIGNATURE-----"):
            return
        else:
            yield line[2:] if line.startswith("- ") else line  # dash-escaped lines


def _parse_line(line: str, default_algo: str | None) -> Entry | None:
    bsd = _BSD_RE.match(line)
    if bsd:
        try:
            checksum = make_checksum(bsd["algo"], bsd["hex"])
        except InvalidInput:
            return None
        return Entry(_clean_name(bsd["name"]), checksum)
    gnu = _GNU_RE.match(line)
    if not gnu:
        return None
    value = gnu["hex"].lower()
    algo = default_algo
    if algo is None or hex_length(algo) not in (None, len(value)):
        algo = _BY_LENGTH.get(len(value))
    if algo is None:
        return None
    name = gnu["name"]
    if gnu["esc"]:  # GNU coreutils escapes backslashes and newlines in names
        name = name.replace("\\\\", "\0").replace("\\n", "\n").replace("\0", "\\")
    try:
        return Entry(_clean_name(name), make_checksum(algo, value))
    except InvalidInput:
        return None


def _clean_name(name: str) -> str:
    name = name.strip()
    return name[2:] if name.startswith("./") else name


def find_entry(entries: Iterable[Entry], name: str) -> Entry | None:
    """The entry for exactly this file name, if any."""
    for entry in entries:
        if entry.name == name or entry.name.rsplit("/", 1)[-1] == name:
            return entry
    return None


def version_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Natural sort key: 'x-41-1.10' sorts after 'x-41-1.9'."""
    parts = re.split(r"(\d+)", name)
    return tuple((1, int(p)) if p.isdigit() else (0, p) for p in parts if p)


def newest(names: Iterable[str]) -> str | None:
    """The newest name by natural version order, or None."""
    return max(names, key=version_key, default=None)

"""What of a launch's user-data a warm clone applies, read on the host.

A cold boot hands user-data to cloud-init. A clone restored from a saved memory state has
booted already, so cloud-init's modules do not run again; corral's identity script applies the
parts that make sense on a running machine instead: a `#cloud-config` document's `write_files`
and `runcmd`, in that order, or a user-data that is a script (`#!`), run as it is. Everything
else a cloud-config says (packages, users, mounts, ...) is not applied at warm launch:
`ignored_modules` names it so that a launch can say so.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import re
import shlex
from dataclasses import dataclass

import yaml

from corral.errors import InvalidInput

WARM_MODULES = ("write_files", "runcmd")  # the cloud-config modules applied at warm launch

_OWNER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}(:[a-z_][a-z0-9_-]{0,31})?")
_ENCODINGS = {
    "": "text", "text/plain": "text", "text": "text",
    "b64": "base64", "base64": "base64",
    "gz": "gzip", "gzip": "gzip",
    "gz+b64": "gzip+base64", "gz+base64": "gzip+base64",
    "gzip+b64": "gzip+base64", "gzip+base64": "gzip+base64",
}  # fmt: skip


@dataclass(frozen=True)
class WriteFile:
    """One write_files entry, decoded: the bytes to write, and how."""

    path: str  # absolute
    content: bytes
    permissions: int = 0o644
    owner: str = "root:root"
    append: bool = False
    defer: bool = False


@dataclass(frozen=True)
class WarmUserData:
    """The part of a user-data a warm clone applies."""

    write_files: tuple[WriteFile, ...] = ()
    runcmd: str = ""  # a shell script: one line per runcmd entry, as cloud-init writes it
    script: bytes | None = None  # a user-data that is a script itself ("#!")
    ignored: tuple[str, ...] = ()  # cloud-config modules not applied at warm launch


def parse_user_data(data: bytes | None) -> WarmUserData:
    """Read a launch's user-data; InvalidInput for what a warm clone cannot apply."""
    if not data or not data.strip():
        return WarmUserData()
    if data.startswith(b"#!"):
        return WarmUserData(script=data)
    if not data.startswith(b"#cloud-config"):
        raise InvalidInput(
            "user-data at warm launch must be a #cloud-config document or a #! script",
            hint="MIME multi-part, #include and gzip user-data apply only at a cold boot",
        )
    try:
        doc = yaml.safe_load(data.decode())
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidInput(f"user-data is not valid YAML: {_first_line(exc)}") from None
    if doc is None:
        return WarmUserData()
    if not isinstance(doc, dict):
        raise InvalidInput("user-data: a #cloud-config document must be a mapping")
    files = doc.get("write_files") or []
    if not isinstance(files, list):
        raise InvalidInput("user-data: write_files must be a list")
    commands = doc.get("runcmd") or []
    if not isinstance(commands, list):
        raise InvalidInput("user-data: runcmd must be a list")
    ignored = tuple(sorted(str(k) for k in doc if k not in WARM_MODULES))
    return WarmUserData(
        write_files=tuple(_write_file(i, entry) for i, entry in enumerate(files)),
        runcmd="".join(_runcmd_line(i, entry) for i, entry in enumerate(commands)),
        ignored=ignored,
    )


def ignored_modules(data: bytes | None) -> tuple[str, ...]:
    """The top-level cloud-config keys of this user-data that a warm launch does not apply."""
    return parse_user_data(data).ignored


def _write_file(index: int, entry: object) -> WriteFile:
    where = f"user-data: write_files[{index}]"
    if not isinstance(entry, dict):
        raise InvalidInput(f"{where} must be a mapping")
    path = entry.get("path")
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
        raise InvalidInput(f"{where}: path must be an absolute path")
    if any(part == ".." for part in path.split("/")):
        raise InvalidInput(f"{where}: path {path!r} must not contain '..'")
    encoding = str(entry.get("encoding") or "").strip().lower()
    if encoding not in _ENCODINGS:
        raise InvalidInput(f"{where}: unknown encoding {encoding!r}")
    content = _decode(where, entry.get("content", ""), _ENCODINGS[encoding])
    owner = entry.get("owner", "root:root")
    if not isinstance(owner, str) or not _OWNER_RE.fullmatch(owner):
        raise InvalidInput(f"{where}: owner must be USER or USER:GROUP")
    return WriteFile(
        path=path,
        content=content,
        permissions=_permissions(where, entry.get("permissions", 0o644)),
        owner=owner,
        append=_flag(where, "append", entry.get("append", False)),
        defer=_flag(where, "defer", entry.get("defer", False)),
    )


def _decode(where: str, content: object, encoding: str) -> bytes:
    if content is None:
        return b""
    if isinstance(content, bytes):  # a YAML !!binary value
        raw = content
    elif isinstance(content, str | int | float):
        raw = str(content).encode()
    else:
        raise InvalidInput(f"{where}: content must be a string")
    try:
        if "base64" in encoding:
            raw = base64.b64decode(raw, validate=False)
        if "gzip" in encoding:
            raw = gzip.decompress(raw)
    except (binascii.Error, OSError, EOFError) as exc:
        raise InvalidInput(f"{where}: content is not valid {encoding}: {exc}") from None
    return raw


def _permissions(where: str, value: object) -> int:
    # cloud-init takes '0644' (a string, octal) or 0o644 (YAML 1.1 reads 0644 as octal already).
    if isinstance(value, bool):
        raise InvalidInput(f"{where}: permissions must be octal, e.g. '0644'")
    if isinstance(value, int):
        mode = value
    elif isinstance(value, str) and re.fullmatch(r"0?o?[0-7]{1,4}", value.strip()):
        mode = int(value.strip().replace("o", ""), 8)
    else:
        raise InvalidInput(f"{where}: permissions must be octal, e.g. '0644'")
    if not 0 <= mode <= 0o7777:
        raise InvalidInput(f"{where}: permissions {value!r} out of range")
    return mode


def _flag(where: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{where}: {name} must be true or false")
    return value


def _runcmd_line(index: int, entry: object) -> str:
    """cloud-init's runcmd: a string is a shell line as it is, a list is an argv."""
    if isinstance(entry, str):
        return entry + "\n"
    if isinstance(entry, list) and entry and all(isinstance(a, str | int | float) for a in entry):
        return shlex.join(str(a) for a in entry) + "\n"
    raise InvalidInput(f"user-data: runcmd[{index}] must be a string or a list of strings")


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__

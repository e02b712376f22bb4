"""Reading files the user names on the command line: one clear error when it cannot be done."""

from __future__ import annotations

from pathlib import Path

from corral.errors import InvalidInput


def read_file(path: Path | None) -> bytes | None:
    """The bytes of an optional file argument (None when not given)."""
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None

"""Frozen dataclasses that are saved as JSON: strict on the way in, plain on the way out.

Manifests and instance records are read by every command, so they avoid pydantic's import
and model-building cost (about a tenth of a second per command). The rules are the ones that
matter for files on disk: unknown fields are refused, required fields must be present, and
every value must have its declared type.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from datetime import datetime
from typing import Any, Literal, TypeVar, get_args, get_origin

R = TypeVar("R", bound="Record")


class RecordError(ValueError):
    """A saved record does not match its declared shape."""


@dataclasses.dataclass(frozen=True)
class Record:
    """Base of saved records; subclasses are frozen dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _dump(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=2).encode()

    @classmethod
    def from_dict(cls: type[R], data: Any, where: str = "") -> R:
        if not isinstance(data, dict):
            raise RecordError(f"{where or cls.__name__}: expected an object")
        hints = _hints(typing.cast(type, cls))  # a class is hashable; mypy sees type[R]
        unknown = set(data) - set(hints)
        if unknown:
            raise RecordError(f"{where or cls.__name__}: unknown field {sorted(unknown)[0]!r}")
        values = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                values[f.name] = _load(hints[f.name], data[f.name], f"{where}{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecordError(f"{where}{f.name}: missing")
        return cls(**values)

    @classmethod
    def from_json(cls: type[R], raw: bytes | str) -> R:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise RecordError(f"not JSON: {exc}") from exc
        return cls.from_dict(data)

    def replace(self: R, **changes: Any) -> R:
        return dataclasses.replace(self, **changes)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _dump(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_dump(v) for v in value]
    return value


def _load(kind: Any, value: Any, where: str) -> Any:
    origin = get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in get_args(kind):
            return None
        (inner,) = [a for a in get_args(kind) if a is not type(None)]
        return _load(inner, value, where)
    if origin is Literal:
        if value not in get_args(kind):
            raise RecordError(f"{where}: {value!r} is not one of {get_args(kind)}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise RecordError(f"{where}: expected a list")
        inner = get_args(kind)[0]
        return tuple(_load(inner, v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(kind, type) and issubclass(kind, Record):
        return kind.from_dict(value, f"{where}.")
    if kind is datetime:
        try:
            return datetime.fromisoformat(value)
        except (TypeError, ValueError) as exc:
            raise RecordError(f"{where}: not a timestamp: {value!r}") from exc
    if kind is int and (type(value) is not int):
        raise RecordError(f"{where}: expected an integer, got {value!r}")
    if kind in (str, bool, float) and not isinstance(value, kind):
        raise RecordError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value

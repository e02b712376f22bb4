"""gen-vm-image's `extra_kwargs`, translated into what they mean instead of passed through.

gen-vm-image appends `extra_kwargs` to `qemu-img create` as raw arguments. corral takes the
three its users write and gives each a safe meaning:

- `b` (backing image) names an image: one built earlier in the same file (by key or name) or
  one in the store. Never a host path: the new image becomes a qcow2 layer on that image's
  blob, like every other layer in corral.
- `F` (backing format) is that image's format, checked against what corral knows of it.
- `o` (creation options) is a list of `name=value` from an allowlist, each value checked;
  corral writes the `-o` argument itself from the checked values.

Anything else is refused, naming the key and the option. Pure: the caller resolves `b`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from corral.errors import InvalidInput
from corral.image.manifest import check_image_name
from corral.image.qemu_img import FORMATS, CreateOptions
from corral.units import parse_size

Problems = list[tuple[str, str]]  # (key, message)


def _choice(*allowed: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in allowed:
            raise InvalidInput(f"{value!r} is not one of: {', '.join(allowed)}")
        return value

    return check


def _on_off(value: str) -> str:
    words = {"on": "on", "off": "off", "true": "on", "false": "off", "yes": "on", "no": "off"}
    if value.lower() not in words:
        raise InvalidInput(f"{value!r} is not on or off")
    return words[value.lower()]


def _cluster_size(value: str) -> str:
    size = parse_size(value, what="cluster size")
    if size & (size - 1) or not 512 <= size <= 2 << 20:
        raise InvalidInput(f"{value!r} is not a power of two from 512 to 2M")
    return str(size)


# name -> (value check, formats it applies to)
OPTIONS: dict[str, tuple[Callable[[str], str], tuple[str, ...]]] = {
    "cluster_size": (_cluster_size, ("qcow2",)),
    "compression_type": (_choice("zlib", "zstd"), ("qcow2",)),
    "lazy_refcounts": (_on_off, ("qcow2",)),
    "preallocation": (_choice("off", "metadata", "falloc", "full"), ("qcow2", "raw")),
}
KEYS = ("b", "F", "o")
_OPTION_RE = re.compile(r"^([A-Za-z0-9_.-]+)=(.*)$")


@dataclass(frozen=True)
class ExtraKwargs:
    base: str | None  # `b` as written: an image key or name, resolved by the caller
    base_format: str | None  # `F`
    options: CreateOptions  # `o`, checked


def translate(where: str, raw: Any, *, fmt: str, has_input: bool) -> tuple[ExtraKwargs, Problems]:
    """Check an image's `extra_kwargs` (at `where`) for an image of output format fmt."""
    problems: Problems = []
    if not isinstance(raw, dict):
        return ExtraKwargs(None, None, ()), [(where, "expected a mapping (b, F, o)")]
    for key in raw:
        if key not in KEYS:
            problems.append((f"{where}.{key}", "not supported (corral translates b, F and o)"))
    values = {}
    for key in KEYS:
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            problems.append((f"{where}.{key}", "expected a single value"))
        elif value:
            values[key] = value.strip()
    base, base_format = values.get("b"), values.get("F")
    if base is not None:
        problems += _check_base(f"{where}.b", base, fmt=fmt, has_input=has_input)
    if base_format is not None:
        if base is None:
            problems.append((f"{where}.F", "names the format of b; give b too"))
        elif base_format not in FORMATS:
            problems.append((f"{where}.F", f"unsupported format {base_format!r} (qcow2 or raw)"))
    options = _options(f"{where}.o", values.get("o", ""), fmt, problems)
    return ExtraKwargs(base, base_format, options), problems


def _check_base(where: str, base: str, *, fmt: str, has_input: bool) -> Problems:
    try:
        check_image_name(base)
    except InvalidInput:
        return [(where, f"{base!r} is not an image name: b names an image of this file or of "
                        "the store, never a host path")]  # fmt: skip
    if has_input:
        return [(where, "a layer starts blank on its base image: give b or input, not both")]
    if fmt != "qcow2":
        return [(where, f"a layer on {base!r} is a qcow2 image, not {fmt}")]
    return []


def _options(where: str, text: str, fmt: str, problems: Problems) -> CreateOptions:
    """Parse `name=value,...`; each name from the allowlist, each value checked."""
    out: dict[str, str] = {}
    if not text:
        return ()
    allowed = ", ".join(sorted(OPTIONS))
    for item in text.split(","):
        match = _OPTION_RE.match(item.strip())
        if not match:
            problems.append((where, f"{item!r} is not name=value (allowed names: {allowed})"))
            continue
        name, value = match[1], match[2].strip()
        if name not in OPTIONS:
            problems.append((where, f"option {name!r} is not supported (allowed: {allowed})"))
            continue
        check, formats = OPTIONS[name]
        if fmt not in formats:
            problems.append((where, f"option {name!r} does not apply to a {fmt} image"))
        elif name in out:
            problems.append((where, f"option {name!r} is given twice"))
        else:
            try:
                out[name] = check(value)
            except InvalidInput as exc:
                problems.append((where, f"option {name!r}: {exc.message}"))
    return tuple(sorted(out.items()))

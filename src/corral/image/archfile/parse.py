"""gen-vm-image architecture files: parsed and validated whole before anything is fetched.

Both formats are read. The older one names the download on the image:

    owner: someone
    images:
      rocky:
        name: rocky
        version: "9.4"
        get_url: https://.../Rocky-9-GenericCloud.latest.x86_64.qcow2
        checksum: {type: sha256, value: 3927...}
        size: 20G

The current one puts it under `input` (a URL or a local path, its format and checksum) and may
name the output format (qcow2 or raw) or leave the input out (a blank disk of `size`):

    images:
      rocky:
        name: rocky
        version: "9.4"
        format: qcow2
        size: 20G
        input:
          url: https://...            # or path: disk.qcow2 (relative to this file)
          format: qcow2
          checksum: {type: sha512, value: ...}

corral adds an optional `user` (the image's default login user). Every problem is reported by
its place in the file (`images.rocky.checksum.type: unknown algorithm 'sha999'`).

Paths are checked here as far as text allows: an input path is a plain file path (`json:{...}`
and other qemu protocol prefixes are refused; a `file://` URL is a local path too), an output
path is relative and never climbs out of `--output` (`..` and absolute paths are refused).
gen-vm-image's `extra_kwargs` are translated by extra_kwargs.py; `b` naming an image of this
file is resolved here (it must be built earlier in the file).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from corral.confine import relative_parts
from corral.errors import InvalidInput
from corral.image.archfile import extra_kwargs
from corral.image.archfile.local_inputs import protocol_prefix
from corral.image.fetch.checksums import Checksum, make_checksum
from corral.image.fetch.download import file_url_path, is_url
from corral.image.manifest import check_image_name
from corral.image.qemu_img import CreateOptions
from corral.units import format_size, parse_size

FORMATS = ("qcow2", "raw")
_TOP_KEYS = {"owner", "images"}
_IMAGE_KEYS = {"name", "version", "size", "format", "get_url", "checksum", "input", "output",
               "user", "extra_kwargs"}  # fmt: skip
_INPUT_KEYS = {"url", "path", "format", "checksum"}
_OUTPUT_KEYS = {"path", "format"}


@dataclass(frozen=True)
class Input:
    """Where an image's disk comes from: a URL or a local file (exactly one)."""

    url: str | None  # http(s); a file:// URL is read as a local path
    path: Path | None  # as written: relative to the architecture file (or the current directory)
    format: str | None  # declared input format; checked against the file
    checksum: Checksum | None
    where: str  # e.g. images.rocky.input (or images.rocky.get_url)
    field: str  # the key that names the file: images.rocky.input.path, ...input.url, get_url


@dataclass(frozen=True)
class Base:
    """The image `extra_kwargs.b` layers an image on: built earlier in this file, or stored."""

    name: str  # its store name
    key: str | None  # its key when this file builds it; None: an image of the store
    format: str | None  # `F`, when given: checked against the base's real format


@dataclass(frozen=True)
class ArchImage:
    key: str
    name: str  # the store name: <name>-<version>, or <name> without a version
    size: int
    format: str  # the output format
    input: Input | None  # None: a blank disk
    user: str | None
    output: str | None  # output file name or path from `output.path`, if given
    base: Base | None = None  # `extra_kwargs.b`: a qcow2 layer on that image
    options: CreateOptions = ()  # `extra_kwargs.o`, allowlisted

    @property
    def where(self) -> str:
        return f"images.{self.key}"

    @property
    def filename(self) -> str:
        """The output file, relative to --output (checked: relative, no '..')."""
        return self.output or f"{self.name}.{self.format}"


@dataclass(frozen=True)
class ArchFile:
    path: Path
    owner: str | None
    images: tuple[ArchImage, ...]


class _Problems:
    """Collects problems so one run reports all of them."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")


def parse_archfile(text: str, *, path: Path, require_checksum: bool = True) -> ArchFile:
    """Validate an architecture file; raise InvalidInput naming every problem by its key."""
    try:
        # BaseLoader keeps every scalar a string: `version: 9.10` stays "9.10", not 9.1.
        # It builds no Python objects either, so it is safe on untrusted files.
        data = yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidInput(f"{path}: invalid YAML{where}: {problem}") from None
    problems = _Problems()
    images: list[ArchImage] = []
    owner = None
    if not isinstance(data, dict):
        problems.add("(top)", "expected a mapping with 'images'")
    else:
        _unknown(problems, "", data, _TOP_KEYS)
        owner = _string(problems, "owner", data.get("owner"), required=False)
        raw_images = data.get("images")
        if not isinstance(raw_images, dict) or not raw_images:
            problems.add("images", "expected a mapping of image keys to image definitions")
        else:
            for key, raw in raw_images.items():
                image = _image(problems, str(key), raw, require_checksum)
                if image is not None:
                    images.append(_resolve_base(problems, image, images, raw_images))
        seen: dict[str, str] = {}
        written: dict[str, str] = {}
        for image in images:
            if image.name in seen:
                other = f"images.{seen[image.name]}"
                problems.add(f"{image.where}.name", f"{image.name!r} is also built by {other}")
            seen.setdefault(image.name, image.key)
            if image.filename in written:
                other = f"images.{written[image.filename]}"
                problems.add(f"{image.where}.output.path",
                             f"{image.filename!r} is also written by {other}")  # fmt: skip
            written.setdefault(image.filename, image.key)
    if problems.items:
        first, *rest = problems.items
        raise InvalidInput(f"{path}: {first}", details=rest,
                           hint="nothing was built; fix the file and run again")  # fmt: skip
    return ArchFile(path, owner, tuple(images))


def _image(problems: _Problems, key: str, raw: Any, require_checksum: bool) -> ArchImage | None:
    where = f"images.{key}"
    if not isinstance(raw, dict):
        problems.add(where, "expected a mapping (name, version, size, ...)")
        return None
    before = len(problems.items)
    _unknown(problems, where, raw, _IMAGE_KEYS)
    name = _string(problems, f"{where}.name", raw.get("name"), required=True)
    version = _string(problems, f"{where}.version", raw.get("version"), required=False)
    store_name = None
    if name:
        store_name = f"{name}-{version}" if version else name
        try:
            check_image_name(store_name)
        except InvalidInput as exc:
            problems.add(f"{where}.name", exc.message)
    size = None
    size_text = _string(problems, f"{where}.size", raw.get("size"), required=True)
    if size_text:
        try:
            size = parse_size(size_text)
        except InvalidInput as exc:
            problems.add(f"{where}.size", exc.message)
    fmt = _format(problems, f"{where}.format", raw.get("format")) or "qcow2"
    output = None
    if "output" in raw:
        out = raw["output"]
        if not isinstance(out, dict):
            problems.add(f"{where}.output", "expected a mapping (path, format)")
        else:
            _unknown(problems, f"{where}.output", out, _OUTPUT_KEYS)
            fmt = _format(problems, f"{where}.output.format", out.get("format")) or fmt
            output = _output_path(problems, f"{where}.output.path", out.get("path"))
    source = _input(problems, where, raw, require_checksum)
    user = _string(problems, f"{where}.user", raw.get("user"), required=False)
    extra = None
    if "extra_kwargs" in raw:
        has_input = "input" in raw or "get_url" in raw
        extra, found = extra_kwargs.translate(
            f"{where}.extra_kwargs", raw["extra_kwargs"], fmt=fmt, has_input=has_input
        )
        for place, message in found:
            problems.add(place, message)
    if len(problems.items) > before or store_name is None or size is None:
        return None
    image = ArchImage(key, store_name, size, fmt, source, user, output)
    if extra is None:
        return image
    base = Base(extra.base, None, extra.base_format) if extra.base else None
    return replace(image, base=base, options=extra.options)


def _output_path(problems: _Problems, where: str, raw: Any) -> str | None:
    """A relative path that stays inside --output (subdirectories are fine)."""
    text = _string(problems, where, raw, required=False)
    if text is None:
        return None
    try:
        return "/".join(relative_parts(text, "output path"))
    except InvalidInput as exc:
        problems.add(where, exc.message)
        return None


def _resolve_base(
    problems: _Problems, image: ArchImage, earlier: list[ArchImage], raw_images: dict[str, Any]
) -> ArchImage:
    """`b` naming an image of this file (by key or name) must name one built before it."""
    if image.base is None:
        return image
    ref = image.base.name
    where = f"{image.where}.extra_kwargs"
    found = next((i for i in earlier if ref in (i.key, i.name)), None)
    if found is None:
        if ref == image.key or ref == image.name:
            problems.add(f"{where}.b", "an image cannot be layered on itself")
        elif ref in raw_images:
            problems.add(f"{where}.b", f"images.{ref} is built after this image; list it first")
        return image  # otherwise an image of the store: looked up before anything is built
    if image.base.format is not None and image.base.format != found.format:
        problems.add(f"{where}.F", f"{found.where} is {found.format}, not {image.base.format}")
    if image.size < found.size:
        problems.add(
            f"{image.where}.size",
            f"{format_size(image.size)} is smaller than its base {found.where} "
            f"({format_size(found.size)}); corral never shrinks a disk",
        )
    return replace(image, base=Base(found.name, found.key, image.base.format))


def _input(
    problems: _Problems, where: str, raw: dict[str, Any], require_checksum: bool
) -> Input | None:
    if "get_url" in raw and "input" in raw:
        problems.add(where, "give get_url (older format) or input, not both")
        return None
    if "get_url" in raw:  # the older format
        field = f"{where}.get_url"
        url = _string(problems, field, raw["get_url"], required=True)
        checksum = _checksum(problems, f"{where}.checksum", raw.get("checksum"))
        if checksum is None and "checksum" not in raw and require_checksum:
            problems.add(f"{where}.checksum", _MISSING_CHECKSUM)
        return _from_url(problems, url, None, checksum, field, field)
    if "checksum" in raw:
        problems.add(f"{where}.checksum", "belongs under input (or use get_url)")
    if "input" not in raw:
        return None  # a blank disk
    spec = raw["input"]
    where = f"{where}.input"
    bare = spec if isinstance(spec, str) else None
    if bare is not None:  # gen-vm-image also takes a bare URL or path
        spec = {"url": bare} if is_url(bare) else {"path": bare}
    if not isinstance(spec, dict):
        problems.add(where, "expected a URL, a path or a mapping (url or path, format, checksum)")
        return None
    _unknown(problems, where, spec, _INPUT_KEYS)
    if ("url" in spec) == ("path" in spec):
        problems.add(where, "needs exactly one of url and path")
        return None
    fmt = _format(problems, f"{where}.format", spec.get("format"))
    checksum = _checksum(problems, f"{where}.checksum", spec.get("checksum"))
    if "url" in spec:
        field = f"{where}.url" if bare is None else where
        url = _string(problems, field, spec["url"], required=True)
        if checksum is None and "checksum" not in spec and require_checksum:
            problems.add(f"{where}.checksum", _MISSING_CHECKSUM)
        return _from_url(problems, url, fmt, checksum, where, field)
    field = f"{where}.path" if bare is None else where
    text = _string(problems, field, spec["path"], required=True)
    if not text:
        return None
    path = _local_path(problems, field, text)
    return Input(None, path, fmt, checksum, where, field) if path else None


def _from_url(
    problems: _Problems,
    url: str | None,
    fmt: str | None,
    checksum: Checksum | None,
    where: str,
    field: str,
) -> Input | None:
    """An http(s) URL; a file:// URL is a local path, under the same rules as `path`."""
    if not url:
        return None
    if not is_url(url):
        problems.add(field, f"not an http(s) or file URL: {url!r}")
        return None
    if urllib.parse.urlsplit(url).scheme != "file":
        return Input(url, None, fmt, checksum, where, field)
    try:
        path = _local_path(problems, field, str(file_url_path(url)))
    except InvalidInput as exc:
        problems.add(field, exc.message)
        return None
    return Input(None, path, fmt, checksum, where, field) if path else None


def _local_path(problems: _Problems, field: str, text: str) -> Path | None:
    """A plain local file path: never a string qemu would read as a protocol or options."""
    if "\0" in text or "\n" in text:
        problems.add(field, f"{text!r} is not a usable path")
        return None
    prefix = protocol_prefix(text)
    if prefix is not None:
        problems.add(field, f"{text!r} is not a plain file path ({prefix} would name a qemu "
                            "protocol); corral reads only local files")  # fmt: skip
        return None
    return Path(text).expanduser()


_MISSING_CHECKSUM = "missing: a download must be verified (type and value), or use --no-verify"


def _checksum(problems: _Problems, where: str, raw: Any) -> Checksum | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.add(where, "expected a mapping with type and value")
        return None
    _unknown(problems, where, raw, {"type", "value"})
    algo = _string(problems, f"{where}.type", raw.get("type"), required=True)
    value = _string(problems, f"{where}.value", raw.get("value"), required=True)
    if not (algo and value):
        return None
    try:
        return make_checksum(algo, value)
    except InvalidInput as exc:
        field = "type" if exc.message.startswith("unknown algorithm") else "value"
        problems.add(f"{where}.{field}", exc.message)
        return None


def _format(problems: _Problems, where: str, raw: Any) -> str | None:
    fmt = _string(problems, where, raw, required=False)
    if fmt is not None and fmt not in FORMATS:
        problems.add(where, f"unsupported format {fmt!r} (corral takes qcow2 or raw)")
        return None
    return fmt


def _string(problems: _Problems, where: str, raw: Any, *, required: bool) -> str | None:
    if raw is None or raw == "":
        if required:
            problems.add(where, "missing")
        return None
    if not isinstance(raw, str):
        problems.add(where, "expected a single value")
        return None
    return raw.strip()


def _unknown(problems: _Problems, where: str, raw: dict[str, Any], allowed: set[str]) -> None:
    prefix = f"{where}." if where else ""
    for key in raw:
        if key not in allowed:
            problems.add(f"{prefix}{key}", "unknown key")

"""The image catalog: aliases such as `ubuntu:jammy` for official cloud images.

The built-in catalog is a data file (catalog.toml, next to this module); the user's config
extends or overrides it (`catalog_file`, then the `[catalog]` table), for example to point a
distribution at a mirror. Loading and resolving an alias for an architecture are pure; finding
a file by pattern needs the network and happens in pull.py.
"""

from __future__ import annotations

import platform
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from corral.errors import InvalidInput, NotFound
from corral.image.fetch.checksums import Checksum, parse_spec

ARCHES = ("x86_64", "aarch64")
_ARCH_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}

_DISTRO_KEYS = {"mirror", "user", "arch"}
_IMAGE_KEYS = {
    "distro", "description", "user", "arch", "mirror", "path", "file", "file_pattern", "url",
    "checksums", "checksums_pattern", "checksum", "release_pattern",
}  # fmt: skip
_PLACEHOLDER_RE = re.compile(r"\{(arch|release)\}")


def normalize_arch(name: str) -> str:
    """'amd64' -> 'x86_64', 'arm64' -> 'aarch64'."""
    arch = _ARCH_ALIASES.get(name.strip().lower())
    if arch is None:
        raise InvalidInput(f"unsupported architecture {name!r}: use x86_64 or aarch64")
    return arch


def host_arch() -> str:
    return normalize_arch(platform.machine())


@dataclass(frozen=True)
class Target:
    """An alias resolved for one architecture: where the image and its checksum are."""

    alias: str
    directory: str  # URL of the directory, ending in '/'
    file: str | None  # the image's file name, or
    file_pattern: re.Pattern[str] | None  # a pattern for it, matched in the checksum file
    checksums: str | None  # URL of the checksum file, or
    checksums_pattern: re.Pattern[str] | None  # a pattern for its name in the listing
    checksum: Checksum | None  # a fixed expected digest
    user: str | None
    description: str

    @property
    def url(self) -> str | None:
        return self.directory + urllib.parse.quote(self.file) if self.file else None


@dataclass(frozen=True)
class Catalog:
    """Every alias, validated: `images` maps alias (or template) -> merged entry."""

    distros: Mapping[str, Mapping[str, Any]]
    images: Mapping[str, Mapping[str, Any]]
    templates: tuple[tuple[str, re.Pattern[str]], ...] = field(default=())

    def find(self, alias: str) -> tuple[str, dict[str, str]] | None:
        """The catalog key for alias and the placeholder values it fills, or None."""
        if alias in self.images:
            return alias, {}
        for key, pattern in self.templates:
            match = pattern.fullmatch(alias)
            if match:
                return key, match.groupdict()
        return None

    def resolve(self, alias: str, arch: str) -> Target:
        found = self.find(alias)
        if found is None:
            raise NotFound(
                f"unknown image alias {alias!r}",
                hint="see: corral image catalog (or give an http://, https:// or file:// URL)",
            )
        key, values = found
        return _target(alias, self._entry(key), values, arch)

    def _entry(self, key: str) -> dict[str, Any]:
        """An image entry with its distribution's defaults filled in."""
        entry = dict(self.images[key])
        distro = self.distros.get(entry.get("distro", ""), {})
        for name in ("mirror", "user", "arch"):
            if name not in entry and name in distro:
                entry[name] = distro[name]
        return entry

    def describe(self, arch: str) -> list[dict[str, Any]]:
        """One row per alias, for `corral image catalog`; templates keep their placeholders."""
        rows = []
        for key in sorted(self.images):
            entry = self._entry(key)
            arch_name = _arch_name(key, entry, arch)
            values = {"arch": arch_name}
            url = None
            if entry.get("url"):
                url = _fill(entry["url"], values)
            elif entry.get("mirror"):
                directory = _join(entry["mirror"], _fill(entry.get("path", ""), values))
                name = entry.get("file") or entry.get("file_pattern")
                url = directory + _fill(name, values) if name else directory
            checks = (
                entry.get("checksum") or entry.get("checksums") or entry.get("checksums_pattern")
            )
            rows.append(
                {
                    "alias": key,
                    "description": entry.get("description", ""),
                    "user": entry.get("user"),
                    "arch": arch,
                    "url": url,
                    "checksum": _fill(checks, values) if checks else None,
                    "pattern": bool(entry.get("file_pattern")),
                }
            )
        return rows


def builtin_data() -> dict[str, Any]:
    text = resources.files("corral.image.fetch").joinpath("catalog.toml").read_text()
    return tomllib.loads(text)


def load_catalog(
    overrides: Mapping[str, Any] | None = None, catalog_file: Path | None = None
) -> Catalog:
    """The built-in catalog, then the catalog file, then the config's [catalog] table."""
    data = builtin_data()
    if catalog_file is not None:
        try:
            extra = tomllib.loads(catalog_file.read_text())
        except FileNotFoundError:
            raise NotFound(f"catalog file {catalog_file} does not exist") from None
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"catalog file {catalog_file}: {exc}") from exc
        data = merge(data, extra, where=str(catalog_file))
    if overrides:
        data = merge(data, overrides, where="config: catalog")
    return parse_catalog(data)


def merge(base: Mapping[str, Any], extra: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    """Overlay extra on base, field by field within each distro and image entry."""
    out: dict[str, Any] = {"distros": dict(base.get("distros", {})),
                           "images": dict(base.get("images", {}))}  # fmt: skip
    for section, tables in extra.items():
        if section not in ("distros", "images"):
            raise InvalidInput(f"{where}: unknown section {section!r} (use distros or images)")
        if not isinstance(tables, Mapping):
            raise InvalidInput(f"{where}: {section} must be a table")
        for key, table in tables.items():
            if not isinstance(table, Mapping):
                raise InvalidInput(f"{where}: {section}.{_quote(key)} must be a table")
            out[section][key] = {**out[section].get(key, {}), **table}
    return out


def parse_catalog(data: Mapping[str, Any]) -> Catalog:
    """Validate every entry (unknown keys, bad patterns, bad checksums) into a Catalog."""
    distros = data.get("distros", {})
    images = data.get("images", {})
    for name, distro in distros.items():
        _check_keys(f"catalog: distros.{_quote(name)}", distro, _DISTRO_KEYS)
    templates = []
    for alias, entry in images.items():
        where = f"catalog: images.{_quote(alias)}"
        _check_keys(where, entry, _IMAGE_KEYS)
        if entry.get("distro") and entry["distro"] not in distros:
            raise InvalidInput(f"{where}.distro: unknown distro {entry['distro']!r}")
        merged = Catalog(distros, images)._entry(alias)
        if not (merged.get("url") or (merged.get("mirror") and (
                merged.get("file") or merged.get("file_pattern")))):  # fmt: skip
            raise InvalidInput(f"{where}: needs url, or mirror and path and file or file_pattern")
        if merged.get("url") and (merged.get("file") or merged.get("file_pattern")):
            raise InvalidInput(f"{where}: give url or file/file_pattern, not both")
        if merged.get("file_pattern") and not (
            merged.get("checksums") or merged.get("checksums_pattern")
        ):
            raise InvalidInput(f"{where}: file_pattern needs a checksums file to search")
        if merged.get("checksum"):
            try:
                parse_spec(merged["checksum"])
            except InvalidInput as exc:
                raise InvalidInput(f"{where}.checksum: {exc.message}") from None
        if "{release}" in alias:
            release = merged.get("release_pattern", "[A-Za-z0-9._-]+")
            pattern = re.escape(alias).replace(re.escape("{release}"), f"(?P<release>{release})")
            templates.append((alias, _compile(f"{where}.release_pattern", pattern)))
        for key in ("file_pattern", "checksums_pattern"):
            if merged.get(key):
                _compile(f"{where}.{key}", _fill(merged[key], {"arch": "x", "release": "1"}))
    return Catalog(distros, images, tuple(templates))


def _target(alias: str, entry: Mapping[str, Any], values: dict[str, str], arch: str) -> Target:
    values = {**values, "arch": _arch_name(alias, entry, arch)}
    checksum = parse_spec(entry["checksum"]) if entry.get("checksum") else None
    if entry.get("url"):
        url = _fill(entry["url"], values)
        directory, _, file = url.rpartition("/")
        directory += "/"
        file = urllib.parse.unquote(file)
    else:
        directory = _join(entry["mirror"], _fill(entry.get("path", ""), values))
        file = _fill(entry["file"], values) if entry.get("file") else ""
    checksums = entry.get("checksums")
    return Target(
        alias=alias,
        directory=directory,
        file=file or None,
        file_pattern=_pattern(entry.get("file_pattern"), values),
        checksums=urllib.parse.urljoin(directory, _fill(checksums, values)) if checksums else None,
        checksums_pattern=_pattern(entry.get("checksums_pattern"), values),
        checksum=checksum,
        user=entry.get("user"),
        description=entry.get("description", ""),
    )


def _arch_name(alias: str, entry: Mapping[str, Any], arch: str) -> str:
    names = entry.get("arch") or {a: a for a in ARCHES}
    if arch not in names:
        raise InvalidInput(f"{alias} has no image for {arch} (only {', '.join(sorted(names))})")
    return str(names[arch])


def _fill(template: str, values: Mapping[str, str]) -> str:
    """Replace {arch} and {release}; other braces (regex repetitions) are left alone."""
    return _PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _pattern(template: str | None, values: Mapping[str, str]) -> re.Pattern[str] | None:
    if not template:
        return None
    escaped = {k: re.escape(v) for k, v in values.items()}
    return re.compile(_fill(template, escaped))


def _compile(where: str, pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InvalidInput(f"{where}: invalid pattern: {exc}") from None


def _join(mirror: str, path: str) -> str:
    base = mirror.rstrip("/") + "/"
    path = path.strip("/")
    return base + (path + "/" if path else "")


def _check_keys(where: str, table: Any, allowed: set[str]) -> None:
    if not isinstance(table, Mapping):
        raise InvalidInput(f"{where} must be a table")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise InvalidInput(f"{where}: unknown key {unknown[0]!r}")


def _quote(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else f'"{key}"'


_LINK_RE = re.compile(r"""href\s*=\s*["']?([^"' >]+)""", re.IGNORECASE)


def listing_names(html: str) -> list[str]:
    """The file names a directory index page links to (Apache, nginx, python -m http.server)."""
    names = []
    for href in _LINK_RE.findall(html):
        path = urllib.parse.urlsplit(href).path
        name = urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1])
        if name and not path.endswith("/") and name not in names:
            names.append(name)
    return names

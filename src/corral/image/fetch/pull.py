"""`corral image pull`: resolve an alias or URL, download once, verify, publish into the store.

The recipe: resolve the source (alias -> URL and checksum, via the checksum file the
distribution publishes) -> refuse early what cannot succeed (no checksum, a taken name) -> look
in the pull index (URL + expected checksum -> blob) -> else download into images/tmp, hashing
while writing -> compare with the expected checksum -> `ImageStore.adopt` (format, backing
file and `qemu-img check`, then rename) -> record the pull in the index. A second pull of the
same URL and checksum only names the blob it already has.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from corral.errors import Conflict, InvalidInput, NotFound
from corral.fsutil import write_atomic
from corral.image.fetch.catalog import (
    Target,
    host_arch,
    listing_names,
    load_catalog,
    normalize_arch,
)
from corral.image.fetch.checksums import (
    Checksum,
    Entry,
    algorithm_from_filename,
    find_entry,
    newest,
    parse_checksum_file,
    parse_spec,
)
from corral.image.fetch.download import (
    Downloaded,
    Fetcher,
    Options,
    Progress,
    is_url,
    url_filename,
)
from corral.image.fetch.stream import COMPRESSIONS
from corral.image.manifest import Manifest, check_image_name
from corral.image.needs import ImageContext

ProgressFactory = Callable[[str], Progress]  # label -> progress callback for one download
Log = Callable[[str], None]

_FORMAT_SUFFIXES = (".qcow2", ".qcow", ".img", ".raw")


@dataclass(frozen=True)
class Source:
    """What to download and what it must hash to."""

    url: str
    checksum: Checksum | None
    checksum_origin: str | None  # the checksum file's URL, or "--checksum" / "catalog"
    name: str  # the default image name
    user: str | None  # the image's default login user, when the catalog knows it


@dataclass(frozen=True)
class Pulled:
    manifest: Manifest
    source: Source
    cached: bool  # nothing was downloaded: the blob was already in the store
    verified: bool


@dataclass(frozen=True)
class Blob:
    """A verified image blob in the store (named or not)."""

    digest: str
    format: str
    virtual_size: int
    cached: bool


# --- resolving ---------------------------------------------------------------------------------


def default_name(text: str) -> str:
    """An image name from an alias or file name: compression and format suffixes dropped,
    anything an image name cannot hold turned into '-'."""
    name = text
    for suffixes in (tuple(COMPRESSIONS), _FORMAT_SUFFIXES):
        for suffix in suffixes:
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                break
    name = re.sub(r"[^A-Za-z0-9._:+-]+", "-", name)
    name = re.sub(r"^[^A-Za-z0-9]+", "", name).rstrip("-")[:128].rstrip("-")
    return name or "image"


def resolve_source(
    ref: str,
    fetcher: Fetcher,
    *,
    ctx: ImageContext | None = None,
    checksum: str | None = None,
    checksum_url: str | None = None,
    arch: str | None = None,
) -> Source:
    """Turn a URL or catalog alias (plus the user's checksum options) into a Source."""
    if checksum and checksum_url:
        raise InvalidInput("give --checksum or --checksum-url, not both")
    given = parse_spec(checksum) if checksum else None
    if is_url(ref):
        found, origin = given, "--checksum" if given else None
        if checksum_url:
            found = _entry_for(read_checksums(fetcher, checksum_url), url_filename(ref),
                               checksum_url).checksum  # fmt: skip
            origin = checksum_url
        return Source(ref, found, origin, default_name(url_filename(ref)), None)
    if Path(ref).exists():
        raise InvalidInput(
            f"{ref!r} is a local file, not a URL or a catalog alias",
            hint=f"use file://{Path(ref).absolute()} or: corral image import {ref} --name NAME",
        )
    catalog = load_catalog(ctx.config.catalog, ctx.config.catalog_file) if ctx else load_catalog()
    target = catalog.resolve(ref, normalize_arch(arch) if arch else host_arch())
    url, found, origin = resolve_target(target, fetcher, checksum_url=checksum_url, given=given)
    return Source(url, found, origin, default_name(ref.replace("/", "-")), target.user)


def resolve_target(
    target: Target,
    fetcher: Fetcher,
    *,
    checksum_url: str | None = None,
    given: Checksum | None = None,
) -> tuple[str, Checksum | None, str | None]:
    """The image URL and expected checksum of a catalog target (reads its checksum file).

    A checksum the user gave wins; the checksum file is then read only to find the file name.
    """
    checksums = checksum_url or target.checksums
    if checksum_url is None and target.checksums_pattern is not None:
        names = listing_names(fetcher.fetch_text(target.directory))
        match = newest(n for n in names if target.checksums_pattern.fullmatch(n))
        if match is None:
            raise NotFound(
                f"{target.alias}: no checksum file matching "
                f"{target.checksums_pattern.pattern!r} in {target.directory}",
                hint="is the release published? see the directory in a browser",
            )
        checksums = target.directory + urllib.parse.quote(match)
    entries: list[Entry] = []
    needed = target.file_pattern is not None or (
        given is None and (target.checksum is None or checksum_url is not None)
    )
    if checksums and needed:
        entries = read_checksums(fetcher, checksums)
    file = target.file
    if target.file_pattern is not None:
        file = newest(e.name for e in entries if target.file_pattern.fullmatch(e.name))
        if file is None:
            raise NotFound(
                f"{target.alias}: no image matching {target.file_pattern.pattern!r} in {checksums}"
            )
    assert file is not None
    url = target.directory + urllib.parse.quote(file)
    if given is not None:
        return url, given, "--checksum"
    if target.checksum is not None and not checksum_url:
        return url, target.checksum, "catalog"
    if checksums is None:
        return url, None, None
    return url, _entry_for(entries, file, checksums).checksum, checksums


def read_checksums(fetcher: Fetcher, url: str) -> list[Entry]:
    entries = parse_checksum_file(
        fetcher.fetch_text(url), default_algo=algorithm_from_filename(url_filename(url))
    )
    if not entries:
        raise InvalidInput(f"{url}: no checksums found in it (is it a checksum file?)")
    return entries


def _entry_for(entries: list[Entry], file: str, where: str) -> Entry:
    entry = find_entry(entries, file)
    if entry is None:
        raise InvalidInput(f"{where} has no checksum for {file}")
    return entry


# --- the pull index ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PullRecord:
    url: str
    checksum: str
    digest: str
    format: str
    virtual_size: int


class PullIndex:
    """images/pulls/<key>.json: which blob a URL with a given expected checksum produced."""

    def __init__(self, ctx: ImageContext) -> None:
        self.ctx = ctx
        self.dir = ctx.home.pulls

    def _path(self, url: str, checksum: Checksum) -> Path:
        key = hashlib.sha256(f"{url}\n{checksum}".encode()).hexdigest()
        return self.dir / f"{key}.json"

    def lookup(self, url: str, checksum: Checksum) -> PullRecord | None:
        """The record, if its blob is still in the store."""
        try:
            data = json.loads(self._path(url, checksum).read_text())
            record = PullRecord(**data)
        except (OSError, ValueError, TypeError):
            return None
        if record.url != url or record.checksum != str(checksum):
            return None
        if not self.ctx.store.blob(record.digest).is_file():
            self._path(url, checksum).unlink(missing_ok=True)  # garbage-collected since
            return None
        return record

    def record(self, url: str, checksum: Checksum, blob: Blob) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        record = PullRecord(url, str(checksum), blob.digest, blob.format, blob.virtual_size)
        write_atomic(self._path(url, checksum), json.dumps(record.__dict__).encode() + b"\n")


# --- downloading -------------------------------------------------------------------------------


def download_verified(
    ctx: ImageContext,
    fetcher: Fetcher,
    url: str,
    checksum: Checksum | None,
    progress: Progress | None = None,
) -> tuple[Path, Downloaded]:
    """Download url into a fresh file under images/tmp and check it against checksum.

    On any failure the partial file is removed; on success the caller owns it.
    """
    tmp = ctx.store.new_tmp_path()
    try:
        result = fetcher.download(url, tmp, expected=checksum, progress=progress)
        if checksum is not None and result.sent_digest != checksum.hex:
            raise InvalidInput(
                f"checksum mismatch for {url}: expected {checksum}, "
                f"got {checksum.algo}:{result.sent_digest}",
                hint="the download was damaged or the checksum is wrong; nothing was stored",
            )
        return tmp, result
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fetch_blob(
    ctx: ImageContext,
    fetcher: Fetcher,
    url: str,
    checksum: Checksum | None,
    *,
    label: str,
    progress: ProgressFactory | None = None,
) -> Blob:
    """A verified, unnamed blob for url (from the pull index when possible), for builds.

    An unnamed blob is a cache entry: the next garbage collection may remove it.
    """
    index = PullIndex(ctx)
    if checksum is not None:
        hit = index.lookup(url, checksum)
        if hit is not None:
            return Blob(hit.digest, hit.format, hit.virtual_size, cached=True)
    tmp, result = download_verified(
        ctx, fetcher, url, checksum, progress(url_filename(url)) if progress else None
    )
    try:
        fmt, size = ctx.store.verify_disk(tmp, label)
        ctx.store.add_blob_file(tmp, result.digest)
    finally:
        tmp.unlink(missing_ok=True)
    blob = Blob(result.digest, fmt, size, cached=False)
    if checksum is not None:
        index.record(url, checksum, blob)
    return blob


def pull(
    ctx: ImageContext,
    ref: str,
    *,
    name: str | None = None,
    checksum: str | None = None,
    checksum_url: str | None = None,
    verify: bool = True,
    user: str | None = None,
    replace: bool = False,
    arch: str | None = None,
    options: Options | None = None,
    progress: ProgressFactory | None = None,
    log: Log = lambda line: None,
) -> Pulled:
    """Pull a URL or catalog alias into the store as `name` (default: from the alias or URL).

    Without a checksum from any source the pull is refused unless verify is False.
    """
    store = ctx.store
    with Fetcher(options) as fetcher:
        source = resolve_source(
            ref, fetcher, ctx=ctx, checksum=checksum, checksum_url=checksum_url, arch=arch
        )
        if source.checksum is None and verify:
            raise InvalidInput(
                f"refusing to pull {source.url} without a checksum to verify it",
                hint="give --checksum ALGO:HEX or --checksum-url URL "
                "(or --no-verify to skip verification)",
            )
        name = check_image_name(name or source.name)
        user = user or source.user
        origin = f"pull:{source.url}"
        index = PullIndex(ctx)
        hit = index.lookup(source.url, source.checksum) if source.checksum else None
        if not replace and store.exists(name):
            existing = store.get(name)
            if hit is not None and existing.digest == hit.digest:
                return Pulled(existing, source, cached=True, verified=True)
            raise Conflict(
                f"image {name!r} already exists",
                hint="use --replace to update it, or choose another --name",
            )
        if hit is not None:
            manifest = _name_blob(ctx, hit, name, user=user, origin=origin)
            return Pulled(manifest, source, cached=True, verified=True)
        tmp, result = download_verified(
            ctx, fetcher, source.url, source.checksum,
            progress(url_filename(source.url)) if progress else None,
        )  # fmt: skip
        try:
            manifest = store.adopt(
                tmp, result.digest, name, label=source.url, default_user=user, origin=origin,
                replace=replace,
            )  # fmt: skip
        finally:
            tmp.unlink(missing_ok=True)
    if source.checksum is None:
        log(f"warning: {source.url} is not verified: no checksum (--no-verify)")
    else:
        blob = Blob(manifest.digest, manifest.format, manifest.virtual_size, cached=False)
        index.record(source.url, source.checksum, blob)
    return Pulled(manifest, source, cached=False, verified=source.checksum is not None)


def _name_blob(
    ctx: ImageContext, record: PullRecord, name: str, *, user: str | None, origin: str
) -> Manifest:
    """Give a name to a blob the store already holds (verified when it was first pulled)."""
    manifest = Manifest(
        name=name,
        digest=record.digest,
        format=record.format,
        virtual_size=record.virtual_size,
        file_size=ctx.store.blob(record.digest).stat().st_size,
        default_user=user or "root",
        source=origin,
    )
    ctx.store.save(manifest)
    return manifest

"""`corral image build -f architecture.yml`: gen-vm-image's build, publishing into the store.

The recipe: parse and validate the whole file -> plan (owner, local inputs, free names and
output files) -> fetch every input (cached in the store by URL and checksum, verified) and
check every size -> then per image: convert to the output format, grow to `size` (never
shrink), `qemu-img check`, copy into the output directory while hashing, adopt the disk into
the store, and rename the output copy into place. Nothing is fetched before the whole file is
known to be good, and nothing is built before every input is known to fit.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from corral.context import Context
from corral.errors import Conflict, CorralError, InvalidInput, NotFound
from corral.fsutil import CHUNK, copy_hashing, hash_file
from corral.image.fetch.archfile import ArchFile, ArchImage, Input, parse_archfile
from corral.image.fetch.download import Fetcher, Options
from corral.image.fetch.pull import ProgressFactory, fetch_blob
from corral.image.manifest import Manifest
from corral.units import format_size

Log = Callable[[str], None]


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int
    text: str


@dataclass(frozen=True)
class BuiltImage:
    key: str
    manifest: Manifest
    output: Path | None


@dataclass(frozen=True)
class _Source:
    """An image's verified input: a file to convert, or None for a blank disk."""

    path: Path | None
    format: str | None
    virtual_size: int


def parse_owner(text: str) -> Owner:
    """'1000', '1000:1000', 'qemu' or 'qemu:kvm' -> uid and gid (a user's own group by default)."""
    user, _, group = text.strip().partition(":")
    try:
        if user.isdigit():
            uid = int(user)
            gid = pwd.getpwuid(uid).pw_gid if not group else None
        else:
            entry = pwd.getpwnam(user)
            uid, gid = entry.pw_uid, entry.pw_gid
    except KeyError:
        if user.isdigit() and group:
            uid, gid = int(user), None
        else:
            raise InvalidInput(f"invalid owner {text!r}: no such user {user!r}") from None
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise InvalidInput(f"invalid owner {text!r}: no such group {group!r}") from None
    assert gid is not None
    return Owner(uid, gid, text)


def load_archfile(path: Path, *, verify: bool = True) -> ArchFile:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise NotFound(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from None
    return parse_archfile(text, path=path, require_checksum=verify)


def build_archfile(
    ctx: Context,
    path: Path,
    *,
    output_dir: Path | None = None,
    owner: str | None = None,
    replace: bool = False,
    verify: bool = True,
    options: Options | None = None,
    progress: ProgressFactory | None = None,
    log: Log = lambda line: None,
) -> list[BuiltImage]:
    """Build every image of an architecture file into the store (and output_dir)."""
    arch = load_archfile(path, verify=verify)
    chown_to = _owner(arch, owner, output_dir, log)
    inputs = _plan(ctx, arch, output_dir, replace)
    store = ctx.store
    store.ensure()
    workdir = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-arch-", dir=ctx.home.image_tmp))
    try:
        with Fetcher(options) as fetcher:
            sources = [
                _fetch(ctx, fetcher, path, image, inputs.get(image.key), workdir, progress, log)
                for image in arch.images
            ]
        for image, source in zip(arch.images, sources, strict=True):
            if image.size < source.virtual_size:
                raise InvalidInput(
                    f"{path}: {image.where}.size: {format_size(image.size)} is smaller than the "
                    f"image ({format_size(source.virtual_size)}); corral never shrinks a disk",
                    hint="nothing was built",
                )
        built = []
        for image, source in zip(arch.images, sources, strict=True):
            log(f"building {image.name} ({image.format}, {format_size(image.size)})")
            with _in(path, image.where):
                built.append(
                    _build_one(ctx, image, source, workdir, output_dir, chown_to, replace, path)
                )
        return built
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _owner(arch: ArchFile, given: str | None, output_dir: Path | None, log: Log) -> Owner | None:
    """--owner wins; the file's `owner` applies when it names a user of this host.

    gen-vm-image files often carry a label there ('the-owner-name'): that is not an error.
    """
    if given is not None:
        if output_dir is None:
            raise InvalidInput("--owner applies to the files written with --output")
        owner = parse_owner(given)
    elif arch.owner and output_dir is not None:
        try:
            owner = parse_owner(arch.owner)
        except InvalidInput:
            log(f"note: owner {arch.owner!r} is not a user here; output files keep their owner")
            return None
    else:
        return None
    if os.geteuid() != 0 and (
        owner.uid != os.geteuid() or owner.gid not in {os.getegid(), *os.getgroups()}
    ):
        raise InvalidInput(f"giving the output files to {owner.text!r} needs root")
    return owner


def _plan(ctx: Context, arch: ArchFile, output_dir: Path | None, replace: bool) -> dict[str, Path]:
    """Check what can be checked before any download; return each local input's path."""
    paths: dict[str, Path] = {}
    problems: list[str] = []
    clashes: list[str] = []
    for image in arch.images:
        if image.input is not None and image.input.path is not None:
            found = _local_path(arch.path.parent, image.input.path)
            if found is None:
                problems.append(f"{image.input.where}.path: no such file: {image.input.path}")
            else:
                paths[image.key] = found
        if not replace and ctx.store.exists(image.name):
            clashes.append(f"{image.where}: image {image.name!r} already exists")
        if output_dir is not None and not replace and (output_dir / image.filename).exists():
            clashes.append(f"{image.where}: {output_dir / image.filename} already exists")
    if problems:
        raise InvalidInput(f"{arch.path}: {problems[0]}", details=problems[1:],
                           hint="nothing was built")  # fmt: skip
    if clashes:
        raise Conflict(f"{arch.path}: {clashes[0]}", details=clashes[1:],
                       hint="use --replace to rebuild them")  # fmt: skip
    if output_dir is not None:
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInput(f"cannot create {output_dir}: {exc.strerror}") from None
    return paths


def _local_path(base: Path, path: Path) -> Path | None:
    """A relative input path is looked up next to the file, then (as gen-vm-image does) in
    the current directory."""
    candidates = [path] if path.is_absolute() else [base / path, Path.cwd() / path]
    return next((p for p in candidates if p.is_file()), None)


def _fetch(
    ctx: Context,
    fetcher: Fetcher,
    archfile: Path,
    image: ArchImage,
    local: Path | None,
    workdir: Path,
    progress: ProgressFactory | None,
    log: Log,
) -> _Source:
    inp = image.input
    if inp is None:
        return _Source(None, None, 0)
    with _in(archfile, image.where):
        if inp.url is not None:
            log(f"fetching {inp.url}")
            blob = fetch_blob(ctx, fetcher, inp.url, inp.checksum, label=inp.url,
                              progress=progress)  # fmt: skip
            if blob.cached:
                log(f"{inp.url}: already in the store (sha256:{blob.digest[:12]})")
            path = _pin(ctx.store.blob(blob.digest), workdir / f"{image.key}.source")
            fmt, size = blob.format, blob.virtual_size
        else:
            assert local is not None
            if inp.checksum is not None:
                _verify_file(local, inp)
            fmt, size = ctx.store.verify_disk(local, str(local))
            path = local
        if inp.format is not None and inp.format != fmt:
            raise InvalidInput(f"{inp.where}.format: the file is {fmt}, not {inp.format}")
    return _Source(path, fmt, size)


def _pin(blob: Path, link: Path) -> Path:
    """A hard link to a store blob, so a garbage collection meanwhile cannot take it away."""
    try:
        os.link(blob, link)
    except OSError:
        return blob
    return link


def _verify_file(path: Path, inp: Input) -> None:
    assert inp.checksum is not None
    hasher = inp.checksum.hasher()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
    actual = inp.checksum.hexdigest(hasher)
    if actual != inp.checksum.hex:
        raise InvalidInput(
            f"checksum mismatch for {path}: expected {inp.checksum}, "
            f"got {inp.checksum.algo}:{actual}"
        )


def _build_one(
    ctx: Context,
    image: ArchImage,
    source: _Source,
    workdir: Path,
    output_dir: Path | None,
    owner: Owner | None,
    replace: bool,
    archfile: Path,
) -> BuiltImage:
    qemu_img = ctx.qemu_img
    disk = workdir / f"{image.key}.{image.format}"
    if source.path is None:
        qemu_img.create(disk, image.size, image.format)
    else:
        assert source.format is not None
        qemu_img.convert(source.path, source.format, disk, image.format)
        if image.size > source.virtual_size:
            qemu_img.resize(disk, image.size, image.format)
    if image.format == "qcow2":
        qemu_img.check(disk, "qcow2")
    out_tmp = None
    target = None
    try:
        if output_dir is not None:
            target = output_dir / image.filename
            target.parent.mkdir(parents=True, exist_ok=True)
            out_tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            digest = copy_hashing(disk, out_tmp)
            if owner is not None:
                os.chown(out_tmp, owner.uid, owner.gid)
        else:
            digest = hash_file(disk)
        manifest = ctx.store.adopt(
            disk, digest, image.name, label=image.where, default_user=image.user,
            origin=f"build:{archfile.absolute()}#{image.key}", replace=replace,
        )  # fmt: skip
        if out_tmp is not None and target is not None:
            out_tmp.replace(target)
            out_tmp = None
        return BuiltImage(image.key, manifest, target)
    finally:
        if out_tmp is not None:
            out_tmp.unlink(missing_ok=True)
        disk.unlink(missing_ok=True)


@contextlib.contextmanager
def _in(archfile: Path, where: str) -> Iterator[None]:
    """Prefix an error's message with the file and the image it is about."""
    try:
        yield
    except CorralError as exc:
        if type(exc).__init__ is not CorralError.__init__:
            raise  # CommandFailed and the like carry their own structure
        place = f"{archfile}: " if exc.message.startswith(where) else f"{archfile}: {where}: "
        raise type(exc)(place + exc.message, hint=exc.hint, details=exc.details) from exc

"""`corral image build -f architecture.yml`: gen-vm-image's build, publishing into the store.

The recipe: parse and validate the whole file -> plan (owner, local inputs opened and confined,
base images found, free names and output files) -> fetch every input (URLs cached in the store
by URL and checksum; local files copied into corral's own directory while hashed), verify it
and check every size -> then per image: convert to the output format, grow to `size` (never
shrink), or make a qcow2 layer on its base image; `qemu-img check`; write the output copy into
a new file of random name made in its directory (walked from --output without following
links), adopt the disk into the store, give the copy its owner through its descriptor and
rename it into place. Nothing is fetched before the whole file is known to be good, and
nothing is built before every input is known to fit.

The file is not trusted: local_inputs.py says where its inputs may come from, and its outputs
stay inside --output. A layered image (`extra_kwargs.b`) is a layer in the store, and a
standalone (flattened) file in --output.
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
from typing import Any

from corral.confine import is_inside, open_dir, relative_parts
from corral.errors import Conflict, CorralError, InvalidInput, NotFound
from corral.fsutil import atomic_file, copy_hashing_into, hash_file
from corral.image.archfile import local_inputs
from corral.image.archfile.parse import ArchFile, ArchImage, parse_archfile
from corral.image.fetch.download import Fetcher, Options
from corral.image.fetch.pull import ProgressFactory, fetch_blob
from corral.image.layers import save_image
from corral.image.manifest import Manifest
from corral.image.needs import ImageContext
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


@dataclass(frozen=True)
class _Local:
    """A local input, opened (and confined) while planning: read later through fd."""

    path: Path
    fd: int


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
    ctx: ImageContext,
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
    with contextlib.ExitStack() as stack:
        inputs = _plan(ctx, arch, output_dir, replace, stack)
        ctx.store.ensure()
        workdir = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-arch-", dir=ctx.home.image_tmp))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
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
        built: dict[str, BuiltImage] = {}
        for image, source in zip(arch.images, sources, strict=True):
            log(f"building {image.name} ({image.format}, {format_size(image.size)})")
            with _in(path, image.where):
                base = _base(ctx, image, built)
                built[image.key] = _build_one(
                    ctx, image, source, base, workdir, output_dir, chown_to, replace, path
                )
        return list(built.values())


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


def _plan(
    ctx: ImageContext,
    arch: ArchFile,
    output_dir: Path | None,
    replace: bool,
    stack: contextlib.ExitStack,
) -> dict[str, _Local]:
    """Check what can be checked before any download; open each local input (kept open)."""
    inputs: dict[str, _Local] = {}
    problems: list[InvalidInput] = []
    clashes: list[str] = []
    root = local_inputs.confinement_root(arch.path)
    for image in arch.images:
        try:
            local = _open_local(arch.path, image, root)
            if local is not None:
                stack.callback(os.close, local.fd)
                inputs[image.key] = local
            if image.base is not None and image.base.key is None:
                _check_store_base(ctx, image)
            if output_dir is not None:
                _check_output(output_dir, image)
        except InvalidInput as exc:
            problems.append(exc)
        if not replace and ctx.store.exists(image.name):
            clashes.append(f"{image.where}: image {image.name!r} already exists")
        target = output_dir / image.filename if output_dir is not None else None
        if target is not None and not replace and os.path.lexists(target):
            clashes.append(f"{image.where}: {target} already exists")
    if problems:
        first = problems[0]
        hint = f"{first.hint}; nothing was built" if first.hint else "nothing was built"
        raise InvalidInput(f"{arch.path}: {first.message}",
                           details=[p.message for p in problems[1:]], hint=hint)  # fmt: skip
    if clashes:
        raise Conflict(f"{arch.path}: {clashes[0]}", details=clashes[1:],
                       hint="use --replace to rebuild them")  # fmt: skip
    if output_dir is not None:
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInput(f"cannot create {output_dir}: {exc.strerror}") from None
    return inputs


def _open_local(archfile: Path, image: ArchImage, root: Path | None) -> _Local | None:
    inp = image.input
    if inp is None or inp.path is None:
        return None
    found = local_inputs.find(archfile, inp.path)
    if found is None:
        raise InvalidInput(f"{inp.field}: no such file: {inp.path}")
    checked = inp.checksum is not None
    return _Local(found, local_inputs.open_input(found, root=root, checked=checked, what=inp.field))


def _check_store_base(ctx: ImageContext, image: ArchImage) -> None:
    """`b` naming no image of this file must name an image of the store, that fits."""
    assert image.base is not None
    where = f"{image.where}.extra_kwargs"
    try:
        base = ctx.store.get(image.base.name)
    except NotFound:
        raise InvalidInput(
            f"{where}.b: no image {image.base.name!r} in this file or in the store",
            hint="b names an image built earlier in this file or one in the store",
        ) from None
    if image.base.format is not None and image.base.format != base.format:
        raise InvalidInput(f"{where}.F: image {base.name!r} is {base.format}, "
                           f"not {image.base.format}")  # fmt: skip
    if image.size < base.virtual_size:
        raise InvalidInput(
            f"{image.where}.size: {format_size(image.size)} is smaller than its base "
            f"{base.name!r} ({format_size(base.virtual_size)}); corral never shrinks a disk"
        )


def _check_output(output_dir: Path, image: ArchImage) -> None:
    """A directory of the output path that is a link leading out of --output is refused now
    (and any link on the way is refused again when the file is written)."""
    parts = image.filename.split("/")
    if len(parts) > 1 and not is_inside(output_dir, output_dir.joinpath(*parts[:-1])):
        raise InvalidInput(
            f"{image.where}.output.path: {image.filename!r} leads out of {output_dir}"
        )


def _base(ctx: ImageContext, image: ArchImage, built: dict[str, BuiltImage]) -> Manifest | None:
    if image.base is None:
        return None
    if image.base.key is not None:
        return built[image.base.key].manifest
    return ctx.store.get(image.base.name)


def _fetch(
    ctx: ImageContext,
    fetcher: Fetcher,
    archfile: Path,
    image: ArchImage,
    local: _Local | None,
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
            # The bytes hashed are the bytes converted: corral's own copy, format from its header.
            path = workdir / f"{image.key}.source"
            label = str(local.path)
            fmt = local_inputs.copy_input(local.fd, path, inp.checksum, label)
            fmt, size = ctx.store.verify_disk(path, label, fmt)
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


def _build_one(
    ctx: ImageContext,
    image: ArchImage,
    source: _Source,
    base: Manifest | None,
    workdir: Path,
    output_dir: Path | None,
    owner: Owner | None,
    replace: bool,
    archfile: Path,
) -> BuiltImage:
    disk = _make_disk(ctx, image, source, base, workdir)
    origin = f"build:{archfile.absolute()}#{image.key}"
    try:
        with _output_file(output_dir, image, owner) as out:
            if base is not None:
                if out is not None:  # the output copy stands alone: no backing file
                    ctx.qemu_img.convert(disk, "qcow2", out.fd, "qcow2", options=image.options)
                user: dict[str, Any] = {"default_user": image.user} if image.user else {}
                manifest = save_image(
                    ctx, disk, image.name, parent=base, like=base, source=origin,
                    replace=replace, **user,
                )  # fmt: skip
            else:
                digest = out.copy(disk) if out is not None else hash_file(disk)
                manifest = ctx.store.adopt(
                    disk, digest, image.name, label=image.where, default_user=image.user,
                    origin=origin, replace=replace,
                )  # fmt: skip
        return BuiltImage(image.key, manifest, out.path if out is not None else None)
    finally:
        disk.unlink(missing_ok=True)


def _make_disk(
    ctx: ImageContext, image: ArchImage, source: _Source, base: Manifest | None, workdir: Path
) -> Path:
    """The image's disk under corral's work directory: blank, converted, or a layer on base."""
    qemu_img = ctx.qemu_img
    disk = workdir / f"{image.key}.{image.format}"
    if base is not None:  # its size was checked against the base's when planning
        qemu_img.create_on(
            disk, ctx.store.blob(base.digest), base.format, image.size, image.options
        )
    elif source.path is None:
        qemu_img.create(disk, image.size, image.format, image.options)
    else:
        assert source.format is not None
        qemu_img.convert(source.path, source.format, disk, image.format, options=image.options)
        if image.size > source.virtual_size:
            qemu_img.resize(disk, image.size, image.format)
    if image.format == "qcow2":
        qemu_img.check(disk, "qcow2")
    return disk


@dataclass(frozen=True)
class _Out:
    """The output copy being written: a new file of random name, open for writing."""

    fd: int
    path: Path  # where it will be once renamed

    def copy(self, disk: Path) -> str:
        """Copy disk in while hashing it; return the sha256."""
        with os.fdopen(os.dup(self.fd), "wb") as f:
            return copy_hashing_into(disk, f)


@contextlib.contextmanager
def _output_file(
    output_dir: Path | None, image: ArchImage, owner: Owner | None
) -> Iterator[_Out | None]:
    """A new file made exclusively in the output path's directory (walked from --output,
    no link followed), given its owner through its descriptor and renamed into place when
    the block succeeds; removed when it fails."""
    if output_dir is None:
        yield None
        return
    what = f"{image.where}.output.path"
    parts = relative_parts(image.filename, what)
    path = output_dir.joinpath(*parts)
    try:
        with (
            open_dir(output_dir, parts[:-1], create=True, what=what) as dir_fd,
            atomic_file(dir_fd, parts[-1]) as fd,
        ):
            yield _Out(fd, path)
            if owner is not None:
                os.fchown(fd, owner.uid, owner.gid)
    except OSError as exc:
        raise InvalidInput(f"{what}: cannot write {path}: {exc.strerror}") from None


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

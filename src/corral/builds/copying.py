"""Copy steps: what a `copy` takes, where it lands in the guest, and the tar that carries it there.

A copy from the build context is four pure-ish steps, each a function here:

    manifest(context, srcs, exclude)      every file, directory and symlink taken, sorted by
                                          path: the copy's cache key is made from these entries
    plan(entries, srcs, dst, workdir)     the absolute guest path each entry lands at, after
                                          the parent directories the copy needs
    tar_stream(context, members, ...)     the tar of those members, in pieces
    extract_command(uid, gid, dirs)       the guest argv (run as root) that creates the missing
                                          parent directories and unpacks the tar at /

A copy `(from (build NAME))` takes its files from a VM booted on the child build's result:
`guest_export_command` writes a tar of the sources there, `manifest_from_tar` makes the same
entries from it as `manifest` would from the same tree, and `retarget_tar` rewrites it, in one
pass, to the paths `plan` would give, for `extract_command` with `parent_dirs`.

The rules, as obuilder and Docker's COPY have them: sources are relative to the context (or to
the child's `/`) and may not leave it; symlinks are copied as symlinks, never followed, and in
the context one whose target resolves outside it is refused, as is a source reached through
such a link; `exclude` holds basenames (globs allowed) skipped at any depth below a source;
fifos, sockets and devices are refused. A file is read through a descriptor whose real path
must lie in the context, so a directory swapped for a link after the checks leaks nothing.
Modes are normalised as obuilder does: directories 0755, files 0755 if any executable bit is
set and 0644 otherwise, symlinks 0777. Everything copied is owned by the step's numeric
uid:gid. Where things land is `plan`'s docstring.

Parent directories are not tar members: a tar member for an existing directory such as /usr
or /home would chown and chmod it (busybox tar has no --no-overwrite-dir), so
`extract_command` creates only the missing ones, owned by uid:gid with mode 0755.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import posixpath
import shlex
import stat
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

from corral import confine
from corral.errors import GuestError, InvalidInput

Kind = Literal["file", "dir", "symlink"]

DIR_MODE = 0o755
EXEC_MODE = 0o755
FILE_MODE = 0o644
LINK_MODE = 0o777
CHUNK = 1 << 20  # file read size, and the size pieces of a tar stream are gathered to
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
_TAR_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE}
_MODES = {"dir": DIR_MODE, "symlink": LINK_MODE}  # a file's depends on its executable bits
_SPECIAL_TYPES = {
    tarfile.FIFOTYPE: stat.S_IFIFO,
    tarfile.CHRTYPE: stat.S_IFCHR,
    tarfile.BLKTYPE: stat.S_IFBLK,
}


@dataclass(frozen=True)
class Entry:
    """One thing a copy takes: the fields its cache key is made from.

    `path` is relative to the context (or the child's `/`), posix, "." for the root itself.
    """

    path: str
    kind: Kind
    mode: int  # normalised: DIR_MODE, EXEC_MODE, FILE_MODE or LINK_MODE
    digest: str | None = None  # sha256 hex of a file's content
    target: str | None = None  # a symlink's target, as stored


@dataclass(frozen=True)
class TarMember:
    """Where something lands in the guest: an absolute path and what goes there.

    `source` is the entry copied to `path`; None marks a parent directory the copy needs,
    which `tar_stream` leaves out and `extract_command` creates only if missing.
    """

    path: str
    kind: Kind
    mode: int
    source: Entry | None


# --- what a copy takes ---------------------------------------------------------------------


def manifest(context: Path, srcs: Sequence[str], exclude: Sequence[str]) -> tuple[Entry, ...]:
    """Every file, directory and symlink the copy takes from `context`, sorted by path.

    Each file is read once, for its digest. Raises InvalidInput naming the offending path.
    """
    paths = _sources(srcs, guest=False)
    names = _exclude_names(exclude)
    root = Path(os.path.realpath(context))
    if not root.is_dir():
        raise InvalidInput(f"build context {str(context)!r} is not a directory")
    entries: list[Entry] = []
    for src, path in zip(srcs, paths, strict=True):
        _walk(root, _locate(root, src, path), path, names, entries)
    return tuple(sorted(entries, key=_order))


def _locate(root: Path, src: str, path: str) -> Path:
    """The host path of a source, checking each symlink on the way resolves inside the context."""
    here = root
    parts = [] if path == "." else path.split("/")
    for i, part in enumerate(parts):
        here = here / part
        try:
            mode = os.lstat(here).st_mode
        except (FileNotFoundError, NotADirectoryError):
            raise InvalidInput(f"copy source {src!r} not found in the build context") from None
        except OSError as exc:
            raise InvalidInput(f"copy source {src!r}: {exc.strerror}") from exc
        if stat.S_ISLNK(mode) and i < len(parts) - 1 and not _inside_root(root, here):
            prefix = "/".join(parts[: i + 1])
            raise InvalidInput(
                f"copy source {src!r} escapes the build context: {prefix!r} is a symlink"
                f" to {_readlink(here)!r}"
            )
    return here


def _walk(root: Path, host: Path, rel: str, names: tuple[str, ...], out: list[Entry]) -> None:
    """Append the entries of one source (a whole tree for a directory) to `out`."""
    stack = [(host, rel)]
    while stack:
        host, rel = stack.pop()
        try:
            mode = os.lstat(host).st_mode
        except OSError as exc:
            raise InvalidInput(f"cannot read {rel!r} in the build context: {exc.strerror}") from exc
        if stat.S_ISLNK(mode):
            target = _readlink(host)
            if not _inside_root(root, host):
                raise InvalidInput(
                    f"symlink {rel!r} escapes the build context: it points to {target!r}"
                )
            out.append(Entry(rel, "symlink", LINK_MODE, target=target))
        elif stat.S_ISREG(mode):
            out.append(Entry(rel, "file", _file_mode(mode), digest=_file_digest(root, host, rel)))
        elif stat.S_ISDIR(mode):
            out.append(Entry(rel, "dir", DIR_MODE))
            try:
                # Reversed, so entries are visited (and the first error met) in sorted order.
                children = sorted(host.iterdir(), reverse=True)
            except OSError as exc:
                raise InvalidInput(f"cannot list {rel!r}: {exc.strerror}") from exc
            stack.extend(
                (child, child.name if rel == "." else f"{rel}/{child.name}")
                for child in children
                if not _excluded(child.name, names)
            )
        else:
            raise InvalidInput(f"cannot copy {rel!r}: {_special(mode)}")


def _inside_root(root: Path, path: Path) -> bool:
    # os.path.realpath, not Path.resolve: that raises on a symlink loop, a harmless thing to copy.
    return Path(os.path.realpath(path)).is_relative_to(root)


def _readlink(path: Path) -> str:
    # Path.readlink would normalise the target ("./x/" to "x"); the stored text is kept.
    return os.readlink(path)  # noqa: PTH115


def _file_digest(root: Path, host: Path, rel: str) -> str:
    try:
        with os.fdopen(_open_inside(root, host, rel), "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        raise InvalidInput(f"cannot read {rel!r} in the build context: {exc.strerror}") from exc


def _open_inside(root: Path, host: Path, rel: str) -> int:
    """Open a context file for reading: a regular file, really inside the context.

    What was checked before may have changed since (a directory on the way swapped for a
    link): the opened file's real path is what counts.
    """
    fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _changed(rel)
        if not confine.fd_path(fd).is_relative_to(root):
            raise InvalidInput(f"{rel!r} leads out of the build context; nothing was copied")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _file_mode(mode: int) -> int:
    return EXEC_MODE if mode & 0o111 else FILE_MODE


def _special(mode: int) -> str:
    for test, what in (
        (stat.S_ISFIFO, "a fifo"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return f"it is {what}; only files, directories and symlinks can be copied"
    return "only files, directories and symlinks can be copied"


def _order(entry: Entry) -> tuple[str, ...]:
    # By components, so a directory comes right before what it holds ("a", "a/b", "a-b").
    return () if entry.path == "." else tuple(entry.path.split("/"))


def _sources(srcs: Sequence[str], *, guest: bool) -> tuple[str, ...]:
    """Sources as normalised relative paths ("." for the root); refuse ones that leave it.

    Context sources must be relative; guest sources are taken relative to the child's `/`.
    Sources may not repeat or hold one another: each entry then belongs to exactly one.
    """
    if not srcs:
        raise InvalidInput("a copy needs at least one source")
    out: list[str] = []
    for src in srcs:
        if guest:
            path = posixpath.normpath("/" + src).lstrip("/") or "."
        elif src.startswith("/"):
            raise InvalidInput(
                f"copy source {src!r} is absolute; sources are relative to the build context"
            )
        else:
            path = posixpath.normpath(src or ".")
            if path == ".." or path.startswith("../"):
                raise InvalidInput(f"copy source {src!r} leaves the build context")
        for other_src, other in zip(srcs, out, strict=False):
            if path == other:
                raise InvalidInput(f"copy source {src!r} is given twice")
            if _within(path, other) or _within(other, path):
                raise InvalidInput(f"copy sources {other_src!r} and {src!r} overlap")
        out.append(path)
    return tuple(out)


def _within(path: str, top: str) -> bool:
    """Whether relative `path` is `top` or lies below it."""
    return top == "." or path == top or path.startswith(top + "/")


def _exclude_names(exclude: Sequence[str]) -> tuple[str, ...]:
    for name in exclude:
        if not name or "/" in name:
            raise InvalidInput(
                f"exclude {name!r} is not a file or directory name (globs allowed, no '/')"
            )
    return tuple(exclude)


def _excluded(name: str, names: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in names)


# --- where it lands ------------------------------------------------------------------------


def plan(
    entries: Sequence[Entry], srcs: Sequence[str], dst: str, workdir: str
) -> tuple[TarMember, ...]:
    """Where each entry lands: parent directories first, then each source's members in order.

    `dst` is joined to `workdir`. With one source and a `dst` that does not end in "/" (nor
    is ".", ".." or "/"), the source becomes `dst`: a file or symlink is copied to that path,
    a directory to that directory (obuilder's "copies the single item SRC as DST"). Otherwise
    `dst` is a directory, created if missing and otherwise left as it is, and each source
    goes inside it: a directory source's contents, anything else itself. Two sources putting
    a non-directory at one path is fine, the later wins as in a tar; a directory and a
    non-directory at one path is refused.
    """
    placement = _Placement.of(srcs, dst, workdir)
    present = {entry.path for entry in entries}
    for src, path in zip(srcs, placement.srcs, strict=True):
        if path not in present:
            raise InvalidInput(f"copy source {src!r} not found")
    members = [TarMember(d, "dir", DIR_MODE, None) for d in placement.parents]
    kinds: dict[str, Kind] = {}
    for src in placement.srcs:
        for entry in entries:
            if not _within(entry.path, src):
                continue
            guest_path = placement.place(src, entry.path, entry.kind)
            if guest_path is not None:
                _claim(kinds, guest_path, entry.kind)
                members.append(TarMember(guest_path, entry.kind, entry.mode, entry))
    return tuple(members)


def parent_dirs(srcs: Sequence[str], dst: str, workdir: str) -> tuple[str, ...]:
    """The directories `extract_command` creates if missing, outermost first.

    They depend on the spelling of the op only, not on what the sources hold, so a copy
    from a child build knows them before its tar is read. `plan` puts them first.
    """
    return _Placement.of(srcs, dst, workdir).parents


@dataclass(frozen=True)
class _Placement:
    """The rules of `plan`, shared with `retarget_tar`, which has no manifest to plan from."""

    srcs: tuple[str, ...]  # normalised, relative, disjoint
    target: str  # dst joined to the workdir
    into: bool  # target is a directory the sources go into; else the one source becomes it

    @classmethod
    def of(cls, srcs: Sequence[str], dst: str, workdir: str) -> _Placement:
        paths = _sources(srcs, guest=True)
        target = _guest_path(workdir, dst)
        into = (
            len(paths) > 1
            or dst.endswith("/")
            or posixpath.basename(dst) in (".", "..")
            or target == "/"
        )
        return cls(paths, target, into)

    @property
    def parents(self) -> tuple[str, ...]:
        return tuple(_ancestors(self.target if self.into else posixpath.dirname(self.target)))

    def source_of(self, path: str) -> str | None:
        return next((src for src in self.srcs if _within(path, src)), None)

    def place(self, src: str, path: str, kind: Kind) -> str | None:
        """Where `path` (under `src`) lands; None for a directory source's own directory."""
        if path != src:
            return posixpath.join(self.target, path if src == "." else path[len(src) + 1 :])
        if not self.into:
            return self.target
        return None if kind == "dir" else posixpath.join(self.target, posixpath.basename(src))


def _claim(kinds: dict[str, Kind], guest_path: str, kind: Kind) -> None:
    seen = kinds.setdefault(guest_path, kind)
    if (seen == "dir") != (kind == "dir"):
        raise InvalidInput(f"copy destination {guest_path!r} would be both a {seen} and a {kind}")


def _guest_path(workdir: str, dst: str) -> str:
    if not dst:
        raise InvalidInput("copy destination is empty")
    if not workdir.startswith("/"):
        raise InvalidInput(f"workdir {workdir!r} is not an absolute path")
    joined = posixpath.normpath(posixpath.join(workdir, dst))
    return "/" + joined.lstrip("/")  # normpath keeps a leading "//"


def _ancestors(path: str) -> list[str]:
    """The directories from the top down to `path`: "/a/b" gives "/a", "/a/b"."""
    parts = [p for p in path.split("/") if p]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


# --- the tar that carries it ---------------------------------------------------------------


def tar_stream(context: Path, members: Sequence[TarMember], uid: int, gid: int) -> Iterator[bytes]:
    """A pax tar of the members, names relative to `/`, owned by uid:gid, in pieces.

    Parent directories (members without a source) are left to `extract_command`. Files are
    read again here and checked against their digests, so what is copied is what the cache
    key says; a file that changed since `manifest` raises InvalidInput.
    """
    root = Path(os.path.realpath(context))
    out = _Pieces()
    for member in members:
        entry = member.source
        if entry is None:
            continue
        host = root / entry.path
        try:
            st = os.lstat(host)
        except OSError:
            raise _changed(entry.path) from None
        info = _header(member.path, member.kind, member.mode, uid, gid, int(st.st_mtime))
        if entry.kind == "file":
            yield from _send_file(out, info, root, host, entry)
            continue
        if entry.kind == "dir" and not stat.S_ISDIR(st.st_mode):
            raise _changed(entry.path)
        if entry.kind == "symlink":
            if not stat.S_ISLNK(st.st_mode) or _readlink(host) != entry.target:
                raise _changed(entry.path)
            info.linkname = entry.target
        yield from out.add(_encode(info))
    yield from out.finish()


def _send_file(
    out: _Pieces, info: tarfile.TarInfo, root: Path, host: Path, entry: Entry
) -> Iterator[bytes]:
    try:
        fd = _open_inside(root, host, entry.path)
    except OSError:
        raise _changed(entry.path) from None
    with os.fdopen(fd, "rb") as f:
        info.size = os.fstat(fd).st_size
        yield from out.add(_encode(info))
        yield from _send_data(out, f, info.size, entry.digest, _changed(entry.path))


def _send_data(
    out: _Pieces, f: _Readable, size: int, digest: str | None, error: Exception
) -> Iterator[bytes]:
    """Copy `size` bytes of `f` into the tar, padded; raise `error` if short or not `digest`."""
    hashed = hashlib.sha256()
    left = size
    while left:
        chunk = f.read(min(CHUNK, left))
        if not chunk:
            raise error
        hashed.update(chunk)
        left -= len(chunk)
        yield from out.add(chunk)
    if digest is not None and hashed.hexdigest() != digest:
        raise error
    yield from out.add(bytes(-size % _BLOCK))


def _changed(path: str) -> InvalidInput:
    return InvalidInput(f"{path!r} changed while being copied; run the build again")


def _header(path: str, kind: Kind, mode: int, uid: int, gid: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path.lstrip("/"))
    info.type = _TAR_TYPES[kind]
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""  # extraction then uses the numbers, whatever the guest's names
    info.mtime = mtime
    return info


def _encode(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


class _Pieces:
    """Gathers tar bytes into pieces of about CHUNK, so a stream never holds a whole file.

    (tarfile's own writer copies a whole file per addfile call; headers come from
    TarInfo.tobuf instead and data is copied here chunk by chunk.)
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._held = 0
        self._total = 0

    def add(self, data: bytes) -> Iterator[bytes]:
        self._parts.append(data)
        self._held += len(data)
        self._total += len(data)
        if self._held >= CHUNK:
            yield self._take()

    def finish(self) -> Iterator[bytes]:
        """The end-of-archive blocks, padded to a whole record as tar writes it."""
        end = 2 * _BLOCK
        yield from self.add(bytes(end + (-(self._total + end) % _RECORD)))
        if self._held:
            yield self._take()

    def _take(self) -> bytes:
        piece = b"".join(self._parts)
        self._parts, self._held = [], 0
        return piece


# --- in the guest --------------------------------------------------------------------------

# $1 is the root; the rest are the parent directories, relative and starting "./". GNU tar
# gets --same-owner/--numeric-owner spelt out, and --keep-directory-symlink so a copied "lib/"
# does not replace a merged-/usr /lib symlink; busybox tar as root restores numeric owners
# (the archive has no names) and modes by default, keeps a symlinked directory, and lacks
# the other flags, so they go only to GNU tar. busybox leaves symlinks themselves root's.
_EXTRACT = """set -e
cd "$1"
shift
for d in "$@"; do
  if [ ! -d "$d" ]; then mkdir "$d"; chown @OWNER@ "$d"; chmod 755 "$d"; fi
done
case "$(tar --version 2>/dev/null)" in
  *GNU*) exec tar -x -f - --numeric-owner --same-owner --same-permissions \\
           --keep-directory-symlink ;;
esac
exec tar -x -f -
"""

# $1 is the root; the rest are the sources, relative and starting "./". busybox tar can neither
# exclude nor read names from a file, so find lists what to take (sources first, exclusions
# pruned below them) and xargs hands the names to `tar --no-recursion`; a long list makes
# several archives back to back, which manifest_from_tar and retarget_tar read as one.
_EXPORT = """set -e
cd "$1"
shift
for s in "$@"; do
  if [ ! -e "$s" ] && [ ! -h "$s" ]; then
    echo "corral: copy source ${s#.} not found" >&2
    exit 2
  fi
done
(set -o pipefail) 2>/dev/null && set -o pipefail
for s in "$@"; do
  printf '%s\\0' "$s"
  find "$s" -mindepth 1 @PRUNE@-print0
done | xargs -0 tar -c --no-recursion -f -
"""


def extract_command(uid: int, gid: int, dirs: Sequence[str] = (), *, root: str = "/") -> list[str]:
    """The guest argv, run as root, that unpacks a copy's tar (on stdin) at `root`.

    It first creates each of `dirs` (absolute guest paths, outermost first: `parent_dirs`)
    that is missing, owned by uid:gid with mode 0755; existing ones are left as they are.
    Works with GNU tar and busybox tar.
    """
    if uid < 0 or gid < 0:
        raise InvalidInput(f"owner {uid}:{gid} is not a pair of numeric ids")
    script = _EXTRACT.replace("@OWNER@", f"{int(uid)}:{int(gid)}")
    return ["sh", "-c", script, "sh", root, *(_dot(d.lstrip("/") or ".") for d in dirs)]


def guest_export_command(
    srcs: Sequence[str], exclude: Sequence[str], *, root: str = "/"
) -> list[str]:
    """The guest argv that writes a tar of `srcs` (paths from the guest's `/`) to stdout.

    `exclude` names are pruned at any depth below each source, as `manifest` does; symlinks
    are archived, not followed. A missing source exits 2, naming it on stderr. Works with GNU
    and busybox tar, find and xargs.
    """
    paths = _sources(srcs, guest=True)
    names = _exclude_names(exclude)
    prune = ""
    if names:
        tests = " -o ".join(f"-name {shlex.quote(name)}" for name in names)
        prune = f"\\( {tests} \\) -prune -o "
    return ["sh", "-c", _EXPORT.replace("@PRUNE@", prune), "sh", root, *map(_dot, paths)]


def _dot(path: str) -> str:
    # "./" keeps a name starting with "-" from reading as an option.
    return path if path == "." else f"./{path}"


def manifest_from_tar(stream: BinaryIO) -> tuple[Entry, ...]:
    """The entries of a tar written by `guest_export_command`, as `manifest` makes them.

    Hard links become files with their target's digest. Raises GuestError for a member that
    is absolute or holds "..", InvalidInput for a fifo, socket or device.
    """
    entries: dict[str, Entry] = {}
    for tar, info in _read_tar(stream):
        path = _member_path(info.name)
        if info.isreg():
            digest = hashlib.sha256()
            for chunk in _member_data(tar, info):
                digest.update(chunk)
            entry = Entry(path, "file", _file_mode(info.mode), digest=digest.hexdigest())
        elif info.islnk():
            linked = entries.get(_member_path(info.linkname))
            if linked is None or linked.kind != "file":
                raise GuestError(f"hard link {path!r} points to {info.linkname!r}, not a file")
            entry = Entry(path, "file", _file_mode(info.mode), digest=linked.digest)
        elif _tar_kind(info, path) == "dir":
            entry = Entry(path, "dir", DIR_MODE)
        else:
            entry = Entry(path, "symlink", LINK_MODE, target=info.linkname)
        entries[path] = entry
    return tuple(sorted(entries.values(), key=_order))


def retarget_tar(
    stream: BinaryIO, srcs: Sequence[str], dst: str, workdir: str, uid: int, gid: int
) -> Iterator[bytes]:
    """Rewrite a `guest_export_command` tar to where `plan` puts things, for `extract_command`.

    One pass, in pieces: each member goes to its guest path, owned by uid:gid with its
    normalised mode; hard links stay hard links. Raises GuestError for a member that is
    absolute, climbs out with "..", or lies under no source; InvalidInput for a fifo, socket
    or device, a source missing from the tar, or a clash `plan` would refuse.
    """
    placement = _Placement.of(srcs, dst, workdir)
    kinds: dict[str, Kind] = {}
    written: dict[str, str] = {}  # member path -> the name it was written as, for hard links
    found: set[str] = set()
    out = _Pieces()
    for tar, info in _read_tar(stream):
        path = _member_path(info.name)
        kind = _tar_kind(info, path)
        src = placement.source_of(path)
        if src is None:
            raise GuestError(f"the export holds {path!r}, which is under no copy source")
        if path == src:
            found.add(src)
        guest_path = placement.place(src, path, kind)
        if guest_path is None:
            continue
        _claim(kinds, guest_path, kind)
        mode = _file_mode(info.mode) if kind == "file" else _MODES[kind]
        new = _header(guest_path, kind, mode, uid, gid, int(info.mtime))
        if info.islnk():
            linked = written.get(_member_path(info.linkname))
            if linked is None:
                raise GuestError(f"hard link {path!r} points to {info.linkname!r}, not copied")
            new.type, new.linkname = tarfile.LNKTYPE, linked
        elif kind == "symlink":
            new.linkname = info.linkname
        elif kind == "file":
            new.size = info.size
        yield from out.add(_encode(new))
        if new.isreg():
            reader = _Reader(_member_data(tar, info))
            cut = GuestError(f"the export is cut short in {path!r}")
            yield from _send_data(out, reader, info.size, None, cut)
        written[path] = new.name
    for src, path in zip(srcs, placement.srcs, strict=True):
        if path not in found:
            raise InvalidInput(f"copy source {src!r} is not in the export")
    yield from out.finish()


def _read_tar(stream: BinaryIO) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    # ignore_zeros: the export may be several archives back to back (see _EXPORT).
    try:
        with tarfile.open(fileobj=stream, mode="r|", ignore_zeros=True) as tar:
            for info in tar:
                yield tar, info
    except tarfile.TarError as exc:
        raise GuestError(f"the export is not a readable tar: {exc}") from exc


def _member_data(tar: tarfile.TarFile, info: tarfile.TarInfo) -> Iterator[bytes]:
    f = tar.extractfile(info)
    if f is None:
        return
    try:
        while chunk := f.read(CHUNK):
            yield chunk
    except tarfile.TarError as exc:
        raise GuestError(f"the export is cut short in {info.name!r}: {exc}") from exc


class _Readable(Protocol):
    def read(self, n: int, /) -> bytes: ...


class _Reader:
    """A `read(n)` over an iterator of chunks, for `_send_data`."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._rest = b""

    def read(self, n: int) -> bytes:
        if not self._rest:
            self._rest = next(self._chunks, b"")
        piece, self._rest = self._rest[:n], self._rest[n:]
        return piece


def _member_path(name: str) -> str:
    """A tar member's name as an entry path; refuse one that is absolute or climbs out."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise GuestError(f"the export holds {name!r}, which escapes /")
    return "/".join(parts) or "."


def _tar_kind(info: tarfile.TarInfo, path: str) -> Kind:
    """A member's kind (a hard link is a file); refuse fifos and devices."""
    if info.isreg() or info.islnk():
        return "file"
    if info.isdir():
        return "dir"
    if info.issym():
        return "symlink"
    raise InvalidInput(f"cannot copy {path!r}: {_special(_SPECIAL_TYPES.get(info.type, 0))}")

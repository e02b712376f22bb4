"""Writing what a guest sends onto the host: a directory's tar, or one file's bytes.

The guest is not trusted: its `tar` and `cat` may be anything. So nothing here relies on
tarfile's extraction filters (their fixes for CVE-2025-4517, -4330 and -4138 came in 2025
patch releases that not every interpreter corral runs on has) or on path strings. The archive
is read by corral's own reader (tar.py) as it streams in, and each member is written through
directory descriptors walked from the destination one component at a time without following
a link (confine.open_dir), into files created exclusively and renamed into place:

- a member's name is relative: absolute names, `..` and NUL are refused;
- no member is written through a link, whether the archive made it or it was there before,
  and a directory is never replaced by a link or a file (nor a link or file by a directory);
- a symlink must stay inside the destination: a relative target whose `..` come first and
  climb no higher than the destination, and that then goes through no link this extraction
  did not make (each of those was checked the same way), so no chain of links leads out;
- a hard link may only name a regular file this extraction wrote;
- devices, fifos and every other kind of member are refused;
- modes lose setuid, setgid, sticky and group/other write bits, and the umask applies; owners
  are never changed.

The first refused member stops the copy with a one-line GuestError naming it. A directory
copied to a new destination appears whole or not at all (it is unpacked beside it, then
renamed); a file likewise. Every byte goes to disk as it arrives.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from corral import confine
from corral.errors import GuestError, InvalidInput
from corral.fsutil import atomic_file
from corral.guest.tar import CHUNK, DIRECTORY, HARDLINK, SYMLINK, Member, Read, TarReader

Check = Callable[[], None]  # raises if the sender failed; called before anything is kept
_TRAILER_LIMIT = 1 << 20  # what a tar may carry after its end (tar pads to 10 KiB records)


def umask() -> int:
    """The process umask, read without changing it (os.umask would, for a moment)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def receive_file(read: Read, target: Path, check: Check) -> None:
    """Stream bytes into a new file beside target, then rename it to target.

    The temporary file has a random name and is created exclusively, so a link planted in
    the directory is never followed; the rename replaces whatever target was (a link
    included) without writing through it.
    """
    dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with atomic_file(dir_fd, target.name, suffix=".part", mode=0o666 & ~umask()) as fd:
            with os.fdopen(os.dup(fd), "wb") as f:
                while chunk := read(CHUNK):
                    f.write(chunk)
            check()
    except IsADirectoryError:
        raise InvalidInput(f"{target} is a directory") from None
    finally:
        os.close(dir_fd)


def receive_tree(read: Read, target: Path, check: Check) -> None:
    """Unpack a tar stream into the directory target.

    A new target is unpacked in a temporary sibling and renamed into place once the whole
    archive is in and `check` passed; an existing directory is unpacked into as it stands.
    """
    if target.is_dir():
        extract(read, target)
        check()
        return
    if target.exists() or target.is_symlink():
        raise InvalidInput(f"{target} exists and is not a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    try:
        extract(read, tmp)
        check()
        tmp.chmod(0o777 & ~umask())
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # never follows a link it meets
        raise


def extract(read: Read, root: Path) -> int:
    """Unpack the tar that `read` streams into the existing directory root; members unpacked.

    Reads on to the end of the stream (a tar carries padding after its end), refusing more
    than a record's worth of anything else.
    """
    reader = TarReader(read)
    extractor = _Extractor(root)
    count = 0
    for member in reader:
        extractor.add(member, reader.data())
        count += 1
    trailer = 0
    while chunk := read(65536):
        trailer += len(chunk)
        if trailer > _TRAILER_LIMIT:
            raise GuestError("the guest sent more than a tar: data goes on after its end")
    return count


def _refuse(member: Member, reason: str) -> GuestError:
    return GuestError(f"refused the guest's tar: {member.name!r} {reason}; nothing outside the "
                      "destination was written")  # fmt: skip


class _Extractor:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.umask = umask()
        self.files: set[tuple[str, ...]] = set()  # regular files written: hard link targets
        # Symlinks made, each checked to stay inside: where each leads, from the destination.
        self.links: dict[tuple[str, ...], tuple[str, ...]] = {}

    def add(self, member: Member, data: Iterator[bytes]) -> None:
        parts = self._parts(member, member.name)
        if member.type == DIRECTORY:
            self._directory(member, parts)
        elif not parts:
            raise _refuse(member, "names the destination itself, which is a directory")
        elif member.is_file:
            self._file(member, parts, data)
        elif member.type == SYMLINK:
            self._symlink(member, parts)
        elif member.type == HARDLINK:
            self._hardlink(member, parts)
        elif member.type in (b"3", b"4", b"6"):
            raise _refuse(member, "is a device or a fifo")
        else:
            raise _refuse(member, f"has a member type corral does not unpack ({member.type!r})")

    def _parts(self, member: Member, name: str) -> tuple[str, ...]:
        if "\0" in name:
            raise _refuse(member, "holds a NUL character")
        if name.startswith("/"):
            raise _refuse(member, "is an absolute name")
        parts = tuple(p for p in name.split("/") if p not in ("", "."))
        if ".." in parts:
            raise _refuse(member, "climbs out with '..'")
        return parts

    @contextlib.contextmanager
    def _parent(self, member: Member, parts: tuple[str, ...]) -> Iterator[int]:
        """The directory that holds parts[-1], made if missing, reached without a link."""
        try:
            with confine.open_dir(self.root, parts[:-1], create=True, what="member") as fd:
                yield fd
        except InvalidInput as exc:
            raise _refuse(member, f"would go through a link or a file ({exc.message})") from None

    def _replaceable(self, member: Member, dir_fd: int, name: str) -> None:
        """Refuse to put a non-directory where a directory is."""
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                raise _refuse(member, "would replace a directory")

    def _place(self, member: Member, dir_fd: int, tmp: str, name: str) -> None:
        try:
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise _refuse(member, f"cannot be written: {exc.strerror}") from None

    def _directory(self, member: Member, parts: tuple[str, ...]) -> None:
        if not parts:
            return  # the destination itself: left as it is
        with self._parent(member, parts) as dir_fd:
            try:
                os.mkdir(parts[-1], (member.mode & 0o755) | 0o700, dir_fd=dir_fd)
            except FileExistsError:
                st = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    raise _refuse(member, "would turn a file or link into a directory") from None

    def _file(self, member: Member, parts: tuple[str, ...], data: Iterator[bytes]) -> None:
        mode = ((member.mode & 0o755) | 0o600) & ~self.umask
        with self._parent(member, parts) as dir_fd:
            self._replaceable(member, dir_fd, parts[-1])
            fd, tmp = confine.create_exclusive(dir_fd, ".corral-", ".part", mode)
            try:
                with os.fdopen(fd, "wb") as f:
                    for chunk in data:
                        f.write(chunk)
                    f.flush()
                    with contextlib.suppress(OSError, OverflowError, ValueError):
                        os.utime(f.fileno(), (member.mtime, member.mtime))
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
                raise
            self._place(member, dir_fd, tmp, parts[-1])
        self.files.add(parts)
        self.links.pop(parts, None)

    def _symlink(self, member: Member, parts: tuple[str, ...]) -> None:
        with self._parent(member, parts) as dir_fd:
            leads_to = self._check_target(member, parts)
            self._replaceable(member, dir_fd, parts[-1])
            tmp = f".corral-{secrets.token_hex(8)}.link"
            os.symlink(member.linkname, tmp, dir_fd=dir_fd)
            self._place(member, dir_fd, tmp, parts[-1])
        self.links[parts] = leads_to
        self.files.discard(parts)

    def _check_target(self, member: Member, parts: tuple[str, ...]) -> tuple[str, ...]:
        """Where a symlink leads, from the destination; refused unless it stays inside (see
        the module docstring). Links this extraction made are followed by what they were
        checked to mean; a link it did not make, met on the way, is refused."""
        target = member.linkname
        if not target or "\0" in target:
            raise _refuse(member, "is a link to nothing")
        if target.startswith("/"):
            raise _refuse(member, f"is a link to the absolute path {target!r}")
        steps = [p for p in target.split("/") if p not in ("", ".")]
        up = 0
        while up < len(steps) and steps[up] == "..":
            up += 1
        if ".." in steps[up:]:
            raise _refuse(member, f"is a link to {target!r}, with '..' after a name")
        base = parts[:-1]  # real directories: walked without following a link
        if up > len(base):
            raise _refuse(member, f"is a link to {target!r}, which leads out of the destination")
        leads_to = (*base[: len(base) - up], *steps[up:])
        here: tuple[str, ...] = ()
        pending = list(leads_to)
        hops = 0
        while pending:
            here = (*here, pending.pop(0))
            try:
                mode = os.lstat(self.root.joinpath(*here)).st_mode
            except (FileNotFoundError, NotADirectoryError):
                break  # nothing there yet: whatever comes there is checked as it comes
            if not stat.S_ISLNK(mode):
                continue
            if here not in self.links:
                raise _refuse(
                    member, f"is a link to {target!r}, through a link this copy did not make"
                )
            hops += 1
            if hops > 40:  # as the kernel's own limit: a loop, or something like one
                raise _refuse(member, f"is a link to {target!r}, through too many links")
            here, pending = (), [*self.links[here], *pending]
        return leads_to

    def _hardlink(self, member: Member, parts: tuple[str, ...]) -> None:
        source = self._parts(member, member.linkname)
        if source not in self.files:
            raise _refuse(
                member, f"is a hard link to {member.linkname!r}, not a file this copy wrote"
            )
        with self._parent(member, source) as src_fd, self._parent(member, parts) as dir_fd:
            st = os.stat(source[-1], dir_fd=src_fd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                raise _refuse(member, f"is a hard link to {member.linkname!r}, not a file")
            self._replaceable(member, dir_fd, parts[-1])
            tmp = f".corral-{secrets.token_hex(8)}.link"
            os.link(source[-1], tmp, src_dir_fd=src_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            self._place(member, dir_fd, tmp, parts[-1])
        self.files.add(parts)
        self.links.pop(parts, None)

"""Local input files of an architecture file: opened by corral, confined, copied while hashed.

qemu-img never sees the path an architecture file names: a string like `json:{...}` or
`nbd://...` would make it open something other than what corral checked. So corral opens the
file itself, copies it into its own temporary directory while hashing it (the checksum is
checked on exactly the bytes that are converted), reads the format from the copy's header and
names it to qemu-img explicitly.

Where an input may come from: with a checksum, any regular file (the file's author already
knows its bytes). Without one, only a file that lies, symlinks resolved, inside the
architecture file's own directory: a file written by someone else cannot make corral copy
/etc/shadow or ~/.ssh/id_rsa into an output it hands to another owner. `--no-verify` does not
lift that.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from corral.confine import fd_path, is_inside
from corral.errors import InvalidInput
from corral.image.fetch.checksums import Checksum
from corral.image.fetch.stream import Sink, compression_of
from corral.image.formats import HEAD_BYTES, disk_format

READ_CHUNK = 1 << 20


def protocol_prefix(text: str) -> str | None:
    """'json:{...}' -> 'json:', 'nbd://h/x' -> 'nbd:'; None for a plain path.

    qemu reads a ':' before the first '/' as a protocol prefix; corral never passes a user's
    path to qemu, but such a name is refused anyway: it is never a plain file.
    """
    head = text.split("/", 1)[0]
    return head.split(":", 1)[0] + ":" if ":" in head else None


def confinement_root(archfile: Path) -> Path | None:
    """The directory inputs without a checksum must lie in (None: '/' confines nothing)."""
    root = Path(os.path.realpath(archfile.absolute().parent))
    return None if root == Path("/") else root


def find(archfile: Path, path: Path) -> Path | None:
    """A relative input path is looked up next to the file, then (as gen-vm-image does) in
    the current directory; either way the confinement rule applies to what is found."""
    candidates = [path] if path.is_absolute() else [archfile.parent / path, Path.cwd() / path]
    return next((p for p in candidates if p.exists()), None)


def open_input(path: Path, *, root: Path | None, checked: bool, what: str) -> int:
    """A read-only descriptor of a regular file; without a checksum it must lie inside root.

    The check is made on the file that was opened (its real path as the kernel reports it),
    so a link swapped after the check changes nothing.
    """
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise InvalidInput(f"{what}: {path} is not a regular file")
        # O_NONBLOCK: a fifo swapped in meanwhile must not hang the build (refused below).
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise InvalidInput(f"{what}: no such file: {path}") from None
    except OSError as exc:
        raise InvalidInput(f"{what}: cannot read {path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidInput(f"{what}: {path} is not a regular file")
        if not checked:
            _confined(path, fd_path(fd), root, what)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _confined(path: Path, real: Path, root: Path | None, what: str) -> None:
    hint = "give its checksum (type and value), or keep the file beside the architecture file"
    if root is None:
        raise InvalidInput(
            f"{what}: {path} has no checksum and the architecture file is in /, "
            "which confines nothing",
            hint=hint,
        )
    if not is_inside(root, real):
        raise InvalidInput(
            f"{what}: {path} has no checksum and lies outside {root} "
            "(the architecture file's directory)",
            hint=hint,
        )


def copy_input(fd: int, dest: Path, checksum: Checksum | None, label: str) -> str:
    """Copy an opened input into dest (decompressing .xz/.gz/.bz2 as downloads are), check its
    checksum on the bytes read, and return the copy's format from its header."""
    sink = Sink(dest, expected=checksum, compression=compression_of(label), label=label)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            while chunk := f.read(READ_CHUNK):
                sink.feed(chunk)
        sink.finish()
    finally:
        sink.close()
    if checksum is not None and sink.sent_hexdigest(checksum) != checksum.hex:
        raise InvalidInput(
            f"checksum mismatch for {label}: expected {checksum}, "
            f"got {checksum.algo}:{sink.sent_hexdigest(checksum)}"
        )
    with open(dest, "rb") as f:
        return disk_format(f.read(HEAD_BYTES), label)

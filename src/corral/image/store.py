"""The content-addressed image store.

Blobs live under images/blobs/sha256/<hex>, read-only; names map to blobs through small JSON
manifests. Imports are copied into images/tmp while hashing, inspected there (so the bytes that
were checked are the bytes that are stored), then renamed into place: an interrupted import
leaves nothing. A file with a backing file or an external data file is refused, so no image can
make QEMU open a file outside the store.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import secrets
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from corral.errors import Conflict, CorralError, InvalidInput, NotFound
from corral.fsutil import copy_hashing, pid_alive, write_atomic
from corral.image.formats import file_format
from corral.image.manifest import Manifest, check_image_name
from corral.image.qemu_img import FORMATS, QemuImg
from corral.layout import Home
from corral.private import BLOB_MODE
from corral.records import RecordError


class ImageStore:
    """Named, verified images on this host."""

    def __init__(self, home: Home, qemu_img: QemuImg) -> None:
        self.home = home
        self.qemu_img = qemu_img

    def ensure(self) -> None:
        for path in (self.home.blobs, self.home.manifests, self.home.image_tmp):
            path.mkdir(parents=True, exist_ok=True)

    # --- reading -------------------------------------------------------------------------

    def get(self, name: str) -> Manifest:
        path = self.home.manifest(check_image_name(name))
        try:
            return Manifest.from_json(path.read_bytes())
        except FileNotFoundError:
            raise NotFound(f"no image named {name!r}", hint="see: corral image ls") from None
        except RecordError as exc:
            raise CorralError(f"image manifest {path} is damaged: {exc}") from exc

    def exists(self, name: str) -> bool:
        return self.home.manifest(check_image_name(name)).exists()

    def list(self) -> list[Manifest]:
        if not self.home.manifests.is_dir():
            return []
        out = []
        for path in sorted(self.home.manifests.glob("*.json")):
            with contextlib.suppress(OSError, RecordError):
                out.append(Manifest.from_json(path.read_bytes()))
        return out

    def blob(self, digest: str) -> Path:
        return self.home.blob(digest)

    # --- writing -------------------------------------------------------------------------

    def import_image(
        self,
        source: Path,
        name: str,
        *,
        kernel: Path | None = None,
        initrd: Path | None = None,
        cmdline: str | None = None,
        default_user: str | None = None,
        origin: str | None = None,
        replace: bool = False,
        label: str | None = None,
    ) -> Manifest:
        """Verify and store a qcow2 or raw file (plus optional kernel and initrd) under name.

        `label` names the source in errors when its path says little (e.g. /proc/self/fd/N).
        """
        self._check_new(name, replace, source, kernel, initrd)
        tmp = self.new_tmp_path()
        try:
            digest = copy_hashing(source, tmp)
            return self.adopt(
                tmp, digest, name, label=label or str(source), kernel=kernel, initrd=initrd,
                cmdline=cmdline, default_user=default_user,
                origin=origin or f"import:{source.absolute()}", replace=replace,
            )  # fmt: skip
        finally:
            tmp.unlink(missing_ok=True)

    def adopt(
        self,
        tmp: Path,
        digest: str,
        name: str,
        *,
        label: str,
        kernel: Path | None = None,
        initrd: Path | None = None,
        cmdline: str | None = None,
        default_user: str | None = None,
        origin: str = "",
        replace: bool = False,
    ) -> Manifest:
        """Verify, publish and name a complete file under images/tmp whose sha256 is known.

        For files hashed while they were written (downloads, copies): nothing is read twice.
        `label` names the file in error messages (the URL or path the user gave).
        """
        self._check_new(name, replace, tmp, kernel, initrd)
        fmt, size = self.verify_disk(tmp, label)
        self._publish(tmp, digest)
        manifest = Manifest(
            name=name,
            digest=digest,
            format=fmt,
            virtual_size=size,
            file_size=self.blob(digest).stat().st_size,
            kernel=self._store_blob(kernel) if kernel else None,
            initrd=self._store_blob(initrd) if initrd else None,
            cmdline=cmdline,
            default_user=default_user or "root",
            source=origin,
        )
        self.save(manifest)
        return manifest

    def _check_new(
        self, name: str, replace: bool, disk: Path, kernel: Path | None, initrd: Path | None
    ) -> None:
        check_image_name(name)
        if not replace and self.exists(name):
            raise Conflict(f"image {name!r} already exists", hint="choose another --name")
        for path in (disk, kernel, initrd):
            if path is not None and not path.is_file():
                raise NotFound(f"no such file: {path}")
        if initrd is not None and kernel is None:
            raise InvalidInput("an initrd needs a kernel")
        self.ensure()
        self.purge_tmp()

    def verify_disk(self, path: Path, label: str, fmt: str | None = None) -> tuple[str, int]:
        """Check a candidate disk before it enters the store; return (format, virtual size).

        Refused: formats other than qcow2 and raw, backing files and external data files (they
        would make QEMU open a file outside the store), and a qcow2 that `qemu-img check` finds
        damaged. The format comes from the file's header (or `fmt`), never from qemu-img's
        probing: a format whose header names other files (a vmdk descriptor) is never parsed.
        """
        info = self.qemu_img.info(path, fmt or file_format(path, label))
        if info.format not in FORMATS:
            raise InvalidInput(
                f"{label}: unsupported image format {info.format!r} (need qcow2 or raw)",
                hint="convert it first: qemu-img convert -O qcow2 ...",
            )
        if info.backing_file:
            raise InvalidInput(
                f"{label}: refusing an image with a backing file ({info.backing_file}): "
                "it points outside the store",
                hint="flatten it first: qemu-img convert -O qcow2 SRC DST",
            )
        if info.data_file:
            raise InvalidInput(f"{label}: refusing a qcow2 with an external data file")
        if info.format == "qcow2":
            self.qemu_img.check(path, "qcow2")
        return info.format, info.virtual_size

    def save(self, manifest: Manifest) -> None:
        write_atomic(self.home.manifest(manifest.name), manifest.to_json())

    def _tmp(self) -> Path:
        return self.home.image_tmp / f"{os.getpid()}-{secrets.token_hex(6)}"

    def _store_blob(self, source: Path) -> str:
        tmp = self._tmp()
        try:
            digest = copy_hashing(source, tmp)
            self._publish(tmp, digest)
            return digest
        finally:
            tmp.unlink(missing_ok=True)

    def _publish(self, tmp: Path, digest: str) -> None:
        target = self.blob(digest)
        if target.exists():
            return  # identical content is already stored
        tmp.chmod(BLOB_MODE)  # read-only, and for the owner alone
        tmp.rename(target)

    def add_blob_file(self, tmp: Path, digest: str) -> Path:
        """Publish an already-hashed file written under images/tmp by another part of corral."""
        self._publish(tmp, digest)
        return self.blob(digest)

    def new_tmp_path(self) -> Path:
        """A fresh path under images/tmp, named for this process so a crash gets cleaned up."""
        self.ensure()
        return self._tmp()

    def remove(self, name: str, *, users: Sequence[str] = (), force: bool = False) -> Manifest:
        """Forget a name; refused while instances use it unless force (their data is kept)."""
        manifest = self.get(name)
        if users and not force:
            raise Conflict(
                f"image {name!r} is used by instance(s): {', '.join(sorted(users))}",
                hint="remove them first, or use --force (their disks keep the data they need)",
            )
        self.home.manifest(name).unlink()
        return manifest

    def parent_of(self, digest: str) -> str | None:
        """The blob a layered blob is backed by, as recorded when it was published."""
        try:
            return (self.home.parents / digest).read_text().strip() or None
        except FileNotFoundError:
            return None

    def set_parent(self, digest: str, parent: str) -> None:
        self.home.parents.mkdir(parents=True, exist_ok=True)
        write_atomic(self.home.parents / digest, parent.encode())

    def chain(self, digest: str) -> builtins.list[str]:
        """The digests from `digest` down to its base layer."""
        digests = [digest]
        while (parent := self.parent_of(digests[-1])) is not None:
            if parent in digests:
                raise CorralError(f"blob {digest[:12]} has a cycle in its recorded chain")
            digests.append(parent)
        return digests

    def collect_garbage(self, keep: Iterable[str]) -> builtins.list[str]:
        """Delete blobs that no manifest and no digest in `keep` needs; return their digests.

        A blob is needed when it is named, kept, or below a needed blob in a layer chain.
        """
        roots = set(keep)
        for manifest in self.list():
            roots.update(manifest.blobs())
        wanted: set[str] = set()
        for digest in roots:
            wanted.update(self.chain(digest))
        removed = []
        if self.home.blobs.is_dir():
            for blob in self.home.blobs.iterdir():
                if blob.name not in wanted:
                    blob.unlink(missing_ok=True)
                    (self.home.parents / blob.name).unlink(missing_ok=True)
                    removed.append(blob.name)
        return removed

    def purge_tmp(self) -> None:
        """Remove partial files and build directories whose process has died.

        Everything under images/tmp is named <pid>-...: the pid of the process that owns it.
        """
        if not self.home.image_tmp.is_dir():
            return
        for path in self.home.image_tmp.iterdir():
            pid = path.name.split("-", 1)[0]
            if not (pid.isdigit() and pid_alive(int(pid))):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)

    def manifest_json(self, manifest: Manifest) -> dict[str, object]:
        data = manifest.to_dict()
        data["path"] = str(self.blob(manifest.digest))
        data["kernel_path"] = str(self.blob(manifest.kernel)) if manifest.kernel else None
        data["initrd_path"] = str(self.blob(manifest.initrd)) if manifest.initrd else None
        if manifest.warm is not None:
            data["state_path"] = str(self.blob(manifest.warm.state))
        return data


def check_chain_inside(
    qemu_img: QemuImg, disk: Path, fmt: str, root: Path, expected: list[str] | None = None
) -> None:
    """Refuse a disk whose backing chain reaches any file outside `root` (the blob store).

    With `expected` (the blob digests below `disk`, as recorded), the chain on disk must be
    exactly that chain: a layer rewritten behind corral's back is refused too.
    """
    root = root.resolve()
    links = qemu_img.chain(disk, fmt)
    for link in links:
        if link.data_file:
            raise InvalidInput(f"{disk}: refusing a qcow2 with an external data file")
        if link.backing_file and not Path(link.backing_file).resolve().is_relative_to(root):
            raise InvalidInput(
                f"{disk}: backing file {link.backing_file} is outside the image store"
            )
    if expected is not None:
        found = [Path(link.backing_file).name for link in links if link.backing_file]
        if found != expected:
            raise InvalidInput(
                f"{disk}: its backing chain does not match the recorded one",
                hint="the image store may have been modified by hand",
            )

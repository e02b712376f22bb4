"""Thin typed wrappers over qemu-img. Formats are always passed explicitly (`-f`, `-F`).

Creation options (`-o`) are given as validated (name, value) pairs, never as a user's string.
A destination may be a file descriptor corral opened itself: qemu-img then writes /dev/fd/N
and resolves no path of its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.errors import CommandFailed, QemuError
from corral.run import run

FORMATS = ("qcow2", "raw")

CreateOptions = tuple[tuple[str, str], ...]  # e.g. (("cluster_size", "65536"),), validated


def _options(options: CreateOptions) -> list[str]:
    return ["-o", ",".join(f"{name}={value}" for name, value in options)] if options else []


def _target(dst: Path | int) -> tuple[Path, tuple[int, ...]]:
    """A destination path for qemu-img, and the descriptors the child must inherit for it."""
    if isinstance(dst, int):
        return Path(f"/dev/fd/{dst}"), (dst,)
    return dst, ()


@dataclass(frozen=True)
class ImageInfo:
    """What `qemu-img info` tells about one file."""

    format: str
    virtual_size: int
    actual_size: int
    backing_file: str | None
    data_file: str | None
    snapshots: tuple[dict[str, Any], ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageInfo:
        specific = (data.get("format-specific") or {}).get("data") or {}
        return cls(
            format=data["format"],
            virtual_size=int(data["virtual-size"]),
            actual_size=int(data.get("actual-size", 0)),
            backing_file=data.get("full-backing-filename") or data.get("backing-filename"),
            data_file=specific.get("data-file"),
            snapshots=tuple(data.get("snapshots") or ()),
        )


class QemuImg:
    """qemu-img at a given path."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _run(
        self, *args: str | Path, timeout: float = 600, pass_fds: tuple[int, ...] = ()
    ) -> bytes:
        try:
            return run([self.path, *args], timeout=timeout, pass_fds=pass_fds).stdout
        except CommandFailed as exc:
            tail = exc.stderr.strip().splitlines()
            raise QemuError(f"qemu-img {args[0]} failed: {tail[-1] if tail else exc}") from exc

    def info(self, path: Path, fmt: str | None = None) -> ImageInfo:
        """Inspect one file; with fmt=None qemu-img probes (only ever for files being imported)."""
        args: list[str | Path] = ["info", "--output=json"]
        if fmt:
            args += ["-f", fmt]
        return ImageInfo.from_json(json.loads(self._run(*args, path, timeout=60)))

    def chain(self, path: Path, fmt: str) -> list[ImageInfo]:
        """The whole backing chain, top first; each link's format comes from its parent's header."""
        out = self._run("info", "--output=json", "--backing-chain", "-f", fmt, path, timeout=60)
        data = json.loads(out)
        return [ImageInfo.from_json(d) for d in (data if isinstance(data, list) else [data])]

    def create(
        self, path: Path, size: int, fmt: str = "qcow2", options: CreateOptions = ()
    ) -> None:
        self._run("create", "-q", "-f", fmt, *_options(options), path, str(size), timeout=60)

    def create_overlay(self, path: Path, backing: Path, backing_fmt: str, size: int) -> None:
        """A copy-on-write qcow2 on `backing`: costs the same whatever the backing file's size."""
        self._run(
            "create", "-q", "-f", "qcow2", "-b", str(backing), "-F", backing_fmt,
            path, str(size), timeout=60,
        )  # fmt: skip

    def resize(self, path: Path, size: int, fmt: str) -> None:
        self._run("resize", "-q", "-f", fmt, path, str(size), timeout=60)

    def check(self, path: Path, fmt: str) -> None:
        self._run("check", "-q", "-f", fmt, path, timeout=600)

    def convert(
        self,
        src: Path,
        src_fmt: str,
        dst: Path | int,
        dst_fmt: str,
        *,
        compress: bool = False,
        force_share: bool = False,
        backing: Path | None = None,
        backing_fmt: str | None = None,
        options: CreateOptions = (),
    ) -> None:
        """Copy an image (flattening its chain, or only what differs from `backing`).

        `dst` is a path, or the descriptor of a file corral created (written as /dev/fd/N).
        """
        target, fds = _target(dst)
        args: list[str | Path] = ["convert", "-q", "-f", src_fmt, "-O", dst_fmt, *_options(options)]
        if compress:
            args.append("-c")
        if force_share:
            args.append("-U")
        if backing is not None:
            args += ["-B", str(backing), "-F", backing_fmt or "qcow2"]
        self._run(*args, src, target, timeout=3600, pass_fds=fds)

    def rebase(self, path: Path, backing: Path, backing_fmt: str) -> None:
        """Put `path` on a new backing file, writing into it whatever the old chain changed."""
        self._run(
            "rebase", "-q", "-f", "qcow2", "-b", str(backing), "-F", backing_fmt, path,
            timeout=3600,
        )  # fmt: skip

    def rebase_unsafe(self, path: Path, backing: str, backing_fmt: str) -> None:
        """Rewrite only the backing file name in the header (the data is known to match)."""
        self._run("rebase", "-q", "-u", "-f", "qcow2", "-b", backing, "-F", backing_fmt, path)

    def create_on(
        self, path: Path, backing: Path, backing_fmt: str, size: int, options: CreateOptions = ()
    ) -> None:
        """A qcow2 overlay on `backing`, created without opening it (size given)."""
        self._run(
            "create", "-q", "-f", "qcow2", *_options(options), "-u", "-b", str(backing),
            "-F", backing_fmt, path, str(size), timeout=60,
        )  # fmt: skip

    def snapshot(self, path: Path, action: str, tag: str) -> None:
        """Internal snapshot: action is -c (create), -a (apply) or -d (delete)."""
        # `qemu-img snapshot` has no -f: name the driver through --image-opts so nothing probes.
        opts = f"driver=qcow2,file.filename={str(path).replace(',', ',,')}"
        self._run("snapshot", "--image-opts", action, tag, opts, timeout=600)

"""The build layer store: one directory per published layer, named by the step's ID.

    builds/layers/<id>/disk.qcow2   the layer (a qcow2 whose backing file is its parent's)
    builds/layers/<id>/log          what the step printed (replayed on a cache hit)
    builds/layers/<id>/meta.json    parent, op, base image and boot details, sizes, times
    builds/layers/tmp-<rand>/       a step being built (a sibling, so relative backing names
                                    resolve the same before and after publication)
    builds/locks/<id>.lock, .log    held, and written live, while a step runs
    builds/caches/<name>.qcow2      persistent cache disks (and their <name>.lock)
    builds/warm/<id>/disk.qcow2     a warm state: the build VM's disk at the save (backed by
    builds/warm/<id>/state          the base image's blob), the RAM and device state, the seed
    builds/warm/<id>/seed.iso       the VM booted with, and meta.json (what it was made for,
    builds/warm/<id>/meta.json      what a restore requires); `broken` once a restore failed
    builds/warm/tmp-<pid>-<rand>/   one being made (a crash leaves only this; purged like
                                    a step's)
    builds/run/<pid>-<rand>/        a build VM's sockets, pidfile and console; `owner` says
                                    which process runs it and `qemu` its QEMU (each as pid
                                    and start time), so an orphan VM can be found and told
                                    from a process that reuses its pid

A layer's backing file is "../<parent-id>/disk.qcow2" (or, for the first step, the base
image's blob in the image store, or a warm state's disk: "../../warm/<id>/disk.qcow2", and
its meta names that warm state, which is then kept as long as the layer is). Publication is one
rename of the whole directory, so a crash
leaves either nothing or a complete layer. The base layer of a spec is just a meta.json: its
disk is the image blob.

Names that come from outside (a spec's cache ids, layer IDs given to `build rm` or to
`launch build:ID`) are checked against their patterns before they touch a path, and cache
files are opened inside builds/caches without following links.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral import confine
from corral.builds.spec import CACHE_NAME
from corral.errors import CorralError, InvalidInput, NotFound, QemuError
from corral.fsutil import pid_alive, process_start_time, same_process, write_atomic
from corral.layout import Home

if TYPE_CHECKING:
    from corral.image.qemu_img import QemuImg

LAYER_ID = re.compile(r"[0-9a-f]{64}")
WARM_ID = re.compile(r"[0-9a-f]{32}")
_LAYER_PREFIX = re.compile(r"[0-9a-f]{8,64}")
OWNER_FILE = "owner"  # in a run directory: "PID START" of the process running the VM
QEMU_FILE = "qemu"  # in a run directory: "PID START" of its QEMU, written right after spawn
CACHE_DISK_SIZE = 20 << 30  # sparse: what a cache may grow to


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Boot:
    """How to boot any layer of a spec: inherited from the base image."""

    image: str  # the image name the spec's `from` named
    digest: str  # its blob
    format: str
    kernel: str | None  # blob digests
    initrd: str | None
    cmdline: str | None
    user: str  # the image's default login user


@dataclass(frozen=True)
class LayerMeta:
    id: str
    parent: str | None  # None for a base layer
    op: str  # the op as obuilder prints it, or "(from IMAGE)"
    boot: Boot
    created_at: str = field(default_factory=_now)
    last_used_at: str = field(default_factory=_now)
    size: int = 0  # bytes of this layer's own disk file
    warm: str | None = None  # the warm state whose disk this layer's disk file stands on

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> LayerMeta:
        data = json.loads(raw)
        return cls(**{**data, "boot": Boot(**data["boot"])})


@dataclass(frozen=True)
class WarmMeta:
    """A saved, running build VM on a base layer: restored instead of booting it."""

    id: str
    family: str  # what it serves (builds/warm.family): base, boot, VM shape, login key
    base: str  # the base layer's ID
    boot: Boot
    cpus: int
    memory_mib: int
    cache_slots: int  # the cache disks the VM has (blank ones at the save)
    requirements: dict[str, Any]  # machine.warm.Requirements, as saved
    created_at: str = field(default_factory=_now)
    last_used_at: str = field(default_factory=_now)
    size: int = 0  # bytes of its disk and state files

    @property
    def op(self) -> str:
        """How `build prune` names it."""
        return (f"(warm {self.boot.image}: {self.cpus} cpus, {self.memory_mib} MiB,"
                f" {self.cache_slots} cache slots)")  # fmt: skip

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> WarmMeta:
        data = json.loads(raw)
        return cls(**{**data, "boot": Boot(**data["boot"])})


class BuildStore:
    def __init__(self, home: Home) -> None:
        self.home = home
        self.root = home.root / "builds"
        self.layers = self.root / "layers"
        self.locks = self.root / "locks"
        self.caches = self.root / "caches"
        self.runs = self.root / "run"
        self.warm = self.root / "warm"

    def ensure(self) -> None:
        for path in (self.layers, self.locks, self.caches, self.runs, self.warm):
            path.mkdir(parents=True, exist_ok=True)

    # --- layers ------------------------------------------------------------------------

    def layer_dir(self, layer_id: str) -> Path:
        if not LAYER_ID.fullmatch(layer_id):
            raise InvalidInput(f"invalid build layer ID {layer_id!r}: 64 hex digits")
        return self.layers / layer_id

    def exists(self, layer_id: str) -> bool:
        return (self.layer_dir(layer_id) / "meta.json").is_file()

    def meta(self, layer_id: str) -> LayerMeta:
        try:
            return LayerMeta.from_json((self.layer_dir(layer_id) / "meta.json").read_bytes())
        except FileNotFoundError:
            raise NotFound(f"no build layer {layer_id!r}", hint="see: corral build ls") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise CorralError(f"build layer {layer_id} is damaged: {exc}") from exc

    def resolve(self, prefix: str) -> str:
        """A full layer ID from an ID or a unique prefix of one (at least 8 characters).

        Anything else is refused before it is used as a path: a layer ID may come from an API
        caller (`launch build:ID`).
        """
        if not _LAYER_PREFIX.fullmatch(prefix):
            raise InvalidInput(
                f"invalid build layer ID {prefix!r}: 8 to 64 hex digits",
                hint="see: corral build ls",
            )
        if len(prefix) == 64 and self.exists(prefix):
            return prefix
        found = [p.name for p in self.published() if p.name.startswith(prefix)]
        if len(found) == 1:
            return found[0]
        raise NotFound(f"no build layer {prefix!r}" + (" (ambiguous)" if found else ""))

    def disk(self, layer_id: str, image_blobs: Path) -> tuple[Path, str]:
        """The disk of a layer (the image blob for a base layer) and its format."""
        meta = self.meta(layer_id)
        if meta.parent is None:
            return image_blobs / meta.boot.digest, meta.boot.format
        return self.layer_dir(layer_id) / "disk.qcow2", "qcow2"

    def log(self, layer_id: str) -> bytes:
        try:
            return (self.layer_dir(layer_id) / "log").read_bytes()
        except FileNotFoundError:
            return b""

    def touch(self, layer_id: str) -> None:
        with contextlib.suppress(NotFound, CorralError, OSError):
            meta = self.meta(layer_id)
            updated = LayerMeta(**{**asdict(meta), "boot": meta.boot, "last_used_at": _now()})
            write_atomic(self.layer_dir(layer_id) / "meta.json", updated.to_json())

    def published(self) -> list[Path]:
        if not self.layers.is_dir():
            return []
        return sorted(p for p in self.layers.iterdir() if not p.name.startswith("tmp-"))

    def all_meta(self) -> list[LayerMeta]:
        out = []
        for path in self.published():
            with contextlib.suppress(NotFound, CorralError):
                out.append(self.meta(path.name))
        return out

    def new_tmp(self) -> Path:
        """A directory for a step being built, named for this process (cleaned if it dies)."""
        self.ensure()
        path = self.layers / f"tmp-{os.getpid()}-{secrets.token_hex(4)}"
        path.mkdir()
        return path

    def publish(self, tmp: Path, meta: LayerMeta, log: bytes) -> None:
        """Write the log and meta into tmp, then rename it to the layer's directory."""
        (tmp / "log").write_bytes(log)
        disk = tmp / "disk.qcow2"
        size = disk.stat().st_size if disk.exists() else 0
        final = LayerMeta(**{**asdict(meta), "boot": meta.boot, "size": size})
        write_atomic(tmp / "meta.json", final.to_json())
        target = self.layer_dir(meta.id)
        try:
            tmp.rename(target)
        except OSError:
            if not self.exists(meta.id):  # another build published the same step first
                raise
            shutil.rmtree(tmp, ignore_errors=True)

    def purge_tmp(self) -> None:
        """Remove step and warm state directories of processes that have died.

        Run directories are not removed here: their QEMU may still run (see vm.stop_orphans).
        """
        for root in (self.layers, self.warm):
            if not root.is_dir():
                continue
            for path in root.iterdir():
                if not path.name.startswith("tmp-"):
                    continue
                pid = path.name.removeprefix("tmp-").split("-", 1)[0]
                if not (pid.isdigit() and pid_alive(int(pid))):
                    shutil.rmtree(path, ignore_errors=True)

    # --- warm states -----------------------------------------------------------------------

    def warm_dir(self, warm_id: str) -> Path:
        if not WARM_ID.fullmatch(warm_id):
            raise InvalidInput(f"invalid warm state ID {warm_id!r}: 32 hex digits")
        return self.warm / warm_id

    def warm_meta(self, warm_id: str) -> WarmMeta:
        try:
            return WarmMeta.from_json((self.warm_dir(warm_id) / "meta.json").read_bytes())
        except FileNotFoundError:
            raise NotFound(f"no warm state {warm_id!r}") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise CorralError(f"warm state {warm_id} is damaged: {exc}") from exc

    def warm_states(self) -> list[WarmMeta]:
        """Every published warm state (broken ones included: layers may stand on them)."""
        if not self.warm.is_dir():
            return []
        out = []
        for path in sorted(self.warm.iterdir()):
            if WARM_ID.fullmatch(path.name):
                with contextlib.suppress(NotFound, CorralError):
                    out.append(self.warm_meta(path.name))
        return out

    def warm_usable(self, warm_id: str) -> bool:
        """False once a restore from it failed (it is never tried again)."""
        return not (self.warm_dir(warm_id) / "broken").exists()

    def mark_warm_broken(self, warm_id: str, reason: str) -> None:
        with contextlib.suppress(OSError):
            write_atomic(self.warm_dir(warm_id) / "broken", reason.encode() + b"\n")

    def new_warm_tmp(self) -> Path:
        """A directory for a warm state being made, named for this process."""
        self.ensure()
        path = self.warm / f"tmp-{os.getpid()}-{secrets.token_hex(4)}"
        path.mkdir(mode=0o700)
        return path

    def publish_warm(self, tmp: Path, meta: WarmMeta) -> None:
        """Write the meta into tmp, then rename it to the warm state's directory."""
        size = sum(p.stat().st_size for p in (tmp / "disk.qcow2", tmp / "state"))
        write_atomic(tmp / "meta.json", replace(meta, size=size).to_json())
        tmp.rename(self.warm_dir(meta.id))

    def touch_warm(self, warm_id: str) -> None:
        with contextlib.suppress(NotFound, CorralError, OSError):
            meta = replace(self.warm_meta(warm_id), last_used_at=_now())
            write_atomic(self.warm_dir(warm_id) / "meta.json", meta.to_json())

    def warm_users(self) -> dict[str, list[str]]:
        """The layers standing on each warm state."""
        users: dict[str, list[str]] = {}
        for meta in self.all_meta():
            if meta.warm is not None:
                users.setdefault(meta.warm, []).append(meta.id)
        return users

    def remove_warm(self, warm_id: str) -> bool:
        """Remove a warm state no layer stands on (callers make sure no build is restoring
        it: they hold the store lock exclusively, or its family's lock); False if in use."""
        if self.warm_users().get(warm_id):
            return False
        shutil.rmtree(self.warm_dir(warm_id), ignore_errors=True)
        return True

    # --- VM run directories ----------------------------------------------------------------

    def new_run_dir(self) -> Path:
        """A directory for one build VM, marked with this process as its owner."""
        self.ensure()
        pid = os.getpid()
        path = self.runs / f"{pid}-{secrets.token_hex(4)}"
        path.mkdir(mode=0o700)
        write_atomic(path / OWNER_FILE, f"{pid} {process_start_time(pid)}\n".encode(), 0o600)
        return path

    def orphan_runs(self) -> list[Path]:
        """Run directories whose owner has gone: its pid is dead or now another process's."""
        if not self.runs.is_dir():
            return []
        return sorted(p for p in self.runs.iterdir() if not _owner_alive(p))

    def children(self) -> dict[str, list[str]]:
        kids: dict[str, list[str]] = {}
        for meta in self.all_meta():
            if meta.parent is not None:
                kids.setdefault(meta.parent, []).append(meta.id)
        return kids

    def remove(self, layer_id: str) -> None:
        """Remove one layer; refused while other layers stand on it."""
        layer_id = self.resolve(layer_id)
        kids = self.children().get(layer_id, [])
        if kids:
            raise CorralError(
                f"build layer {layer_id[:12]} has {len(kids)} child layer(s); remove them first"
            )
        with self.step_lock(layer_id, blocking=False):
            shutil.rmtree(self.layer_dir(layer_id), ignore_errors=True)

    def referenced_blobs(self) -> set[str]:
        """Image blobs the build layers stand on: image garbage collection must keep them."""
        keep: set[str] = set()
        for boot in [m.boot for m in self.all_meta()] + [w.boot for w in self.warm_states()]:
            keep.update(d for d in (boot.digest, boot.kernel, boot.initrd) if d)
        return keep

    # --- locks -------------------------------------------------------------------------

    @contextlib.contextmanager
    def step_lock(self, layer_id: str, *, blocking: bool = True) -> Iterator[bool]:
        """Hold the lock of one step ID; yields False (without waiting) if busy and not blocking."""
        self.ensure()
        fd = os.open(self.locks / f"{layer_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def live_log(self, layer_id: str) -> Path:
        """Where the build running a step writes its output as it comes (others follow it)."""
        return self.locks / f"{layer_id}.log"

    def cache_disk(self, name: str) -> Path:
        if not CACHE_NAME.fullmatch(name):
            raise InvalidInput(f"invalid cache id {name!r}: a name, not a path")
        return self.caches / f"{name}.qcow2"

    @contextlib.contextmanager
    def _cache_dir(self) -> Iterator[int]:
        self.ensure()
        with confine.open_dir(self.root, ("caches",), what="build cache directory") as fd:
            yield fd

    def cache_lock(self, name: str) -> int:
        """An open (not yet locked) descriptor of a cache's lock file, made inside caches/."""
        lock = self.cache_disk(name).with_suffix(".lock").name
        with self._cache_dir() as dir_fd:
            return _open_cache_file(dir_fd, lock, os.O_RDWR | os.O_CREAT, name)

    def open_cache(self, name: str, qemu_img: QemuImg, size: int) -> Path:
        """The path of cache `name`'s disk, created empty on first use (the caller holds the
        lock from `cache_lock`).

        The disk is a file of builds/caches itself (not a link, not through one) and a qcow2
        as corral makes it (no backing or external data file), checked before QEMU gets it:
        a build attaches it read-write and formats it if it does not mount.
        """
        disk = self.cache_disk(name)
        with self._cache_dir() as dir_fd:
            real = confine.fd_path(dir_fd) / disk.name
            try:
                os.close(_open_cache_file(dir_fd, disk.name, os.O_RDONLY, name))
            except FileNotFoundError:
                fd, tmp = confine.create_exclusive(dir_fd, f".{name}.", ".tmp")
                os.close(fd)
                try:
                    qemu_img.create(real.with_name(tmp), size)
                    os.rename(tmp, disk.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp, dir_fd=dir_fd)
                    raise
            hint = f"remove {disk}; the next build starts with an empty cache"
            try:  # the format given, never probed: a raw file stays raw
                info = qemu_img.info(real, "qcow2")
            except QemuError as exc:
                raise CorralError(
                    f"build cache {name!r} ({disk}) is not a qcow2 disk: {exc.message}", hint=hint
                ) from exc
            if info.backing_file or info.data_file:
                raise CorralError(
                    f"build cache {name!r} ({disk}) is not a disk corral made: it refers to"
                    f" {info.backing_file or info.data_file}",
                    hint=hint,
                )
        return real

    def describe(self) -> list[dict[str, Any]]:
        return [asdict(m) for m in self.all_meta()]


def _open_cache_file(dir_fd: int, file: str, flags: int, name: str) -> int:
    try:  # O_NONBLOCK: a fifo planted there is refused rather than waited on
        return confine.open_file(dir_fd, file, flags | os.O_NONBLOCK, 0o600)
    except InvalidInput:
        raise InvalidInput(f"build cache {name!r}: {file} is not a regular file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidInput(
                f"build cache {name!r}: {file} is a symbolic link; corral does not follow it",
                hint="remove it from the build cache directory",
            ) from None
        raise


def _owner_alive(run_dir: Path) -> bool:
    """Whether the process that made a run directory still runs (and is that process)."""
    try:
        pid_text, start_text = (run_dir / OWNER_FILE).read_text().split()
        pid, start = int(pid_text), int(start_text) if start_text.isdigit() else None
    except FileNotFoundError:
        # Made before the owner file was written, or by an older corral: the name's pid.
        head = run_dir.name.split("-", 1)[0]
        return head.isdigit() and pid_alive(int(head))
    except (OSError, ValueError):
        return False
    return same_process(pid, start)


def store_size(store: BuildStore) -> int:
    return sum(m.size for m in store.all_meta()) + sum(w.size for w in store.warm_states())


def prune(
    store: BuildStore,
    *,
    older_than_s: float | None = None,
    keep_bytes: int | None = None,
) -> list[LayerMeta | WarmMeta]:
    """Remove layers and warm states, least recently used leaves first, until the limits hold.

    A warm state is a leaf once no layer stands on it. Callers hold the store lock
    exclusively, so no running build loses a layer or warm state it stands on. With
    older_than_s, only what was unused for longer; with keep_bytes, stop at that size.
    """
    removed: list[LayerMeta | WarmMeta] = []
    now = datetime.now(UTC)
    while keep_bytes is None or store_size(store) > keep_bytes:
        kids = store.children()
        users = store.warm_users()
        leaves: list[LayerMeta | WarmMeta] = [m for m in store.all_meta() if m.id not in kids]
        leaves += [w for w in store.warm_states() if not users.get(w.id)]
        if older_than_s is not None:
            leaves = [
                m for m in leaves
                if (now - datetime.fromisoformat(m.last_used_at)).total_seconds() >= older_than_s
            ]  # fmt: skip
        if not leaves:
            break
        victim = min(leaves, key=lambda m: m.last_used_at)
        if isinstance(victim, WarmMeta):
            shutil.rmtree(store.warm_dir(victim.id), ignore_errors=True)
        else:
            shutil.rmtree(store.layer_dir(victim.id), ignore_errors=True)
        removed.append(victim)
    return removed

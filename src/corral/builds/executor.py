"""Running a build spec: each `run`/`copy` step a cached qcow2 layer, one VM per build.

The recipe for a step: work out its ID from its parent and inputs -> take the step's lock ->
if it is published, replay its log (cache hit) -> else make sure a VM stands on the parent
layer (the running one, or boot one) -> run the step -> checkpoint the VM's disk and publish
it as the step's layer. Consecutive uncached steps share one VM, so an N-step build boots the
guest once. A failed step publishes nothing; its VM and disk are removed.

A VM that starts on a base layer is restored from the base's warm state rather than booted
(warm.py), unless the build asks for cold starts; a VM on any other layer is booted.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shlex
import shutil
import signal
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from corral.builds import copying
from corral.builds.commands import (
    CacheMount,
    extract_script,
    run_script,
    stage_secret_script,
    user_ids,
)
from corral.builds.copying import ContextCopy
from corral.builds.sexp import START, SpecError
from corral.builds.spec import Copy, Run, Spec, effective_workdirs, format_op
from corral.builds.step_ids import base_id, child_build_material, copy_material, step_id
from corral.builds.steps import Step, StepContext
from corral.builds.store import CACHE_DISK_SIZE, Boot, BuildStore, LayerMeta
from corral.builds.vm import BuildVm, WarmRestoreFailed, cache_serial, stop_orphans
from corral.builds.warm import Found, Shape, check_cache_sizes, ensure
from corral.context import Context
from corral.errors import CorralError, InvalidInput, NotFound
from corral.fsutil import locked
from corral.machine.console import following_async

Sink = Callable[[bytes], None]


class BuildFailed(CorralError):
    """A step of the build failed (its command exited non-zero, or its VM did)."""


@dataclass(frozen=True)
class BuildOptions:
    context: Path
    secrets: Mapping[str, bytes] = field(default_factory=dict)
    cpus: int = 2
    memory_mib: int = 2048
    boot_timeout: float = 300
    jobs: int = 2
    warm: bool = True  # start VMs on a base layer from its warm state (False: boot them)


async def _aiter(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def _quiet(text: str) -> None:
    pass


class Runner:
    """The VM a spec's steps run in: booted on demand, checkpointed after each step."""

    def __init__(self, ctx: Context, store: BuildStore, options: BuildOptions, boot: Boot,
                 caches: list[str], say: Callable[[str], None] = _quiet) -> None:  # fmt: skip
        self.ctx, self.store, self.options, self.boot = ctx, store, options, boot
        self.cache_names = sorted(set(caches))
        self.say = say
        self.vm: BuildVm | None = None
        self.tmp: Path | None = None  # the directory of the VM's current top disk
        self.layer: str | None = None  # the layer the current top stands on
        self.warm: str | None = None  # the warm state the current top stands on, if it does
        self.held: list[int] = []  # lock fds: a VM slot and the caches

    async def on(self, layer: str) -> BuildVm:
        """A VM whose disk is exactly `layer` (plus nothing yet)."""
        if self.vm is not None and self.layer == layer:
            return self.vm
        await self.close()
        self.held.append(await _take_slot(self.store, self.options.jobs))
        caches = {}
        for name in self.cache_names:  # sorted: two builds never wait on each other in a cycle
            fd = self.store.cache_lock(name)
            self.held.append(fd)
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            caches[name] = await asyncio.to_thread(
                self.store.open_cache, name, self.ctx.qemu_img, CACHE_DISK_SIZE
            )
        if self.options.warm and self.boot.kernel and self.store.meta(layer).parent is None:
            self.vm = await self._restore(layer, caches)
        if self.vm is None:
            self.tmp = self.store.new_tmp()
            top = self.tmp / "disk.qcow2"
            disk, fmt = self.store.disk(layer, self.ctx.home.blobs)
            # A published layer is named relative to its siblings: the chain survives renames.
            backing = str(disk) if disk.parent == self.ctx.home.blobs else f"../{layer}/disk.qcow2"
            await asyncio.to_thread(_create_top, self.ctx, top, backing, fmt, self.tmp)
            self.vm = await BuildVm.boot(
                self.ctx, self.store, self.boot, top, caches=caches, cpus=self.options.cpus,
                memory_mib=self.options.memory_mib, timeout=self.options.boot_timeout,
            )  # fmt: skip
        self.layer = layer
        return self.vm

    async def _restore(self, layer: str, caches: dict[str, Path]) -> BuildVm | None:
        """A VM on base layer `layer` restored from its warm state (made now if there is none),
        or None when it must boot instead: a cache disk of another size, or a state that
        fails to restore (it is marked and never tried again)."""
        why = await asyncio.to_thread(check_cache_sizes, self.ctx, caches)
        if why is not None:
            self.say(f"(booting, not starting warm: {why})\n")
            return None
        shape = Shape(self.options.cpus, self.options.memory_mib, len(caches))
        found = await ensure(self.ctx, self.store, self.boot, layer, shape,
                             timeout=self.options.boot_timeout, say=self.say)  # fmt: skip
        warm = found.meta
        self.tmp = self.store.new_tmp()
        top = self.tmp / "disk.qcow2"
        backing = f"../../{self.store.warm.name}/{warm.id}/disk.qcow2"
        await asyncio.to_thread(_create_top, self.ctx, top, backing, "qcow2", self.tmp)
        try:
            vm = await BuildVm.restore(
                self.ctx, self.store, self.boot, top, self.store.warm_dir(warm.id),
                caches=caches, cpus=shape.cpus, memory_mib=shape.memory_mib,
                timeout=self.options.boot_timeout,
            )  # fmt: skip
        except WarmRestoreFailed as exc:
            self.store.mark_warm_broken(warm.id, exc.message)
            self.say(f"(the warm state of {self.boot.image} did not restore: {exc.message};"
                     " booting)\n")  # fmt: skip
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
            return None
        self.warm = warm.id
        return vm

    async def commit(self, meta: LayerMeta, log: bytes) -> None:
        """The step succeeded: its disk becomes layer meta.id; the VM goes on above it."""
        assert self.vm is not None and self.tmp is not None
        new_tmp = self.store.new_tmp()
        # The next top names this step's disk where publication is about to put it.
        await self.vm.checkpoint(new_tmp / "disk.qcow2", f"../{meta.id}/disk.qcow2")
        if self.warm is not None:  # this disk stands on the warm state's: it must stay
            meta = replace(meta, warm=self.warm)
        self.store.publish(self.tmp, meta, log)
        self.tmp, self.layer, self.warm = new_tmp, meta.id, None

    async def close(self) -> None:
        if self.vm is not None:
            await self.vm.close()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        for fd in self.held:
            os.close(fd)
        self.vm, self.tmp, self.layer, self.warm, self.held = None, None, None, None, []


def _create_top(ctx: Context, top: Path, backing: str, fmt: str, where: Path) -> None:
    from corral.run import run

    run([ctx.config.qemu_img, "create", "-q", "-f", "qcow2", "-b", backing, "-F", fmt, top],
        cwd=where, timeout=60)  # fmt: skip
    _check_chain(ctx, top)


def _check_chain(ctx: Context, top: Path) -> None:
    """Every backing file of a build disk is a build layer or an image blob."""
    store = BuildStore(ctx.home)
    roots = [store.layers.resolve(), store.warm.resolve(), ctx.home.blobs.resolve()]
    for link in ctx.qemu_img.chain(top, "qcow2"):
        if link.backing_file:
            path = Path(link.backing_file).resolve()
            if not any(path.is_relative_to(r) for r in roots):
                raise InvalidInput(f"{top}: backing file {link.backing_file} is outside corral")


async def _lock(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
    return fd


async def _take_slot(store: BuildStore, jobs: int) -> int:
    """One of `jobs` host-wide VM slots: at most that many build VMs run at once."""
    store.ensure()
    while True:
        for slot in range(max(1, jobs)):
            fd = os.open(store.locks / f"vm-slot-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                os.close(fd)
        await asyncio.sleep(0.2)


class Builder:
    def __init__(self, ctx: Context, options: BuildOptions, out: Sink) -> None:
        self.ctx, self.options, self.out = ctx, options, out
        self.store = BuildStore(ctx.home)
        self.interrupted = False  # Ctrl-C seen

    def _on_interrupt(self, task: asyncio.Task[Any]) -> None:
        self.interrupted = True
        task.cancel()

    def _check_interrupted(self) -> None:
        """A Ctrl-C is honoured here even if a library swallowed its cancellation."""
        if self.interrupted:
            raise asyncio.CancelledError

    def say(self, text: str) -> None:
        self.out(text.encode())

    async def build(self, spec: Spec) -> str:
        """Build spec (its child builds first) and return the final layer's ID.

        In the main thread, Ctrl-C cancels the build and is remembered: a cancellation can be
        lost in a library (Python 3.11's wait_for), so steps check for it before they run, and
        every further Ctrl-C cancels again.
        """
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        handling = False
        if task is not None and threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.add_signal_handler(signal.SIGINT, self._on_interrupt, task)
                handling = True
        try:
            self._check_bases(spec)
            self.store.ensure()
            for pid in await asyncio.to_thread(stop_orphans, self.store):
                self.say(f"(stopped the VM of a build that died: QEMU pid {pid})\n")
            self.store.purge_tmp()
            final = await self._spec(spec, {})
            self._check_interrupted()
        finally:
            if handling:
                loop.remove_signal_handler(signal.SIGINT)
        self.say(f'Got: "{final}"\n')
        return final

    def _check_bases(self, spec: Spec) -> None:
        """Every image the spec and its child builds start from exists: checked before any
        VM boots, and reported at the position of its (from ...)."""
        for child in spec.builds:
            self._check_bases(child.spec)
        try:
            self.ctx.store.get(spec.base)
        except (InvalidInput, NotFound) as exc:
            raise SpecError(spec.base_pos or START, exc.message, hint=exc.hint) from None

    async def _spec(self, spec: Spec, outer: Mapping[str, str]) -> str:
        results = dict(outer)
        for child in spec.builds:  # a child sees the outer builds and its earlier siblings
            results[child.name] = await self._spec(child.spec, results)
        parent, boot = base_layer(self.ctx, self.store, spec.base)
        self.say(f"(from {spec.base})\n")
        self.say(f'---> using "{parent}" from cache\n')
        caches = [c.id for op in spec.ops if isinstance(op, Run) for c in op.cache]
        runner = Runner(self.ctx, self.store, self.options, boot, caches, self.say)
        try:
            context = StepContext()
            for op, workdir in zip(spec.ops, effective_workdirs(spec.ops), strict=True):
                if isinstance(op, Run | Copy):
                    step = Step(op, context, workdir)
                    parent = await self._step(step, parent, boot, results, runner)
                else:
                    self.say(f"{workdir}: {format_op(op)}\n")
                    context = context.apply(op)
        finally:
            await runner.close()
        return parent

    def _inputs(
        self, step: Step, results: Mapping[str, str]
    ) -> tuple[dict[str, bytes], bytes | None, ContextCopy | None]:
        """What the step's ID is made from besides the step: its secrets, or what it copies.

        A copy from the context is walked here, once: its tar is made from the same walk.
        """
        op = step.op
        if isinstance(op, Run):
            missing = [s.id for s in op.secrets if s.id not in self.options.secrets]
            if missing:
                raise InvalidInput(
                    f"secret {missing[0]!r} is not given", hint=f"--secret {missing[0]}:FILE"
                )
            return {s.id: self.options.secrets[s.id] for s in op.secrets}, None, None
        if op.from_build is not None:
            return {}, child_build_material(results[op.from_build]), None
        copy = ContextCopy.walk(self.options.context, op)
        return {}, copy_material(copy.entries), copy

    async def _step(self, step: Step, parent: str, boot: Boot, results: Mapping[str, str],
                    runner: Runner) -> str:  # fmt: skip
        secrets, manifest, copy = self._inputs(step, results)
        sid = step_id(parent, step, secrets=secrets, copy_manifest=manifest)
        self.say(f"{step.workdir_shown}: {format_op(step.op)}\n")
        async with self._claim(sid) as followed:
            if self.store.exists(sid):
                if not followed:
                    self.out(self.store.log(sid))
                self.store.touch(sid)
                self.say(f'---> using "{sid}" from cache\n')
                return sid
            log = bytearray()
            live = open(self.store.live_log(sid), "wb")  # noqa: SIM115 - closed below

            def sink(data: bytes) -> None:
                self.out(data)
                log.extend(data)
                live.write(data)
                live.flush()

            try:
                self._check_interrupted()
                vm = await runner.on(parent)
                self._check_interrupted()
                code = await self._execute(vm, step, secrets, copy, results, sink)
                if code != 0:
                    await runner.close()
                    raise BuildFailed(
                        f"step failed with exit code {code}: {format_op(step.op)}",
                        hint="nothing of this step was cached; fix it and build again",
                    )
                meta = LayerMeta(sid, parent, format_op(step.op), boot)
                await runner.commit(meta, bytes(log))
            finally:
                live.close()
                self.store.live_log(sid).unlink(missing_ok=True)
        self.say(f'---> saved as "{sid}"\n')
        return sid

    @contextlib.asynccontextmanager
    async def _claim(self, sid: str) -> AsyncIterator[bool]:
        """Hold the step's lock; while another build holds it, follow that build's output."""
        with self.store.step_lock(sid, blocking=False) as got:
            if got:
                yield False
                return
        self.say("(another build is running this step; following it)\n")
        async with following_async(self.store.live_log(sid), self.out, poll=0.1):
            fd = await _lock(self.store.locks / f"{sid}.lock")
        try:
            yield True
        finally:
            os.close(fd)

    async def _execute(self, vm: BuildVm, step: Step, secrets: Mapping[str, bytes],
                       copy: ContextCopy | None, results: Mapping[str, str],
                       sink: Sink) -> int:  # fmt: skip
        op = step.op
        if isinstance(op, Run):
            for index, secret in enumerate(op.secrets):
                await vm.run(stage_secret_script(index), sink=sink, stdin=secrets[secret.id])
            mounts = [
                CacheMount(c.id, cache_serial(c.id), c.target) for c in op.cache
            ]  # fmt: skip
            network = "host" in op.network
            if network:
                await vm.set_network(True)
            try:
                return await vm.run(run_script(step.context, op, mounts), sink=sink)
            finally:
                if network:
                    await vm.set_network(False)
        ids = (await vm.output(f'{user_ids(step.context.user)}; echo "$U $G"')).split()
        uid, gid = int(ids[0]), int(ids[1])
        dirs = copying.parent_dirs(op.src, op.dst, step.context.workdir)
        script = extract_script(step.context.user, copying.extract_command(uid, gid, dirs))
        if op.from_build is None:
            assert copy is not None  # walked by _inputs, for the step's ID
            stream = copy.tar(step.context.workdir, uid, gid)
            return await vm.run(script, sink=sink, stdin=_aiter(stream))
        with tempfile.TemporaryFile() as exported:
            await self._export(results[op.from_build], op, exported)
            exported.seek(0)
            stream = copying.retarget_tar(exported, op.src, op.dst, step.context.workdir, uid, gid)
            return await vm.run(script, sink=sink, stdin=_aiter(stream))

    async def _export(self, layer: str, op: Copy, into: IO[bytes]) -> None:
        """Boot a VM on a child build's result and tar the copy's sources out of it."""
        meta = self.store.meta(layer)
        child = Runner(self.ctx, self.store, self.options, meta.boot, [])
        try:
            vm = await child.on(layer)
            errors = bytearray()
            script = shlex.join(copying.guest_export_command(op.src, op.exclude))

            def write(data: bytes) -> None:
                into.write(data)

            code = await vm.run(script, sink=write, stderr=errors.extend)
            if code != 0:
                raise BuildFailed(
                    f"copying {', '.join(op.src)} from build {op.from_build!r} failed: "
                    f"{errors.decode(errors='replace').strip()[-200:]}"
                )
        finally:
            await child.close()


def base_layer(ctx: Context, store: BuildStore, image_name: str) -> tuple[str, Boot]:
    """The base layer of builds from an image (published on first use) and how it boots."""
    image = ctx.store.get(image_name)
    boot = Boot(image.name, image.digest, image.format, image.kernel, image.initrd,
                image.cmdline, image.default_user)  # fmt: skip
    layer = base_id(image.digest)
    if not store.exists(layer):
        store.publish(store.new_tmp(), LayerMeta(layer, None, f"(from {image_name})", boot), b"")
    return layer, boot


def warm_up(ctx: Context, image_name: str, options: BuildOptions, cache_slots: int,
            out: Sink) -> Found:  # fmt: skip
    """`corral build warm`: the warm state builds from this image in VMs of this shape start
    from, made now if there is none. Like a build, it holds the store lock shared and a VM
    slot while its VM runs."""
    store = BuildStore(ctx.home)

    async def run() -> Found:
        store.ensure()
        for pid in await asyncio.to_thread(stop_orphans, store):
            out(f"(stopped the VM of a build that died: QEMU pid {pid})\n".encode())
        store.purge_tmp()
        layer, boot = base_layer(ctx, store, image_name)
        if not boot.kernel:
            raise CorralError(f"image {image_name!r} has no kernel: builds boot images directly")
        slot = await _take_slot(store, options.jobs)
        try:
            shape = Shape(options.cpus, options.memory_mib, cache_slots)
            return await ensure(ctx, store, boot, layer, shape, timeout=options.boot_timeout,
                                say=lambda text: out(text.encode()))  # fmt: skip
        finally:
            os.close(slot)

    with locked(store.locks / "store.lock", shared=True):
        return asyncio.run(run())


def build(ctx: Context, spec: Spec, options: BuildOptions, out: Sink) -> str:
    """Run a build to the end; return the final layer ID.

    Builds hold the store lock shared; pruning takes it exclusively, so it never removes a
    layer that a running build stands on.
    """
    builder = Builder(ctx, options, out)
    with locked(BuildStore(ctx.home).locks / "store.lock", shared=True):
        try:
            return asyncio.run(builder.build(spec))
        except asyncio.CancelledError:
            if builder.interrupted:
                raise KeyboardInterrupt from None
            raise

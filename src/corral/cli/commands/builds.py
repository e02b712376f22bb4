"""`corral build`: run obuilder specs in VMs, and manage the layer store (ls, prune, rm)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import typer
from typer.core import TyperGroup

from corral.cli.context import get_context
from corral.cli.output import out, print_json, print_table
from corral.errors import InvalidInput
from corral.units import human_size, parse_memory_mib, parse_size


class DefaultToRun(TyperGroup):
    """`corral build -f SPEC ...` runs a build; `corral build ls|prune|rm|...` manage layers."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=DefaultToRun, help="Run obuilder build specs in VMs; manage build layers.",
                  no_args_is_help=True)  # fmt: skip


def _secrets(items: list[str]) -> dict[str, bytes]:
    secrets: dict[str, bytes] = {}
    for item in items:
        name, sep, path = item.partition(":")
        if not sep or not name or not path:
            raise InvalidInput(f"invalid --secret {item!r}: expected ID:FILE")
        try:
            secrets[name] = Path(path).read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read secret {name} from {path}: {exc.strerror}") from None
    return secrets


@app.command("run")
def run_build(
    file: Path = typer.Option(..., "--file", "-f", help="The build spec (obuilder syntax)."),
    context: Path = typer.Argument(Path(), help="The build context for copy steps."),
    secrets: list[str] = typer.Option([], "--secret", help="ID:FILE, for (secrets ...)."),
    cpus: int = typer.Option(2, "--cpus", help="vCPUs of the build VM."),
    memory: str = typer.Option("2G", "--memory", help="Memory of the build VM."),
    boot_timeout: float = typer.Option(300.0, "--boot-timeout", help="Seconds to reach SSH."),
    jobs: int = typer.Option(2, "--jobs", help="At most this many build VMs at once."),
    cold: bool = typer.Option(
        False, "--cold", help="Boot every build VM (no warm start from the base's saved state)."
    ),
) -> None:
    """Run a build spec; prints `Got: "ID"` with the final layer."""
    from corral.builds.executor import BuildOptions, build
    from corral.builds.sexp import SpecError
    from corral.builds.spec import parse_spec
    from corral.instance.registry import claim_recorded_ports

    try:
        text = file.read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read {file}: {exc.strerror}") from None

    def write(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    try:  # a mistake in the spec, found while parsing or before a VM boots, names the file
        spec = parse_spec(text)
        if not context.is_dir():
            raise InvalidInput(f"build context {context} is not a directory")
        options = BuildOptions(
            context=context.resolve(), secrets=_secrets(secrets), cpus=cpus,
            memory_mib=parse_memory_mib(memory), boot_timeout=boot_timeout, jobs=jobs,
            warm=not cold,
        )  # fmt: skip
        ctx = get_context()
        # Instances launched before the host-wide port registry existed get their ports
        # claimed there first (nothing else about them changes): a build VM cannot take them.
        claim_recorded_ports(ctx.home)
        build(ctx, spec, options, write)
    except SpecError as exc:
        exc.message = f"{file}:{exc.message}"
        raise


@app.command("ls")
def ls(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List build layers."""
    from corral.builds.store import BuildStore

    metas = BuildStore(get_context().home).all_meta()
    if json_out:
        print_json([{"id": m.id, "parent": m.parent, "op": m.op, "size": m.size,
                     "created_at": m.created_at, "last_used_at": m.last_used_at,
                     "image": m.boot.image} for m in metas])  # fmt: skip
        return
    print_table(
        ("ID", "PARENT", "SIZE", "LAST USED", "OP"),
        [(m.id[:16], (m.parent or "")[:16], human_size(m.size), m.last_used_at, m.op[:60])
         for m in sorted(metas, key=lambda m: m.created_at)],
    )  # fmt: skip


@app.command("rm")
def rm(layers: list[str] = typer.Argument(..., help="Layer IDs (or unique prefixes).")) -> None:
    """Remove build layers (refused while other layers stand on one)."""
    from corral.builds.store import BuildStore

    store = BuildStore(get_context().home)
    for layer in layers:
        store.remove(layer)
        out.print(f"removed {layer}", markup=False)


@app.command("prune")
def prune_cmd(
    older_than: str | None = typer.Option(None, "--older-than", help="e.g. 7d, 12h."),
    keep_bytes: str | None = typer.Option(None, "--keep-bytes", help="e.g. 20G."),
) -> None:
    """Remove layers and warm states, least recently used leaves first (and VMs of builds
    that died)."""
    from corral.builds.store import BuildStore, prune
    from corral.builds.vm import stop_orphans
    from corral.fsutil import locked
    from corral.image.manage import parse_age

    if older_than is None and keep_bytes is None:
        raise InvalidInput("say what to prune: --older-than AGE and/or --keep-bytes SIZE")
    store = BuildStore(get_context().home)
    store.ensure()
    for pid in stop_orphans(store):
        out.print(f"stopped the VM of a build that died (QEMU pid {pid})", markup=False)
    store.purge_tmp()
    with locked(store.locks / "store.lock"):  # waits for running builds
        removed = prune(
            store,
            older_than_s=parse_age(older_than).total_seconds() if older_than else None,
            keep_bytes=parse_size(keep_bytes, allow_zero=True) if keep_bytes else None,
        )
    for meta in removed:
        out.print(f"removed {meta.id[:16]} {human_size(meta.size)} {meta.op[:60]}", markup=False)


@app.command("warm")
def warm(
    image: str = typer.Argument(..., help="The base image builds start from."),
    cpus: int = typer.Option(2, "--cpus", help="vCPUs of the build VM (as `build --cpus`)."),
    memory: str = typer.Option("2G", "--memory", help="Memory of the build VM."),
    caches: int = typer.Option(
        0,
        "--caches",
        min=0,
        max=16,
        help="Cache disks of the build VM (the specs' (cache ...) count).",
    ),
    boot_timeout: float = typer.Option(300.0, "--boot-timeout", help="Seconds to reach SSH."),
) -> None:
    """Make the warm state builds from IMAGE start from, if there is none (builds make it on
    first use too; each VM shape has its own)."""
    import time

    from corral.builds.executor import BuildOptions, warm_up

    def write(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    options = BuildOptions(context=Path(), cpus=cpus, memory_mib=parse_memory_mib(memory),
                           boot_timeout=boot_timeout)  # fmt: skip
    started = time.monotonic()
    found = warm_up(get_context(), image, options, caches, write)
    meta = found.meta
    how = f"made in {time.monotonic() - started:.1f}s" if found.made else "already made"
    out.print(f"warm state {meta.id[:16]} of {image} ({meta.cpus} cpus, {meta.memory_mib} MiB,"
              f" {meta.cache_slots} cache slots, {human_size(meta.size)}): {how}",
              markup=False)  # fmt: skip


@app.command("healthcheck")
def healthcheck(
    image: str = typer.Option("debian-12", "--image", help="The base image to boot."),
    boot_timeout: float = typer.Option(300.0, "--boot-timeout"),
) -> None:
    """Boot a base image as a build VM and run `echo ok` in it."""
    import asyncio

    from corral.builds.executor import BuildOptions, Runner
    from corral.builds.step_ids import base_id
    from corral.builds.store import Boot, BuildStore, LayerMeta

    ctx = get_context()
    m = ctx.store.get(image)
    boot = Boot(m.name, m.digest, m.format, m.kernel, m.initrd, m.cmdline, m.default_user)
    store = BuildStore(ctx.home)
    layer = base_id(m.digest)
    if not store.exists(layer):
        store.publish(store.new_tmp(), LayerMeta(layer, None, f"(from {image})", boot), b"")

    async def check() -> bytes:
        options = BuildOptions(Path(), boot_timeout=boot_timeout, warm=False)  # it boots
        runner = Runner(ctx, store, options, boot, [])
        try:
            vm = await runner.on(layer)
            return await vm.output("echo ok")
        finally:
            await runner.close()

    out.print(asyncio.run(check()).decode().strip(), markup=False)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="build")

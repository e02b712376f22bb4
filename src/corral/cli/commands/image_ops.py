"""`corral image configure/convert/resize/export/tag/prune`: deriving and managing images."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from corral.cli.context import get_context
from corral.cli.files import read_file
from corral.cli.output import note, out, print_json, print_table
from corral.units import human_size, parse_instance_type, parse_size


def configure(
    image: str = typer.Argument(..., help="The image to start from."),
    user_data: Path = typer.Option(..., "--user-data", help="cloud-init user-data to apply."),
    as_name: str = typer.Option(..., "--as", help="Name of the configured image."),
    meta_data: Path | None = typer.Option(None, "--meta-data"),
    vendor_data: Path | None = typer.Option(None, "--vendor-data"),
    network_config: Path | None = typer.Option(None, "--network-config"),
    sysprep: bool = typer.Option(
        False, "--sysprep", help="Reset machine identity so every launch is a fresh instance."
    ),
    timeout: float = typer.Option(900.0, "--timeout", help="Seconds for cloud-init to finish."),
    instance_type: str = typer.Option("c2m2048", "--type", help="VM size while configuring."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Do not stream the console."),
) -> None:
    """Boot an image once with cloud-init, shut it down cleanly and save the result."""
    from corral.instance.configure import ConfigureOptions, configure

    itype = parse_instance_type(instance_type)
    options = ConfigureOptions(
        user_data=read_file(user_data) or b"", meta_data=read_file(meta_data),
        vendor_data=read_file(vendor_data), network_config=read_file(network_config),
        sysprep=sysprep, timeout=timeout, cpus=itype.cpus, memory_mib=itype.memory_mib,
    )  # fmt: skip

    def console(data: bytes) -> None:
        if not quiet:
            sys.stderr.buffer.write(data)
            sys.stderr.buffer.flush()

    manifest = configure(
        get_context(), image, as_name, options, console=console,
        on_stage=lambda stage: note(f"configure: {stage}"),
    )  # fmt: skip
    out.print(f"saved {manifest.name} (from {image})", markup=False)


def convert(
    name: str,
    fmt: str = typer.Option(..., "--format", help="qcow2 or raw."),
    compress: bool = typer.Option(False, "--compress", help="Compress (qcow2 only)."),
    as_name: str | None = typer.Option(None, "--as", help="Save under a new name instead."),
) -> None:
    """Rewrite an image as a standalone qcow2 or raw file."""
    from corral.image.manage import convert

    manifest = convert(get_context(), name, fmt, compress=compress, as_name=as_name)
    out.print(f"{manifest.name}: {manifest.format}, {human_size(manifest.file_size)} on disk",
              markup=False)  # fmt: skip


def resize(
    name: str,
    size: str = typer.Argument(..., help="New virtual size, e.g. 20G (never smaller)."),
    as_name: str | None = typer.Option(None, "--as", help="Save under a new name instead."),
) -> None:
    """Grow an image's virtual size."""
    from corral.image.manage import resize

    manifest = resize(get_context(), name, parse_size(size, what="size"), as_name=as_name)
    out.print(f"{manifest.name}: {human_size(manifest.virtual_size)}", markup=False)


def export(
    name: str,
    path: Path = typer.Argument(..., help="File (or directory) to write."),
    fmt: str = typer.Option("qcow2", "--format", help="qcow2 or raw."),
    compress: bool = typer.Option(False, "--compress", help="Compress (qcow2 only)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
    with_state: bool = typer.Option(
        False, "--with-state", help="A warm image's saved state too, as PATH.state."
    ),
) -> None:
    """Write an image as one standalone, flattened file."""
    from corral.image.manage import export

    written = export(
        get_context(), name, path, fmt=fmt, compress=compress, force=force, with_state=with_state
    )
    for file in written:
        out.print(f"wrote {file}", markup=False)


def warm(
    image: str = typer.Argument(..., help="The image to boot and save warm."),
    as_name: str | None = typer.Option(None, "--as", help="Name of the warm image (IMAGE-warm)."),
    instance_type: str | None = typer.Option(None, "--type", help="c<cpus>m<memory MiB>."),
    cpus: int | None = typer.Option(None, "--cpus", help="vCPUs (clones need the same)."),
    memory: str | None = typer.Option(None, "--memory", help="Memory (clones need the same)."),
    user_data: Path | None = typer.Option(None, "--user-data", help="cloud-init user-data."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds for the guest to be ready."),
) -> None:
    """Boot an image once, wait until it is ready and save it with its memory: launches of
    the warm image restore it in seconds instead of booting."""
    from corral.image_refs import resolve_image
    from corral.instance.options import LaunchRequest
    from corral.instance.warm_image import make_warm_image

    ctx = get_context()
    target = as_name or f"{image}-warm"
    request = LaunchRequest(
        name="warm", instance_type=instance_type, cpus=cpus, memory=memory,
        user_data=read_file(user_data),
    )  # fmt: skip
    manifest = make_warm_image(
        ctx, resolve_image(ctx, image), target, request.options(), timeout=timeout,
        on_stage=lambda stage: note(f"warm {image}: {stage}"),
    )  # fmt: skip
    assert manifest.warm is not None
    out.print(f"saved {manifest.name} (from {image}): state "
              f"{human_size(manifest.warm.state_size)}", markup=False)  # fmt: skip


def tag(name: str, new_name: str) -> None:
    """Give an image another name."""
    from corral.image.manage import tag

    tag(get_context(), name, new_name)
    out.print(f"{new_name} -> {name}", markup=False)


def prune(
    older_than: str | None = typer.Option(None, "--older-than", help="e.g. 7d, 12h."),
    keep_bytes: str | None = typer.Option(None, "--keep-bytes", help="e.g. 20G."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would go."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Remove unused images, least recently used first."""
    from corral.image.manage import parse_age, prune
    from corral.image_holders import image_holders

    ctx = get_context()
    pruned = prune(
        ctx,
        holders=image_holders(ctx),
        older_than=parse_age(older_than) if older_than else None,
        keep_bytes=parse_size(keep_bytes, what="size", allow_zero=True) if keep_bytes else None,
        dry_run=dry_run,
    )
    if json_out:
        print_json([{"name": p.name, "last_used": p.last_used, "freed": p.freed} for p in pruned])
        return
    print_table(("REMOVED" if not dry_run else "WOULD REMOVE", "LAST USED", "FREED"),
                [(p.name, p.last_used.isoformat(timespec="seconds"), human_size(p.freed))
                 for p in pruned])  # fmt: skip


def import_build(
    layer: str = typer.Argument(..., help="A build layer ID (as printed by `Got:`)."),
    name: str = typer.Option(..., "--name", help="Name of the new image."),
    replace: bool = typer.Option(False, "--replace", help="Replace an existing image."),
) -> None:
    """Make an image of a build's result (a layer on the spec's base image)."""
    from corral.builds.publish import import_build

    manifest = import_build(get_context(), layer, name, replace=replace)
    out.print(f"{manifest.name}: from build {layer[:16]}", markup=False)


def register(app: typer.Typer) -> None:
    for command in (configure, convert, resize, export, tag, prune, warm):
        app.command()(command)
    app.command("import-build")(import_build)

"""`corral image ...`: import, list, inspect, remove and build images."""

from __future__ import annotations

from pathlib import Path

import typer

from corral.cli.context import get_context
from corral.cli.output import note, out, print_json, print_table
from corral.image.recipes import RECIPES, build_recipe
from corral.units import human_size

app = typer.Typer(help="Manage images.", no_args_is_help=True)

JSON = typer.Option(False, "--json", help="Print JSON.")


@app.command("import")
def import_(
    path: Path = typer.Argument(..., help="A qcow2 or raw image file."),
    name: str = typer.Option(..., "--name", help="Name to store it under."),
    kernel: Path | None = typer.Option(None, help="Kernel for direct kernel boot."),
    initrd: Path | None = typer.Option(None, help="Initrd for direct kernel boot."),
    cmdline: str | None = typer.Option(None, help="Default kernel command line."),
    user: str | None = typer.Option(None, "--user", help="Default login user (default: root)."),
) -> None:
    """Import an image file into the store (format detected once, backing files refused)."""
    manifest = get_context().store.import_image(
        path, name, kernel=kernel, initrd=initrd, cmdline=cmdline, default_user=user
    )
    out.print(
        f"{manifest.name} {manifest.format} {human_size(manifest.virtual_size)} "
        f"sha256:{manifest.digest[:12]}",
        markup=False,
    )


@app.command("ls")
def ls(json_out: bool = JSON) -> None:
    """List images."""
    store = get_context().store
    manifests = store.list()
    if json_out:
        print_json([store.manifest_json(m) for m in manifests])
        return
    print_table(
        ("NAME", "FORMAT", "SIZE", "ON DISK", "KERNEL", "USER", "DIGEST"),
        [
            (
                m.name,
                m.format,
                human_size(m.virtual_size),
                human_size(m.file_size),
                "yes" if m.kernel else "no",
                m.default_user,
                m.digest[:12],
            )
            for m in manifests
        ],
    )


@app.command()
def inspect(name: str, json_out: bool = JSON) -> None:
    """Show one image."""
    store = get_context().store
    data = store.manifest_json(store.get(name))
    if json_out:
        print_json(data)
        return
    for key, value in data.items():
        out.print(f"{key + ':':14} {value}", markup=False)


@app.command()
def rm(
    name: str,
    force: bool = typer.Option(False, "--force", help="Remove even if something stands on it."),
) -> None:
    """Remove an image (refused while instances or other images use it, unless --force)."""
    from corral.image.manage import remove

    remove(get_context(), name, force=force)
    out.print(f"removed {name}", markup=False)


@app.command()
def build(
    recipe: str = typer.Argument(..., help=f"One of: {', '.join(RECIPES)}."),
    name: str | None = typer.Option(None, "--name", help="Image name (default: the recipe)."),
    packages: list[str] = typer.Option([], "--package", "-p", help="Extra Debian package."),
    replace: bool = typer.Option(False, "--replace", help="Rebuild an existing image."),
) -> None:
    """Build an image locally from Debian packages (no image download site needed)."""
    manifest = build_recipe(
        get_context(), recipe, name=name, packages=packages, replace=replace, log=note
    )
    out.print(
        f"built {manifest.name}: {manifest.format} {human_size(manifest.virtual_size)} "
        f"sha256:{manifest.digest[:12]}",
        markup=False,
    )

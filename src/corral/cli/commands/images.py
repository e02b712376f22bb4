"""`corral image ...`: import, pull, list, inspect, remove and build images."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import typer

from corral.cli.context import get_context
from corral.cli.output import err, note, out, print_json, print_table
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
        ("NAME", "FORMAT", "SIZE", "ON DISK", "KERNEL", "USER", "WARM", "DIGEST"),
        [
            (
                m.name,
                m.format,
                human_size(m.virtual_size),
                human_size(m.file_size),
                "yes" if m.kernel else "no",
                m.default_user,
                # The size a warm image restores to, as `launch --type` says it.
                f"c{m.warm.requirements.cpus}m{m.warm.requirements.memory_mib}" if m.warm else "-",
                m.digest[:12],
            )
            for m in manifests
        ],
    )


@app.command()
def inspect(name: str, json_out: bool = JSON) -> None:
    """Show one image."""
    store = get_context().store
    manifest = store.get(name)
    data = store.manifest_json(manifest)
    if json_out:
        print_json(data)
        return
    data.pop("warm", None)
    for key, value in data.items():
        out.print(f"{key + ':':14} {value}", markup=False)
    if manifest.warm is not None:
        state = manifest.warm
        agent = "with a guest agent" if state.agent else "no guest agent"
        saved = state.saved_at.isoformat(timespec="seconds")
        out.print(f"{'warm:':14} yes: state {human_size(state.state_size)}, saved {saved}, "
                  f"{agent}", markup=False)  # fmt: skip
        out.print(f"{'requires:':14} {state.requirements.describe()}", markup=False)
    else:
        out.print(f"{'warm:':14} no", markup=False)


@app.command()
def rm(
    name: str,
    force: bool = typer.Option(False, "--force", help="Remove even if something stands on it."),
) -> None:
    """Remove an image (refused while instances or other images use it, unless --force)."""
    from corral.image.manage import remove
    from corral.image_holders import image_holders

    ctx = get_context()
    remove(ctx, name, holders=image_holders(ctx), force=force)
    out.print(f"removed {name}", markup=False)


@app.command()
def build(
    recipe: str | None = typer.Argument(None, help=f"One of: {', '.join(RECIPES)}."),
    file: Path | None = typer.Option(
        None, "--file", "-f", help="A gen-vm-image architecture.yml: build every image in it."
    ),
    output: Path | None = typer.Option(
        None, "--output", help="With -f: also write each image here as NAME-VERSION.FORMAT."
    ),
    owner: str | None = typer.Option(
        None, "--owner", metavar="UID[:GID]", help="With -f: owner of the files in --output."
    ),
    no_verify: bool = typer.Option(
        False, "--no-verify", help="With -f: allow inputs that have no checksum."
    ),
    name: str | None = typer.Option(None, "--name", help="Image name (default: the recipe)."),
    packages: list[str] = typer.Option(
        [], "--packages", "--package", "-p", help="Extra Debian packages (repeat, or a,b,c)."
    ),
    user_data: Path | None = typer.Option(
        None, "--user-data", help="Configure the built image once with this cloud-init user-data."
    ),
    replace: bool = typer.Option(False, "--replace", help="Rebuild an existing image."),
) -> None:
    """Build an image from Debian packages (RECIPE), or every image of an architecture file."""
    from corral.errors import InvalidInput

    if (recipe is None) == (file is None):
        raise InvalidInput("give a RECIPE or -f ARCHITECTURE_FILE (exactly one)")
    if file is not None:
        if name or packages or user_data:
            raise InvalidInput("--name, --packages and --user-data go with a RECIPE, not with -f")
        _build_file(file, output, owner, replace=replace, verify=not no_verify)
        return
    if output or owner or no_verify:
        raise InvalidInput("--output, --owner and --no-verify go with -f, not with a RECIPE")
    assert recipe is not None
    from corral.cli.files import read_file

    ctx = get_context()
    data = read_file(user_data)
    configure = None
    if data is not None:
        from corral.instance.configure import with_user_data

        configure = with_user_data(ctx, data, console=_console, on_stage=note)
    wanted = [p for item in packages for p in item.split(",") if p.strip()]
    from corral.image_holders import image_holders

    manifest = build_recipe(
        ctx, recipe, name=name, packages=wanted, configure=configure,
        holders=lambda: image_holders(ctx), replace=replace, log=note,
    )  # fmt: skip
    out.print(
        f"built {manifest.name}: {manifest.format} {human_size(manifest.virtual_size)} "
        f"sha256:{manifest.digest[:12]}",
        markup=False,
    )


def _console(data: bytes) -> None:
    sys.stderr.buffer.write(data)
    sys.stderr.buffer.flush()


def _build_file(
    file: Path, output: Path | None, owner: str | None, *, replace: bool, verify: bool
) -> None:
    from corral.image.archfile.images import build_archfile

    with download_progress() as progress:
        built = build_archfile(
            get_context(), file, output_dir=output, owner=owner, replace=replace,
            verify=verify, progress=progress, log=note,
        )  # fmt: skip
    for item in built:
        m = item.manifest
        where = f" -> {item.output}" if item.output else ""
        out.print(
            f"built {m.name}: {m.format} {human_size(m.virtual_size)} "
            f"sha256:{m.digest[:12]}{where}",
            markup=False,
        )


@app.command()
def pull(
    ref: str = typer.Argument(
        ..., metavar="URL|ALIAS", help="An http(s):// or file:// URL, or a catalog alias."
    ),
    name: str | None = typer.Option(
        None, "--name", help="Image name (default: the alias, or the URL's file name)."
    ),
    checksum: str | None = typer.Option(
        None, "--checksum", metavar="ALGO:HEX", help="Expected digest of the file as served."
    ),
    checksum_url: str | None = typer.Option(
        None, "--checksum-url", metavar="URL", help="A SHA256SUMS-style file that lists it."
    ),
    no_verify: bool = typer.Option(
        False, "--no-verify", help="Allow a pull that no checksum can verify (not advised)."
    ),
    user: str | None = typer.Option(
        None, "--user", help="Default login user (default: the catalog's, else root)."
    ),
    replace: bool = typer.Option(False, "--replace", help="Point an existing name at it."),
    arch: str | None = typer.Option(
        None, "--arch", help="x86_64 or aarch64, for aliases (default: this host's)."
    ),
    timeout: float = typer.Option(
        30.0, "--timeout", help="Seconds to wait for the server before an attempt fails."
    ),
    retries: int = typer.Option(
        5, "--retries", min=0, help="Further attempts after a dropped connection or a 5xx."
    ),
) -> None:
    """Download a cloud image, verify its checksum and add it to the store."""
    from corral.image.fetch.download import Options
    from corral.image.fetch.pull import pull as pull_image

    with download_progress() as progress:
        pulled = pull_image(
            get_context(), ref, name=name, checksum=checksum, checksum_url=checksum_url,
            verify=not no_verify, user=user, replace=replace, arch=arch,
            options=Options(timeout=timeout, retries=retries), progress=progress, log=note,
        )  # fmt: skip
    m = pulled.manifest
    how = " (already downloaded)" if pulled.cached else ""
    out.print(
        f"pulled {m.name}: {m.format} {human_size(m.virtual_size)} sha256:{m.digest[:12]}{how}",
        markup=False,
    )


@app.command()
def catalog(
    json_out: bool = JSON,
    arch: str | None = typer.Option(None, "--arch", help="x86_64 or aarch64 (default: host's)."),
) -> None:
    """List the image aliases `corral image pull` knows (--json adds URLs and checksums)."""
    from corral.image.fetch.catalog import host_arch, load_catalog, normalize_arch

    config = get_context().config
    rows = load_catalog(config.catalog, config.catalog_file).describe(
        normalize_arch(arch) if arch else host_arch()
    )
    if json_out:
        print_json(rows)
        return
    print_table(
        ("ALIAS", "USER", "DESCRIPTION"), [(r["alias"], r["user"], r["description"]) for r in rows]
    )


@contextlib.contextmanager
def download_progress() -> Iterator[Callable[[str], Callable[[int, int | None], None]] | None]:
    """A rich progress bar per download on stderr (bytes, rate, ETA), when it is a terminal."""
    if not err.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
        TransferSpeedColumn(), TimeRemainingColumn(), console=err,
    )  # fmt: skip

    def start(label: str) -> Callable[[int, int | None], None]:
        task = bar.add_task(label, total=None)
        return lambda done, total: bar.update(task, completed=done, total=total)

    with bar:
        yield start

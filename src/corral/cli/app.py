"""The `corral` command: a thin layer over the library that maps errors to exit codes.

Mistakes the user made exit with 2 and one line (plus a hint); failures exit with 1. No
traceback reaches the user unless CORRAL_DEBUG is set.
"""

from __future__ import annotations

import gc
import logging
import os
import sys

import typer

from corral.cli.commands import (
    builds,
    image_ops,
    images,
    instances,
    networks,
    node,
    serve,
    top,
)
from corral.cli.commands import remote as remote_commands
from corral.cli.context import get_context
from corral.cli.output import err, print_json
from corral.errors import CorralError

app = typer.Typer(
    name="corral",
    help="Run QEMU virtual machines from cloud images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
image_ops.register(images.app)
app.add_typer(images.app, name="image")
instances.register(app)
builds.register(app)
node.register(app)
serve.register(app)
networks.register(app)
remote_commands.register(app)
top.register(app)


@app.callback()
def root(
    ctx: typer.Context,
    remote: str | None = typer.Option(
        None,
        "--remote",
        envvar="CORRAL_REMOTE",
        metavar="NAME|URL",
        help="Manage VMs on a control plane (corral serve) instead of this machine: "
        "a saved remote (corral remote add) or a URL.",
    ),
    token: str | None = typer.Option(
        None, "--token", envvar="CORRAL_TOKEN", help="API token for --remote URL."
    ),
) -> None:
    """Run QEMU virtual machines from cloud images."""
    if remote:
        remote_commands.select(remote, token, ctx.invoked_subcommand)


@app.command()
def doctor(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Check the host: QEMU binaries, their versions and the accelerator corral will use."""
    ctx = get_context()
    host = ctx.host
    if json_out:
        print_json({**host.to_json(), "home": str(ctx.config.home)})
        return
    print(f"qemu:        {host.qemu.path} ({host.qemu.version})")
    print(f"qemu-img:    {host.qemu_img.path} ({host.qemu_img.version})")
    print(f"accelerator: {host.accelerator}")
    print(f"state dir:   {ctx.config.home}")
    if host.warning:
        err.print(f"warning: {host.accelerator_note}", markup=False)


@app.command()
def completion(
    shell: str = typer.Argument(..., metavar="bash|zsh|fish", help="The shell to complete in."),
) -> None:
    """Print a completion script for commands, options, instance and image names, e.g.
    `corral completion bash > ~/.local/share/bash-completion/completions/corral`."""
    from corral.cli.completion import script

    print(script(shell))


@app.command()
def version() -> None:
    """Print corral's version."""
    from corral.version import __version__

    print(__version__)


def report(exc: CorralError) -> None:
    err.print(f"error: {exc.message}", markup=False)
    for line in exc.details:
        err.print(f"  | {line}", markup=False)
    if exc.hint:
        err.print(f"hint: {exc.hint}", markup=False)


def main() -> None:
    gc.freeze()  # what the imports built lives until exit: never scan it
    gc.enable()
    logging.basicConfig(
        level=logging.DEBUG if os.environ.get("CORRAL_DEBUG") else logging.WARNING,
        format="%(name)s: %(message)s",
    )
    code = 0
    try:
        if os.environ.get("_CORRAL_COMPLETE"):  # the shell asks (corral.cli.completion)
            from corral.cli.completion import complete

            complete(typer.main.get_command(app))
        app()  # click's standalone mode ends with sys.exit, usage errors included
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except CorralError as exc:
        if os.environ.get("CORRAL_DEBUG"):
            raise
        report(exc)
        code = exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        code = 130
    _exit(code)


def _exit(code: int) -> None:
    """Exit without tearing the interpreter down: output is flushed, nothing else is owed."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()

"""`corral node`: run the node agent, this host's VMs over HTTP for a corral control plane."""

from __future__ import annotations

from pathlib import Path

import typer

from corral.cli.context import get_context
from corral.cli.output import note
from corral.node.serve import (
    DEFAULT_LISTEN,
    default_token_file,
    load_or_create_token,
    parse_listen,
    plain_http_warning,
    serve,
    token_file_mode_ok,
)


def node(
    listen: str = typer.Option(
        DEFAULT_LISTEN, "--listen", help="HOST:PORT to listen on (plain HTTP; loopback default)."
    ),
    token_file: Path | None = typer.Option(
        None,
        "--token-file",
        help="File holding the bearer token; made (mode 0600) if missing. "
        "Default: $CORRAL_HOME/node/token.",
    ),
) -> None:
    """Run the node agent: serve this host's VMs over HTTP to a corral control plane."""
    ctx = get_context()
    host, port = parse_listen(listen)
    path = token_file or default_token_file(ctx)
    token, made = load_or_create_token(path)
    if made:
        note(f"node token written to {path} (mode 0600): give it to the control plane")
    elif not token_file_mode_ok(path):
        note(f"warning: {path} can be read by others than its owner: chmod 600 {path}")
    warning = plain_http_warning(host, "the node")
    if warning:
        note(warning)
    serve(ctx, host=host, port=port, token=token)


def register(app: typer.Typer) -> None:
    app.command("node")(node)

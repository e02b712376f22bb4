"""`corral serve`, `corral db upgrade` and `corral token create|ls|revoke`: the control plane.

With no --database (and no `database` in the config), the control plane keeps an SQLite file
in the state directory and this machine is its one host, `local`, served in-process.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Iterator
from typing import Any

import typer

from corral.cli.context import get_context
from corral.cli.output import err, note, print_json
from corral.errors import CorralError, InvalidInput

DatabaseOption = typer.Option(
    None,
    "--database",
    metavar="URL",
    help="sqlite:////path/corral.db or postgresql+psycopg://USER@HOST/DB "
    "(default: corral.db in the state directory).",
)


def _settings(database: str | None, **overrides: Any) -> Any:
    from corral.control.settings import Settings

    return Settings.from_config(get_context().config, database=database, **overrides)


@contextlib.contextmanager
def _database(database: str | None) -> Iterator[Any]:
    """The database, migrated, and disposed of afterwards; one that cannot be reached is a
    one-line error naming it (password hidden), not a driver's traceback."""
    from sqlalchemy.exc import OperationalError

    from corral.db.engine import Database
    from corral.db.migrate import upgrade

    db = Database(_settings(database).database_url, pool_size=1)
    try:
        upgrade(db)
        yield db
    except OperationalError as exc:
        where = db.engine.url.render_as_string(hide_password=True)
        reason = str(exc.orig or exc).strip().splitlines()[0]
        raise CorralError(f"database {where}: {reason}") from None
    finally:
        db.dispose()


def parse_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT or PORT."""
    host, sep, port = listen.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", listen
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 < number < 65536:
        raise InvalidInput(f"--listen {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:8000")
    return host, number


def serve(
    listen: str = typer.Option(
        "127.0.0.1:8000", "--listen", metavar="HOST:PORT", help="Where to listen."
    ),
    database: str | None = DatabaseOption,
    developer_ssh_keys: str | None = typer.Option(
        None,
        "--developer-ssh-keys",
        metavar="JSON",
        help="A JSON list of ssh public keys added to every VM.",
    ),
    metrics_listen: str | None = typer.Option(
        None,
        "--metrics-listen",
        metavar="HOST:PORT",
        help="Also serve GET /metrics (and nothing else) there; it still needs an admin or "
        "metrics token.",
    ),
    metrics_no_auth: bool = typer.Option(
        False,
        "--metrics-no-auth",
        help="Serve /metrics on --metrics-listen without a token (anyone who can connect "
        "there reads the fleet's figures).",
    ),
) -> None:
    """Run the control plane: the REST API (Swagger UI at /swagger-ui) and its schedulers."""
    import uvicorn

    from corral.api.app import create_app
    from corral.config import parse_key_list
    from corral.control.tokens import TokenService
    from corral.db.serve_lock import ServeLock
    from corral.node.serve import is_loopback, plain_http_warning
    from corral.webguard import uvicorn_log_config

    host, port = parse_listen(listen)
    metrics = _metrics_address(metrics_listen, metrics_no_auth, port)
    warning = plain_http_warning(host, "the control plane")
    if warning:
        note(warning)
    if metrics is not None and metrics_no_auth and not is_loopback(metrics[0]):
        note(f"warning: /metrics on {metrics_listen} answers anyone who can connect there")
    overrides: dict[str, Any] = {}
    if developer_ssh_keys is not None:
        overrides["developer_ssh_keys"] = parse_key_list(developer_ssh_keys)
    settings = _settings(database, **overrides)
    # On SQLite, refuse at once (and change nothing) if another server has the file.
    lock = ServeLock(settings.database_url)
    lock.acquire(f"http://{listen}")
    try:
        with _database(database) as db:
            if not TokenService(db).any():
                err.print("note: no API tokens yet: create one with `corral token create NAME`")
        sockets = [_bind(host, port)]
        if metrics is not None:
            sockets.append(_bind(*metrics))
        mode = "embedded, this machine is host 'local'" if settings.local_node else "fleet"
        err.print(f"corral control plane ({mode}) on http://{listen}  (Swagger UI: /swagger-ui)")
        scrape = _url(*(metrics or (host, port)))
        err.print(f"dashboard: {_url(host, port)}/ui/  (sign in with a token)")
        err.print(f"metrics: {scrape}/metrics")
        app = create_app(
            settings,
            metrics_port=metrics[1] if metrics else None,
            open_metrics=metrics_no_auth,
        )
        config = uvicorn.Config(
            app,
            log_level="info",
            log_config=uvicorn_log_config(),  # `?token=` of websockets redacted
            timeout_graceful_shutdown=5,  # event streams and console websockets never end alone
        )
        uvicorn.Server(config).run(sockets=sockets)
    finally:
        lock.release()


def _metrics_address(listen: str | None, no_auth: bool, api_port: int) -> tuple[str, int] | None:
    if listen is None:
        if no_auth:
            raise InvalidInput("--metrics-no-auth applies to --metrics-listen: give both")
        return None
    host, port = parse_listen(listen)
    if port == api_port:
        raise InvalidInput(f"--metrics-listen {listen!r}: use a port other than the API's")
    return host, port


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket's address, bound now: a taken port is one line, before anything."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CorralError(f"cannot listen on {_url(host, port)}: {exc.strerror}") from None
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def db_upgrade(database: str | None = DatabaseOption) -> None:
    """Apply the database migrations (`corral serve` also does, on start)."""
    from corral.db.migrate import current

    with _database(database) as db:
        where = db.engine.url.render_as_string(hide_password=True)
        print(f"database at revision {current(db)}: {where}")


def token_create(
    name: str = typer.Argument(..., help="A name for the token, e.g. who or what uses it."),
    role: str = typer.Option(
        "user",
        "--role",
        metavar="admin|user|metrics",
        help="user: VMs, and reading hosts, storage, images, jobs and events. "
        "admin: also registering hosts and managing storage pools, objects and boot sources. "
        "metrics: GET /metrics and nothing else (for Prometheus).",
    ),
    database: str | None = DatabaseOption,
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create an API token and print it (it is shown this once)."""
    from corral.control.tokens import TokenService

    with _database(database) as db:
        row, token = TokenService(db).create(name, role)
    if json_out:
        print_json({"id": str(row.id), "name": row.name, "role": row.role, "token": token})
        return
    print(token)
    if sys.stderr.isatty():
        err.print("this token is shown once: keep it (use it as `Authorization: Bearer TOKEN`)")


def token_ls(
    database: str | None = DatabaseOption,
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List API tokens (never their secrets)."""
    from corral.control.tokens import TokenService

    with _database(database) as db:
        rows = TokenService(db).list()
    items: list[dict[str, str | None]] = [
        {
            "id": str(t.id),
            "name": t.name,
            "role": t.role,
            "created_at": t.created_at.isoformat(),
            "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
        }
        for t in rows
    ]
    if json_out:
        print_json(items)
        return
    print(f"{'NAME':<24} {'ROLE':<7} {'CREATED':<20} STATE")
    for item in items:
        revoked, created = item["revoked_at"], item["created_at"] or ""
        state = f"revoked {revoked[:19]}" if revoked else "active"
        print(f"{item['name']:<24} {item['role']:<7} {created[:19]:<20} {state}")


def token_revoke(
    name: str = typer.Argument(..., help="The token's name (or id)."),
    database: str | None = DatabaseOption,
) -> None:
    """Revoke an API token: requests carrying it are refused from now on."""
    from corral.control.tokens import TokenService

    with _database(database) as db:
        row = TokenService(db).revoke(name)
    print(f"revoked {row.name}")


def register(app: typer.Typer) -> None:
    app.command()(serve)
    db = typer.Typer(help="The control plane's database.", no_args_is_help=True)
    db.command("upgrade")(db_upgrade)
    app.add_typer(db, name="db")
    token = typer.Typer(help="API tokens for the control plane.", no_args_is_help=True)
    token.command("create")(token_create)
    token.command("ls")(token_ls)
    token.command("revoke")(token_revoke)
    app.add_typer(token, name="token")

"""Running the node agent: the listen address, the token file, and uvicorn.

The agent speaks plain HTTP with a bearer token, so it listens on 127.0.0.1 unless told
otherwise; a control plane on another host reaches it through a private network, an SSH tunnel
or a TLS-terminating proxy.
"""

from __future__ import annotations

import ipaddress
import secrets
from pathlib import Path

from corral.context import Context
from corral.errors import InvalidInput
from corral.fsutil import write_atomic

DEFAULT_LISTEN = "127.0.0.1:8100"


def parse_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:8100', '0.0.0.0:8100', '[::1]:8100' or ':8100' (loopback) -> (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise InvalidInput(
            f"invalid listen address {text!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host or "127.0.0.1"
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidInput(f"invalid listen address {text!r}: bad IPv6 address") from None
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http_warning(host: str, server: str) -> str | None:
    """The warning for `server` (the node, the control plane) listening beyond loopback."""
    if is_loopback(host):
        return None
    return (
        f"warning: listening on {host}: {server} speaks plain HTTP, so its tokens travel "
        "in clear text; use a private network, an SSH tunnel or a TLS proxy"
    )


def default_token_file(ctx: Context) -> Path:
    return ctx.home.root / "node" / "token"


def load_or_create_token(path: Path) -> tuple[str, bool]:
    """Read the bearer token from `path`, or make one there (mode 0600); return (token, made)."""
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = secrets.token_urlsafe(32)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, f"{token}\n".encode(), mode=0o600)
        return token, True
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidInput(f"cannot read the token file {path}: {reason}") from exc
    if not token or any(c.isspace() for c in token):
        raise InvalidInput(
            f"the token file {path} must hold one token on one line",
            hint=f"remove it and corral node makes a new one: rm {path}",
        )
    return token, False


def serve(ctx: Context, *, host: str, port: int, token: str) -> None:
    """Run the node agent in the foreground until SIGINT or SIGTERM."""
    import uvicorn

    from corral.node.app import create_node_app
    from corral.webguard import uvicorn_log_config

    uvicorn.run(
        create_node_app(ctx, token),
        host=host,
        port=port,
        log_level="info",
        log_config=uvicorn_log_config(),
        # Console streams last as long as their VM: do not let them hold up a shutdown.
        timeout_graceful_shutdown=5,
    )


def token_file_mode_ok(path: Path) -> bool:
    """False when others than the owner may read the token file."""
    return not path.stat().st_mode & 0o077

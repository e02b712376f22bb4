"""Whether this process may make bridges, taps and firewall rules (CAP_NET_ADMIN)."""

from __future__ import annotations

from pathlib import Path

from corral.errors import CorralError

CAP_NET_ADMIN = 12
NEED_MESSAGE = (
    "managed networks need CAP_NET_ADMIN (run as root, or with that capability); "
    "user-mode networking keeps working"
)


class NeedsNetAdmin(CorralError):
    """Managed networks are out of reach for this process; user-mode networking is not."""

    exit_code = 2
    http_status = 403
    kind = "forbidden"

    def __init__(self) -> None:
        super().__init__(NEED_MESSAGE, hint="launch without --network to use user-mode networking")


def has_net_admin(status: Path = Path("/proc/self/status")) -> bool:
    """CAP_NET_ADMIN in the effective set (the `CapEff` line is a hex bit mask)."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except (OSError, ValueError, IndexError):
        return False
    return False


def require_net_admin() -> None:
    if not has_net_admin():
        raise NeedsNetAdmin()

"""The one error tree of corral.

Library code raises these and never prints or exits. Each edge maps them once: the CLI to an
exit code (2 for the user's mistakes, 1 for failures) and a one-line message plus hint; the HTTP
servers to a status and a `kind`, the name a class travels under on the wire (corral.wire), so
that a client raises the class the server raised.
"""

from __future__ import annotations


class CorralError(Exception):
    """Base of every error corral raises on purpose: a one-line message and an optional hint."""

    exit_code = 1
    http_status = 500
    kind = "error"  # its name on the wire; a subclass without one travels as its base

    def __init__(
        self, message: str, *, hint: str | None = None, details: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details or []  # extra context lines, e.g. the last console lines

    def __str__(self) -> str:
        return self.message


class NotFound(CorralError):
    """A named image, instance or file does not exist."""

    exit_code = 2
    http_status = 404
    kind = "not_found"


class Conflict(CorralError):
    """The request clashes with current state: a name taken, a port in use, a VM running."""

    exit_code = 2
    http_status = 409
    kind = "conflict"


class InvalidInput(CorralError):
    """The user gave a value corral cannot accept."""

    exit_code = 2
    http_status = 422
    kind = "invalid_input"


class MissingDependency(CorralError):
    """A host program corral needs (qemu, qemu-img, mmdebstrap, ...) is not installed."""

    exit_code = 2
    http_status = 503
    kind = "missing_dependency"


class QemuError(CorralError):
    """QEMU or qemu-img failed; the message carries QEMU's own words."""

    http_status = 502
    kind = "qemu_error"


class GuestError(CorralError):
    """The guest misbehaved: SSH refused, cloud-init reported an error, a command failed."""

    http_status = 502
    kind = "guest_error"


class DeadlineExceeded(CorralError):
    """Something did not finish before its deadline."""

    http_status = 504
    kind = "deadline_exceeded"


class CommandFailed(CorralError):
    """A host subprocess exited non-zero; keeps the command line and the tail of its stderr."""

    def __init__(self, argv: list[str], returncode: int, stderr: str, *, hint: str | None = None):
        tail = stderr.strip().splitlines()[-1:] if stderr.strip() else []
        detail = f": {tail[0]}" if tail else ""
        super().__init__(f"{argv[0]} exited with status {returncode}{detail}", hint=hint)
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


class NodeUnreachable(CorralError):
    """A node agent did not answer (refused, timed out, or a transport error)."""

    http_status = 502
    kind = "node_unreachable"


class Unauthorized(CorralError):
    """No credentials, or ones that are unknown or revoked (an API or node token)."""

    exit_code = 2
    http_status = 401
    kind = "unauthorized"


class Forbidden(CorralError):
    """Valid credentials that may not do this (e.g. a `user` token on an admin-only route)."""

    exit_code = 2
    http_status = 403
    kind = "forbidden"


class TooLarge(CorralError):
    """A request body larger than the server accepts (`max_body_bytes`)."""

    exit_code = 2
    http_status = 413
    kind = "too_large"

"""API tokens: `corral_<key>_<secret>`, shown once at creation, stored as a sha256, each with
a role: `user` (VMs, and reading what VMs are made from), `admin` (also hosts, storage and
boot sources) or `metrics` (GET /metrics and nothing else: what a Prometheus server is given).

A token is found by its public key, and the sha256 of what the client sent is compared with the
stored one in constant time (hmac.compare_digest). Revoked tokens stay listed, marked revoked.
A token found valid is trusted (with its role) for `CACHE_SECONDS` before it is looked up
again, so a busy client does not cost a database read per request: a revocation takes effect
at once in the process that made it, and within that time in others (another server,
`corral token revoke`). Synchronous on purpose: `corral token ...` uses it without an event
loop, the API in a thread.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid

from corral.db.engine import Database
from corral.db.models import ApiToken, utcnow
from corral.db.repositories import TokenRepository
from corral.errors import Conflict, InvalidInput, NotFound

PREFIX = "corral"
CACHE_SECONDS = 1.0
ADMIN, USER, METRICS = "admin", "user", "metrics"
ROLES = (ADMIN, USER, METRICS)
API_ROLES = (ADMIN, USER)  # the roles that may use the API (a metrics token may only scrape)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _split(token: str) -> str | None:
    """The public key of a well-formed token, else None."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or len(parts[1]) != 12 or len(token) > 200:
        return None
    return parts[1]


class TokenService:
    def __init__(self, db: Database) -> None:
        self.db = db
        # sha256 of a valid token -> (its role, when it was looked up)
        self._valid: dict[str, tuple[str, float]] = {}

    def create(self, name: str, role: str = USER) -> tuple[ApiToken, str]:
        """A new token; the plaintext is returned here and never again."""
        if role not in ROLES:
            raise InvalidInput(f"invalid role {role!r}: {', '.join(ROLES)}")
        if (
            not name
            or len(name) > 63
            or not name.replace("-", "").replace("_", "").replace(".", "").isalnum()
        ):
            raise InvalidInput(
                f"invalid token name {name!r}: letters, digits, '-', '_' and '.', at most 63"
            )
        key = secrets.token_hex(6)
        token = f"{PREFIX}_{key}_{secrets.token_urlsafe(32)}"
        with self.db.write() as session:
            tokens = TokenRepository(session)
            if tokens.name_taken(name):
                raise Conflict(f"a token named {name!r} already exists")
            row = tokens.add(
                ApiToken(
                    id=uuid.uuid4(), name=name, key=key, token_hash=sha256_hex(token), role=role
                )
            )
        return row, token

    def list(self) -> list[ApiToken]:
        with self.db.read() as session:
            return list(TokenRepository(session).list())

    def revoke(self, ref: str) -> ApiToken:
        """Revoke a token by name or id."""
        with self.db.write() as session:
            tokens = TokenRepository(session)
            row = tokens.by_name(ref)
            if row is None:
                try:
                    row = tokens.get(uuid.UUID(ref))
                except ValueError:
                    row = None
            if row is None:
                raise NotFound(f"no token named {ref!r}", hint="corral token ls")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            self._valid.pop(row.token_hash, None)
            return row

    def authenticate(self, token: str) -> str | None:
        """The token's role, or None for a token that is unknown, revoked or malformed."""
        return self.cached(token) or self.lookup(token)

    def cached(self, token: str) -> str | None:
        """The role of a token found valid less than CACHE_SECONDS ago (no database), else None."""
        seen = self._valid.get(sha256_hex(token))
        if seen is not None and time.monotonic() - seen[1] < CACHE_SECONDS:
            return seen[0]
        return None

    def lookup(self, token: str) -> str | None:
        """The token's role from the database (and cached), or None."""
        key = _split(token)
        if key is None:
            return None
        with self.db.read() as session:
            found = TokenRepository(session).by_key(key)
        if found is None:
            return None
        stored, revoked, role = found
        digest = sha256_hex(token)
        if hmac.compare_digest(stored, digest) and not revoked:
            if len(self._valid) > 10_000:
                self._valid.clear()
            self._valid[digest] = (role, time.monotonic())
            return role
        self._valid.pop(digest, None)
        return None

    def any(self) -> bool:
        with self.db.read() as session:
            return any(t.revoked_at is None for t in TokenRepository(session).list())

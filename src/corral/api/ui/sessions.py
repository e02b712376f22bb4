"""The dashboard's sign-in sessions: a random id in an HttpOnly cookie, mapped here (in the
server's memory) to the token the user pasted, its role and the session's CSRF token.

The cookie carries no secret of the API: a stolen cookie is worth a session of this process
(until it ends, is signed out, or its token is revoked), not the token itself. Each request
checks the token again (corral.api.deps.token_role, cached for a second), so revoking a token
ends its sessions. A restart signs everyone out.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

COOKIE = "corral_session"
LOGIN_COOKIE = "corral_login"  # the CSRF token of the sign-in form, before there is a session
TTL = 12 * 3600.0  # seconds a session lives after sign-in
MOST = 10_000  # sessions kept; the oldest go first


@dataclass
class Session:
    id: str
    token: str
    role: str
    csrf: str
    expires: float
    flashes: list[str] = field(default_factory=list)

    def csrf_ok(self, sent: str | None) -> bool:
        return sent is not None and hmac.compare_digest(sent.encode(), self.csrf.encode())


class Sessions:
    def __init__(self, ttl: float = TTL, most: int = MOST) -> None:
        self.ttl = ttl
        self.most = most
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def open(self, token: str, role: str) -> Session:
        session = Session(
            id=secrets.token_urlsafe(32),
            token=token,
            role=role,
            csrf=secrets.token_urlsafe(32),
            expires=time.monotonic() + self.ttl,
        )
        self._by_id[session.id] = session
        while len(self._by_id) > self.most:
            self._by_id.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is None:
            return None
        if session.expires < time.monotonic():
            del self._by_id[session_id]
            return None
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._by_id.pop(session_id, None)

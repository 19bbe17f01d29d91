"""Logging in to the web UI without a password: one-time tokens exchanged for session cookies.

``swapmeet ui`` asks the node (bearer-token API, ``POST /v1/ui/token``) for a
login token: 32 random bytes, good for one exchange within
:data:`LOGIN_TTL_S`. It travels in the URL's *fragment* (``/ui/login#<token>``),
which browsers never send to servers, so it reaches no log or Referer header;
the login page posts it once and gets a session cookie back. Each session
has its own CSRF token that every state-changing request must echo. Tokens
are compared in constant time and stored only as their SHA-256, and both
tables are bounded (the oldest entry goes first).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

LOGIN_TTL_S = 120  # a login link is for opening now, not for bookmarking
SESSION_TTL_S = 12 * 3600  # idle time after which a session ends
MAX_LOGIN_TOKENS = 32
MAX_SESSIONS = 64


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(slots=True)
class Session:
    csrf: str
    last_seen: float


class UiSessions:
    """Login tokens and sessions of one node's web UI (in memory: a restart logs everyone out)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._logins: OrderedDict[bytes, float] = OrderedDict()  # sha256(token) -> expiry
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()  # sha256(session id) -> session

    def mint_login(self) -> str:
        """A new one-time login token, valid for :data:`LOGIN_TTL_S` seconds."""
        token = secrets.token_urlsafe(32)
        self._logins[_digest(token)] = self._clock() + LOGIN_TTL_S
        while len(self._logins) > MAX_LOGIN_TOKENS:
            self._logins.popitem(last=False)
        return token

    def exchange(self, token: str) -> str | None:
        """A new session id for a valid, unused, unexpired login token (which is spent); else None."""
        if not token or len(token) > 128:
            return None
        key = _digest(token)
        # a dict lookup by the token's hash: timing reveals nothing about the token itself
        expiry = self._logins.pop(key, None)
        if expiry is None or expiry < self._clock():
            return None
        session_id = secrets.token_urlsafe(32)
        self._sessions[_digest(session_id)] = Session(csrf=secrets.token_urlsafe(32), last_seen=self._clock())
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session_id

    def session(self, session_id: str | None) -> Session | None:
        """The live session for a cookie value (its idle timer restarts), or None."""
        if not session_id or len(session_id) > 128:
            return None
        key = _digest(session_id)
        found = self._sessions.get(key)
        now = self._clock()
        if found is None:
            return None
        if now - found.last_seen > SESSION_TTL_S:
            del self._sessions[key]
            return None
        found.last_seen = now
        self._sessions.move_to_end(key)
        return found

    def end(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(_digest(session_id), None)


def csrf_ok(session: Session, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(session.csrf.encode(), presented.encode())

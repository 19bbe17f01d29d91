"""The local API's cookie file: ``<home>/api.cookie`` holds the port and the bearer token.

The bitcoind RPC convention: the running node writes a fresh random token to a
file only its owner can read (mode 0600 from the moment it exists); whoever
can read that file can act as the node, nobody else can. The CLI reads it to
find and authenticate to the node of a home.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass

from swapmeet.ledger.durable import write_durably

from .home import Home, HomeError


@dataclass(frozen=True, slots=True)
class Cookie:
    """The contents of ``<home>/api.cookie``: ``{"port": int, "token": str, "pid": int}``."""

    port: int
    token: str
    pid: int


def new_token() -> str:
    """A fresh API token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def write_cookie(home: Home, port: int, token: str) -> Cookie:
    """Crash-safely (re)write ``home.api_cookie``, mode 0600 from creation; returns what was written.

    Raises :class:`HomeError` when the file cannot be written.
    """
    cookie = Cookie(port=port, token=token, pid=os.getpid())
    data = json.dumps({"port": cookie.port, "token": cookie.token, "pid": cookie.pid}).encode()
    home.ensure()
    try:
        write_durably(home.api_cookie, data, mode=0o600)
    except OSError as exc:
        raise HomeError(f"cannot write the API cookie {home.api_cookie}: {exc.strerror or exc}") from None
    return cookie


def read_cookie(home: Home) -> Cookie | None:
    """The cookie in ``home``, or None when there is none (or it is unreadable / damaged)."""
    try:
        with open(home.api_cookie, "rb") as f:
            data = json.loads(f.read(4096))
        port, token, pid = data["port"], data["token"], data.get("pid", 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (isinstance(port, int) and 0 < port < 65536 and isinstance(token, str) and isinstance(pid, int)):
        return None
    return Cookie(port=port, token=token, pid=pid)


def remove_cookie(home: Home, token: str | None = None) -> None:
    """Delete the cookie; with ``token``, only if it is still ours (a newer node may have replaced it)."""
    if token is not None:
        current = read_cookie(home)
        if current is None or not hmac.compare_digest(current.token, token):
            return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(home.api_cookie)

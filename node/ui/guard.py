"""The web UI's outermost ASGI middleware: Host check, session cookie, cross-site refusal, security headers.

Every request under ``/ui`` passes here before any route runs (the API's
:class:`~swapmeet.node.http.guard.TokenGuard` hands ``/ui`` paths to this guard
and nothing else; this guard hands nothing to the API):

1. **Host**: must be ``127.0.0.1:<port>`` or ``localhost:<port>``, the port the
   server answers on. A page of another site that rebinds its DNS name to
   127.0.0.1 (DNS rebinding) sends its own name and is refused (421).
2. **Session**: the cookie ``swapmeet_ui_<port>`` (HttpOnly, SameSite=Strict,
   ``Path=/ui``) must name a live session. Only the login page, its form post
   and the static assets (vendored, public) are reachable without one; a page
   request without a session is sent to the login page, anything else gets 401.
3. **Cross-site**: a request with a body-changing method (anything but GET and
   HEAD) is refused (403) when the browser says it comes from elsewhere
   (``Sec-Fetch-Site`` other than ``same-origin``/``none``, or an ``Origin`` that
   is not this server), and must carry the session's CSRF token, in the
   ``X-CSRF-Token`` header (htmx) or the ``csrf`` form field (plain forms) --
   except the login post, which carries the one-time token instead.
4. **Headers** on every answer: a Content-Security-Policy (:data:`CSP`) that
   allows no inline script and no outside origin, ``nosniff``, no Referer to other origins, no
   framing, ``Cache-Control: no-store``. The Referrer-Policy is ``same-origin``,
   not ``no-referrer``: under ``no-referrer`` browsers send ``Origin: null`` on
   a same-origin form post, which step 3 could not tell from a sandboxed frame.

Bodies are read here (at most :data:`MAX_UI_BODY`) so the token check sees the
form; the route gets the same bytes replayed.
"""

from __future__ import annotations

import re
import urllib.parse
from http.cookies import SimpleCookie
from typing import Any

from ..http.guard import read_body, replay_body
from .session import UiSessions, csrf_ok

PREFIX = "/ui"
LOGIN_PATH = "/ui/login"
STATIC_PREFIX = "/ui/static/"
MAX_UI_BODY = 4 * 16 * 1024 * 1024 + 64 * 1024  # four photos of the upload cap, and the form around them
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
_SAFE_METHODS = ("GET", "HEAD")
_MULTIPART_CSRF = re.compile(rb'name="csrf"\r\n\r\n([A-Za-z0-9_-]{1,128})\r\n')


def cookie_name(port: int) -> str:
    """Per port: two nodes on one machine each keep their own session in one browser."""
    return f"swapmeet_ui_{port}"


class UiGuard:
    """Wraps the UI app; see the module docstring for what it checks, in order."""

    def __init__(self, app: Any, sessions: UiSessions) -> None:
        self.app = app
        self.sessions = sessions

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # no WebSocket or other scope is served under /ui
        headers = dict(scope.get("headers") or [])
        port = (scope.get("server") or ("", 0))[1]
        host = headers.get(b"host", b"").decode("latin-1")
        if host not in (f"127.0.0.1:{port}", f"localhost:{port}"):
            await _refuse(send, 421, f"this server answers only to 127.0.0.1:{port}, not {host!r}")
            return
        path, method = scope["path"], scope["method"]
        cookies = SimpleCookie(headers.get(b"cookie", b"").decode("latin-1"))
        morsel = cookies.get(cookie_name(port))
        session = self.sessions.session(morsel.value if morsel else None)
        public = path == LOGIN_PATH or (path.startswith(STATIC_PREFIX) and method in _SAFE_METHODS)
        if session is None and not public:
            if method in _SAFE_METHODS:
                await _redirect(send, LOGIN_PATH)
            else:
                await _refuse(send, 401, "no session: open the web interface with `swapmeet ui`")
            return
        body = b""
        if method not in _SAFE_METHODS:
            if not _same_origin(headers, host):
                await _refuse(send, 403, "cross-site request refused")
                return
            read = await read_body(receive, MAX_UI_BODY)
            if read is None:
                return
            if len(read) > MAX_UI_BODY:
                await _refuse(send, 413, f"request body over {MAX_UI_BODY} bytes")
                return
            body = read
            if path != LOGIN_PATH and (session is None or not csrf_ok(session, _csrf_of(headers, body))):
                await _refuse(send, 403, "missing or wrong CSRF token: reload the page and try again")
                return
        scope.setdefault("state", {})["ui_session"] = session
        scope["state"]["ui_cookie"] = cookie_name(port)
        await self.app(scope, replay_body(receive, body), _with_headers(send))


def _same_origin(headers: dict[bytes, bytes], host: str) -> bool:
    site = headers.get(b"sec-fetch-site")
    if site is not None and site not in (b"same-origin", b"none"):
        return False
    origin = headers.get(b"origin")
    return origin is None or origin.decode("latin-1") == f"http://{host}"


def _csrf_of(headers: dict[bytes, bytes], body: bytes) -> str | None:
    if (header := headers.get(b"x-csrf-token")) is not None:
        return header.decode("latin-1")
    kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    if kind == b"application/x-www-form-urlencoded":
        values = urllib.parse.parse_qs(body.decode("latin-1")).get("csrf")
        return values[0] if values else None
    if kind == b"multipart/form-data":
        found = _MULTIPART_CSRF.search(body)
        return found.group(1).decode() if found else None
    return None


def _with_headers(send: Any) -> Any:
    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            names = {k.lower() for k, _ in message.get("headers", [])}
            extra = [(k, v) for k, v in SECURITY_HEADERS if k not in names]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return wrapped


async def _refuse(send: Any, status: int, text: str) -> None:
    data = f"{text}\n".encode()
    await _with_headers(send)(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def _redirect(send: Any, location: str) -> None:
    await _with_headers(send)(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [(b"location", location.encode()), (b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b""})

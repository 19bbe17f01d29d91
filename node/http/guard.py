"""The outermost ASGI middleware of the local API: bearer token and body size cap on every request.

Pure ASGI rather than a FastAPI dependency, so that nothing -- unknown paths,
``/openapi.json``, validation errors -- answers without the token. Scopes that
are neither HTTP nor the server's lifespan (a WebSocket, say) are refused: a
route of another kind added later must not be reachable without the token.

One exception, by path and before anything else: ``/ui`` and everything under
``/ui/`` go to the web UI's own guard (:class:`swapmeet.node.ui.guard.UiGuard`:
session cookie, CSRF, Host) and never to the API app; every other path goes to
the API app and only with the token. So neither side is reachable with the
other's credential, or with none.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from ..contract import MAX_IMPORT, TooLarge

MAX_BODY = 64 * 1024  # bytes; a listing is at most 16 KiB signed, its JSON request far less
MAX_UPLOAD = 16 * 1024 * 1024  # a photo as the camera wrote it (POST /v1/photos); the node re-encodes it
# Paths whose bodies may be larger than MAX_BODY: a photo, an import of up to MAX_IMPORT listings, and as many
# signed objects to relay (each at most 16 KiB, twice that in hex).
LARGE_BODIES = {
    "/v1/photos": MAX_UPLOAD,
    "/v1/listings/import": MAX_IMPORT * MAX_BODY,
    "/v1/objects": MAX_IMPORT * MAX_BODY,
}

_UNAUTHORIZED = {
    "error": "missing or wrong API token: send 'Authorization: Bearer <token>'"
    " with the token from the node's api.cookie",
    "code": "unauthorized",
}


def _too_large(cap: int) -> dict[str, str]:
    return {"error": f"request body over {cap} bytes", "code": TooLarge.api_code}


class TokenGuard:
    """Wraps the app: every HTTP request must carry ``Authorization: Bearer <token>`` and a small body."""

    def __init__(self, app: Any, token: str, ui: Any = None) -> None:
        self.app = app
        self.ui = ui  # the web UI's ASGI app behind its own guard, or None (no UI: /ui is an API path)
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            return  # no route of any other kind exists; closing without an answer refuses it
        path = scope.get("path", "")
        if self.ui is not None and (path == "/ui" or path.startswith("/ui/")):
            await self.ui(scope, receive, send)  # the UI's guard decides; the API app never sees it
            return
        headers = dict(scope.get("headers") or [])
        # compare_digest: the comparison time must not reveal how much of the token was right
        if not hmac.compare_digest(headers.get(b"authorization", b""), self._expected):
            await send_json(send, 401, _UNAUTHORIZED, [(b"www-authenticate", b"Bearer")])
            return
        cap = LARGE_BODIES.get(path, MAX_BODY)
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > cap):
            await send_json(send, 413, _too_large(cap))
            return
        body = await read_body(receive, cap)
        if body is None:
            return  # the client went away
        if len(body) > cap:
            await send_json(send, 413, _too_large(cap))
            return
        await self.app(scope, replay_body(receive, body), send)


def replay_body(receive: Any, body: bytes) -> Any:
    """An ASGI ``receive`` that hands the app ``body`` (already read) whole, then the real stream's end."""
    replayed = False

    async def replay() -> dict[str, Any]:
        nonlocal replayed
        if replayed:
            return await receive()  # after the body: wait for the disconnect, as the app expects
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def read_body(receive: Any, cap: int = MAX_BODY) -> bytes | None:
    """The whole (small) body, read here so that a chunked body without content-length is capped too.

    Stops reading as soon as it is over the cap; None if the client disconnected.
    """
    body = bytearray()
    more = True
    while more and len(body) <= cap:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return bytes(body)


async def send_json(send: Any, status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]] = ()) -> None:
    """Answer with a JSON body (for refusals made before the app runs)."""
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})

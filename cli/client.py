"""A small synchronous client of the node's local API, for the CLI.

Only the standard library (``http.client``): the CLI must start fast, so no
FastAPI, httpx, trio or libp2p here. The port and token come from the cookie
file in the home (see :func:`swapmeet.node.cookie.write_cookie`).

* No cookie, a dead pid in it, or a refused connection -> :class:`NodeNotRunning`
  (exit code 3) with one line saying how to start a node.
* No answer within the timeout -> :class:`NodeUnresponsive` (exit code 3).
* An error body from the node -> the matching :class:`SwapmeetError`
  (``InvalidObject``, ``UnknownObject``, ``AmbiguousPrefix``, ``Conflict``, or
  :class:`NodeError`) carrying the node's one-line message.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shlex
import socket
import time
import urllib.parse
from typing import Any

from swapmeet.node.contract import API_HOST, ERRORS_BY_CODE
from swapmeet.node.cookie import Cookie, read_cookie
from swapmeet.node.home import Home
from swapmeet.protocol.errors import InvalidObject, SwapmeetError

DEFAULT_TIMEOUT = 15.0  # seconds per request; publishing waits for the node to sign and store, not for the swarm
MAX_RESPONSE = 64 * 1024 * 1024  # MAX_LIMIT listings of at most 16 KiB each, rendered, fit easily


class NodeNotRunning(SwapmeetError):
    """No node answers for this home."""

    exit_code = 3

    def __init__(self, home: Home) -> None:
        where = shlex.quote(str(home))
        super().__init__(f"no node is running for home {home}; start one with: swapmeet --home {where} node run")


class NodeUnresponsive(SwapmeetError):
    """A node seems to run for this home but did not answer in time (or hung up)."""

    exit_code = 3


class NodeError(SwapmeetError):
    """An error answer from the node with no more specific class. 5xx means a bug in the node."""

    def __init__(self, message: str, status: int, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.exit_code = 70 if status >= 500 else 2


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # unknown: let the connection decide
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # e.g. EPERM: it exists, it is just not ours
    return True


class ApiClient:
    """One node's API, found through its home. Every call is one short HTTP request.

    Size: one method per endpoint of the local API (swapmeet.node.http.routes), each a line or two
    around :meth:`request`; the API's surface, not the class, decides the count.
    """

    def __init__(self, home: Home, cookie: Cookie, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.home = home
        self.cookie = cookie
        self.timeout = timeout

    @classmethod
    def for_home(cls, home: Home, timeout: float = DEFAULT_TIMEOUT) -> ApiClient:
        """The client for the node of ``home``; :class:`NodeNotRunning` if there is clearly none."""
        cookie = read_cookie(home)
        # A cookie left behind by a killed node names a dead pid: say "not running" without
        # knocking on a port that something else may have taken since.
        if cookie is None or not _pid_alive(cookie.pid):
            raise NodeNotRunning(home)
        return cls(home, cookie, timeout)

    # --- the endpoints ---

    def status(self) -> dict[str, Any]:
        return self.request("GET", "/v1/status")

    def activity(self) -> list[dict[str, Any]]:
        return self.request("GET", "/v1/activity")

    def peers(self) -> list[dict[str, Any]]:
        return self.request("GET", "/v1/peers")

    def listings(
        self,
        query: str | None = None,
        *,
        type: str | None = None,
        category: str | None = None,
        author: str | None = None,
        wants: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        params = {"q": query, "type": type, "category": category, "author": author, "wants": wants, "limit": limit}
        return self.request("GET", "/v1/listings", query=params)

    def publish(self, spec: dict[str, Any]) -> dict[str, Any]:
        """``spec``: the fields of :class:`~swapmeet.protocol.listing_spec.ListingSpec`, items as ``"QTY x ITEM"``."""
        return self.request("POST", "/v1/listings", body=spec)

    def publish_many(self, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Several new listings at once, all or none (``POST /v1/listings/import``); the listings, in order."""
        return self.request("POST", "/v1/listings/import", body={"listings": specs})  # type: ignore[no-any-return]

    def relay(self, raws: list[bytes]) -> list[dict[str, Any]]:
        """Objects other authors signed, to verify, store and publish, all or none (``POST /v1/objects``):
        ``[{"kind", "id", "author", "new"}]`` in order."""
        return self.request("POST", "/v1/objects", body={"objects": [raw.hex() for raw in raws]})  # type: ignore[no-any-return]

    def add_photo(self, data: bytes) -> dict[str, Any]:
        """Send a photo's bytes; the node re-encodes and keeps it: ``{"hash", "bytes"}``."""
        return self.request("POST", "/v1/photos", raw_body=data, content_type="application/octet-stream")

    def ui_token(self) -> dict[str, Any]:
        """A one-time login address for the web interface: ``{"url", "expires_in_s"}``."""
        return self.request("POST", "/v1/ui/token")

    def withdraw(self, listing_id: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/listings/{_segment(listing_id)}/withdraw")

    def get(self, object_id: str, *, raw: bool = False) -> dict[str, Any]:
        return self.request("GET", f"/v1/objects/{_segment(object_id)}", query={"raw": "true" if raw else None})

    def resolve(self, prefix: str) -> str:
        return self.request("GET", f"/v1/resolve/{_segment(prefix)}")["id"]

    def stop(self) -> dict[str, Any]:
        return self.request("POST", "/v1/stop")

    # settlement: bodies as in swapmeet.node.http.routes, answers as in swapmeet.node.jsonview

    def make_offer(self, spec: dict[str, Any]) -> dict[str, Any]:
        """``spec``: ``{"listing", "give", "take"?, "expires_in_s"?, "note"?}``; the offer row."""
        return self.request("POST", "/v1/offers", body=spec)

    def offers(self, direction: str | None = None) -> list[dict[str, Any]]:
        return self.request("GET", "/v1/offers", query={"direction": direction})

    def accept(self, offer_id: str, *, deadline_in_s: int | None = None) -> dict[str, Any]:
        return self.request("POST", f"/v1/offers/{_segment(offer_id)}/accept", body={"deadline_in_s": deadline_in_s})

    def decline(self, offer_id: str, note: str = "") -> dict[str, Any]:
        return self.request("POST", f"/v1/offers/{_segment(offer_id)}/decline", body={"note": note})

    def counter(self, offer_id: str, spec: dict[str, Any]) -> dict[str, Any]:
        """``spec``: ``{"give", "take", "expires_in_s"?, "note"?}`` (the taker's side); the new offer row."""
        return self.request("POST", f"/v1/offers/{_segment(offer_id)}/counter", body=spec)

    def cancel_offer(self, offer_id: str, note: str = "") -> dict[str, Any]:
        return self.request("POST", f"/v1/offers/{_segment(offer_id)}/cancel", body={"note": note})

    def propose(self, spec: dict[str, Any]) -> dict[str, Any]:
        """``spec``: ``{"legs": [{"from", "to", "items"}], "parties"?, "listings"?, "deadline_in_s"?}``; the trade."""
        return self.request("POST", "/v1/trades", body=spec)

    def match(self, max_parties: int, budget_s: float, propose: bool) -> dict[str, Any]:
        """The rings through this node (``POST /v1/match``); the match view of :mod:`swapmeet.node.jsonview`."""
        body = {"max_parties": max_parties, "budget_s": budget_s, "propose": propose}
        return self.request("POST", "/v1/match", body=body)

    def trades(self, state: str | None = None) -> list[dict[str, Any]]:
        return self.request("GET", "/v1/trades", query={"state": state})

    def trade(self, exchange_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/trades/{_segment(exchange_id)}")

    def sign(self, exchange_id: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/trades/{_segment(exchange_id)}/sign")

    def cancel_trade(self, exchange_id: str, note: str = "") -> dict[str, Any]:
        return self.request("POST", f"/v1/trades/{_segment(exchange_id)}/cancel", body={"note": note})

    def confirm(self, exchange_id: str, legs: list[int] | None = None) -> dict[str, Any]:
        return self.request("POST", f"/v1/trades/{_segment(exchange_id)}/confirm", body={"legs": legs})

    def rate(self, exchange_id: str, score: int, *, subject: str | None = None, comment: str = "") -> dict[str, Any]:
        body = {"score": score, "subject": subject, "comment": comment}
        return self.request("POST", f"/v1/trades/{_segment(exchange_id)}/rate", body=body)

    def forked(self) -> list[str]:
        """PeerIDs of the authors the node holds a fork proof against."""
        return self.request("GET", "/v1/forked")

    def wait_stopped(self, timeout: float) -> bool:
        """Poll until the API port refuses connections (the node is gone); False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((API_HOST, self.cookie.port), timeout=1.0):
                    pass
            except OSError:
                return True
            time.sleep(0.1)
        return False

    # --- the plumbing ---

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        raw_body: bytes | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """One request; returns the decoded JSON answer or raises a one-line :class:`SwapmeetError`."""
        if query:
            encoded = urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
            path = f"{path}?{encoded}" if encoded else path
        headers = {"Authorization": f"Bearer {self.cookie.token}", "Accept": "application/json"}
        data = raw_body
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = content_type
        where = f"the node for home {self.home} (API port {self.cookie.port}, pid {self.cookie.pid})"
        conn = http.client.HTTPConnection(API_HOST, self.cookie.port, timeout=self.timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            payload = response.read(MAX_RESPONSE + 1)
            status = response.status
        except ConnectionRefusedError:
            raise NodeNotRunning(self.home) from None
        except TimeoutError:
            raise NodeUnresponsive(f"{where} did not answer within {self.timeout:g}s") from None
        except (ConnectionError, http.client.HTTPException) as exc:
            raise NodeUnresponsive(
                f"{where} hung up without answering ({type(exc).__name__}); is it shutting down?"
            ) from None
        finally:
            with contextlib.suppress(OSError):
                conn.close()
        try:
            decoded = json.loads(payload)
        except ValueError:
            raise NodeError(
                f"{where} answered HTTP {status} with something that is not JSON: is the cookie stale"
                " and another program on that port?",
                status if status >= 400 else 502,
                "not_json",
            ) from None
        if status >= 400:
            raise _error(decoded, status, where, self.home.api_cookie)
        return decoded


def _segment(text: str) -> str:
    return urllib.parse.quote(text.strip(), safe="")


def _error(body: Any, status: int, where: str, cookie_path: object) -> SwapmeetError:
    """The exception for an error answer (the node's own one-line message, typed by its code)."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return NodeError(f"{where} answered HTTP {status}: {body!r:.200}", status, "unknown")
    message, code = body["error"], str(body.get("code", ""))
    if code == "invalid":
        err = InvalidObject("", message, str(body.get("rule", "invalid")))
        err.path = str(body.get("path", ""))
        return err
    if code == "unauthorized":
        return NodeError(f"{where} refused the token in {cookie_path}: is the cookie stale? ({message})", status, code)
    if code in ERRORS_BY_CODE:
        return ERRORS_BY_CODE[code](message)
    return NodeError(message, status, code or "unknown")


def live_addrs(home: Home, timeout: float = 2.0) -> list[str]:
    """The listen addrs of the node running for ``home``, or ``[]`` when none answers (for ``swapmeet id``)."""
    try:
        addrs = ApiClient.for_home(home, timeout=timeout).status().get("addrs", [])
    except SwapmeetError:
        return []
    return [a for a in addrs if isinstance(a, str)]

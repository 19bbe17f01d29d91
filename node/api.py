"""The node's local API: the ``NodeAPI`` contract, its HTTP+JSON face, and the cookie file.

The CLI (and any local tool) talks to a running node over HTTP+JSON on
127.0.0.1 only, authenticated by a random bearer token that the node writes to
``<home>/api.cookie`` (mode 0600, the bitcoind RPC convention). Whoever can
read that file can act as the node; nobody else can.

Layers, from the inside out:

* :class:`NodeAPI` -- the async facade the HTTP layer calls. The node runtime
  implements it; tests use an in-memory fake. It speaks typed, verified
  objects (:mod:`swapmeet.protocol.objects`), never JSON.
* :func:`create_app` -- a FastAPI app that turns HTTP requests into
  ``NodeAPI`` calls and objects into JSON (:mod:`swapmeet.node.jsonview`).
* :func:`serve_api` -- hypercorn's trio worker on ``127.0.0.1:<port>``; port
  0 picks a free one, reported through ``task_status.started(port)``.
* :func:`write_cookie` / :func:`read_cookie` / :func:`remove_cookie`.

Endpoints (all JSON, all require ``Authorization: Bearer <token>``; ``ID``
is a full 64-hex object id or an unambiguous prefix of at least
:data:`MIN_PREFIX` hex digits):

====================================  ==========================================================
``GET  /v1/status``                   the node: peer id, net, addrs, peers, book size, uptime
``GET  /v1/peers``                    connected peers ``[{"peer_id", "addrs"}]``
``GET  /v1/listings``                 live listings; query ``q type category author wants limit``
``POST /v1/listings``                 publish (body: :class:`ListingSpec` fields; 201 + listing)
``POST /v1/listings/{ID}/withdraw``   withdraw one of our listings (200 + withdrawal)
``GET  /v1/objects/{ID}``             any object the node holds (``?raw=true`` adds its hex bytes)
``GET  /v1/resolve/{PREFIX}``         ``{"id": "<64 hex>"}``
``POST /v1/offers``                   make an offer on a listing in the book (body: ``{"listing": ID, "give":
                                      [item], "take": [item] | null, "expires_in_s", "note"}``; 201 + offer row)
``GET  /v1/offers``                   offers this node wrote or received; query ``direction=incoming|outgoing``
``POST /v1/offers/{ID}/accept``       accept an open offer to us (``{"deadline_in_s"}``, optional): the trade
``POST /v1/offers/{ID}/decline``      decline an open offer to us (``{"note"}``, optional): the notice
``POST /v1/offers/{ID}/counter``      answer it with other terms (``{"give", "take", "expires_in_s", "note"}``,
                                      from the taker's side as in the offer; 201 + offer row)
``POST /v1/offers/{ID}/cancel``       withdraw an open offer we wrote (``{"note"}``, optional): the notice
``POST /v1/trades``                   propose an N-party exchange (``{"parties": [peer] | null, "legs": [{"from":
                                      peer, "to": peer, "items": [item]}], "listings": [ID], "deadline_in_s"}``;
                                      parties default to their order of first appearance in the legs; 201 + trade)
``GET  /v1/trades``                   exchanges we are a party to, newest first; query ``state`` (coarse or fine)
``GET  /v1/trades/{ID}``              one of them
``POST /v1/trades/{ID}/sign``         consent to (sign) an exchange that waits for us: the trade
``POST /v1/trades/{ID}/cancel``       leave an exchange we have not signed (``{"note"}``, optional): the notice
``POST /v1/trades/{ID}/confirm``      confirm receipt (``{"legs": [int] | null}``; default: every leg to us): receipt
``POST /v1/trades/{ID}/rate``         rate a counterparty (``{"score": 1..5, "subject": peer | null, "comment"}``)
``GET  /v1/forked``                   authors we hold a fork proof against ``[PeerID]``
``POST /v1/stop``                     202 ``{"stopping": true}``; the node shuts down after answering
``GET  /openapi.json``                the OpenAPI schema (no docs UI: it would load assets from a CDN)
====================================  ==========================================================

A peer is a PeerID (``12D3KooW...``) or a 64-hex public key; an item is ``"QTY [UNIT] x ITEM"`` or
``{"item", "qty", "unit"}``. Response shapes (offer row, trade, notice, receipt, rating) are documented in
:mod:`swapmeet.node.jsonview`. Listings from ``GET /v1/listings`` also carry ``"author_forked": bool``.
Settlement refusals (the offer is not open, the exchange is already signed...) are 409 ``conflict``.

Errors are never tracebacks: every failure is a JSON body ``{"error": "<one
line: what is wrong and where>", "code": "<stable name>"}`` with status 400
(bad input; an :class:`InvalidObject` adds ``"path"`` and ``"rule"``), 401
(token), 404 (unknown id or endpoint), 409 (ambiguous prefix, conflict), 413
(body too large) or 500 (a bug in the node).

Module-level imports stay light (no FastAPI, pydantic or hypercorn) because the
CLI's HTTP client imports the error classes and :func:`read_cookie` from here.
There is deliberately no ``from __future__ import annotations``: FastAPI reads
the annotations of the route functions defined inside :func:`create_app`, and
those must be real objects, not strings naming locals it cannot resolve.
"""

import contextlib
import hmac
import inspect
import json
import logging
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from swapmeet.protocol.errors import InvalidObject, SwapmeetError
from swapmeet.protocol.objects import Item, Listing, SignedObject, Withdrawal

from .home import Home, HomeError

if TYPE_CHECKING:
    # trio, FastAPI and nacl (via Identity) cost ~0.3 s to import: the CLI client must not pay for them
    import trio
    from fastapi import FastAPI
    from swapmeet.protocol.identity import Identity
    from swapmeet.protocol.objects import Leg, Notice, Offer, Rating, Receipt
    from swapmeet.protocol.settlement import ExchangeView, OfferView

log = logging.getLogger("swapmeet.node.api")

API_HOST = "127.0.0.1"
MIN_PREFIX = 4  # hex digits; shorter prefixes match by accident too easily
MAX_BODY = 64 * 1024  # bytes; a listing is at most 16 KiB signed, its JSON request far less
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
DEFAULT_LISTING_TTL_S = 7 * 86_400
DEFAULT_OFFER_TTL_S = 86_400  # an offer nobody answers in a day is stale
DEFAULT_DEADLINE_S = 600  # from accept to every signature: parties online settle in well under a second

_HEX = re.compile(r"[0-9a-f]+")
# GET /v1/trades?state=: the coarse states of jsonview.trade, then the settlement machine's own
TRADE_FILTERS = ("pending", "complete", "lapsed", "awaiting", "signed", "cancelled")


# --- errors (shared with the client, which re-raises them from JSON bodies) ---


class ApiError(SwapmeetError):
    """A refusal the API reports with a given HTTP status and stable ``api_code``."""

    http_status = 400
    api_code = "bad_request"


class UnknownObject(ApiError):
    """No object (listing, offer...) with that id or prefix is known to the node."""

    http_status = 404
    api_code = "not_found"


class AmbiguousPrefix(ApiError):
    """A hex prefix matches more than one object: give more digits."""

    http_status = 409
    api_code = "ambiguous"


class TooLarge(ApiError):
    """The request body is over :data:`MAX_BODY` bytes."""

    http_status = 413
    api_code = "too_large"


class Conflict(ApiError):
    """The request contradicts the node's state (e.g. withdrawing an already withdrawn listing)."""

    http_status = 409
    api_code = "conflict"
    exit_code = 1  # refused: the request was well formed, the node's state says no


ERRORS_BY_CODE: dict[str, type[ApiError]] = {
    cls.api_code: cls for cls in (ApiError, UnknownObject, AmbiguousPrefix, Conflict, TooLarge)
}


# --- what the HTTP layer asks of the node ---


@dataclass(frozen=True, slots=True)
class ListingSpec:
    """What to publish; the node signs it with its identity and its clock.

    Expiry: ``expires`` (absolute Unix seconds) or ``expires_in_s`` (relative to
    the node's clock), at most one of them; neither means
    :data:`DEFAULT_LISTING_TTL_S`. ``window`` is required for a rental and
    forbidden otherwise, ``due`` only for a loan (the protocol's rules; see
    ``swapmeet.protocol.boundary``).
    """

    title: str
    have: list[Item]
    want: list[Item] = field(default_factory=list)
    type: str = "goods"
    desc: str = ""
    tags: list[str] = field(default_factory=list)
    category: str = ""
    expires_in_s: int | None = None
    expires: int | None = None
    window: tuple[int, int] | None = None
    due: int | None = None
    loc: str | None = None

    def expiry(self, now: int) -> int:
        """The absolute expiry time for a listing created at ``now``."""
        if self.expires is not None and self.expires_in_s is not None:
            raise InvalidObject("expires", "give either an absolute expiry or a relative one, not both")
        if self.expires is not None:
            return self.expires
        if self.expires_in_s is not None:
            if self.expires_in_s <= 0:
                raise InvalidObject("expires_in_s", f"must be a positive number of seconds, got {self.expires_in_s}")
            return now + self.expires_in_s
        return now + DEFAULT_LISTING_TTL_S

    def to_listing(self, identity: "Identity", *, now: int) -> Listing:
        """Sign this spec as a new listing (raises :class:`InvalidObject` naming the bad field)."""
        from swapmeet.protocol.build import make_listing  # not at module level: keep the client import light

        return make_listing(
            identity,
            title=self.title,
            have=self.have,
            want=self.want,
            type=self.type,
            desc=self.desc,
            tags=self.tags,
            category=self.category,
            created=now,
            expires=self.expiry(now),
            window=self.window,
            due=self.due,
            loc=self.loc,
        )


@dataclass(frozen=True, slots=True)
class Trade:
    """An exchange this node is a party to, with what this node did after it completed.

    ``view`` is the settlement machine's view (its merged copy and fine-grained state);
    ``confirmed_legs`` are the legs this node's receipts confirm, ``rated`` the parties it rated.
    """

    view: "ExchangeView"
    confirmed_legs: tuple[int, ...] = ()
    rated: tuple[bytes, ...] = ()


class NodeAPI(Protocol):
    """The async facade a running node offers to its local API.

    Implementations raise :class:`SwapmeetError` subclasses for refusals:
    :class:`InvalidObject` (bad input, 400), :class:`UnknownObject` (404),
    :class:`AmbiguousPrefix` / :class:`Conflict` (409). Anything else is a bug
    and becomes a 500. ``status`` and ``peers`` are plain methods (cheap,
    in-memory); the HTTP layer also accepts them returning awaitables.
    """

    def status(self) -> dict[str, Any]:
        """``{"peer_id", "net", "addrs": [multiaddr with /p2p/...], "peers": int,
        "book": {"listings", "offers", "withdrawals"}, "trades": {"offers_to_answer",
        "awaiting_you", "pending", "complete", "lapsed"}, "uptime_s", "version"}``."""
        ...

    def peers(self) -> list[dict[str, Any]]:
        """Connected peers: ``[{"peer_id": str, "addrs": [multiaddr str]}]``."""
        ...

    async def publish(self, spec: ListingSpec) -> Listing:
        """Sign (``spec.to_listing``), store and announce a new listing; return it."""
        ...

    async def withdraw(self, listing_id: bytes) -> Withdrawal:
        """Withdraw the series of our listing ``listing_id`` (any of its versions); return the tombstone."""
        ...

    async def listings(
        self,
        query: str | None = None,
        *,
        type: str | None = None,
        category: str | None = None,
        author: bytes | None = None,
        wants: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[Listing]:
        """Live listings: full-text ``query`` over title/desc/tags, then exact filters; at most ``limit``."""
        ...

    async def resolve(self, prefix_hex: str) -> bytes:
        """The full id of the one object whose hex id starts with ``prefix_hex`` (lowercase hex).

        Raises :class:`UnknownObject` when none matches, :class:`AmbiguousPrefix` when several do.
        """
        ...

    async def get(self, id: bytes) -> SignedObject | None:
        """The object with this exact id, or None."""
        ...

    async def stop(self) -> None:
        """Request a clean shutdown and return at once (the HTTP answer is sent before this is called)."""
        ...

    # --- settlement (issue 5). Ids are full ids; the HTTP layer resolves prefixes with ``resolve``,
    # which covers offers and exchanges this node takes part in as well as the book.
    # Refusals by the settlement machine raise :class:`Conflict` (409, exit 1) with its reason.

    async def make_offer(
        self,
        listing_id: bytes,
        give: list[Item],
        take: list[Item] | None = None,
        *,
        expires_in_s: int | None = None,
        note: str = "",
    ) -> "Offer":
        """Offer ``give`` for ``take`` (default: everything the listing has) out of a listing in the book.

        Signed, sent directly to the maker (gossip if it cannot be dialled) and announced; returned.
        ``expires_in_s`` defaults to :data:`DEFAULT_OFFER_TTL_S`.
        """
        ...

    async def offers(self, direction: str | None = None) -> "list[OfferView]":
        """Offers this node wrote (``"outgoing"``) or received (``"incoming"``), or both (None); newest first."""
        ...

    async def accept(self, offer_id: bytes, *, deadline_in_s: int | None = None) -> "Trade":
        """Accept an open offer to this node: sign the exchange that settles it (deadline default
        :data:`DEFAULT_DEADLINE_S`); the taker countersigns by itself. Returns the trade (pending)."""
        ...

    async def decline(self, offer_id: bytes, note: str = "") -> "Notice":
        """Decline an open offer to this node (signed notice to its author)."""
        ...

    async def counter(
        self,
        offer_id: bytes,
        give: list[Item],
        take: list[Item],
        *,
        expires_in_s: int | None = None,
        note: str = "",
    ) -> "Offer":
        """Answer an open offer to this node with other terms. ``give``/``take`` are from the *taker's*
        side, as in the original offer (what the taker gives, what the taker takes)."""
        ...

    async def cancel(self, target_id: bytes, note: str = "") -> "Notice":
        """Withdraw an open offer this node wrote, or leave an exchange this node has not signed."""
        ...

    async def propose(
        self,
        parties: list[bytes],
        legs: "list[Leg]",
        *,
        listings: list[bytes] = (),  # type: ignore[assignment]
        deadline_in_s: int | None = None,
    ) -> "Trade":
        """Coordinate an N-party exchange (2..8 parties, this node among them): sign it first, send it
        to every party. Each other party consents with :meth:`sign`."""
        ...

    async def sign(self, exchange_id: bytes) -> "Trade":
        """Consent to (sign) an exchange that waits for this node's signature."""
        ...

    async def trades(self) -> "list[Trade]":
        """Every exchange this node is a party to, newest first."""
        ...

    async def trade(self, exchange_id: bytes) -> "Trade":
        """One exchange (:class:`UnknownObject` if this node is not a party to it)."""
        ...

    async def confirm(self, exchange_id: bytes, legs: list[int] | None = None) -> "Receipt":
        """Confirm receipt of legs of a complete exchange (default: every leg this node receives):
        a receipt entry on this node's chain. :class:`Conflict` if not complete or nothing to confirm."""
        ...

    async def rate(
        self, exchange_id: bytes, score: int, *, subject: bytes | None = None, comment: str = ""
    ) -> "Rating":
        """Rate a counterparty of a complete exchange (1..5): a rating entry on this node's chain.
        ``subject`` defaults to the only other party; required with 3+ parties."""
        ...

    async def forked(self) -> list[bytes]:
        """Authors this node holds a verified fork proof against (they signed two different entries
        at one seq): the CLI marks them wherever it shows them."""
        ...


# --- the HTTP app ---


def new_token() -> str:
    """A fresh API token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def parse_id(text: str, what: str = "id") -> str | bytes:
    """A full id (64 hex -> bytes) or a validated lowercase hex prefix (str) to resolve."""
    text = text.strip().lower()
    if not _HEX.fullmatch(text) or len(text) > 64:
        raise InvalidObject(what, f"expected a hex object id or a prefix of one, got {text!r}", "format")
    if len(text) == 64:
        return bytes.fromhex(text)
    if len(text) < MIN_PREFIX:
        raise InvalidObject(what, f"an id prefix needs at least {MIN_PREFIX} hex digits, got {text!r}", "format")
    return text


def parse_author(text: str, what: str = "author") -> bytes:
    """An author (or any peer: ``what`` names the field in errors) as a PeerID (``12D3KooW...``) or 64-hex key."""
    from swapmeet.protocol.identity import public_key_from_peer_id

    text = text.strip()
    if len(text) == 64 and _HEX.fullmatch(text.lower()):
        return bytes.fromhex(text)
    try:
        return public_key_from_peer_id(text)
    except InvalidObject:
        raise InvalidObject(
            what, f"expected a PeerID (12D3KooW...) or a 64-hex public key, got {text!r}", "format"
        ) from None


def error_body(err: Exception) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body for an error raised while serving a request."""
    message = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, InvalidObject):
        return 400, {"error": message, "code": "invalid", "path": err.path, "rule": err.code}
    if isinstance(err, SwapmeetError):
        status = getattr(err, "http_status", 400)
        return status, {"error": message, "code": getattr(err, "api_code", "bad_request")}
    return 500, {"error": f"internal error in the node: {type(err).__name__}: {message}", "code": "internal"}


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class _Guard:
    """Outermost ASGI middleware: bearer token on every HTTP request, and a body size cap.

    Pure ASGI rather than a FastAPI dependency so that nothing -- unknown
    paths, ``/openapi.json``, validation errors -- answers without the token.
    """

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # lifespan
            return
        headers = dict(scope.get("headers") or [])
        # compare_digest: the comparison time must not reveal how much of the token was right
        if not hmac.compare_digest(headers.get(b"authorization", b""), self._expected):
            await _send_json(
                send,
                401,
                {
                    "error": "missing or wrong API token: send 'Authorization: Bearer <token>'"
                    " with the token from the node's api.cookie",
                    "code": "unauthorized",
                },
                [(b"www-authenticate", b"Bearer")],
            )
            return
        length = headers.get(b"content-length")
        too_large = {"error": f"request body over {MAX_BODY} bytes", "code": TooLarge.api_code}
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            await _send_json(send, 413, too_large)
            return
        # Read the whole (small) body here, so a chunked body without content-length is capped too,
        # then hand it to the app in one message.
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_BODY:
                await _send_json(send, 413, too_large)
                return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for the disconnect, as the app expects
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


async def _send_json(send: Any, status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def create_app(node: NodeAPI, token: str) -> "FastAPI":
    """The FastAPI app serving ``node``; every request must carry ``Authorization: Bearer <token>``."""
    from typing import Annotated

    from fastapi import BackgroundTasks, FastAPI, Query, Request, Security
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi.security import HTTPBearer
    from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag
    from starlette.exceptions import HTTPException
    from swapmeet.protocol.build import parse_item
    from swapmeet.protocol.identity import peer_id
    from swapmeet.protocol.objects import LISTING_TYPES, Leg
    from swapmeet.protocol.settlement import OfferState, OfferView

    from . import jsonview

    class _Open(BaseModel):
        # Responses pass through fields the node adds later instead of silently dropping them.
        model_config = ConfigDict(extra="allow")

    class ItemOut(BaseModel):
        item: str
        qty: int
        unit: str

    class Book(_Open):
        listings: int
        offers: int
        withdrawals: int

    class TradeCounts(_Open):
        offers_to_answer: int = Field(description="open offers to this node, waiting for its answer")
        awaiting_you: int = Field(description="exchanges waiting for this node's signature")
        pending: int
        complete: int
        lapsed: int

    class StatusOut(_Open):
        peer_id: str
        net: str
        addrs: list[str]
        peers: int
        book: Book
        trades: TradeCounts
        uptime_s: float
        version: str

    class PeerOut(_Open):
        peer_id: str
        addrs: list[str]

    class ListingOut(_Open):
        kind: str
        id: str
        author: str
        title: str
        type: str
        have: list[ItemOut]
        want: list[ItemOut]
        desc: str
        tags: list[str]
        category: str
        created: int
        expires: int
        series: str
        rev: int
        window: list[int] | None
        due: int | None
        loc: str | None

    class ListingRowOut(ListingOut):
        author_forked: bool = Field(description="this node holds a fork proof against the author")

    class WithdrawalOut(_Open):
        kind: str
        id: str
        author: str
        series: str
        created: int

    class ErrorOut(_Open):
        error: str
        code: str

    class ItemIn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        item: str
        qty: int
        unit: str = "pc"

    # A tagged union, so a bad item object is reported against the object's own fields instead of
    # also "is not a valid string" for the other branch.
    ItemText = Annotated[
        Annotated[str, Tag("text")] | Annotated[ItemIn, Tag("object")],
        Discriminator(lambda v: "object" if isinstance(v, dict | ItemIn) else "text"),
    ]

    class ListingIn(BaseModel):
        """A listing to publish. Items are ``"QTY x ITEM"`` / ``"QTY UNIT x ITEM"`` strings or objects."""

        model_config = ConfigDict(extra="forbid")
        title: str
        have: list[ItemText] = Field(min_length=1)
        want: list[ItemText] = []
        type: str = Field("goods", description=f"one of {', '.join(LISTING_TYPES)}")
        desc: str = ""
        tags: list[str] = []
        category: str = ""
        expires_in_s: int | None = Field(None, description="relative to the node's clock")
        expires: int | None = Field(None, description="absolute Unix seconds")
        window: tuple[int, int] | None = Field(None, description="[start, end] Unix seconds; rentals only")
        due: int | None = Field(None, description="repayment time, Unix seconds; loans only")
        loc: str | None = Field(None, description="geohash, at most 5 characters")

    class IdOut(BaseModel):
        id: str

    class OfferRowOut(_Open):
        kind: str
        id: str
        author: str
        listing: str
        maker: str
        taker: str
        give: list[ItemOut]
        take: list[ItemOut]
        counters: str | None
        note: str
        created: int
        expires: int
        from_: str = Field(alias="from")
        to: str
        state: str = Field(description="open, accepted, declined, countered, cancelled or expired")
        exchange: str | None
        answer: str | None

    class LegOut(_Open):
        index: int
        from_: str = Field(alias="from")
        to: str
        items: list[ItemOut]

    class TradeOut(_Open):
        kind: str
        id: str
        state: str = Field(description="pending, complete or lapsed")
        detail: str = Field(description="awaiting, signed, complete, lapsed or cancelled")
        parties: list[str]
        legs: list[LegOut]
        signed_by: list[str]
        complete: bool
        created: int
        deadline: int
        offer: str | None
        listings: list[str]
        appended: bool
        confirmed_legs: list[int]
        rated: list[str]
        forked: list[str]
        notice: str | None

    class NoticeOut(_Open):
        kind: str
        id: str
        author: str
        action: str
        about: str
        about_kind: str
        note: str
        created: int

    class ReceiptOut(_Open):
        kind: str
        id: str
        author: str
        exchange: str
        legs: list[int]
        created: int

    class RatingOut(_Open):
        kind: str
        id: str
        author: str
        exchange: str
        subject: str
        score: int
        comment: str
        created: int

    class _In(BaseModel):
        model_config = ConfigDict(extra="forbid")

    class OfferIn(_In):
        """An offer on a listing, from the taker's side: what we give, what we take out of the listing."""

        listing: str = Field(description="the listing's id or an unambiguous prefix")
        give: list[ItemText] = Field(min_length=1)
        take: list[ItemText] | None = Field(None, description="default: everything the listing has")
        expires_in_s: int | None = Field(None, gt=0, description=f"default {DEFAULT_OFFER_TTL_S}")
        note: str = ""

    class CounterIn(_In):
        """Other terms for an offer to us, from the taker's side as in the offer."""

        give: list[ItemText] = Field(min_length=1, description="what the taker gives")
        take: list[ItemText] = Field(min_length=1, description="what the taker takes out of the listing")
        expires_in_s: int | None = Field(None, gt=0, description=f"default {DEFAULT_OFFER_TTL_S}")
        note: str = ""

    class AcceptIn(_In):
        deadline_in_s: int | None = Field(None, gt=0, description=f"signing deadline, default {DEFAULT_DEADLINE_S}")

    class NoteIn(_In):
        note: str = ""

    class LegIn(_In):
        from_: str = Field(alias="from", description="the giver: PeerID or 64-hex key")
        to: str = Field(description="the receiver: PeerID or 64-hex key")
        items: list[ItemText] = Field(min_length=1)

    class ProposeIn(_In):
        parties: list[str] | None = Field(None, description="default: in order of first appearance in the legs")
        legs: list[LegIn] = Field(min_length=1)
        listings: list[str] = Field([], description="ids (or prefixes) of the listings the exchange draws on")
        deadline_in_s: int | None = Field(None, gt=0, description=f"signing deadline, default {DEFAULT_DEADLINE_S}")

    class ConfirmIn(_In):
        legs: list[int] | None = Field(None, description="leg indexes; default: every leg this node receives")

    class RateIn(_In):
        score: int = Field(ge=1, le=5)
        subject: str | None = Field(None, description="the party rated; default: the only other party")
        comment: str = ""

    class StoppingOut(BaseModel):
        stopping: bool

    def items(values: list[str | ItemIn], path: str) -> list[Item]:
        return [
            parse_item(v, f"{path}[{i}]") if isinstance(v, str) else Item(item=v.item, qty=v.qty, unit=v.unit)
            for i, v in enumerate(values)
        ]

    async def full_id(text: str, what: str = "id") -> bytes:
        parsed = parse_id(text, what)
        return parsed if isinstance(parsed, bytes) else await node.resolve(parsed)

    def open_offer(x: "Offer") -> dict[str, Any]:
        # a freshly made offer (or counter-offer) is open: the machine just recorded it so
        return jsonview.offer_row(OfferView(x, OfferState.OPEN, None, None))

    async def trade_out(t: Trade) -> dict[str, Any]:
        return jsonview.trade(t, set(await node.forked()))

    def legs_and_parties(body: ProposeIn) -> tuple[list[bytes], list[Leg]]:
        ends = [
            (parse_author(leg.from_, f"legs[{i}].from"), parse_author(leg.to, f"legs[{i}].to"))
            for i, leg in enumerate(body.legs)
        ]
        if body.parties is not None:
            parties = [parse_author(p, f"parties[{i}]") for i, p in enumerate(body.parties)]
        else:
            parties = list(dict.fromkeys(key for pair in ends for key in pair))
        index = {key: i for i, key in enumerate(parties)}
        legs = []
        for i, ((giver, receiver), leg) in enumerate(zip(ends, body.legs, strict=True)):
            for end, key in (("from", giver), ("to", receiver)):
                if key not in index:
                    raise InvalidObject(f"legs[{i}].{end}", "is not one of the parties", "non-party")
            legs.append(Leg(index[giver], index[receiver], tuple(items(leg.items, f"legs[{i}].items"))))
        return parties, legs

    errors: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorOut, "description": what}
        for status, what in ((400, "bad input"), (401, "missing or wrong token"), (404, "unknown id"))
    }
    app = FastAPI(
        title="swapmeet node",
        version=package_version(),
        description="The local API of a swapmeet node (127.0.0.1 only; bearer token from <home>/api.cookie).",
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        # declares the scheme in the OpenAPI schema; _Guard enforces it on every path
        dependencies=[Security(HTTPBearer(auto_error=False, description="the token from <home>/api.cookie"))],
        responses=errors,
    )

    @app.exception_handler(SwapmeetError)
    async def _swapmeet_error(request: Request, exc: SwapmeetError) -> JSONResponse:
        status, body = error_body(exc)
        return JSONResponse(body, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        first = problems[0] if problems else {"loc": (), "msg": "invalid request"}
        if first.get("type") == "json_invalid":
            return JSONResponse({"error": "the request body is not valid JSON", "code": "invalid", "path": ""}, 400)
        where = _loc_path(first.get("loc", ()))
        message = f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid"))
        if len(problems) > 1:
            message += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
        return JSONResponse({"error": message, "code": "invalid", "path": where}, status_code=400)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            body = {"error": f"no such endpoint: {request.method} {request.url.path}", "code": "not_found"}
        elif exc.status_code == 405:
            body = {"error": f"{request.method} is not allowed on {request.url.path}", "code": "bad_method"}
        else:
            body = {"error": str(exc.detail), "code": "http"}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after answering, so the server logs the traceback; the client gets one line.
        status, body = error_body(exc)
        return JSONResponse(body, status_code=status)

    @app.get("/v1/status", response_model=StatusOut)
    async def status() -> dict[str, Any]:
        """The node: peer id, network, listen addrs, peer count, book size, uptime, version."""
        return await _maybe_await(node.status())

    @app.get("/v1/peers", response_model=list[PeerOut])
    async def peers() -> list[dict[str, Any]]:
        """Connected peers."""
        return await _maybe_await(node.peers())

    @app.get("/v1/listings", response_model=list[ListingRowOut])
    async def listings(
        q: Annotated[str | None, Query(description="full-text search over title, description, tags")] = None,
        type: Annotated[str | None, Query(description=f"one of {', '.join(LISTING_TYPES)}")] = None,
        category: str | None = None,
        author: Annotated[str | None, Query(description="PeerID or 64-hex public key")] = None,
        wants: Annotated[str | None, Query(description="listings that want this item")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    ) -> list[dict[str, Any]]:
        """Live listings, filtered."""
        if type is not None and type not in LISTING_TYPES:
            raise InvalidObject("type", f"must be one of {', '.join(LISTING_TYPES)}, got {type!r}", "format")
        found = await node.listings(
            q or None,
            type=type,
            category=category or None,
            author=parse_author(author) if author else None,
            wants=wants or None,
            limit=limit,
        )
        forked = set(await node.forked()) if found else set()
        return [{**jsonview.listing(x), "author_forked": x.author in forked} for x in found]

    @app.post("/v1/listings", response_model=ListingOut, status_code=201)
    async def publish(body: ListingIn) -> dict[str, Any]:
        """Sign, store and announce a new listing."""
        spec = ListingSpec(
            title=body.title,
            have=items(body.have, "have"),
            want=items(body.want, "want"),
            type=body.type,
            desc=body.desc,
            tags=list(body.tags),
            category=body.category,
            expires_in_s=body.expires_in_s,
            expires=body.expires,
            window=body.window,
            due=body.due,
            loc=body.loc,
        )
        return jsonview.listing(await node.publish(spec))

    @app.post("/v1/listings/{listing_id}/withdraw", response_model=WithdrawalOut)
    async def withdraw(listing_id: str) -> dict[str, Any]:
        """Withdraw one of this node's listings (every version of its series)."""
        return jsonview.withdrawal(await node.withdraw(await full_id(listing_id)))

    @app.get("/v1/objects/{object_id}", response_model=dict[str, Any])
    async def get_object(object_id: str, raw: bool = False) -> dict[str, Any]:
        """Any object the node holds, by id or unambiguous prefix."""
        oid = await full_id(object_id)
        obj = await node.get(oid)
        if obj is None:
            raise UnknownObject(f"no object with id {oid.hex()}")
        rendered = jsonview.render(obj)
        if raw:
            rendered["raw"] = obj.raw.hex()
        return rendered

    @app.get("/v1/resolve/{prefix}", response_model=IdOut)
    async def resolve(prefix: str) -> dict[str, str]:
        """The full id for an unambiguous hex prefix."""
        return {"id": (await full_id(prefix)).hex()}

    # --- settlement ---

    @app.post("/v1/offers", response_model=OfferRowOut, status_code=201)
    async def make_offer(body: OfferIn) -> dict[str, Any]:
        """Offer ``give`` for ``take`` out of a listing in the book; sent to its author."""
        made = await node.make_offer(
            await full_id(body.listing, "listing"),
            items(body.give, "give"),
            items(body.take, "take") if body.take is not None else None,
            expires_in_s=body.expires_in_s,
            note=body.note,
        )
        return open_offer(made)

    @app.get("/v1/offers", response_model=list[OfferRowOut])
    async def offers(
        direction: Annotated[str | None, Query(description="incoming or outgoing; default both")] = None,
    ) -> list[dict[str, Any]]:
        """Offers this node wrote or received, newest first, with their state."""
        if direction is not None and direction not in ("incoming", "outgoing"):
            raise InvalidObject("direction", f"must be incoming or outgoing, got {direction!r}", "format")
        return [jsonview.offer_row(v) for v in await node.offers(direction)]

    @app.post("/v1/offers/{offer_id}/accept", response_model=TradeOut)
    async def accept(offer_id: str, body: AcceptIn | None = None) -> dict[str, Any]:
        """Accept an open offer to this node: sign the exchange that settles it (pending until countersigned)."""
        deadline = body.deadline_in_s if body is not None else None
        return await trade_out(await node.accept(await full_id(offer_id), deadline_in_s=deadline))

    @app.post("/v1/offers/{offer_id}/decline", response_model=NoticeOut)
    async def decline(offer_id: str, body: NoteIn | None = None) -> dict[str, Any]:
        """Decline an open offer to this node (a signed notice to its author)."""
        return jsonview.notice(await node.decline(await full_id(offer_id), body.note if body else ""))

    @app.post("/v1/offers/{offer_id}/counter", response_model=OfferRowOut, status_code=201)
    async def counter(offer_id: str, body: CounterIn) -> dict[str, Any]:
        """Answer an open offer to this node with other terms (a counter-offer naming it)."""
        made = await node.counter(
            await full_id(offer_id),
            items(body.give, "give"),
            items(body.take, "take"),
            expires_in_s=body.expires_in_s,
            note=body.note,
        )
        return open_offer(made)

    @app.post("/v1/offers/{offer_id}/cancel", response_model=NoticeOut)
    async def cancel_offer(offer_id: str, body: NoteIn | None = None) -> dict[str, Any]:
        """Withdraw an open offer this node wrote (a signed notice)."""
        return jsonview.notice(await node.cancel(await full_id(offer_id), body.note if body else ""))

    @app.post("/v1/trades", response_model=TradeOut, status_code=201)
    async def propose(body: ProposeIn) -> dict[str, Any]:
        """Propose an N-party exchange (this node among the parties): signed here first, sent to every party."""
        parties, legs = legs_and_parties(body)
        listing_ids = [await full_id(x, f"listings[{i}]") for i, x in enumerate(body.listings)]
        proposed = await node.propose(parties, legs, listings=listing_ids, deadline_in_s=body.deadline_in_s)
        return await trade_out(proposed)

    @app.get("/v1/trades", response_model=list[TradeOut])
    async def trades(
        state: Annotated[
            str | None, Query(description=f"one of {', '.join(TRADE_FILTERS)}: coarse or fine state")
        ] = None,
    ) -> list[dict[str, Any]]:
        """Exchanges this node is a party to, newest first."""
        if state is not None and state not in TRADE_FILTERS:
            raise InvalidObject("state", f"must be one of {', '.join(TRADE_FILTERS)}, got {state!r}", "format")
        forked = set(await node.forked())
        rendered = [jsonview.trade(t, forked) for t in await node.trades()]
        return [t for t in rendered if state is None or state in (t["state"], t["detail"])]

    @app.get("/v1/trades/{exchange_id}", response_model=TradeOut)
    async def trade(exchange_id: str) -> dict[str, Any]:
        """One exchange this node is a party to."""
        return await trade_out(await node.trade(await full_id(exchange_id)))

    @app.post("/v1/trades/{exchange_id}/sign", response_model=TradeOut)
    async def sign(exchange_id: str) -> dict[str, Any]:
        """Consent to (sign) an exchange that waits for this node's signature."""
        return await trade_out(await node.sign(await full_id(exchange_id)))

    @app.post("/v1/trades/{exchange_id}/cancel", response_model=NoticeOut)
    async def cancel_trade(exchange_id: str, body: NoteIn | None = None) -> dict[str, Any]:
        """Leave an exchange this node has not signed (a signed promise never to sign it)."""
        return jsonview.notice(await node.cancel(await full_id(exchange_id), body.note if body else ""))

    @app.post("/v1/trades/{exchange_id}/confirm", response_model=ReceiptOut)
    async def confirm(exchange_id: str, body: ConfirmIn | None = None) -> dict[str, Any]:
        """Confirm receipt of legs of a complete exchange (a receipt entry on this node's chain)."""
        legs = body.legs if body is not None else None
        return jsonview.receipt(await node.confirm(await full_id(exchange_id), legs))

    @app.post("/v1/trades/{exchange_id}/rate", response_model=RatingOut)
    async def rate(exchange_id: str, body: RateIn) -> dict[str, Any]:
        """Rate a counterparty of a complete exchange (a rating entry on this node's chain)."""
        subject = parse_author(body.subject, "subject") if body.subject is not None else None
        rated = await node.rate(await full_id(exchange_id), body.score, subject=subject, comment=body.comment)
        return jsonview.rating(rated)

    @app.get("/v1/forked", response_model=list[str])
    async def forked() -> list[str]:
        """Authors this node holds a verified fork proof against (PeerIDs)."""
        return [peer_id(key) for key in await node.forked()]

    @app.post("/v1/stop", response_model=StoppingOut, status_code=202)
    async def stop(background: BackgroundTasks) -> dict[str, bool]:
        """Shut the node down; answered before the shutdown starts."""
        background.add_task(node.stop)  # runs after the response is sent
        return {"stopping": True}

    app.add_middleware(_Guard, token=token)
    return app


def _loc_path(loc: Any) -> str:
    """``("body", "have", 0, "qty")`` -> ``have[0].qty`` (field path as the protocol writes it)."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path"):
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("text", "object"):  # the union's tags add nothing for a reader
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("swapmeet")
    except PackageNotFoundError:
        return "0+unknown"


# --- serving ---


async def serve_api(
    app: Any,
    *,
    port: int,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: "trio.TaskStatus[int] | None" = None,
) -> None:
    """Serve ``app`` with hypercorn's trio worker on 127.0.0.1:``port`` until cancelled.

    ``port=0`` binds a free port; the bound port is reported with
    ``task_status.started(port)`` (use ``await nursery.start(...)``). Cancelling
    the enclosing scope stops the server at once and closes the listening
    socket; when ``shutdown_trigger`` returns, the server shuts down gracefully
    instead (in-flight requests get a few seconds) and this returns.
    """
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    if task_status is None:  # called directly rather than through nursery.start
        task_status = trio.TASK_STATUS_IGNORED

    created: list[Any] = []

    class _TrackingConfig(Config):
        # hypercorn never closes its listening sockets, it leaves them to the garbage collector (late, if a
        # traceback still holds them): keep them, to close them ourselves so the port is free when we return
        def create_sockets(self) -> Any:
            sockets = super().create_sockets()
            created.append(sockets)
            return sockets

    config = _TrackingConfig()
    config.bind = [f"{API_HOST}:{port}"]  # loopback only, never 0.0.0.0: the token is the only lock
    config.accesslog = None
    server_log = logging.getLogger("swapmeet.node.api.server")
    if server_log.level == logging.NOTSET and not log.isEnabledFor(logging.DEBUG):
        # hypercorn's own info lines ("Running on ... (CTRL + C to quit)") are noise unless debugging
        server_log.setLevel(logging.WARNING)
    config.errorlog = server_log
    config.include_server_header = False
    config.graceful_timeout = 3.0
    config.h11_max_incomplete_size = 16 * 1024
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve, app, config, shutdown_trigger=shutdown_trigger))
            bound = created[0].insecure_sockets[0].getsockname()[1]
            log.info("local API on http://%s:%d", API_HOST, bound)
            task_status.started(bound)
    finally:
        for sockets in created:
            for sock in (*sockets.insecure_sockets, *sockets.secure_sockets):
                with contextlib.suppress(OSError):
                    sock.close()


# --- the cookie file ---


@dataclass(frozen=True, slots=True)
class Cookie:
    """The contents of ``<home>/api.cookie``: ``{"port": int, "token": str, "pid": int}``."""

    port: int
    token: str
    pid: int


def write_cookie(home: Home, port: int, token: str) -> Cookie:
    """Atomically (re)write ``home.api_cookie``, mode 0600 from creation; returns what was written."""
    cookie = Cookie(port=port, token=token, pid=os.getpid())
    data = json.dumps({"port": cookie.port, "token": cookie.token, "pid": cookie.pid}).encode()
    path = home.api_cookie
    home.ensure()
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        # created 0600 (never briefly readable by others), filled, then renamed over any stale cookie
        fd = os.open(tmp, flags, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise HomeError(f"cannot write the API cookie {path}: {exc.strerror or exc}") from None
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

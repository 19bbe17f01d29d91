"""What a running node offers its local users: the contract the HTTP layer and the CLI talk to.

Two halves, each a :class:`typing.Protocol`, implemented inside the node by the
room that owns the work and by an in-memory fake in the API's tests:

* :class:`MarketAPI`: the node itself (status, peers, stop, a live feed of what
  changes) and the market as it sees it (publish, withdraw, search the offer book,
  look objects up, forks, photos, the ledger's chains, reputations and audit);
  implemented by :class:`swapmeet.node.market.Market`.
* :class:`TradingAPI`: offers and exchanges this node takes part in;
  implemented by :class:`swapmeet.node.trading.Trading`.

Both speak typed, verified objects (:mod:`swapmeet.protocol.objects`), never
JSON; ids are full ids (the HTTP layer resolves prefixes with
:meth:`MarketAPI.resolve`). Refusals are :class:`SwapmeetError` subclasses,
each with the HTTP status and stable ``api_code`` the HTTP layer answers with
and the CLI's client re-raises: :class:`InvalidObject` (bad input, 400),
:class:`UnknownObject` (404), :class:`AmbiguousPrefix` and :class:`Conflict`
(409). Anything else is a bug and becomes a 500.

This module stays light (no trio, FastAPI, libp2p or PyNaCl at import): the
CLI imports the errors and the id parsers from here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from swapmeet.protocol.batch import MAX_BATCH_OBJECTS
from swapmeet.protocol.errors import InvalidObject, SwapmeetError

if TYPE_CHECKING:
    from swapmeet.ledger.audit import AuditReport
    from swapmeet.protocol.listing_spec import ListingSpec
    from swapmeet.protocol.objects import (
        Item,
        LedgerEntry,
        Leg,
        Listing,
        Notice,
        Offer,
        Rating,
        Receipt,
        SignedObject,
        Withdrawal,
    )
    from swapmeet.protocol.settlement import ExchangeView, OfferView

    from .events import Subscription
    from .ledgerview import ChainHeld, Reputation
    from .matching import MatchResult

API_HOST = "127.0.0.1"  # the local API listens on loopback only: the token is the only lock
MIN_PREFIX = 4  # hex digits; shorter prefixes match by accident too easily
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# Listings one import (publish_many) may carry: what one gossip message can hold. Beyond the author's burst
# allowance (PROTOCOL.md §13) they are all stored at once and reach the swarm at the paced rate.
MAX_IMPORT = MAX_BATCH_OBJECTS
DEFAULT_OFFER_TTL_S = 86_400  # an offer nobody answers in a day is stale
DEFAULT_DEADLINE_S = 600  # from accept to every signature: parties online settle in well under a second

_HEX = re.compile(r"[0-9a-f]+")


# --- refusals (shared with the CLI's client, which re-raises them from JSON bodies) ---


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
    """The request body is over the HTTP layer's size cap."""

    http_status = 413
    api_code = "too_large"


class Conflict(ApiError):
    """The request contradicts the node's state (e.g. withdrawing an already withdrawn listing)."""

    http_status = 409
    api_code = "conflict"
    exit_code = 1  # refused: the request was well formed, the node's state says no


class Busy(ApiError):
    """The node holds as much of this work as it queues: try again later (the message says when)."""

    http_status = 429
    api_code = "busy"
    exit_code = 1


ERRORS_BY_CODE: dict[str, type[ApiError]] = {
    cls.api_code: cls for cls in (ApiError, UnknownObject, AmbiguousPrefix, Conflict, TooLarge, Busy)
}


# --- what the node answers with ---


@dataclass(frozen=True, slots=True)
class Trade:
    """An exchange this node is a party to, with what this node did after it completed.

    ``view`` is the settlement machine's view (its merged copy and fine-grained state);
    ``confirmed_legs`` are the legs this node's receipts confirm, ``rated`` the parties it rated.
    """

    view: ExchangeView
    confirmed_legs: tuple[int, ...] = ()
    rated: tuple[bytes, ...] = ()


# --- the two halves ---


class MarketAPI(Protocol):
    """The node and the market it sees. ``status`` and ``peers`` are plain methods (cheap, in memory);
    the HTTP layer also accepts them returning awaitables."""

    def status(self) -> dict[str, Any]:
        """``{"peer_id", "net", "addrs": [multiaddr with /p2p/...], "peers": int,
        "book": {"listings", "offers", "withdrawals"}, "trades": {"offers_to_answer",
        "awaiting_you", "pending", "complete", "lapsed"}, "uptime_s", "version",
        "activity": {event: count over the last hour}}`` (events: :data:`swapmeet.node.activity.EVENTS`)."""
        ...

    def activity(self) -> list[dict[str, int]]:
        """Gossip and sync per minute over the last hour, oldest first: ``[{"minute": unix_seconds,
        event: count, ...}]`` (60 rows; events: :data:`swapmeet.node.activity.EVENTS`)."""
        ...

    def peers(self) -> list[dict[str, Any]]:
        """Connected peers: ``[{"peer_id": str, "addrs": [multiaddr str]}]``."""
        ...

    async def publish(self, spec: ListingSpec, *, replaces: bytes | None = None) -> Listing:
        """Sign ``spec`` with the node's identity and clock, store and announce it; return the listing.

        ``replaces``: the id of one of our live listings that this is the next version of (same series,
        rev + 1: it supersedes the old one everywhere). Raises :class:`InvalidObject` naming the field
        the protocol refuses, :class:`UnknownObject` / :class:`Conflict` for a ``replaces`` that is not
        our live listing.
        """
        ...

    async def publish_many(self, specs: Sequence[ListingSpec]) -> list[Listing]:
        """Sign, store and announce several new listings at once (a catalogue): all or none.

        Stored in one transaction and gossiped together in as few messages as fit; beyond the author's
        burst allowance the rest reach the swarm at the paced rate. Raises :class:`InvalidObject` with
        paths starting ``listings[i].``, and for fewer than 1 or more than ``MAX_IMPORT`` specs.
        """
        ...

    async def withdraw(self, listing_id: bytes) -> Withdrawal:
        """Withdraw the series of our listing ``listing_id`` (any of its versions); return the tombstone.

        Raises :class:`UnknownObject` when the book holds no such live listing, :class:`Conflict` when
        it is not a listing or not ours.
        """
        ...

    async def listings(
        self,
        query: str | None = None,
        *,
        type: str | None = None,
        category: str | None = None,
        author: bytes | None = None,
        wants: str | None = None,
        tag: str | None = None,
        loc: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[Listing]:
        """Live listings: full-text ``query`` over title/desc/tags, then exact filters (``tag``: one of its
        tags; ``loc``: a prefix of its geohash); at most ``limit``."""
        ...

    async def resolve(self, prefix_hex: str) -> bytes:
        """The full id of the one object whose hex id starts with ``prefix_hex`` (lowercase hex): in the
        book, or an offer or exchange this node takes part in.

        Raises :class:`UnknownObject` when none matches, :class:`AmbiguousPrefix` when several do.
        """
        ...

    async def relay(self, raws: Sequence[bytes]) -> list[tuple[Listing | Withdrawal | Offer, bool]]:
        """Verify, store and announce listings, withdrawals and offers other authors signed (a program
        that keeps its own key, objects carried over from elsewhere): all or none, 1 to ``MAX_IMPORT``.

        Each object passes the same checks as one that arrives by gossip; the ones the book did not hold
        are announced, every author paced below its budget (PROTOCOL.md §13). Returns each object and
        whether it was new. Raises :class:`InvalidObject` with paths starting ``objects[i]``, and
        :class:`Busy` when an author already has as many objects waiting for its pace as the node queues.
        """
        ...

    async def get(self, id: bytes) -> SignedObject | None:
        """The object with this exact id (book, offers, exchanges of this node), or None."""
        ...

    async def forked(self) -> list[bytes]:
        """Authors this node holds a verified fork proof against (they signed two different entries
        at one seq): the CLI marks them wherever it shows them."""
        ...

    async def stop(self) -> None:
        """Request a clean shutdown and return at once (the HTTP answer is sent before this is called)."""
        ...

    def subscribe(self) -> AbstractContextManager[Subscription]:
        """A live feed of what changes (new listings, withdrawals, offers, trade changes, photos) while the
        ``with`` block runs: ``await sub.next(timeout)`` gives each :class:`~swapmeet.node.events.NodeEvent`.
        Raises :class:`Conflict` when too many feeds are open."""
        ...

    async def add_photo(self, data: bytes) -> bytes:
        """Re-encode an image (bounded size, metadata stripped) and keep it; its SHA-256, for a listing's
        ``photos``. Raises :class:`InvalidObject` (path ``photo``) for what is not a readable image."""
        ...

    async def photo(self, photo_hash: bytes, author: bytes | None = None) -> bytes | None:
        """A photo's bytes, from this node or fetched (``author``'s node first) and checked against the hash;
        None when nobody reachable has it."""
        ...

    async def reputation(self, authors: Sequence[bytes]) -> dict[bytes, Reputation]:
        """For each author: complete trades on its chain (if held) and the ratings others gave it."""
        ...

    async def chains(self) -> list[ChainHeld]:
        """Every ledger chain this node holds (its own among them)."""
        ...

    async def chain(self, author: bytes, limit: int = DEFAULT_LIMIT) -> list[LedgerEntry]:
        """The newest ``limit`` entries of ``author``'s chain, newest first ([] when not held)."""
        ...

    async def audit(self, progress: Callable[[int, int], None] | None = None) -> AuditReport:
        """Audit every chain held; ``progress(done, total)`` is called (from a worker thread) as it goes."""
        ...


class TradingAPI(Protocol):
    """Offers and exchanges this node takes part in. Refusals by the settlement machine (the offer is not
    open, the exchange is already signed...) raise :class:`Conflict` with its reason (409, exit 1);
    an id the node does not know raises :class:`UnknownObject`."""

    async def make_offer(
        self,
        listing_id: bytes,
        give: list[Item],
        take: list[Item] | None = None,
        *,
        expires_in_s: int | None = None,
        note: str = "",
    ) -> Offer:
        """Offer ``give`` for ``take`` (default: everything the listing has) out of a listing in the book.

        Signed, sent directly to the maker (gossip if it cannot be dialled) and announced; returned.
        ``expires_in_s`` defaults to :data:`DEFAULT_OFFER_TTL_S`. Raises :class:`UnknownObject` when
        the listing is not in the book, :class:`InvalidObject` for bad terms.
        """
        ...

    async def offers(self, direction: str | None = None) -> list[OfferView]:
        """Offers this node wrote (``"outgoing"``) or received (``"incoming"``), or both (None); newest first.

        Raises :class:`InvalidObject` for another ``direction``.
        """
        ...

    async def accept(self, offer_id: bytes, *, deadline_in_s: int | None = None) -> Trade:
        """Accept an open offer to this node: sign the exchange that settles it (deadline default
        :data:`DEFAULT_DEADLINE_S`); the taker countersigns by itself. Returns the trade (pending)."""
        ...

    async def decline(self, offer_id: bytes, note: str = "") -> Notice:
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
    ) -> Offer:
        """Answer an open offer to this node with other terms. ``give``/``take`` are from the *taker's*
        side, as in the original offer (what the taker gives, what the taker takes)."""
        ...

    async def cancel(self, target_id: bytes, note: str = "") -> Notice:
        """Withdraw an open offer this node wrote, or leave an exchange this node has not signed."""
        ...

    async def propose(
        self,
        parties: list[bytes],
        legs: list[Leg],
        *,
        listings: Sequence[bytes] = (),
        deadline_in_s: int | None = None,
    ) -> Trade:
        """Coordinate an N-party exchange (2..8 parties, this node among them): sign it first, send it
        to every party. Each other party consents with :meth:`sign`. Raises :class:`InvalidObject`
        when this node is not a party or the party count is out of range."""
        ...

    async def sign(self, exchange_id: bytes) -> Trade:
        """Consent to (sign) an exchange that waits for this node's signature."""
        ...

    async def trades(self) -> list[Trade]:
        """Every exchange this node is a party to, newest first."""
        ...

    async def match(self, max_parties: int, *, budget_s: float = 10.0, propose: bool = False) -> MatchResult:
        """The barter rings through this node that the solver picks from the book (rings of 2..``max_parties``
        listings; 0 means the settlement's 8); with ``propose``, the rings this node coordinates (smallest
        public key among the parties) are proposed as N-party exchanges. See :mod:`swapmeet.node.matching`.
        Raises :class:`Conflict` when a match is already running or the book is too large to match."""
        ...

    async def trade(self, exchange_id: bytes) -> Trade:
        """One exchange (:class:`UnknownObject` if this node is not a party to it)."""
        ...

    async def confirm(self, exchange_id: bytes, legs: list[int] | None = None) -> Receipt:
        """Confirm receipt of legs of a complete exchange (default: every leg this node receives):
        a receipt entry on this node's chain. :class:`Conflict` if not complete or nothing to confirm."""
        ...

    async def rate(self, exchange_id: bytes, score: int, *, subject: bytes | None = None, comment: str = "") -> Rating:
        """Rate a counterparty of a complete exchange (1..5): a rating entry on this node's chain.
        ``subject`` defaults to the only other party; required with 3+ parties."""
        ...


# --- ids and peers as users type them ---


def parse_id(text: str, what: str = "id") -> str | bytes:
    """A full id (64 hex -> bytes) or a validated lowercase hex prefix (str) to resolve.

    Raises :class:`InvalidObject` (path ``what``) for anything else.
    """
    text = text.strip().lower()
    if not _HEX.fullmatch(text) or len(text) > 64:
        raise InvalidObject(what, f"expected a hex object id or a prefix of one, got {text!r}", "format")
    if len(text) == 64:
        return bytes.fromhex(text)
    if len(text) < MIN_PREFIX:
        raise InvalidObject(what, f"an id prefix needs at least {MIN_PREFIX} hex digits, got {text!r}", "format")
    return text


def parse_author(text: str, what: str = "author") -> bytes:
    """An author (or any peer: ``what`` names the field in errors) as a PeerID (``12D3KooW...``) or 64-hex key.

    Raises :class:`InvalidObject` (path ``what``) for anything else.
    """
    from swapmeet.protocol.identity import public_key_from_peer_id  # base58 and nacl: not for every CLI start

    text = text.strip()
    if len(text) == 64 and _HEX.fullmatch(text.lower()):
        return bytes.fromhex(text)
    try:
        return public_key_from_peer_id(text)
    except InvalidObject:
        raise InvalidObject(
            what, f"expected a PeerID (12D3KooW...) or a 64-hex public key, got {text!r}", "format"
        ) from None


def package_version() -> str:
    """The installed swapmeet version (``0+unknown`` when running from a tree that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("swapmeet")
    except PackageNotFoundError:
        return "0+unknown"

"""Request and response models of the local API (pydantic): what the OpenAPI schema documents.

Responses are rendered by :mod:`swapmeet.node.jsonview`; these models check and document
them (``extra="allow"``: a field the node adds later passes through instead of being
dropped). Requests are strict (``extra="forbid"``). The listing models are built from
:class:`swapmeet.protocol.listing_spec.ListingSpec`, the one shape of a listing, so a new
listing field appears here without an edit.

There is deliberately no ``from __future__ import annotations``: pydantic and FastAPI read
these annotations at run time.
"""

from collections.abc import Sequence
from dataclasses import MISSING, fields
from typing import Annotated, Any, get_type_hints

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, create_model
from swapmeet.protocol.listing_spec import CONTENT_FIELDS, ListingSpec
from swapmeet.protocol.objects import Item

from ..contract import DEFAULT_DEADLINE_S, DEFAULT_OFFER_TTL_S, MAX_IMPORT


class _Open(BaseModel):
    # Responses pass through fields the node adds later instead of silently dropping them.
    model_config = ConfigDict(extra="allow")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ItemOut(BaseModel):
    item: str
    qty: int
    unit: str


class ItemIn(_In):
    item: str
    qty: int
    unit: str = "pc"


# A tagged union, so a bad item object is reported against the object's own fields instead of
# also "is not a valid string" for the other branch.
ItemText = Annotated[
    Annotated[str, Tag("text")] | Annotated[ItemIn, Tag("object")],
    Discriminator(lambda v: "object" if isinstance(v, dict | ItemIn) else "text"),
]


class ErrorOut(_Open):
    error: str
    code: str


# --- the node ---


class BookOut(_Open):
    listings: int
    offers: int
    withdrawals: int


class TradeCounts(_Open):
    offers_to_answer: int = Field(description="open offers to this node, waiting for its answer")
    awaiting_you: int = Field(description="exchanges waiting for this node's signature")
    pending: int
    complete: int
    lapsed: int


class ActivityOut(_Open):
    gossip_in: int = Field(description="verified objects received by gossip")
    gossip_new: int = Field(description="of those, new to this node")
    gossip_out: int = Field(description="gossip messages this node published")
    sync_sessions: int = Field(description="book-sync and ledger-sync sessions finished")
    sync_objects: int = Field(description="objects and entries moved by sync")
    refused: int = Field(description="messages refused at the boundary or over a budget")


class ActivityMinuteOut(ActivityOut):
    minute: int = Field(description="the minute's start, Unix seconds")


class RelayOut(_Open):
    service: bool = Field(description="whether this node offers its capped relay service to peers")
    reservations: list[str] = Field(description="peer ids of the relays we hold a reservation on")
    circuits_relayed: int = Field(description="circuits this node's relay service opened since start")
    bytes_relayed: int = Field(description="bytes this node's relay service carried since start")
    circuits_cut: int = Field(0, description="circuits the relay service cut at their byte or time cap")
    reservations_refused: int = Field(0, description="reservation requests the relay service refused (caps)")
    circuits_refused: int = Field(0, description="circuit requests the relay service refused (caps)")
    hole_punches: dict[str, int] = Field(
        default_factory=dict, description="relayed connections hole punching made direct, and ones it gave up on"
    )


class StatusOut(_Open):
    peer_id: str
    net: str
    addrs: list[str]
    reachability: str = Field(
        "unknown", description="public | private | unknown: whether peers could dial us back (AutoNAT)"
    )
    relay: RelayOut | None = None
    peers: int
    book: BookOut
    trades: TradeCounts
    uptime_s: float
    version: str
    activity: ActivityOut = Field(description="counts over the last hour")


class ConnectionOut(_Open):
    relayed: bool = Field(description="true: through a relay (/p2p-circuit); false: a direct connection")
    addr: str = Field(description="the connection's address (the relay circuit or the remote ip/port)")


class PeerOut(_Open):
    peer_id: str
    addrs: list[str]
    connections: list[ConnectionOut] = Field(default_factory=list, description="each open connection to the peer")
    hole_punch: str | None = Field(
        None,
        description="direct | trying | failed: why — what hole punching (DCUtR) made of a relayed connection;"
        " null when never tried (reached directly, or we are public)",
    )


class IdOut(BaseModel):
    id: str


class PhotoOut(BaseModel):
    hash: str = Field(description="SHA-256 of the re-encoded photo (64 hex): what a listing's photos name")
    bytes: int = Field(description="its size after re-encoding")


class UiTokenOut(BaseModel):
    url: str = Field(description="the web interface's address with a one-time login token in its fragment")
    expires_in_s: int


class StoppingOut(BaseModel):
    stopping: bool


# --- listings, built from ListingSpec ---

_SPEC_TYPES = get_type_hints(ListingSpec)
# A 32-byte hash (a photo's SHA-256) as JSON: 64 lowercase hex digits.
HashHex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class SeriesRef(_In):
    """A listing across its revisions (PROTOCOL.md 10.1): what a listing's ``accepts`` names."""

    author: str = Field(description="PeerID (or 64-hex key) of the listing's author")
    series: str = Field(pattern=r"^[0-9a-f]{32}$", description="the listing's series, 32 hex")


# How a ListingSpec field type is written in a request and in a response.
_IN_TYPES: dict[Any, Any] = {
    Sequence[Item]: list[ItemText],
    Sequence[str]: list[str],
    Sequence[bytes]: list[HashHex],
    tuple[tuple[bytes, bytes], ...]: list[SeriesRef],
}
_OUT_TYPES: dict[Any, Any] = {
    Sequence[Item]: list[ItemOut],
    Sequence[str]: list[str],
    Sequence[bytes]: list[str],
    tuple[tuple[bytes, bytes], ...]: list[SeriesRef],
    tuple[int, int] | None: list[int] | None,
}


def _listing_in() -> type[BaseModel]:
    """``ListingIn``: every field of ListingSpec, with its help as the description."""
    spec: dict[str, Any] = {}
    for f in fields(ListingSpec):
        default = f.default if f.default is not MISSING else ...
        extra = {"min_length": f.metadata["min_items"]} if "min_items" in f.metadata else {}
        kind = _SPEC_TYPES[f.name]
        if isinstance(default, tuple):
            default = list(default)
        spec[f.name] = (_IN_TYPES.get(kind, kind), Field(default, description=f.metadata.get("help"), **extra))
    return create_model(
        "ListingIn",
        __base__=_In,
        __doc__='A listing to publish. Items are ``"QTY x ITEM"`` / ``"QTY UNIT x ITEM"`` strings or objects.',
        **spec,
    )


def _listing_out() -> type[BaseModel]:
    """``ListingOut``: a signed listing as jsonview renders it (envelope, content, times, series)."""
    spec: dict[str, Any] = {"kind": (str, ...), "id": (str, ...), "author": (str, ...)}
    for name in CONTENT_FIELDS:
        kind = _SPEC_TYPES[name]
        spec[name] = (_OUT_TYPES.get(kind, kind), ...)
    spec.update(created=(int, ...), expires=(int, ...), series=(str, ...), rev=(int, ...))
    return create_model("ListingOut", __base__=_Open, **spec)


ListingIn = _listing_in()
ListingOut = _listing_out()


class ListingsIn(_In):
    """Several new listings published at once (a catalogue): all are published, or none."""

    listings: list[ListingIn] = Field(  # type: ignore[valid-type]
        min_length=1, max_length=MAX_IMPORT, description=f"1 to {MAX_IMPORT} listings"
    )


class ObjectsIn(_In):
    """Listings, withdrawals and offers other authors signed, to verify, store and publish: all, or none."""

    objects: list[str] = Field(
        min_length=1,
        max_length=MAX_IMPORT,
        description=f"1 to {MAX_IMPORT} signed objects, each its CBOR bytes in hex (as GET /v1/objects/ID?raw=true)",
    )


class RelayedOut(_Open):
    kind: str
    id: str
    author: str
    new: bool = Field(description="the book did not hold it: it was stored and is being published")


class ListingRowOut(ListingOut):  # type: ignore[misc,valid-type]
    author_forked: bool = Field(description="this node holds a fork proof against the author")


class WithdrawalOut(_Open):
    kind: str
    id: str
    author: str
    series: str
    created: int


# --- offers and trades ---


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


class MatchIn(_In):
    max_parties: int = Field(8, ge=0, le=8, description="at most this many listings a ring (0: the settlement's 8)")
    budget_s: float = Field(10.0, gt=0, le=120, description="seconds the capped solver may search")
    propose: bool = Field(False, description="propose the rings this node coordinates (smallest PeerID)")


class MatchOut(_Open):
    kind: str
    max_parties: int
    items_traded: int
    bound: int
    optimal: bool
    rings: list[dict[str, Any]] = Field(description="the rings through this node (see swapmeet.node.jsonview)")


class ConfirmIn(_In):
    legs: list[int] | None = Field(None, description="leg indexes; default: every leg this node receives")


class RateIn(_In):
    score: int = Field(ge=1, le=5)
    subject: str | None = Field(None, description="the party rated; default: the only other party")
    comment: str = ""

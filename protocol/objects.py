"""Typed, verified swapmeet objects.

Instances of these classes only ever come out of :mod:`swapmeet.protocol.boundary`
(directly, or through the builders in :mod:`swapmeet.protocol.build`, which
sign and then decode what they built). Holding one means: its bytes were
canonical, every rule of its kind held, and every signature verified. ``raw``
keeps the exact signed bytes so the object can be stored or forwarded as is,
and ``id`` is the SHA-256 of those bytes (for an exchange: of its signing
structure, so that all parties name the same exchange while it gathers
signatures).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DOMAIN = "swapmeet/1"

ListingType = Literal["goods", "service", "rental", "loan", "task"]
LISTING_TYPES: tuple[str, ...] = ("goods", "service", "rental", "loan", "task")

KIND_LISTING = "listing"
KIND_WITHDRAWAL = "withdrawal"
KIND_OFFER = "offer"
KIND_EXCHANGE = "exchange"
KIND_ENTRY = "entry"
KIND_RATING = "rating"
KIND_RECEIPT = "receipt"
KIND_NOTICE = "notice"
KINDS: tuple[str, ...] = (
    KIND_LISTING,
    KIND_WITHDRAWAL,
    KIND_OFFER,
    KIND_EXCHANGE,
    KIND_ENTRY,
    KIND_RATING,
    KIND_RECEIPT,
    KIND_NOTICE,
)

NOTICE_DECLINE = "decline"
NOTICE_CANCEL = "cancel"
NOTICE_ACTIONS: tuple[str, ...] = (NOTICE_DECLINE, NOTICE_CANCEL)


@dataclass(frozen=True, slots=True)
class Item:
    """A quantity of something: ``3 x kg of apples`` is Item("apples", 3, "kg")."""

    item: str
    qty: int
    unit: str

    @property
    def key(self) -> tuple[str, str]:
        """What makes two items the same thing (quantities of one key add up)."""
        return (self.item, self.unit)

    def to_cbor(self) -> dict[str, object]:
        return {"item": self.item, "qty": self.qty, "unit": self.unit}

    def __str__(self) -> str:
        unit = "" if self.unit == "pc" else f" {self.unit}"
        return f"{self.qty}{unit} x {self.item}"


@dataclass(frozen=True, slots=True)
class Signed:
    """Fields every single-author signed object has."""

    raw: bytes
    id: bytes
    author: bytes

    @property
    def kind(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Listing(Signed):
    """What an author has to offer and what it wants in return.

    Versions of one listing share ``series``; a higher ``rev`` supersedes a lower one.
    """

    series: bytes
    rev: int
    type: str
    title: str
    desc: str
    category: str
    tags: tuple[str, ...]
    have: tuple[Item, ...]
    want: tuple[Item, ...]
    window: tuple[int, int] | None
    due: int | None
    loc: str | None
    created: int
    expires: int
    # SHA-256 hashes of the listing's photos (the bytes travel apart, see node/photos.py); () when none
    photos: tuple[bytes, ...] = ()
    # listings (author, series) the author takes in return for this one's whole ``have`` (PROTOCOL.md 10.10)
    accepts: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def kind(self) -> str:
        return KIND_LISTING

    def quantity_of(self, key: tuple[str, str]) -> int:
        return sum(i.qty for i in self.have if i.key == key)


@dataclass(frozen=True, slots=True)
class Withdrawal(Signed):
    """Signed tombstone: every version of the author's listing ``series`` created before ``created`` is withdrawn."""

    series: bytes
    created: int

    @property
    def kind(self) -> str:
        return KIND_WITHDRAWAL


@dataclass(frozen=True, slots=True)
class Offer(Signed):
    """A proposed exchange against a listing, always stated from the taker's side.

    ``give`` is what the taker gives, ``take`` what it takes out of the listing.
    Written by the taker, or by the listing's maker as a counter-offer (then
    ``counters`` names the offer it answers).
    """

    listing: Listing
    taker: bytes
    give: tuple[Item, ...]
    take: tuple[Item, ...]
    counters: bytes | None
    note: str
    created: int
    expires: int

    @property
    def kind(self) -> str:
        return KIND_OFFER

    @property
    def maker(self) -> bytes:
        return self.listing.author

    @property
    def recipient(self) -> bytes:
        """Who has to answer this offer: the maker for an offer, the taker for a counter."""
        return self.taker if self.author == self.maker else self.maker


@dataclass(frozen=True, slots=True)
class Leg:
    """``giver`` gives ``items`` to ``receiver`` (indices into the exchange's parties)."""

    giver: int
    receiver: int
    items: tuple[Item, ...]

    def to_cbor(self) -> dict[str, object]:
        return {"from": self.giver, "to": self.receiver, "items": [i.to_cbor() for i in self.items]}


@dataclass(frozen=True, slots=True)
class Exchange:
    """The settlement record: N parties, the legs, what it settles, one signature slot per party.

    Not a single-author object: each party signs the same signing structure,
    and ``id`` is the hash of that structure, so it does not change as
    signatures arrive. ``complete`` once every party has signed.
    """

    raw: bytes
    id: bytes
    parties: tuple[bytes, ...]
    legs: tuple[Leg, ...]
    listings: tuple[Listing, ...]
    offer: Offer | None
    created: int
    deadline: int
    nonce: bytes
    signatures: tuple[bytes | None, ...]

    @property
    def kind(self) -> str:
        return KIND_EXCHANGE

    @property
    def complete(self) -> bool:
        return all(s is not None for s in self.signatures)

    @property
    def signed_by(self) -> tuple[bytes, ...]:
        return tuple(p for p, s in zip(self.parties, self.signatures, strict=True) if s is not None)

    def index_of(self, party: bytes) -> int:
        return self.parties.index(party)

    def given_by(self, party: bytes) -> dict[tuple[str, str], int]:
        """Total quantity per item key that ``party`` gives across all legs."""
        index = self.parties.index(party)
        totals: dict[tuple[str, str], int] = {}
        for leg in self.legs:
            if leg.giver == index:
                for item in leg.items:
                    totals[item.key] = totals.get(item.key, 0) + item.qty
        return totals


@dataclass(frozen=True, slots=True)
class Rating(Signed):
    """A score about a counterparty, carrying the complete exchange both were party to."""

    exchange: Exchange
    subject: bytes
    score: int
    comment: str
    created: int

    @property
    def kind(self) -> str:
        return KIND_RATING


@dataclass(frozen=True, slots=True)
class Receipt(Signed):
    """The author confirms it received what ``legs`` of exchange ``exchange_id`` gave it."""

    exchange_id: bytes
    legs: tuple[int, ...]
    created: int

    @property
    def kind(self) -> str:
        return KIND_RECEIPT


@dataclass(frozen=True, slots=True)
class Notice(Signed):
    """A signed statement that ends a negotiation, so that it is evidence.

    ``decline``: the recipient of ``offer`` refuses it. ``cancel``: the author
    of ``offer`` withdraws it, or a party of ``exchange`` that has not signed
    it promises never to sign it (a signature, once given, cannot be taken back).
    Exactly one of ``offer`` and ``exchange`` is set.
    """

    action: str
    offer: Offer | None
    exchange: Exchange | None
    note: str
    created: int

    @property
    def kind(self) -> str:
        return KIND_NOTICE

    @property
    def target_id(self) -> bytes:
        """The id of the offer or exchange the notice is about."""
        target = self.offer if self.offer is not None else self.exchange
        assert target is not None
        return target.id


Payload = Exchange | Rating | Receipt


@dataclass(frozen=True, slots=True)
class LedgerEntry(Signed):
    """One link of an author's hash chain: ``seq`` 1, 2, 3...; ``prev`` is the previous entry's id."""

    seq: int
    prev: bytes
    time: int
    payload: Payload

    @property
    def kind(self) -> str:
        return KIND_ENTRY


SignedObject = Listing | Withdrawal | Offer | Exchange | LedgerEntry | Rating | Receipt | Notice

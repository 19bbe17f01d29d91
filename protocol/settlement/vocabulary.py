"""The vocabulary of the settlement machine: its states, events, decisions and read-only views.

Called ``vocabulary`` rather than h11's ``events`` because it holds every word
the machine and the node use with each other, not only the events: the states
(which the views show too), the events that go in, the decisions that come out
and the views. Everything here is a small frozen value without behaviour, so
this module imports nothing of the machine. Events go into
:meth:`.machine.Settlement.handle`; lists of decisions come out. The tables of
allowed state transitions live in :mod:`.state`, next to the records they move.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ..objects import Exchange, Item, Listing, Notice, Offer

# --------------------------------------------------------------------------- states


class OfferState(StrEnum):
    """Where an offer stands, as this node sees it (the same for offers it wrote and offers to it)."""

    OPEN = "open"  # waiting for its recipient's answer
    ACCEPTED = "accepted"  # settled by an exchange (see that exchange's state)
    DECLINED = "declined"  # its recipient refused it (signed notice)
    COUNTERED = "countered"  # its recipient answered with a counter-offer
    CANCELLED = "cancelled"  # its author withdrew it (signed notice)
    EXPIRED = "expired"  # nobody answered before it expired


class ExchangeState(StrEnum):
    """Where an exchange stands for this node (one of its parties)."""

    AWAITING = "awaiting"  # known, not signed by this node: waiting for its consent (Sign) or a cancel
    SIGNED = "signed"  # this node's signature is out; waiting for the other parties'
    COMPLETE = "complete"  # every party has signed: append, announce
    LAPSED = "lapsed"  # the signing deadline passed before it was complete
    CANCELLED = "cancelled"  # a party that had not signed promised never to sign (signed notice)


# --------------------------------------------------------------------------- events: commands from the local user


@dataclass(frozen=True, slots=True)
class MakeOffer:
    """Offer ``give`` for ``take`` out of ``listing`` (this node is the taker)."""

    listing: Listing
    give: tuple[Item, ...]
    take: tuple[Item, ...]
    now: int
    expires: int
    note: str = ""


@dataclass(frozen=True, slots=True)
class Accept:
    """Accept an offer to this node: build the exchange that settles it and sign it first."""

    offer: Offer
    now: int
    nonce: bytes
    deadline: int


@dataclass(frozen=True, slots=True)
class Decline:
    """Refuse an open offer to this node (a signed notice to its author)."""

    offer_id: bytes
    now: int
    note: str = ""


@dataclass(frozen=True, slots=True)
class Counter:
    """Answer an open offer to this node with different terms (``give``/``take`` from the taker's side)."""

    offer_id: bytes
    give: tuple[Item, ...]
    take: tuple[Item, ...]
    now: int
    expires: int
    note: str = ""


@dataclass(frozen=True, slots=True)
class Cancel:
    """Withdraw an open offer this node wrote, or leave an exchange this node has not signed."""

    target_id: bytes
    now: int
    note: str = ""


@dataclass(frozen=True, slots=True)
class Propose:
    """Coordinate ``exchange`` (N parties, built by the caller with its nonce): sign it first, send it to all."""

    exchange: Exchange
    now: int


@dataclass(frozen=True, slots=True)
class Sign:
    """Consent to an exchange that is waiting for this node's signature."""

    exchange_id: bytes
    now: int


@dataclass(frozen=True, slots=True)
class Appended:
    """The node has durably appended the complete exchange to its own chain."""

    exchange_id: bytes


@dataclass(frozen=True, slots=True)
class Tick:
    """Time has passed: offers expire, incomplete exchanges lapse, reservations and old records go."""

    now: int


# --------------------------------------------------------------------------- events: verified objects from peers


@dataclass(frozen=True, slots=True)
class OfferReceived:
    """An offer or counter-offer to (or by) this node, from a peer, directly or by gossip."""

    offer: Offer
    now: int


@dataclass(frozen=True, slots=True)
class ExchangeReceived:
    """A copy of an exchange (any number of signatures) from a party, directly or by gossip."""

    exchange: Exchange
    now: int


@dataclass(frozen=True, slots=True)
class NoticeReceived:
    """A decline or cancel by another party, directly or by gossip."""

    notice: Notice
    now: int


@dataclass(frozen=True, slots=True)
class LearnedComplete:
    """A complete exchange this node is party to, learned from elsewhere (ledger replication, announce)."""

    exchange: Exchange
    now: int


Event = (
    MakeOffer
    | Accept
    | Decline
    | Counter
    | Cancel
    | Propose
    | Sign
    | Appended
    | Tick
    | OfferReceived
    | ExchangeReceived
    | NoticeReceived
    | LearnedComplete
)

# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True)
class Persist:
    """Write :meth:`Settlement.to_bytes` durably now, before carrying out the decisions after it."""


@dataclass(frozen=True, slots=True)
class Send:
    """Deliver ``obj`` to party ``to`` (direct stream; gossip if the dial fails)."""

    to: bytes
    obj: Offer | Exchange | Notice


@dataclass(frozen=True, slots=True)
class Announce:
    """Publish to the swarm: a new offer (offers topic), a complete exchange (after its append)."""

    obj: Offer | Exchange


@dataclass(frozen=True, slots=True)
class AppendToLedger:
    """Append the complete exchange to this node's chain (idempotent: skip it if already there), then feed
    :class:`Appended` back."""

    exchange: Exchange


@dataclass(frozen=True, slots=True)
class Reserve:
    """This node's signature now commits ``items`` of its listing ``listing_id``."""

    listing_id: bytes
    items: tuple[Item, ...]


@dataclass(frozen=True, slots=True)
class Release:
    """``items`` of listing ``listing_id`` are no longer committed (the exchange ended incomplete)."""

    listing_id: bytes
    items: tuple[Item, ...]


@dataclass(frozen=True, slots=True)
class Refuse:
    """The event was not acted on: ``code`` is stable (tests, CLI exit paths), ``reason`` is for people."""

    code: str
    reason: str
    ref: bytes | None = None


@dataclass(frozen=True, slots=True)
class Completed:
    """The exchange is complete here (after its AppendToLedger and Announce, in the same list)."""

    exchange_id: bytes


@dataclass(frozen=True, slots=True)
class Lapsed:
    """The exchange reached its deadline incomplete (its reservation, if any, is released after GRACE)."""

    exchange_id: bytes


@dataclass(frozen=True, slots=True)
class Notify:
    """Something the user should hear about (an offer arrived, was declined, countered, cancelled...)."""

    code: str
    text: str
    ref: bytes | None = None


Decision = Persist | Send | Announce | AppendToLedger | Reserve | Release | Refuse | Completed | Lapsed | Notify


# --------------------------------------------------------------------------- read-only views


@dataclass(frozen=True, slots=True)
class OfferView:
    """What :meth:`.machine.Settlement.offer` shows of one offer."""

    offer: Offer
    state: OfferState
    exchange_id: bytes | None  # the exchange that settles it (ACCEPTED)
    answer_id: bytes | None  # the counter-offer that answered it (COUNTERED)


@dataclass(frozen=True, slots=True)
class ExchangeView:
    """What :meth:`.machine.Settlement.exchange` shows of one exchange."""

    exchange: Exchange  # this node's merged copy
    state: ExchangeState
    appended: bool
    notice: Notice | None  # the cancel that ended it, if any

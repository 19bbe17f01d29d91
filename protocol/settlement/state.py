"""What the settlement machine remembers: one record per offer and exchange, the tables that move them, their container.

Like h11's ``_state``, this module knows which moves are allowed and nothing
about why they happen: the handlers (:mod:`.commands`, :mod:`.messages`) and
the shared steps (:mod:`.steps`) decide, and move records only through
:meth:`Records.move_offer` / :meth:`Records.move_exchange`, so every state
change goes through the tables below (a move not in a table is a bug and
raises KeyError) and sets :attr:`Records.changed`, which makes the machine put
Persist first (rule R7).
"""

from __future__ import annotations

from ..objects import Exchange, Item, Notice, Offer
from .vocabulary import ExchangeState, OfferState

_O = OfferState
_X = ExchangeState

# (state, input) -> next state. The code moves states only through these tables.
OFFER_TRANSITIONS: dict[tuple[OfferState, str], OfferState] = {
    (_O.OPEN, "accept"): _O.ACCEPTED,
    (_O.OPEN, "decline"): _O.DECLINED,
    (_O.OPEN, "counter"): _O.COUNTERED,
    (_O.OPEN, "cancel"): _O.CANCELLED,
    (_O.ACCEPTED, "cancel"): _O.CANCELLED,
    (_O.OPEN, "expire"): _O.EXPIRED,
    **{(s, "settled"): _O.ACCEPTED for s in OfferState if s is not _O.ACCEPTED},
}

EXCHANGE_TRANSITIONS: dict[tuple[ExchangeState | None, str], ExchangeState] = {
    (None, "propose"): _X.AWAITING,
    (None, "complete"): _X.COMPLETE,
    (None, "cancel"): _X.CANCELLED,
    (_X.AWAITING, "sign"): _X.SIGNED,
    (_X.AWAITING, "complete"): _X.COMPLETE,
    (_X.SIGNED, "complete"): _X.COMPLETE,
    (_X.AWAITING, "cancel"): _X.CANCELLED,
    (_X.SIGNED, "cancel"): _X.CANCELLED,
    (_X.LAPSED, "cancel"): _X.CANCELLED,
    (_X.AWAITING, "deadline"): _X.LAPSED,
    (_X.SIGNED, "deadline"): _X.LAPSED,
    (_X.LAPSED, "complete"): _X.COMPLETE,
    (_X.CANCELLED, "complete"): _X.COMPLETE,
}

PENDING = (_X.AWAITING, _X.SIGNED)  # waiting for signatures: these lapse at the deadline (R2)
HOLDING = (_X.SIGNED, _X.COMPLETE, _X.LAPSED)  # states in which this node's signature may reserve (R4)

# What a complete exchange reserves once its record is compacted: per listing of this node, the items it gives.
_Given = tuple[tuple[bytes, tuple[Item, ...]], ...]


class _OfferRecord:
    """This node's record of one offer it wrote or received."""

    __slots__ = ("answer", "exchange", "notice", "offer", "state")

    def __init__(
        self,
        offer: Offer,
        state: OfferState,
        exchange: bytes | None = None,
        answer: bytes | None = None,
        notice: Notice | None = None,
    ) -> None:
        self.offer = offer
        self.state = state
        self.exchange = exchange  # the exchange settling it
        self.answer = answer  # the counter-offer answering it
        self.notice = notice  # the decline/cancel that ended it (ours to re-send, or theirs as evidence)


class _ExchangeRecord:
    """This node's record of one exchange it is a party to."""

    __slots__ = ("appended", "notice", "released", "state", "x")

    def __init__(
        self,
        x: Exchange,
        state: ExchangeState | None,
        appended: bool = False,
        released: bool = False,
        notice: Notice | None = None,
    ) -> None:
        self.x = x  # this node's merged copy
        self.state = state  # None only while a new record is being created
        self.appended = appended  # the node confirmed the append (Appended)
        self.released = released  # this node's reservations for it were given back (or never held)
        self.notice = notice  # the cancel that ended it


class Records:
    """Every record of one machine, and whether handling the current event changed any of them."""

    def __init__(self) -> None:
        self.offers: dict[bytes, _OfferRecord] = {}
        self.exchanges: dict[bytes, _ExchangeRecord] = {}
        # Complete exchanges whose records were compacted (by the tick), kept only for what they reserve (R4):
        # exchange id -> (horizon, given), the horizon being when this node's listings in it expire.
        self.settled: dict[bytes, tuple[int, _Given]] = {}
        # Set by every change; the machine reads it to put Persist first (R7) and clears it per event.
        self.changed = False

    def move_offer(self, rec: _OfferRecord, action: str) -> None:
        """Move ``rec`` by ``action`` through OFFER_TRANSITIONS (KeyError: a move the table has not)."""
        rec.state = OFFER_TRANSITIONS[(rec.state, action)]
        self.changed = True

    def move_exchange(self, rec: _ExchangeRecord, action: str) -> None:
        """Move ``rec`` by ``action`` through EXCHANGE_TRANSITIONS (KeyError: a move the table has not)."""
        rec.state = EXCHANGE_TRANSITIONS[(rec.state, action)]
        self.changed = True

    def put_offer(self, rec: _OfferRecord) -> _OfferRecord:
        """Keep ``rec`` (replacing any record of the same offer) and return it."""
        self.offers[rec.offer.id] = rec
        self.changed = True
        return rec

    def put_exchange(self, x: Exchange) -> _ExchangeRecord:
        """A new record in no state yet: the caller moves it at once through a ``(None, input)`` transition."""
        rec = _ExchangeRecord(x, None)
        self.exchanges[x.id] = rec
        self.changed = True
        return rec

    def settling(self, rec: _OfferRecord) -> _ExchangeRecord | None:
        """The record of the exchange settling the offer of ``rec``, if there is one and it is still kept."""
        return self.exchanges.get(rec.exchange) if rec.exchange is not None else None

    def bind_offer(self, x: Exchange, action: str) -> None:
        """Move the offer ``x`` settles (if this node has its record) by ``action``, naming ``x`` as its exchange."""
        orec = self.offers.get(x.offer.id) if x.offer is not None else None
        if orec is not None and orec.state is not _O.ACCEPTED and (orec.state, action) in OFFER_TRANSITIONS:
            self.move_offer(orec, action)
            orec.exchange = x.id

    def sorted_offers(self) -> list[_OfferRecord]:
        """The offer records in id order (the order of the serialised state, and so of every loop over them)."""
        return [self.offers[k] for k in sorted(self.offers)]

    def sorted_exchanges(self) -> list[_ExchangeRecord]:
        """The exchange records in id order."""
        return [self.exchanges[k] for k in sorted(self.exchanges)]

""":class:`Settlement`, the front door of the settlement machine: events in, decisions out, views, state bytes.

Like h11's ``Connection``, it holds the state and routes each event to its
handler (the dispatch table at the bottom: commands in :mod:`.commands`,
peer messages in :mod:`.messages`), then puts Persist first if anything
changed (R7). It decides nothing itself; what each event does is in its
handler and in the shared steps of :mod:`.steps`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..identity import Identity
from . import commands, messages, persistence, steps
from .context import Context
from .reservations import GRACE
from .state import PENDING
from .vocabulary import (
    Accept,
    Appended,
    Cancel,
    Counter,
    Decision,
    Decline,
    Event,
    ExchangeReceived,
    ExchangeView,
    LearnedComplete,
    MakeOffer,
    NoticeReceived,
    OfferReceived,
    OfferState,
    OfferView,
    Persist,
    Propose,
    Sign,
    Tick,
)


class Settlement:
    """Every negotiation of one node. ``handle(event)`` and ``resume(now)`` return decisions."""

    def __init__(self, identity: Identity, *, grace: int = GRACE) -> None:
        """A machine with no records for ``identity``; ``grace`` (seconds) is how long R4 and R10 reach past a
        deadline (tests shorten it). Raises nothing."""
        self._ctx = Context(identity, grace)
        self.me = identity.public_key

    @property
    def grace(self) -> int:
        """Seconds after an exchange's deadline during which a lapsed one still holds and a complete one is re-sent."""
        return self._ctx.grace

    @grace.setter
    def grace(self, value: int) -> None:
        self._ctx.grace = value

    # ----------------------------------------------------------------------- entry points

    def handle(self, event: Event) -> list[Decision]:
        """Apply one event; the decisions to carry out, in order (Persist first when the state changed).

        Raises TypeError if ``event`` is not one of the events of :mod:`.vocabulary` (nothing changes then).
        An event that cannot be acted on gives a Refuse decision (with a stable code), not an exception.
        """
        self._ctx.records.changed = False
        out: list[Decision] = []
        handler = _HANDLERS.get(type(event))
        if handler is None:
            raise TypeError(f"not a settlement event: {event!r}")
        handler(self._ctx, event, out)
        return self._finish(out)

    def resume(self, now: int) -> list[Decision]:
        """After a restart (or on a retry timer, or when a peer reconnects): Tick, then re-send the current state.

        Raises nothing.
        """
        self._ctx.records.changed = False
        out: list[Decision] = []
        steps.tick(self._ctx, now, out)
        steps.resend(self._ctx, now, out)
        return self._finish(out)

    def _finish(self, out: list[Decision]) -> list[Decision]:
        if self._ctx.records.changed:
            out.insert(0, Persist())  # R7
        self._ctx.records.changed = False
        return out

    # ----------------------------------------------------------------------- views

    def offer(self, offer_id: bytes) -> OfferView | None:
        """This node's view of offer ``offer_id``, or None if it keeps no record of it. Raises nothing."""
        rec = self._ctx.records.offers.get(offer_id)
        return None if rec is None else OfferView(rec.offer, rec.state, rec.exchange, rec.answer)

    def exchange(self, exchange_id: bytes) -> ExchangeView | None:
        """This node's view of exchange ``exchange_id``, or None if it keeps no (uncompacted) record. Raises nothing."""
        rec = self._ctx.records.exchanges.get(exchange_id)
        return None if rec is None else ExchangeView(rec.x, rec.state, rec.appended, rec.notice)

    def offers(self) -> list[OfferView]:
        """Every offer this node keeps a record of, in id order. Raises nothing."""
        return [OfferView(r.offer, r.state, r.exchange, r.answer) for r in self._ctx.records.sorted_offers()]

    def exchanges(self) -> list[ExchangeView]:
        """Every exchange this node keeps a record of, in id order. Raises nothing."""
        return [ExchangeView(r.x, r.state, r.appended, r.notice) for r in self._ctx.records.sorted_exchanges()]

    def reserved(self, listing_id: bytes, *, excluding: bytes | None = None) -> dict[tuple[str, str], int]:
        """What this node's held reservations give out of listing ``listing_id``, per item key (R4).

        ``excluding`` leaves out the exchange with that id. Raises nothing.
        """
        return self._ctx.reservations.reserved(listing_id, excluding=excluding)

    def next_wakeup(self) -> int | None:
        """The earliest time at which a Tick would change something (for the node's timer). Raises nothing."""
        records, grace = self._ctx.records, self._ctx.grace
        times: list[int] = []
        for rec in records.offers.values():
            times.append(rec.offer.expires if rec.state is OfferState.OPEN else rec.offer.expires + grace)
        for xrec in records.exchanges.values():
            times.append(xrec.x.deadline if xrec.state in PENDING else xrec.x.deadline + grace)
        times.extend(horizon for horizon, _ in records.settled.values())
        return min(times, default=None)

    # ----------------------------------------------------------------------- persistence (see .persistence)

    def to_bytes(self) -> bytes:
        """The whole state as deterministic CBOR: equal states give equal bytes. Raises nothing."""
        return persistence.encode(self._ctx.records, self.me)

    @classmethod
    def from_bytes(cls, identity: Identity, data: bytes, *, grace: int = GRACE) -> Settlement:
        """Restore a state written by :meth:`to_bytes`; every object is verified again through the boundary.

        Raises InvalidObject: path ``settlement`` for bytes that are not a settlement state or are damaged or
        not canonical, ``settlement.v`` for an unknown version, ``settlement.me`` for another identity's state,
        or the boundary's error for an object that does not verify (see :func:`.persistence.restore`).
        """
        machine = cls(identity, grace=grace)
        persistence.restore(machine._ctx.records, machine.me, data)
        return machine


# Which handler takes which event: a command of the local user, or a verified object from a peer.
_HANDLERS: dict[type, Callable[[Context, Any, list[Decision]], None]] = {
    MakeOffer: commands.on_make_offer,
    Accept: commands.on_accept,
    Decline: commands.on_decline,
    Counter: commands.on_counter,
    Cancel: commands.on_cancel,
    Propose: commands.on_propose,
    Sign: commands.on_sign,
    Appended: commands.on_appended,
    Tick: commands.on_tick,
    OfferReceived: messages.on_offer,
    ExchangeReceived: messages.on_exchange,
    LearnedComplete: messages.on_exchange,
    NoticeReceived: messages.on_notice,
}

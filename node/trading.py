"""Trading: the node's half of the contract for offers and exchanges (:class:`~swapmeet.node.contract.TradingAPI`).

Each command from the local user becomes one event for the settlement machine,
fed through :class:`~swapmeet.node.settlement.SettlementService` (which
carries out the decisions); a ``Refuse`` decision comes back to the user as
:class:`~swapmeet.node.contract.Conflict` (or :class:`UnknownObject`) with the
machine's reason. Clocks and randomness (nonces) are read here, never in the
machine. Views of trades combine the machine's state with what our own chain
says (complete exchanges the machine has forgotten, receipts, ratings).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import trio
from swapmeet.protocol import boundary, build
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.identity import Identity, peer_id
from swapmeet.protocol.objects import Exchange, Item, Leg, Listing, Notice, Offer, Rating, Receipt
from swapmeet.protocol.settlement import (
    Accept,
    Cancel,
    Counter,
    Decision,
    Decline,
    Event,
    ExchangeState,
    ExchangeView,
    MakeOffer,
    OfferView,
    Propose,
    Refuse,
    Send,
    Sign,
)

from .book import OfferBook
from .contract import DEFAULT_DEADLINE_S, DEFAULT_OFFER_TTL_S, Conflict, Trade, UnknownObject
from .matching import DEFAULT_BUDGET_S, Matching, MatchResult
from .replication import Replication
from .settlement import SettlementService

MAX_PARTIES = 8


def _now() -> int:
    return int(time.time())


class Trading:
    """Implements :class:`~swapmeet.node.contract.TradingAPI` for one running node."""

    def __init__(
        self, identity: Identity, settlement: SettlementService, replication: Replication, book: OfferBook
    ) -> None:
        self.identity = identity
        self.me = identity.public_key
        self.settlement = settlement
        self.replication = replication
        self.book = book
        self.matching = Matching(self.me, book, self)

    async def _command(self, event: Event) -> list[Decision]:
        """Feed a user's command; a refusal becomes UnknownObject (code ``unknown``) or Conflict."""
        decisions = await self.settlement.handle(event)
        for d in decisions:
            if isinstance(d, Refuse):
                if d.code == "unknown":
                    raise UnknownObject(d.reason + (f": {d.ref.hex()[:12]}" if d.ref else ""))
                raise Conflict(d.reason)
        return decisions

    async def _listing(self, listing_id: bytes, what: str = "") -> Listing:
        listing = await trio.to_thread.run_sync(self.book.load, listing_id)
        if not isinstance(listing, Listing):
            raise UnknownObject(f"{what}no live listing {listing_id.hex()[:12]} in the book")
        return listing

    def _offer(self, offer_id: bytes) -> OfferView:
        view = self.settlement.machine.offer(offer_id)
        if view is None:
            raise UnknownObject(f"no offer {offer_id.hex()[:12]} to or from this node")
        return view

    # ------------------------------------------------------------------ offers

    async def make_offer(
        self,
        listing_id: bytes,
        give: list[Item],
        take: list[Item] | None = None,
        *,
        expires_in_s: int | None = None,
        note: str = "",
    ) -> Offer:
        listing = await self._listing(listing_id)
        now = _now()
        expires = min(now + _positive(expires_in_s, DEFAULT_OFFER_TTL_S, "expires_in_s"), listing.expires)
        event = MakeOffer(listing, tuple(give), tuple(take if take else listing.have), now, expires, note)
        decisions = await self._command(event)
        return next(d.obj for d in decisions if isinstance(d, Send) and isinstance(d.obj, Offer))

    async def offers(self, direction: str | None = None) -> list[OfferView]:
        views = self.settlement.machine.offers()
        if direction == "incoming":
            views = [v for v in views if v.offer.author != self.me]
        elif direction == "outgoing":
            views = [v for v in views if v.offer.author == self.me]
        elif direction is not None:
            raise InvalidObject("direction", f"expected incoming or outgoing, got {direction!r}", "value")
        return sorted(views, key=lambda v: (-v.offer.created, v.offer.id))

    async def accept(self, offer_id: bytes, *, deadline_in_s: int | None = None) -> Trade:
        offer = self._offer(offer_id).offer
        now = _now()
        deadline = now + _positive(deadline_in_s, DEFAULT_DEADLINE_S, "deadline_in_s")
        await self._command(Accept(offer, now, os.urandom(boundary.NONCE_SIZE), deadline))
        exchange_id = self._offer(offer_id).exchange_id
        assert exchange_id is not None  # an accepted offer names its exchange
        return await self.trade(exchange_id)

    async def decline(self, offer_id: bytes, note: str = "") -> Notice:
        self._offer(offer_id)
        return _sent_notice(await self._command(Decline(offer_id, _now(), note)))

    async def counter(
        self,
        offer_id: bytes,
        give: list[Item],
        take: list[Item],
        *,
        expires_in_s: int | None = None,
        note: str = "",
    ) -> Offer:
        original = self._offer(offer_id).offer
        now = _now()
        expires = min(now + _positive(expires_in_s, DEFAULT_OFFER_TTL_S, "expires_in_s"), original.listing.expires)
        decisions = await self._command(Counter(offer_id, tuple(give), tuple(take), now, expires, note))
        return next(d.obj for d in decisions if isinstance(d, Send) and isinstance(d.obj, Offer))

    async def cancel(self, target_id: bytes, note: str = "") -> Notice:
        machine = self.settlement.machine
        if machine.offer(target_id) is None and machine.exchange(target_id) is None:
            raise UnknownObject(f"no offer or exchange {target_id.hex()[:12]} of this node")
        return _sent_notice(await self._command(Cancel(target_id, _now(), note)))

    # ------------------------------------------------------------------ exchanges

    async def propose(
        self,
        parties: list[bytes],
        legs: list[Leg],
        *,
        listings: Sequence[bytes] = (),
        deadline_in_s: int | None = None,
    ) -> Trade:
        if self.me not in parties:
            raise InvalidObject(
                "parties", "this node must be one of the parties to an exchange it proposes", "non-party"
            )
        if not 2 <= len(parties) <= MAX_PARTIES:
            raise InvalidObject("parties", f"an exchange has 2 to {MAX_PARTIES} parties, got {len(parties)}", "count")
        loaded = [await self._listing(lid, f"listings[{i}]: ") for i, lid in enumerate(listings)]
        now = _now()
        deadline = now + _positive(deadline_in_s, DEFAULT_DEADLINE_S, "deadline_in_s")
        exchange = build.propose_exchange(
            parties=parties,
            legs=legs,
            listings=loaded,
            created=now,
            deadline=deadline,
            nonce=os.urandom(boundary.NONCE_SIZE),
        )
        await self._command(Propose(exchange, now))
        return await self.trade(exchange.id)

    async def sign(self, exchange_id: bytes) -> Trade:
        await self.trade(exchange_id)
        await self._command(Sign(exchange_id, _now()))
        return await self.trade(exchange_id)

    async def match(
        self, max_parties: int, *, budget_s: float = DEFAULT_BUDGET_S, propose: bool = False
    ) -> MatchResult:
        return await self.matching.match(max_parties, budget_s=budget_s, propose=propose)

    async def trades(self) -> list[Trade]:
        live = {v.exchange.id: v for v in self.settlement.machine.exchanges()}
        on_chain = self.settlement.own_chain.exchanges
        settled = (_settled_view(x) for xid, x in on_chain.items() if xid not in live)
        views = sorted([*live.values(), *settled], key=lambda v: (-v.exchange.created, v.exchange.id))
        return [self._trade(v) for v in views]

    async def trade(self, exchange_id: bytes) -> Trade:
        view = self.settlement.machine.exchange(exchange_id)
        on_chain = self.settlement.own_chain.exchanges
        if view is None and exchange_id in on_chain:
            view = _settled_view(on_chain[exchange_id])
        if view is None:
            raise UnknownObject(f"no exchange {exchange_id.hex()[:12]} that this node is a party to")
        return self._trade(view)

    def _trade(self, view: ExchangeView) -> Trade:
        xid = view.exchange.id
        own = self.settlement.own_chain
        return Trade(view, tuple(sorted(own.receipts.get(xid, ()))), tuple(sorted(own.ratings.get(xid, ()))))

    async def _complete(self, exchange_id: bytes, what: str) -> Trade:
        trade = await self.trade(exchange_id)
        if trade.view.state is not ExchangeState.COMPLETE:
            raise Conflict(
                f"exchange {exchange_id.hex()[:12]} is {trade.view.state}: only a complete one can be {what}"
            )
        return trade

    async def confirm(self, exchange_id: bytes, legs: list[int] | None = None) -> Receipt:
        trade = await self._complete(exchange_id, "confirmed")
        x = trade.view.exchange
        mine = [i for i, leg in enumerate(x.legs) if x.parties[leg.receiver] == self.me]
        if legs is None:
            legs = [i for i in mine if i not in trade.confirmed_legs]
            if not mine:
                raise Conflict(f"this node receives nothing in exchange {exchange_id.hex()[:12]}: nothing to confirm")
            if not legs:
                raise Conflict(f"every leg this node receives in {exchange_id.hex()[:12]} is confirmed already")
        for i in legs:
            if i not in mine:
                raise InvalidObject("legs", f"leg {i} is not one this node receives (those are {mine})", "value")
        receipt = build.make_receipt(self.identity, x, legs=legs, created=_now())
        await self.replication.append(receipt)
        self.settlement.own_chain.note(receipt)
        return receipt

    async def rate(self, exchange_id: bytes, score: int, *, subject: bytes | None = None, comment: str = "") -> Rating:
        trade = await self._complete(exchange_id, "rated")
        x = trade.view.exchange
        others = [p for p in x.parties if p != self.me]
        if subject is None:
            if len(others) != 1:
                raise InvalidObject(
                    "subject", "this exchange has several counterparties: say which one to rate", "missing"
                )
            subject = others[0]
        if subject not in others:
            raise InvalidObject("subject", f"{peer_id(subject)} is not a counterparty in this exchange", "non-party")
        if subject in trade.rated:
            raise Conflict(f"you rated {peer_id(subject)} for exchange {exchange_id.hex()[:12]} already")
        rating = build.make_rating(self.identity, x, subject=subject, score=score, created=_now(), comment=comment)
        await self.replication.append(rating)
        self.settlement.own_chain.note(rating)
        return rating


def _settled_view(x: Exchange) -> ExchangeView:
    """The view of a complete exchange the machine has forgotten: it is on our chain."""
    return ExchangeView(x, ExchangeState.COMPLETE, appended=True, notice=None)


def _sent_notice(decisions: Sequence[Decision]) -> Notice:
    for d in decisions:
        if isinstance(d, Send) and isinstance(d.obj, Notice):
            return d.obj
    raise Conflict("nothing to send: the offer or exchange was already answered")


def _positive(value: int | None, default: int, path: str) -> int:
    if value is None:
        return default
    if value <= 0:
        raise InvalidObject(path, f"must be a positive number of seconds, got {value}", "value")
    return value

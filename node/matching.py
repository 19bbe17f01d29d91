"""Matching on the running node: the barter rings through this node in the book it holds, and proposing them.

:meth:`Matching.match` takes the live listings from the offer book, leaves out what this
node cannot or should not put in a ring again, builds the want graph and solves it with
:mod:`swapmeet.protocol.matching` in a worker thread (``trio.to_thread``: the solver is CPU
work and never blocks the node's loop), and reports the rings this node is in: who gives
which listing to whom, and who coordinates each ring (the party with the smallest public
key, PROTOCOL.md 10.10). With ``propose``, it proposes the rings it coordinates through the
normal N-party settlement (:meth:`Trading.propose`): it signs first, every other party is
asked (a ring is never signed for anyone: ``accepts`` and ``want`` are not consent).

Left out of the graph: listings on which this node's own signatures reserve anything
(PROTOCOL.md 12.7: a listing is traded whole, so a partly committed one cannot go in a ring),
and every listing that is already in an exchange of this node that is waiting, signed or
complete (so that ``match --propose`` run twice does not propose the same ring twice, and
an item is never promised twice). Expired, withdrawn and superseded listings are not in the
book. One match runs at a time; the solver's work is bounded by the graph's limits
(:mod:`swapmeet.protocol.matching.graph`) and its time budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Protocol

import trio
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.matching import book as mbook
from swapmeet.protocol.matching import graph as wg
from swapmeet.protocol.objects import Leg
from swapmeet.protocol.settlement import ExchangeState

from .book import OfferBook
from .contract import Conflict, Trade

if TYPE_CHECKING:
    from swapmeet.protocol.matching.solve import Solution

    from .trading import Trading

MAX_PARTIES = 8  # the settlement's limit (PROTOCOL.md 7): a ring has at most this many listings
MAX_BUDGET_S = 120.0
DEFAULT_BUDGET_S = 10.0
RING_DEADLINE_S = 86_400  # every member signs by hand: a day to do so
_OPEN = (ExchangeState.AWAITING, ExchangeState.SIGNED, ExchangeState.COMPLETE)


@dataclass(frozen=True)
class RingFound:
    """One ring through this node: its legs (giver gives ``listing``'s whole have to receiver), its coordinator,
    and the exchange proposed for it (by this call) if any."""

    legs: tuple[mbook.RingLeg, ...]
    coordinator: bytes
    proposed: bytes | None = None
    refused: str | None = None  # why proposing it failed (another party's listing went away meanwhile...)


@dataclass(frozen=True)
class MatchResult:
    me: bytes
    max_parties: int
    listings: int  # in the graph
    left_out: int  # live listings left out (reserved, or already in an exchange of ours)
    explicit: int
    implicit: int
    solution: Solution
    rings: tuple[RingFound, ...]  # the rings through this node
    elapsed_s: float
    notes: tuple[str, ...] = field(default=())


class Matching:
    """``match`` for one running node (:meth:`swapmeet.node.contract.TradingAPI.match`)."""

    def __init__(self, me: bytes, book: OfferBook, trading: Trading) -> None:
        self.me = me
        self.book = book
        self.trading = trading
        self._lock = trio.Lock()

    async def match(
        self, max_parties: int, *, budget_s: float = DEFAULT_BUDGET_S, propose: bool = False
    ) -> MatchResult:
        """The rings through this node (module docstring); ``max_parties`` 2..8, or 0 for the settlement's 8."""
        if max_parties == 0:
            max_parties = MAX_PARTIES
        if not 2 <= max_parties <= MAX_PARTIES:
            raise InvalidObject("max_parties", f"2 to {MAX_PARTIES} (or 0 for {MAX_PARTIES}), got {max_parties}")
        if not 0 < budget_s <= MAX_BUDGET_S:
            raise InvalidObject("budget_s", f"more than 0 and at most {MAX_BUDGET_S} seconds, got {budget_s}")
        if self._lock.locked():
            raise Conflict("a match is already running on this node")
        async with self._lock:
            started = time.perf_counter()
            now = int(time.time())
            live = await trio.to_thread.run_sync(self.book.live_listings, now, wg.MAX_ITEMS)
            busy = await self._busy()
            machine = self.trading.settlement.machine
            usable = [
                x
                for x in live
                if x.id not in busy and not (x.author == self.me and any(machine.reserved(x.id).values()))
            ]
            try:
                graph = await trio.to_thread.run_sync(mbook.want_graph, usable)
            except wg.GraphTooLarge as err:
                raise Conflict(f"the book is too large to match: {err}") from None
            # Imported here: OR-tools takes about 0.35 s to import, which every node start paid for a
            # command most nodes never run.
            from swapmeet.protocol.matching.solve import solve

            solution = await trio.to_thread.run_sync(partial(solve, graph.graph, max_parties, budget_s=budget_s))
            rings = [mbook.ring_legs(graph, r) for r in solution.rings]
            mine = [legs for legs in rings if any(leg.giver == self.me for leg in legs)]
            found = [RingFound(tuple(legs), mbook.coordinator(legs)) for legs in mine]
            if propose:
                found = [await propose_ring(self.trading, r) if r.coordinator == self.me else r for r in found]
            return MatchResult(
                self.me,
                max_parties,
                graph.graph.n,
                len(live) - len(usable),
                graph.explicit,
                graph.implicit,
                solution,
                tuple(found),
                time.perf_counter() - started,
                solution.notes,
            )

    async def _busy(self) -> set[bytes]:
        """Ids of listings in exchanges of ours that are waiting, signed or complete."""
        trades = await self.trading.trades()
        return {x.id for t in trades if t.view.state in _OPEN for x in t.view.exchange.listings}


class _Proposer(Protocol):
    async def propose(
        self, parties: list[bytes], legs: list[Leg], *, listings: list[bytes], deadline_in_s: int | None
    ) -> Trade: ...


async def propose_ring(trading: _Proposer, ring: RingFound) -> RingFound:
    """Propose ``ring`` as one N-party exchange (this node signs first; the others are asked to sign).

    A refusal (a listing went away, a reservation since) is kept in the result, not raised: the
    other rings of the same match are still proposed.
    """
    parties: list[bytes] = []
    for leg in ring.legs:
        if leg.giver not in parties:
            parties.append(leg.giver)
    legs = [Leg(parties.index(leg.giver), parties.index(leg.receiver), leg.listing.have) for leg in ring.legs]
    listings = [leg.listing.id for leg in ring.legs]
    try:
        trade = await trading.propose(parties, legs, listings=listings, deadline_in_s=RING_DEADLINE_S)
    except (Conflict, InvalidObject) as err:
        return RingFound(ring.legs, ring.coordinator, None, str(err))
    return RingFound(ring.legs, ring.coordinator, trade.view.exchange.id)

"""Rule R4, no over-commitment: what this node's signatures give out of its listings, and whether it may give more.

A signature on an exchange *reserves* what the exchange makes this node give
out of its own listings. The reservation is held from the signature: forever
once complete (compacted by the tick to a small record, kept until the
listing expires); until the cancel when cancelled; until deadline + GRACE
when lapsed, because a countersignature made just before the deadline may be
in flight and clocks differ by up to CLOCK_SKEW. Nothing keeps a running
total: :meth:`Reservations.reserved` sums the records that hold a reservation
right now, so the totals cannot drift from the records they come from, and
:meth:`Reservations.reserve_after` turns a change of "holds or not" into the
Reserve / Release decisions the node carries out.

:meth:`Reservations.over_commit` is the one place where the machine checks
quantities before it signs. That makes it the one hook for a node that does
not check them: ``node/demo_cheater.py`` replaces that method to run the
demo's deliberately dishonest node (and ``tests/crashing_node.py`` to script
one). Keep every R4 quantity check in it.
"""

from __future__ import annotations

from collections.abc import Callable

from .. import boundary
from ..objects import Exchange, Item
from .state import HOLDING, Records, _ExchangeRecord, _Given
from .vocabulary import Decision, Release, Reserve

GRACE = boundary.CLOCK_SKEW  # how long a lapsed exchange's reservation outlives its deadline (see above)


class Reservations:
    """Rule R4 for the node ``me``, over the records of its machine."""

    def __init__(self, me: bytes, records: Records) -> None:
        self.me = me
        self.records = records

    def given(self, x: Exchange) -> _Given:
        """Per listing of this node in ``x``: what this node gives of its items (what a signature reserves)."""
        given = x.given_by(self.me)
        result = []
        for listing in x.listings:
            if listing.author == self.me:
                items = tuple(Item(i.item, given[i.key], i.unit) for i in listing.have if given.get(i.key))
                if items:
                    result.append((listing.id, items))
        return tuple(result)

    def holding(self, rec: _ExchangeRecord) -> bool:
        """Does this node's signature on ``rec`` commit quantities of its listings right now?"""
        return rec.state in HOLDING and not rec.released and self.me in rec.x.signed_by and bool(self.given(rec.x))

    def reserved(self, listing_id: bytes, *, excluding: bytes | None = None) -> dict[tuple[str, str], int]:
        """What this node's held reservations give out of listing ``listing_id``, per item key.

        ``excluding`` leaves out the exchange with that id (the one about to be signed, so that it is not
        counted twice). Raises nothing: an unknown listing has nothing reserved.
        """
        totals: dict[tuple[str, str], int] = {}
        records = self.records
        given_sets = [self.given(r.x) for i, r in records.exchanges.items() if i != excluding and self.holding(r)]
        given_sets += [given for i, (_, given) in records.settled.items() if i != excluding]
        for given in given_sets:
            for lid, items in given:
                if lid == listing_id:
                    for item in items:
                        totals[item.key] = totals.get(item.key, 0) + item.qty
        return totals

    def reserve_after(self, rec: _ExchangeRecord, change: Callable[[], None], out: list[Decision]) -> None:
        """Apply ``change`` to ``rec``; emit Reserve/Release if it changed whether ``rec`` holds a reservation."""
        before = self.holding(rec)
        change()
        after = self.holding(rec)
        if before != after:
            kind = Reserve if after else Release
            out.extend(kind(lid, items) for lid, items in self.given(rec.x))

    def over_commit(self, x: Exchange) -> str | None:
        """Why signing ``x`` would over-commit one of this node's listings (a reason for people), or None.

        The R4 check, made before every signature; the demo's dishonest node replaces this method (see the
        module docstring).
        """
        given = x.given_by(self.me)
        for listing in x.listings:
            if listing.author != self.me:
                continue
            held = self.reserved(listing.id, excluding=x.id)
            for item in listing.have:
                total = held.get(item.key, 0) + given.get(item.key, 0)
                if total > item.qty:
                    return f"{listing.title!r}: {total} x {item.item} would be committed, {item.qty} listed"
        return None

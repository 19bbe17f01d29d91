"""The one way verified book objects enter the offer book, whichever path they came by.

Gossip (:mod:`.bookgossip`), book sync (:mod:`.booksync`), the local user
(:mod:`.market`) and settlement's direct stream all hand their objects to
:meth:`BookIngest.store`: listings, withdrawals and offers go into the
:class:`~swapmeet.node.book.OfferBook` (in a worker thread: SQLite), an
offer to or from this node that someone else wrote goes on to settlement
through a channel, and a new listing that names photos to the photo room's
prefetch through another (they read them; nothing here calls up into them).

Only verified, typed objects come in (the book refuses bytes);
:meth:`BookIngest.store_raw` is the decode-and-verify step for bytes a peer
pushed or sent on a sync stream.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable

import trio
from swapmeet.protocol import boundary
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.objects import KIND_LISTING, KIND_OFFER, KIND_WITHDRAWAL, Listing, Offer

from .book import AddResult, BookObject, OfferBook
from .budgets import Budgets
from .events import EventFeed
from .refusals import RefusalLog

BOOK_KINDS = (KIND_LISTING, KIND_WITHDRAWAL, KIND_OFFER)


def _now() -> int:
    return int(time.time())


class BookIngest:
    """Stores verified book objects; hands offers that concern ``me`` (by others) to ``to_settlement``."""

    def __init__(
        self,
        book: OfferBook,
        me: bytes,
        to_settlement: trio.MemorySendChannel[Offer],
        refusals: RefusalLog,
        budgets: Budgets,
    ) -> None:
        self.book = book
        self.refusals = refusals
        self.budgets = budgets
        self.me = me
        self._to_settlement = to_settlement
        self.events: EventFeed | None = None  # told what entered the book (the web UI's live pages)
        # New listings that name photos, for the photo room's prefetch (dropped when it is full: a page
        # that shows the listing fetches them on demand). Handed over whole: it needs no book read for them.
        self.photos_wanted: trio.MemorySendChannel[Listing] | None = None

    async def store(self, objects: Iterable[BookObject]) -> int:
        """Store verified objects; the number that were new (or newer versions of what the book held)."""
        return (await self.store_groups([list(objects)]))[0]

    async def store_new(self, objects: list[BookObject]) -> list[bool]:
        """Store verified objects; for each, whether it was new (or a newer version of what the book held)."""
        return [result.forward for result in await self._add(objects)]

    async def store_groups(self, groups: list[list[BookObject]]) -> list[int]:
        """Store several groups of verified objects in one transaction (one worker-thread round trip);
        the number new in each group. What gossip batches when messages wait for the book."""
        results = await self._add([obj for group in groups for obj in group])
        counts, at = [], 0
        for group in groups:
            counts.append(sum(1 for r in results[at : at + len(group)] if r.forward))
            at += len(group)
        return counts

    async def _add(self, objects: list[BookObject]) -> list[AddResult]:
        """Add to the book in one transaction; tell the live views, the photo prefetch and settlement."""
        results = await trio.to_thread.run_sync(self.book.add_many, objects, _now())
        for obj, result in zip(objects, results, strict=True):
            if not result.forward:
                continue
            if self.events is not None:
                self.events.publish(obj.kind, obj.id)
            if self.photos_wanted is not None and isinstance(obj, Listing) and obj.photos:
                with contextlib.suppress(trio.WouldBlock):
                    self.photos_wanted.send_nowait(obj)
        for obj in objects:
            if isinstance(obj, Offer) and obj.author != self.me and self.me in (obj.maker, obj.taker):
                await self._to_settlement.send(obj)
        return results

    async def store_raw(self, raws: list[bytes], peer: str) -> int:
        """Signed bytes ``peer`` sent by book sync: within its budget, verified, within their authors'
        budgets (:mod:`.budgets`), stored; the number new.

        Waits while the peer is over its object budget; raises :class:`OverBudget` (ending its session)
        when it is far over. Invalid or expired objects are refused (rate-limited log), never stored.
        """
        await self.budgets.take_objects(peer, len(raws))
        now, objects = _now(), []
        for raw in raws:
            try:
                objects.append(boundary.decode(raw, kind=BOOK_KINDS, now=now))
            except InvalidObject as err:
                self.refusals.refused(peer, "an object by book sync", str(err))
        return await self.store_from(peer, objects)

    async def store_from(self, peer: str, objects: list[BookObject]) -> int:
        """Verified objects a peer sent directly (book sync, a settle stream): fresh ones within their
        authors' budgets, as on gossip; the number new."""
        kept, refused = self.budgets.fresh_within_budget(objects, _now())
        for obj in refused:
            self.refusals.refused(peer, f"a {obj.kind}", "its author is over its rate limit")
        return await self.store(kept)

"""The one way verified book objects enter the offer book, whichever path they came by.

Gossip (:mod:`.bookgossip`), book sync (:mod:`.booksync`), the local user
(:mod:`.market`) and settlement's direct stream all hand their objects to
:meth:`BookIngest.store`: listings, withdrawals and offers go into the
:class:`~swapmeet.node.book.OfferBook` (in a worker thread: SQLite), and an
offer to or from this node that someone else wrote goes on to settlement
through a channel (settlement reads it; nothing here calls up into it).

Only verified, typed objects come in (the book refuses bytes);
:meth:`BookIngest.store_raw` is the decode-and-verify step for bytes a peer
pushed or sent on a sync stream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import trio
from swapmeet.protocol import boundary
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.objects import KIND_LISTING, KIND_OFFER, KIND_WITHDRAWAL, Offer

from .book import BookObject, OfferBook
from .events import EventFeed

log = logging.getLogger("swapmeet.node")

BOOK_KINDS = (KIND_LISTING, KIND_WITHDRAWAL, KIND_OFFER)


def _now() -> int:
    return int(time.time())


class BookIngest:
    """Stores verified book objects; hands offers that concern ``me`` (by others) to ``to_settlement``."""

    def __init__(self, book: OfferBook, me: bytes, to_settlement: trio.MemorySendChannel[Offer]) -> None:
        self.book = book
        self.me = me
        self._to_settlement = to_settlement
        self.events: EventFeed | None = None  # told what entered the book (the web UI's live pages)

    async def store(self, objects: Iterable[BookObject]) -> int:
        """Store verified objects; the number that were new (or newer versions of what the book held)."""
        objects = list(objects)
        results = await trio.to_thread.run_sync(self.book.add_many, objects, _now())
        if self.events is not None:
            for obj, result in zip(objects, results, strict=True):
                if result.forward:
                    self.events.publish(obj.kind, obj.id)
        for obj in objects:
            if isinstance(obj, Offer) and obj.author != self.me and self.me in (obj.maker, obj.taker):
                await self._to_settlement.send(obj)
        return sum(1 for r in results if r.forward)

    async def store_raw(self, raws: list[bytes], peer: str) -> int:
        """Decode and verify signed bytes from ``peer`` (the trust boundary), store the valid ones.

        Invalid or expired objects are refused (counted in one log line), never stored.
        """
        now, objects, refused = _now(), [], 0
        for raw in raws:
            try:
                objects.append(boundary.decode(raw, kind=BOOK_KINDS, now=now))
            except InvalidObject as err:
                refused += 1
                log.debug("sync from %s: refused an object: %s", peer[-8:], err)
        if refused:
            log.info("sync from %s: refused %d invalid or expired object(s)", peer[-8:], refused)
        return await self.store(objects)

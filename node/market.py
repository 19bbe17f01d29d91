"""The market as this node sees it: the node's half of the contract for listings and lookups.

Implements :class:`~swapmeet.node.contract.MarketAPI`: the node's status and
peers, publishing and withdrawing this node's listings (signed here, stored
through :class:`~swapmeet.node.ingest.BookIngest`, announced by
:class:`~swapmeet.node.bookgossip.BookGossip`), relaying what other authors
signed (verified as gossip is, then stored and announced), searching the offer book, and
finding any object by id or prefix (the book, and the offers and exchanges
settlement holds). What the web UI reads besides is handed on to the room that
owns it: the live feed (:mod:`.events`), photos (:mod:`.photos`) and the ledger's
views (:mod:`.ledgerview`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from swapmeet.protocol import batch
from swapmeet.protocol.build import make_withdrawal, sign_listing
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.identity import Identity
from swapmeet.protocol.listing_spec import ListingSpec
from swapmeet.protocol.objects import LedgerEntry, Listing, SignedObject, Withdrawal
from swapmeet.protocol.settlement import ExchangeState, OfferState

from . import jsonview
from .activity import Activity
from .book import BookObject, OfferBook
from .bookgossip import BookGossip, topic_of
from .contract import DEFAULT_LIMIT, MAX_IMPORT, AmbiguousPrefix, Conflict, UnknownObject, package_version
from .events import EventFeed, Subscription, TooManySubscribers
from .host import P2PHost
from .ingest import BOOK_KINDS, BookIngest
from .ledgerview import ChainHeld, LedgerViews, Reputation
from .photos import PhotoService
from .replication import Replication
from .settlement import SettlementService

if TYPE_CHECKING:
    from swapmeet.ledger.audit import AuditReport

log = logging.getLogger("swapmeet.node")


def _now() -> int:
    return int(time.time())


class Market:
    """Implements :class:`~swapmeet.node.contract.MarketAPI` for one running node."""

    def __init__(
        self,
        identity: Identity,
        net: str,
        host: P2PHost,
        book: OfferBook,
        ingest: BookIngest,
        book_gossip: BookGossip,
        settlement: SettlementService,
        replication: Replication,
        activity: Activity,
        stop: trio.CancelScope,
        *,
        events: EventFeed,
        photos: PhotoService,
        views: LedgerViews,
    ) -> None:
        self.identity = identity
        self.net = net
        self.host = host
        self.book = book
        self.ingest = ingest
        self.book_gossip = book_gossip
        self.settlement = settlement
        self.replication = replication
        self._activity = activity
        self._stop = stop
        self._events = events
        self._photos = photos
        self._views = views
        self.started = time.monotonic()

    # ------------------------------------------------------------------ the node

    def status(self) -> dict[str, Any]:
        stats = self.book.stats()
        return {
            "peer_id": self.identity.peer_id,
            "net": self.net,
            "addrs": self.host.listen_addrs() + self.host.circuit_addrs(),
            "peers": len(self.host.market_peers()),
            "reachability": self.host.reachability(),
            "relay": self.host.relay_status(),
            "book": {"listings": stats.listings, "offers": stats.offers, "withdrawals": stats.withdrawals},
            "trades": self._trade_counts(),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "version": package_version(),
            "activity": self._activity.totals(),
        }

    def _trade_counts(self) -> dict[str, int]:
        """What is waiting for the user, at a glance: offers to answer, exchanges by coarse state."""
        counts = {"offers_to_answer": 0, "awaiting_you": 0, "pending": 0, "complete": 0, "lapsed": 0}
        me = self.identity.public_key
        machine = self.settlement.machine
        for o in machine.offers():
            if o.state is OfferState.OPEN and o.offer.author != me:
                counts["offers_to_answer"] += 1
        for x in machine.exchanges():
            counts[jsonview.TRADE_STATES[str(x.state)]] += 1
            if x.state is ExchangeState.AWAITING:
                counts["awaiting_you"] += 1
        return counts

    def activity(self) -> list[dict[str, int]]:
        return self._activity.last_hour()

    def peers(self) -> list[dict[str, Any]]:
        return [
            {
                "peer_id": p,
                "addrs": self.host.known_addrs(p),
                "connections": self.host.connections(p),
                "hole_punch": self.host.hole_punch(p),
            }
            for p in self.host.market_peers()
        ]

    async def stop(self) -> None:
        self._stop.cancel()

    # ------------------------------------------------------------------ our listings

    def _check_photos(self, spec: ListingSpec) -> None:
        for i, h in enumerate(spec.photos):
            # a listing must never name a photo its own author's node cannot serve
            if not self._photos.holds(h):
                raise InvalidObject(f"photos[{i}]", "this node holds no such photo: upload it first", "photo")

    async def publish(self, spec: ListingSpec, *, replaces: bytes | None = None) -> Listing:
        self._check_photos(spec)
        now, series, rev = _now(), None, 0
        if replaces is not None:
            old = await self._own_listing(replaces, "replace")
            now, series, rev = max(now, old.created), old.series, old.rev + 1
        listing = sign_listing(self.identity, spec, created=now, series=series, rev=rev)
        # Gossip first, store meanwhile: the signed listing is valid whether or not our book holds it yet,
        # and nothing is acknowledged to the user before it is stored (the call returns after the store).
        self.book_gossip.announce("listings", listing.raw)
        await self.ingest.store([listing])
        log.info("published listing %s: %s", listing.id.hex()[:12], listing.title)
        return listing

    async def publish_many(self, specs: Sequence[ListingSpec]) -> list[Listing]:
        if not 1 <= len(specs) <= MAX_IMPORT:
            raise InvalidObject("listings", f"expected 1 to {MAX_IMPORT} listings, got {len(specs)}", "length")
        # Every listing is checked and signed before any is stored or announced: all or nothing. In a worker
        # thread: signing one (with the boundary's check) takes about a millisecond, a full import a fraction
        # of a second that the node's gossip must not wait for.
        listings = await trio.to_thread.run_sync(self._sign_all, specs, _now())
        # As publish(): gossip first, store meanwhile, acknowledge after the store. Announced together, they go
        # out in as few gossip messages as fit (the publisher packs what waits), paced below our author budget.
        for listing in listings:
            self.book_gossip.announce("listings", listing.raw)
        await self.ingest.store(listings)
        log.info("published %d listings: %s ...", len(listings), listings[0].title)
        return listings

    async def relay(self, raws: Sequence[bytes]) -> list[tuple[BookObject, bool]]:
        if not 1 <= len(raws) <= MAX_IMPORT:
            raise InvalidObject("objects", f"expected 1 to {MAX_IMPORT} objects, got {len(raws)}", "length")
        # The trust boundary, as for gossip: every object decoded, verified and fresh before any is stored.
        # In a worker thread: a signature check and decode is a fraction of a millisecond each.
        objects: list[BookObject] = await trio.to_thread.run_sync(
            partial(batch.decode_objects, raws, kinds=BOOK_KINDS, now=_now(), path="objects")
        )
        per_author = Counter(obj.author for obj in objects)
        self.book_gossip.check_room(per_author)
        new = await self.ingest.store_new(objects)
        for obj, is_new in zip(objects, new, strict=True):
            if is_new:  # what the book held already has been gossiped: a copy would only cost every node
                self.book_gossip.announce(topic_of(obj.kind), obj.raw, author=obj.author)
        log.info("relayed %d object(s), %d new, by %d author(s)", len(objects), sum(new), len(per_author))
        return list(zip(objects, new, strict=True))

    def _sign_all(self, specs: Sequence[ListingSpec], now: int) -> list[Listing]:
        listings = []
        for i, spec in enumerate(specs):
            try:
                self._check_photos(spec)
                listings.append(sign_listing(self.identity, spec, created=now))
            except InvalidObject as err:
                raise err.under(f"listings[{i}]") from None
        return listings

    async def _own_listing(self, listing_id: bytes, what: str) -> Listing:
        obj = await trio.to_thread.run_sync(self.book.load, listing_id)
        if obj is None:
            raise UnknownObject(f"no live listing {listing_id.hex()[:12]} in the book")
        if not isinstance(obj, Listing):
            raise Conflict(f"{listing_id.hex()[:12]} is a {obj.kind}, not a listing")
        if obj.author != self.identity.public_key:
            raise Conflict(f"listing {listing_id.hex()[:12]} is not yours: only its author can {what} it")
        return obj

    async def withdraw(self, listing_id: bytes) -> Withdrawal:
        obj = await self._own_listing(listing_id, "withdraw")
        withdrawal = make_withdrawal(self.identity, obj, created=max(_now(), obj.created))
        self.book_gossip.announce("listings", withdrawal.raw)  # gossip first, as publish() does
        await self.ingest.store([withdrawal])
        log.info("withdrew listing %s", listing_id.hex()[:12])
        return withdrawal

    # ------------------------------------------------------------------ the book and lookups

    async def listings(
        self,
        query: str | None = None,
        *,
        type: str | None = None,
        category: str | None = None,
        author: bytes | None = None,
        wants: str | None = None,
        tag: str | None = None,
        loc: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[Listing]:
        return await trio.to_thread.run_sync(
            lambda: self.book.search(
                query,
                kind=type,
                category=category,
                author=author,
                wants=wants,
                tag=tag,
                loc=loc,
                limit=limit,
                now=_now(),
            )
        )

    async def resolve(self, prefix_hex: str) -> bytes:
        matches = set(await trio.to_thread.run_sync(self.book.ids_with_prefix, prefix_hex, 2))
        matches.update(i for i in self.settlement.known_ids() if i.hex().startswith(prefix_hex))
        if not matches:
            raise UnknownObject(f"no object with an id starting {prefix_hex}")
        if len(matches) > 1:
            raise AmbiguousPrefix(f"{prefix_hex} matches several objects; type more of the id")
        return matches.pop()

    async def get(self, id: bytes) -> SignedObject | None:
        obj: SignedObject | None = await trio.to_thread.run_sync(self.book.load, id)
        if obj is None and (offer := self.settlement.machine.offer(id)) is not None:
            obj = offer.offer
        if obj is None:
            obj = self.settlement.exchange(id)
        return obj

    async def forked(self) -> list[bytes]:
        return sorted(await self.replication.forked())

    # ------------------------------------------------------------------ live feed, photos, the ledger

    @contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        try:
            with self._events.subscribe() as sub:
                yield sub
        except TooManySubscribers as exc:
            raise Conflict(str(exc)) from None

    async def add_photo(self, data: bytes) -> bytes:
        return await self._photos.add(data)

    async def photo(self, photo_hash: bytes, author: bytes | None = None) -> bytes | None:
        return await self._photos.get(photo_hash, author)

    async def reputation(self, authors: Sequence[bytes]) -> dict[bytes, Reputation]:
        return await self._views.reputation(authors)

    async def chains(self) -> list[ChainHeld]:
        return await self._views.chains()

    async def chain(self, author: bytes, limit: int = DEFAULT_LIMIT) -> list[LedgerEntry]:
        return await self._views.chain(author, limit)

    async def audit(self, progress: Callable[[int, int], None] | None = None) -> AuditReport:
        return await self._views.audit(progress)

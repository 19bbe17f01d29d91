"""Book gossip: listings, withdrawals and offers on the ``listings`` and ``offers`` topics.

In: each topic is a :class:`~swapmeet.node.gossip.VerifiedTopic` whose messages
are batches (:mod:`swapmeet.protocol.batch`) of objects of the topic's kinds,
every object verified and fresh, every author within its rate (one budget
across both topics) before py-libp2p delivers or forwards the message; the
readers hand the verified objects to :class:`~swapmeet.node.ingest.BookIngest`.

Out: :meth:`BookGossip.announce` queues signed bytes already stored: this
node's own objects, and objects other authors signed that the local user hands
us to publish (:meth:`~swapmeet.node.market.Market.relay`). A publisher task
packs what is waiting into as few messages as fit (py-libp2p's cost is per
message, not per byte: objects that arrive while a publish is in flight go out
together in the next message) and paces every author below the per-author rate
every other node enforces, so that none of its messages is refused for being
over it. A message carries one author's objects: should an author also publish
through another node and so go over its budget at a receiver, the receiver
rejects that author's message, not the other authors' objects with it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from functools import partial

import trio
from swapmeet.protocol import batch
from swapmeet.protocol.identity import peer_id
from swapmeet.protocol.objects import KIND_LISTING, KIND_OFFER, KIND_WITHDRAWAL
from swapmeet.protocol.ratelimit import AuthorRateLimiter

from .activity import Activity
from .contract import MAX_IMPORT, Busy
from .gossip import PerAuthor, VerifiedTopic
from .host import DEFAULT_MAX_MESSAGE_SIZE, P2PError, P2PHost, topic
from .ingest import BookIngest

log = logging.getLogger("swapmeet.node")

TOPIC_KINDS: dict[str, tuple[str, ...]] = {
    "listings": (KIND_LISTING, KIND_WITHDRAWAL),
    "offers": (KIND_OFFER,),
}


def topic_of(kind: str) -> str:
    """The book topic that carries objects of ``kind``."""
    return next(name for name, kinds in TOPIC_KINDS.items() if kind in kinds)


# Every author's objects go out at 80 % of the budget every node enforces: delays on the way can bunch paced
# messages together, and a receiver must still find them within budget.
OWN_PACE = 0.8
# Objects of one other author waiting for its pace, at most (both topics): one full relay's worth, a minute at
# its pace. Past it a relay is refused (the caller retries later) rather than queued without bound.
MAX_WAITING = MAX_IMPORT
# Objects over our pace wait until this many can go in one message (2 s of tokens at our pace), or all of them.
PACED_BATCH = 8
# Verified messages waiting for the book, per topic, and how many are stored in one transaction: while
# one batch is in SQLite the next one gathers (py-libp2p's validator has already run; only storing waits).
STORE_QUEUE = 1024
STORE_BATCH = 256
# Publishing: when we published less than BUSY_S ago, objects keep gathering while more arrive (at most
# QUIET_S apart, for at most COALESCE_MAX_S) before they are packed: a burst goes out in a few messages
# (py-libp2p's cost is per message), while a lone publish after a quiet spell goes at once.
BUSY_S = 0.05
QUIET_S = 0.005
COALESCE_MAX_S = 0.03


def _decode(kinds: tuple[str, ...], data: bytes) -> list[object]:
    return batch.decode_batch(data, kinds=kinds, now=int(time.time()))


class BookGossip:
    """The book's two topics: verified objects in, this node's own objects out (batched, paced)."""

    def __init__(self, host: P2PHost, net: str, ingest: BookIngest, me: bytes, activity: Activity) -> None:
        self.host = host
        self.activity = activity
        self.ingest = ingest
        self.me = me
        budget = PerAuthor()
        enforced = budget.limiter
        self._pace = AuthorRateLimiter(rate=enforced.rate * OWN_PACE, burst=enforced.burst * OWN_PACE)
        self.topics = {
            name: VerifiedTopic(host, topic(net, name), name, partial(_decode, kinds), budget=budget, activity=activity)
            for name, kinds in TOPIC_KINDS.items()
        }
        # Per topic, per author (in the order they first had something waiting): signed bytes to publish.
        self._outbox: dict[str, dict[bytes, list[bytes]]] = {name: {} for name in TOPIC_KINDS}
        self._outbox_ready = trio.Event()

    async def start(self, nursery: trio.Nursery) -> None:
        """Join both topics and run their readers and the publisher in ``nursery``."""
        for verified_topic in self.topics.values():
            await verified_topic.join()
            nursery.start_soon(self._read, verified_topic)
        nursery.start_soon(self._publish_waiting)

    def announce(self, topic_name: str, raw: bytes, author: bytes | None = None) -> None:
        """Queue a stored object's signed bytes for gossip on ``topic_name`` ("listings" or "offers");
        ``author``: who signed it, when not this node."""
        self._outbox[topic_name].setdefault(author or self.me, []).append(raw)
        self._outbox_ready.set()

    def waiting(self, author: bytes) -> int:
        """How many of ``author``'s objects wait for its pace (both topics)."""
        return sum(len(authors.get(author, ())) for authors in self._outbox.values())

    def check_room(self, per_author: Mapping[bytes, int]) -> None:
        """Raise :class:`Busy` if announcing ``per_author[a]`` more objects of each author ``a`` would leave more
        than MAX_WAITING of them waiting: queued without bound, one author's backlog would hold memory and put
        its newest objects ever further behind. The caller hears how long until there is room. (Callers that
        run at once may each pass before any announces: a call's worth more per call in flight.)"""
        for author, count in per_author.items():
            waiting = self.waiting(author)
            if waiting + count > MAX_WAITING:
                pace = self._pace.rate
                raise Busy(
                    f"{count} object(s) by {peer_id(author)}: {waiting} of its objects already wait to go out "
                    f"at its pace of {pace:g}/s (at most {MAX_WAITING}); try again in "
                    f"{(waiting + count - MAX_WAITING) / pace:.0f} s"
                )

    async def _read(self, verified_topic: VerifiedTopic[list[object]]) -> None:
        send, receive = trio.open_memory_channel[tuple[str, list[object]]](STORE_QUEUE)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._store_batches, receive)
            async with send:
                async for item in verified_topic:
                    await send.send(item)

    async def _store_batches(self, receive: trio.MemoryReceiveChannel[tuple[str, list[object]]]) -> None:
        """Store what waits in one transaction: one worker-thread round trip for many messages."""
        async for first in receive:
            waiting = [first]
            while len(waiting) < STORE_BATCH:
                try:
                    waiting.append(receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            counts = await self.ingest.store_groups([objects for _, objects in waiting])  # type: ignore[misc]
            for (from_peer, _), new in zip(waiting, counts, strict=True):
                self.activity.note("gossip_new", new)
                if new:
                    log.info("gossip from %s: %d new object(s)", from_peer[-8:], new)

    async def _publish_waiting(self) -> None:
        """Publish what waits in the outbox; what is over our pace waits until it is due."""
        due_in = float("inf")
        last = -1.0
        while True:
            # Objects held back by pacing are due after due_in seconds; otherwise wait for news.
            with trio.move_on_after(due_in):
                await self._outbox_ready.wait()
            if trio.current_time() - last < BUSY_S:
                await self._gather()  # busy: let the rest of a burst join this message
            last = trio.current_time()
            self._outbox_ready = trio.Event()
            due_in = min([await self._publish_ready(name) for name in self._outbox])

    async def _gather(self) -> None:
        """Wait while objects keep arriving (each within QUIET_S of the last), at most COALESCE_MAX_S."""
        deadline = trio.current_time() + COALESCE_MAX_S
        waiting = self._waiting_total()
        while trio.current_time() < deadline:
            await trio.sleep(QUIET_S)
            now_waiting = self._waiting_total()
            if now_waiting == waiting:
                return
            waiting = now_waiting

    def _waiting_total(self) -> int:
        return sum(len(raws) for authors in self._outbox.values() for raws in authors.values())

    async def _publish_ready(self, name: str) -> float:
        """Publish what each author's pace allows of ``name``'s outbox; the seconds until the rest is due
        (inf: nothing waits)."""
        authors = self._outbox[name]
        due_in = float("inf")
        for author in list(authors):
            now = trio.current_time()  # monotonic, and a test's mock clock moves it
            raws = authors[author]
            ready = self._take_ready(author, raws, now)
            if rest := raws[ready:]:
                authors[author] = rest
                # At the same `now` the tokens are spent, so this takes none: it says when the rest's next batch
                # may go.
                due_in = min(due_in, self._pace.wait(author, now, cost=min(len(rest), PACED_BATCH)))
            else:
                del authors[author]
            for data in batch.pack(raws[:ready], max_size=DEFAULT_MAX_MESSAGE_SIZE):
                try:
                    await self.topics[name].publish(data)
                except P2PError as exc:
                    log.warning("could not publish on %s: %s", name, exc)
        return due_in

    def _take_ready(self, author: bytes, raws: list[bytes], now: float) -> int:
        """Take ``author``'s tokens for as many of ``raws`` as may go at ``now``; how many (0: none yet)."""
        # Over the pace, objects go in batches of PACED_BATCH rather than one per token: every message costs
        # every node the same whatever it holds (a catalogue import would otherwise trickle out one a message).
        ready = min(len(raws), PACED_BATCH)
        if self._pace.wait(author, now, cost=ready) > 0:
            return 0
        while ready < len(raws) and self._pace.allow(author, now):
            ready += 1
        return ready

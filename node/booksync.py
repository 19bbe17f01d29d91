"""Book sync: catch-up of the offer book with a peer over ``/swapmeet/<net>/book-sync/1.0.0``.

Gossip reaches only peers that are online and in the mesh, so on every new
connection (and every :data:`RESYNC_S` seconds with one peer) two nodes
reconcile their sets of live objects with range-based set reconciliation: the
traffic grows with the difference between the sets, not their size. The
initiator then fetches what it lacks and pushes what the responder lacks;
everything received goes through the node's one ingest path
(:class:`~swapmeet.node.ingest.BookIngest`: the trust boundary, then the book).
The frames and the reconciliation are :mod:`swapmeet.protocol.booksync`'s.

Which side initiates: the peer with the smaller PeerID, so that two nodes that
connect do one session between them instead of two. What a session brings in
is not gossiped on, so a session that stored something new (either side)
starts one with every other connected peer (:data:`CASCADE_S` later, sessions
already running are run once more): after a partition heals, what one link
across it carried reaches every node of the other half in a few sessions, not
at the next periodic resync. Up to
:data:`MAX_SESSIONS` sessions run at once, each bounded by a deadline per
frame and per session, so a peer that stalls costs only its own session; a
session skips what the others have stored meanwhile, so overlapping ones
seldom fetch an object twice.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass

import trio
from swapmeet.protocol import batch, boundary
from swapmeet.protocol.booksync import frames
from swapmeet.protocol.booksync.reconcile import Reconciler
from swapmeet.protocol.errors import InvalidObject

from .activity import Activity
from .book import OfferBook
from .budgets import OverBudget
from .host import FramedStream, P2PError, P2PHost, protocol_id
from .ingest import BookIngest
from .peers import PeerChange

log = logging.getLogger(__name__)

PROTOCOL = "book-sync"  # /swapmeet/<net>/book-sync/1.0.0
SESSION_TIMEOUT = 120.0
FRAME_TIMEOUT = 30.0
RESYNC_S = 60.0
# Sessions at once: enough that a silent peer costs only its own session (each bounded by its
# deadlines), few enough that overlapping sessions seldom fetch the same objects twice (and before
# each `get` a session skips what another one has stored meanwhile).
MAX_SESSIONS = 3
# After a session stored something new: how long news from other sessions may gather before the sessions
# with every other peer start (one wave for several sources).
CASCADE_S = 0.5


@dataclass
class SyncStats:
    peer: str
    rounds: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    fetched: int = 0
    pushed: int = 0
    accepted: int = 0


class _Counted:
    """A framed stream that counts bytes, with a timeout on every receive."""

    def __init__(self, stream: FramedStream, stats: SyncStats) -> None:
        self.stream = stream
        self.stats = stats

    async def send(self, tag: str, payload: object) -> None:
        frame = frames.encode_frame(tag, payload)
        self.stats.bytes_sent += len(frame)
        await self.stream.send(frame)

    async def receive(self) -> tuple[str, object]:
        with trio.fail_after(FRAME_TIMEOUT):
            frame = await self.stream.receive()
        self.stats.bytes_received += len(frame)
        return frames.decode_frame(frame)


class BookSync:
    """Sessions of book sync: as initiator (:meth:`sync_with`) and as responder (the stream handler)."""

    def __init__(self, host: P2PHost, net: str, book: OfferBook, ingest: BookIngest, activity: Activity) -> None:
        self.host = host
        self.activity = activity
        self.protocol = protocol_id(net, PROTOCOL)
        self.book = book
        self.ingest = ingest
        # Peers whose session stored something new (the cascade, see the module docstring).
        self._news_send, self._news = trio.open_memory_channel[str](256)

    async def start(self, nursery: trio.Nursery, changes: trio.MemoryReceiveChannel[PeerChange]) -> None:
        """Serve the protocol, and sync with peers as they connect (and one every RESYNC_S) in ``nursery``."""
        self.host.set_stream_handler(self.protocol, self._serve, max_frame_size=frames.MAX_FRAME)
        nursery.start_soon(self._keep_in_sync, changes)

    def _tell_news(self, peer: str) -> None:
        """A session with ``peer`` stored something new: sync with the others (dropped if 256 wait already)."""
        with contextlib.suppress(trio.WouldBlock):
            self._news_send.send_nowait(peer)

    @staticmethod
    def initiates(me: str, peer: str) -> bool:
        return me < peer

    async def _live_items(self) -> list[tuple[int, bytes]]:
        return await trio.to_thread.run_sync(self.book.ids_with_times, int(time.time()))

    async def _raws(self, ids: list[bytes]) -> list[bytes]:
        return await trio.to_thread.run_sync(self.book.raws, ids)

    async def _keep_in_sync(self, changes: trio.MemoryReceiveChannel[PeerChange]) -> None:
        """Sync with every newly connected peer we initiate with, and with a random one every RESYNC_S."""
        me = self.host.peer_id
        slots = trio.CapacityLimiter(MAX_SESSIONS)
        syncing: set[str] = set()
        again: set[str] = set()  # asked for while a session with it ran: run once more after it
        current: frozenset[str] = frozenset()

        async def sync_with(peer: str) -> None:
            if peer in syncing:
                again.add(peer)
                return
            syncing.add(peer)
            try:
                while True:
                    again.discard(peer)
                    async with slots:
                        stats = await sync_quietly(self, peer)
                    if stats is not None and stats.accepted:
                        self._tell_news(peer)
                    if peer not in again:
                        return
            finally:
                syncing.discard(peer)

        async def cascade() -> None:
            async for source in self._news:
                sources = {source}
                await trio.sleep(CASCADE_S)
                while True:
                    try:
                        sources.add(self._news.receive_nowait())
                    except trio.WouldBlock:
                        break
                for peer in sorted(set(self.host.connected_peers()) - sources):
                    sessions.start_soon(sync_with, peer)

        last_resync = time.monotonic()
        async with trio.open_nursery() as sessions:
            sessions.start_soon(cascade)
            while True:
                wait = max(0.0, last_resync + RESYNC_S - time.monotonic()) if current else math.inf
                with trio.move_on_after(wait):
                    change = await changes.receive()
                    current = change.current
                    for peer in sorted(change.connected):
                        if self.initiates(me, peer):
                            sessions.start_soon(sync_with, peer)
                    continue
                last_resync = time.monotonic()
                mine = [p for p in current if self.initiates(me, p)]
                if mine:
                    sessions.start_soon(sync_with, random.choice(mine))

    async def sync_with(self, peer: str) -> SyncStats:
        """Run one session as the initiator; raises P2PError/InvalidObject/TooSlowError on failure."""
        stats = SyncStats(peer)
        reconciler = Reconciler(await self._live_items())
        with trio.fail_after(SESSION_TIMEOUT):
            stream = await self.host.open_stream(peer, self.protocol, max_frame_size=frames.MAX_FRAME)
            async with stream:
                wire = _Counted(stream, stats)
                message: bytes | None = reconciler.initiate()
                while message is not None:
                    await wire.send("rec", message)
                    tag, payload = await wire.receive()
                    if tag != "rec":
                        raise InvalidObject("sync", f"expected a rec frame, got {tag}", "protocol")
                    stats.rounds += 1
                    message = reconciler.reconcile(payload)  # type: ignore[arg-type]
                pending = sorted(reconciler.need)
                while pending:
                    asked, pending = pending[: frames.MAX_IDS_PER_GET], pending[frames.MAX_IDS_PER_GET :]
                    held = await trio.to_thread.run_sync(self.book.held, asked)  # another session's work
                    asked = [oid for oid in asked if oid not in held]
                    if not asked:
                        continue
                    await wire.send("get", asked)
                    tag, payload = await wire.receive()
                    if tag != "objs":
                        raise InvalidObject("sync", f"expected an objs frame, got {tag}", "protocol")
                    if payload is None:
                        continue  # the peer no longer holds any of them (expired or withdrawn)
                    raws = batch.split_batch(payload)  # type: ignore[arg-type]
                    stats.fetched += len(raws)
                    stats.accepted += await self.ingest.store_raw(raws, peer)
                    # A reply holds what fits in one frame; ask again for the rest (progress is
                    # guaranteed: every reply that is not null carries at least one object).
                    got = {boundary.object_id(raw) for raw in raws}
                    missing = [oid for oid in asked if oid not in got]
                    if len(missing) == len(asked):
                        raise InvalidObject("sync", "the peer answered with none of the objects asked for", "protocol")
                    pending = missing + pending
                have = await self._raws(sorted(reconciler.have))
                for data in batch.pack(have):
                    await wire.send("put", data)
                stats.pushed = len(have)
                await wire.send("end", None)
        self.activity.note("sync_sessions")
        self.activity.note("sync_objects", stats.fetched + stats.pushed)
        return stats

    async def _serve(self, stream: FramedStream) -> None:
        stats = SyncStats(stream.peer_id)
        wire = _Counted(stream, stats)
        reconciler: Reconciler | None = None
        with trio.fail_after(SESSION_TIMEOUT):
            while True:
                tag, payload = await wire.receive()
                if tag == "rec":
                    if reconciler is None:
                        reconciler = Reconciler(await self._live_items())
                    await wire.send("rec", reconciler.respond(payload))  # type: ignore[arg-type]
                elif tag == "get":
                    raws = await self._raws(payload)  # type: ignore[arg-type]
                    # One reply per request, at most one frame: the initiator asks again for the rest.
                    await wire.send("objs", batch.pack(raws)[0] if raws else None)
                elif tag == "put":
                    raws = batch.split_batch(payload)  # type: ignore[arg-type]
                    self.activity.note("sync_objects", len(raws))
                    stats.accepted += await self.ingest.store_raw(raws, stream.peer_id)
                elif tag == "end":
                    self.activity.note("sync_sessions")
                    if stats.accepted:
                        self._tell_news(stream.peer_id)
                    return
                else:
                    raise InvalidObject("sync", f"unexpected {tag} frame from the initiator", "protocol")


async def sync_quietly(sync: BookSync, peer: str) -> SyncStats | None:
    """One session; failures are logged in one line, never raised (the next connect retries)."""
    try:
        stats = await sync.sync_with(peer)
    except (P2PError, InvalidObject, OverBudget, trio.TooSlowError) as exc:
        log.info("sync with %s failed: %s", peer, exc)
        return None
    log.info(
        "synced with %s: %d rounds, %d B out / %d B in, fetched %d (%d new), pushed %d",
        peer[-8:],
        stats.rounds,
        stats.bytes_sent,
        stats.bytes_received,
        stats.fetched,
        stats.accepted,
        stats.pushed,
    )
    return stats

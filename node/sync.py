"""Catch-up sync of the offer book with one peer over a stream.

Gossip reaches only peers that are online and in the mesh, so on every new
connection (and periodically) two nodes reconcile their sets of live objects
with range-based set reconciliation: the traffic grows with the difference
between the sets, not their size. The initiator then fetches what it lacks and
pushes what the responder lacks; everything received goes through the node's
one ingest path (the trust boundary, then the book). The frame format is
specified in :mod:`swapmeet.protocol.syncwire`.

Which side initiates: the peer with the smaller PeerID, so that two nodes that
connect do one session between them instead of two.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio
from swapmeet.protocol import batch, boundary, syncwire
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.reconcile import Reconciler

from .p2p import FramedStream, P2PError, P2PHost

log = logging.getLogger(__name__)

Items = Callable[[], Awaitable[list[tuple[int, bytes]]]]  # the live set: (timestamp, id)
Fetch = Callable[[list[bytes]], Awaitable[list[bytes]]]  # signed bytes of the ids we hold
Accept = Callable[[list[bytes], str], Awaitable[int]]  # ingest objects from a peer; returns how many were new

SESSION_TIMEOUT = 120.0
FRAME_TIMEOUT = 30.0


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
        frame = syncwire.encode_frame(tag, payload)
        self.stats.bytes_sent += len(frame)
        await self.stream.send(frame)

    async def receive(self) -> tuple[str, object]:
        with trio.fail_after(FRAME_TIMEOUT):
            frame = await self.stream.receive()
        self.stats.bytes_received += len(frame)
        return syncwire.decode_frame(frame)


class BookSync:
    def __init__(self, host: P2PHost, protocol: str, *, items: Items, fetch: Fetch, accept: Accept) -> None:
        self.host = host
        self.protocol = protocol
        self.items = items
        self.fetch = fetch
        self.accept = accept

    def install(self) -> None:
        self.host.set_stream_handler(self.protocol, self._serve, max_frame_size=syncwire.MAX_FRAME)

    @staticmethod
    def initiates(me: str, peer: str) -> bool:
        return me < peer

    async def sync_with(self, peer: str) -> SyncStats:
        """Run one session as the initiator; raises P2PError/InvalidObject/TooSlowError on failure."""
        stats = SyncStats(peer)
        reconciler = Reconciler(await self.items())
        with trio.fail_after(SESSION_TIMEOUT):
            stream = await self.host.open_stream(peer, self.protocol, max_frame_size=syncwire.MAX_FRAME)
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
                    asked, pending = pending[: syncwire.MAX_IDS_PER_GET], pending[syncwire.MAX_IDS_PER_GET :]
                    await wire.send("get", asked)
                    tag, payload = await wire.receive()
                    if tag != "objs":
                        raise InvalidObject("sync", f"expected an objs frame, got {tag}", "protocol")
                    if payload is None:
                        continue  # the peer no longer holds any of them (expired or withdrawn)
                    raws = batch.split_batch(payload)  # type: ignore[arg-type]
                    stats.fetched += len(raws)
                    stats.accepted += await self.accept(raws, peer)
                    # A reply holds what fits in one frame; ask again for the rest (progress is
                    # guaranteed: every reply that is not null carries at least one object).
                    got = {boundary.object_id(raw) for raw in raws}
                    missing = [oid for oid in asked if oid not in got]
                    if len(missing) == len(asked):
                        raise InvalidObject("sync", "the peer answered with none of the objects asked for", "protocol")
                    pending = missing + pending
                have = await self.fetch(sorted(reconciler.have))
                for data in batch.pack(have):
                    await wire.send("put", data)
                stats.pushed = len(have)
                await wire.send("end", None)
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
                        reconciler = Reconciler(await self.items())
                    await wire.send("rec", reconciler.respond(payload))  # type: ignore[arg-type]
                elif tag == "get":
                    raws = await self.fetch(payload)  # type: ignore[arg-type]
                    # One reply per request, at most one frame: the initiator asks again for the rest.
                    await wire.send("objs", batch.pack(raws)[0] if raws else None)
                elif tag == "put":
                    stats.accepted += await self.accept(batch.split_batch(payload), stream.peer_id)  # type: ignore[arg-type]
                elif tag == "end":
                    return
                else:
                    raise InvalidObject("sync", f"unexpected {tag} frame from the initiator", "protocol")


async def sync_quietly(sync: BookSync, peer: str) -> SyncStats | None:
    """One session; failures are logged in one line, never raised (the next connect retries)."""
    try:
        stats = await sync.sync_with(peer)
    except (P2PError, InvalidObject, trio.TooSlowError) as exc:
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

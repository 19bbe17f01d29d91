"""Listing photos: kept in the home by hash, served to peers and fetched from them, always checked against the hash.

A listing names its photos by the SHA-256 of their bytes (``Listing.photos``,
PROTOCOL.md §6.12); the bytes travel apart, over the stream protocol
``/swapmeet/<net>/photo/1.0.0``:

* request: one frame, the 32-byte hash;
* response: one frame, a status byte then the data: ``0x00`` + the photo's
  bytes, ``0x01`` not held, ``0x02`` refused (over this peer's budget).

:class:`PhotoStore` keeps the files (``<home>/photos/<hex hash>``), bounded in
total bytes. :class:`PhotoService` is the room: it re-encodes the local user's
uploads (:mod:`.imaging`), serves peers with a per-peer limit on concurrent
requests and on bytes per minute, fetches what a held listing names from the
listing's author or any connected peer (every fetched byte string is hashed
and compared before it is stored or shown), prefetches the photos of listings
as they enter the book, and drops photos no held listing names any more.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

import trio
from swapmeet.protocol.boundary import PHOTO_HASH_SIZE
from swapmeet.protocol.identity import peer_id
from swapmeet.protocol.objects import Listing
from swapmeet.protocol.ratelimit import AuthorRateLimiter

from .book import OfferBook
from .events import EventFeed
from .host import P2PError, P2PHost, protocol_id
from .imaging import JPEG_MAGIC, MAX_BYTES, reencode

log = logging.getLogger("swapmeet.node.photos")

PHOTO_PROTOCOL = "photo"
MAX_STORE_BYTES = 256 * 1024 * 1024  # every photo held, together (about 850 photos at the cap each)
UPLOAD_GRACE_S = 3600  # an uploaded photo no listing names yet is kept this long (the user is still writing)
GC_S = 600.0
FETCH_TIMEOUT_S = 10.0
FETCH_PEERS = 3  # peers asked for one photo before giving up
PER_PEER_CONCURRENT = 2  # photo requests one peer may have in flight with us
PER_PEER_BYTES_PER_MIN = 8 * 1024 * 1024
PREFETCH_QUEUE = 256  # listings waiting for their photos; beyond, prefetch skips (a view fetches on demand)
OK, NOT_HELD, REFUSED = b"\x00", b"\x01", b"\x02"


def photo_hash(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class PhotoStore:
    """Photo files named by hash, at most ``max_bytes`` together. Blocking file I/O: call from a thread."""

    def __init__(self, directory: Path, max_bytes: int = MAX_STORE_BYTES) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._sizes: dict[bytes, int] = {}
        for path in directory.iterdir():
            if path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)  # a write interrupted by a crash
            elif len(path.name) == 2 * PHOTO_HASH_SIZE:
                self._sizes[bytes.fromhex(path.name)] = path.stat().st_size

    @property
    def total(self) -> int:
        return sum(self._sizes.values())

    def has(self, h: bytes) -> bool:
        return h in self._sizes

    def _path(self, h: bytes) -> Path:
        return self.directory / h.hex()

    def get(self, h: bytes) -> bytes | None:
        """The photo's bytes, or None; a file whose bytes no longer match its name is dropped."""
        if h not in self._sizes:
            return None
        try:
            data = self._path(h).read_bytes()
        except OSError:
            self._sizes.pop(h, None)
            return None
        if photo_hash(data) != h:
            log.warning("photo %s damaged on disk: dropped", h.hex()[:12])
            self.drop([h])
            return None
        return data

    def put(self, data: bytes, keep: frozenset[bytes] = frozenset()) -> bytes:
        """Store ``data`` under its hash (atomically); make room by dropping the oldest photos not in ``keep``."""
        h = photo_hash(data)
        if h in self._sizes:
            return h
        self._make_room(len(data), keep)
        tmp = self.directory / f"{h.hex()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self._path(h))
        self._sizes[h] = len(data)
        return h

    def _make_room(self, size: int, keep: frozenset[bytes]) -> None:
        over = self.total + size - self.max_bytes
        if over <= 0:
            return
        by_age = sorted((p for p in self._sizes if p not in keep), key=lambda p: self._path(p).stat().st_mtime)
        dropped = []
        for h in by_age:
            if over <= 0:
                break
            over -= self._sizes[h]
            dropped.append(h)
        if over > 0:
            raise OSError(f"the photo store is full ({self.max_bytes} bytes of photos this node must keep)")
        self.drop(dropped)

    def drop(self, hashes: Iterable[bytes]) -> int:
        n = 0
        for h in hashes:
            if self._sizes.pop(h, None) is not None:
                self._path(h).unlink(missing_ok=True)
                n += 1
        return n

    def keep_only(self, named: set[bytes], grace_s: float, now: float) -> int:
        """Drop every photo not in ``named`` and older than ``grace_s`` (fresh uploads wait for their listing)."""
        stale = []
        for h in list(self._sizes):
            if h in named:
                continue
            try:
                if now - self._path(h).stat().st_mtime > grace_s:
                    stale.append(h)
            except OSError:
                stale.append(h)
        return self.drop(stale)


class PhotoService:
    """The photo room: uploads, the photo stream protocol (both sides), prefetch and clean-up."""

    def __init__(self, host: P2PHost, net: str, store: PhotoStore, book: OfferBook, events: EventFeed) -> None:
        self.host = host
        self.store = store
        self.book = book
        self.events = events
        self.protocol = protocol_id(net, PHOTO_PROTOCOL)
        self.own: set[bytes] = set()  # uploaded here: the author's node always keeps them
        self._in_flight: dict[str, int] = {}
        self._budget = AuthorRateLimiter(
            rate=PER_PEER_BYTES_PER_MIN / 60, burst=PER_PEER_BYTES_PER_MIN, max_authors=4096
        )
        self._fetching: dict[bytes, trio.Event] = {}
        #: New listings that name photos (:class:`~swapmeet.node.ingest.BookIngest` sends, prefetch reads).
        self.prefetch_send, self._prefetch_receive = trio.open_memory_channel[Listing](PREFETCH_QUEUE)

    async def start(self, nursery: trio.Nursery) -> None:
        # one frame size for both directions of a stream: the answer (status byte + photo) sets it
        self.host.set_request_handler(self.protocol, self._serve, max_frame_size=MAX_BYTES + 1, timeout=FETCH_TIMEOUT_S)
        nursery.start_soon(self._prefetch)
        nursery.start_soon(self._collect)

    # ------------------------------------------------------------------ the local user

    async def add(self, data: bytes) -> bytes:
        """Re-encode an uploaded image (bounded, metadata stripped) and keep it; its hash."""
        photo = await trio.to_thread.run_sync(reencode, data)
        h = await trio.to_thread.run_sync(self.store.put, photo, frozenset(self.own))
        self.own.add(h)
        return h

    def holds(self, h: bytes) -> bool:
        return self.store.has(h)

    async def get(self, h: bytes, author: bytes | None = None) -> bytes | None:
        """The photo, from the store or fetched from ``author``'s node or any connected peer; None if nobody has it."""
        data = await trio.to_thread.run_sync(self.store.get, h)
        if data is not None:
            return data
        await self.fetch(h, author)
        return await trio.to_thread.run_sync(self.store.get, h)

    # ------------------------------------------------------------------ serving peers

    async def _serve(self, from_peer: str, request: bytes) -> bytes:
        if len(request) != PHOTO_HASH_SIZE:
            return NOT_HELD
        if self._in_flight.get(from_peer, 0) >= PER_PEER_CONCURRENT:
            return REFUSED
        self._in_flight[from_peer] = self._in_flight.get(from_peer, 0) + 1
        try:
            data = await trio.to_thread.run_sync(self.store.get, request)
            if data is None:
                return NOT_HELD
            if not self._budget.allow(from_peer.encode(), time.monotonic(), len(data)):
                return REFUSED
            return OK + data
        finally:
            left = self._in_flight[from_peer] - 1
            if left:
                self._in_flight[from_peer] = left
            else:
                del self._in_flight[from_peer]

    # ------------------------------------------------------------------ fetching

    async def fetch(self, h: bytes, author: bytes | None = None) -> bool:
        """Fetch ``h`` unless held: the author first, then other connected peers. True when it is held after."""
        if self.store.has(h):
            return True
        if (busy := self._fetching.get(h)) is not None:
            await busy.wait()  # another task fetches it already
            return self.store.has(h)
        done = self._fetching[h] = trio.Event()
        try:
            for peer in self._candidates(author):
                if await self._fetch_from(peer, h):
                    self.events.publish("photo", h)
                    return True
            return False
        finally:
            del self._fetching[h]
            done.set()

    def _candidates(self, author: bytes | None) -> list[str]:
        peers = self.host.connected_peers()
        first = peer_id(author) if author is not None else None
        ordered = ([first] if first in peers else []) + [p for p in peers if p != first]
        return ordered[:FETCH_PEERS]

    async def _fetch_from(self, peer: str, h: bytes) -> bool:
        try:
            answer = await self.host.request(
                peer, self.protocol, h, timeout=FETCH_TIMEOUT_S, max_frame_size=MAX_BYTES + 1
            )
        except P2PError as exc:
            log.debug("photo %s from %s: %s", h.hex()[:12], peer[-8:], exc)
            return False
        data = answer[1:]
        # The hash is the only thing that makes these bytes the listing's photo: check before storing.
        if answer[:1] != OK or photo_hash(data) != h or not data.startswith(JPEG_MAGIC):
            return False
        await trio.to_thread.run_sync(self.store.put, data, frozenset(self.own))
        return True

    async def _prefetch(self) -> None:
        """Fetch the photos of listings as they enter the book (the ingest queues those that name any)."""
        async for listing in self._prefetch_receive:
            for h in listing.photos:
                await self.fetch(h, listing.author)

    async def _collect(self) -> None:
        """Every GC_S: drop photos that no held listing names (own uploads get their grace period)."""
        while True:
            await trio.sleep(GC_S)
            try:
                named = await trio.to_thread.run_sync(self.book.photo_hashes)
                dropped = await trio.to_thread.run_sync(self.store.keep_only, named, UPLOAD_GRACE_S, time.time())
                self.own &= named | {h for h in self.own if self.store.has(h)}
                if dropped:
                    log.info("dropped %d photo(s) no held listing names", dropped)
            except Exception:
                log.exception("photo clean-up failed")

"""What just happened in the node, as a feed the local user's live views read (the web UI's Server-Sent Events).

Rooms publish small notes -- a listing, withdrawal or offer entered the book
(:mod:`.ingest`), a trade changed (:mod:`.settlement`), a photo arrived
(:mod:`.photos`) -- with :meth:`EventFeed.publish`, which never blocks and
never fails: a note is a hint to re-read, not data. Each reader holds a
:class:`Subscription` with its own bounded queue; a reader that falls behind
loses the oldest notes and is told so (``lagged``), so a slow browser tab can
neither stall the node nor grow its memory. Bounded everywhere: at most
:data:`MAX_SUBSCRIBERS` readers, :data:`QUEUE` notes each.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import trio

#: The kinds of note; anything else is a programming error.
KINDS = ("listing", "withdrawal", "offer", "trade", "photo")
QUEUE = 256  # notes a reader may fall behind before it loses the oldest
MAX_SUBSCRIBERS = 64  # open live views (browser tabs) at once


class TooManySubscribers(Exception):
    """Every subscription slot is taken."""


@dataclass(frozen=True, slots=True)
class NodeEvent:
    """``kind`` of thing, its ``id`` (hex), and ``at``: the node's monotonic clock when it was published."""

    kind: str
    id: str
    at: float = field(default_factory=time.monotonic)


class Subscription:
    """One reader's queue. Iterate with :meth:`next`; ``lagged`` counts notes dropped because it fell behind."""

    def __init__(self) -> None:
        self._queue: deque[NodeEvent] = deque(maxlen=QUEUE)
        self._wakeup = trio.Event()
        self.lagged = 0

    def _put(self, event: NodeEvent) -> None:
        if len(self._queue) == QUEUE:
            self.lagged += 1
        self._queue.append(event)
        self._wakeup.set()

    async def next(self, timeout: float) -> NodeEvent | None:
        """The next note, or None when ``timeout`` seconds pass without one (time for a keep-alive)."""
        if not self._queue:
            with trio.move_on_after(timeout):
                await self._wakeup.wait()
        if not self._queue:
            return None
        event = self._queue.popleft()
        if not self._queue:
            self._wakeup = trio.Event()
        return event


class EventFeed:
    """Bounded fan-out of :class:`NodeEvent` to every open :class:`Subscription`."""

    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()

    def publish(self, kind: str, id: bytes | str) -> None:
        """Tell every reader ``kind`` ``id`` changed. Never blocks (the trio thread only)."""
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        event = NodeEvent(kind, id.hex() if isinstance(id, bytes) else id)
        for sub in self._subscribers:
            sub._put(event)

    @contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        """A subscription for the duration of the ``with`` block. Raises :class:`TooManySubscribers`."""
        if len(self._subscribers) >= MAX_SUBSCRIBERS:
            raise TooManySubscribers(f"{MAX_SUBSCRIBERS} live views are open already")
        sub = Subscription()
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

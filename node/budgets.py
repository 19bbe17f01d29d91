"""What one remote peer may make the node take in, on every path, and what one author may publish.

Gossip has its budgets in its validators (:mod:`.gossip`: per author on the book
topics, per publisher on the settle and ledger topics). The stream paths have
theirs here, so that no path is a way around them:

- **objects per peer** (book sync ``put`` and ``objs``, settle streams): a
  burst of :data:`OBJECTS_BURST` and :data:`OBJECTS_RATE` per second. A peer over
  it is slowed (its session waits for the budget, at most :data:`MAX_WAIT_S` per
  batch, under the session's own deadline) and then cut off
  (:class:`OverBudget` ends its session).
- **settle requests per peer**: a burst of :data:`SETTLE_BURST`, :data:`SETTLE_RATE`
  per second, as the settle topic allows a publisher; over it, a request is refused.
- **objects per author, off gossip**: an object created within the last
  :data:`FRESH_S` seconds is still being published, so it is charged to its
  author; over the budget it is refused, and a later sync brings it once the
  author is within budget again. Older objects count against the peer's budget
  only. The budget is gossip's rate (one author's sustained pace is the same on
  every path) with a larger burst, :data:`AUTHOR_CATCH_UP_BURST`: a sync brings
  at once what an author published over minutes while we were away (gossip paced
  it; the first version of this charged sync to gossip's own bucket, and a
  newcomer then refused an honest author's 60 listings of the last minutes). The
  burst is per node and point to point: a stream flood costs one node some disk,
  not the swarm a relay round, which is what gossip's small burst protects.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import trio
from swapmeet.protocol.errors import SwapmeetError
from swapmeet.protocol.ratelimit import AUTHOR_RATE, AuthorRateLimiter

OBJECTS_BURST = 10_000  # a whole honest book of a few thousand listings comes at once
OBJECTS_RATE = 2_000.0  # per second, sustained: far above what decoding and storing keep up with anyway
MAX_WAIT_S = 10.0
SETTLE_BURST = 50
SETTLE_RATE = 5.0
FRESH_S = 600
AUTHOR_CATCH_UP_BURST = 1_000  # a shop's catalogue published at once, brought by one sync


class OverBudget(SwapmeetError):
    """A peer sent more than its budget allows on a path: its session ends, one log line says why."""


class Budgets:
    """The per-peer and per-author budgets of the stream paths (gossip's are in its validators)."""

    def __init__(self, author_rate: float = AUTHOR_RATE) -> None:
        self._authors = AuthorRateLimiter(rate=author_rate, burst=AUTHOR_CATCH_UP_BURST)
        self._objects = AuthorRateLimiter(rate=OBJECTS_RATE, burst=OBJECTS_BURST)
        self._settle = AuthorRateLimiter(rate=SETTLE_RATE, burst=SETTLE_BURST)

    async def take_objects(self, peer: str, count: int) -> None:
        """Wait until ``peer`` may hand us ``count`` more objects (slowed down, not refused, while it can be).

        Raises :class:`OverBudget` when the wait would be longer than :data:`MAX_WAIT_S`.
        """
        delay = self._objects.wait(peer.encode(), time.monotonic(), count)
        if delay > MAX_WAIT_S:
            raise OverBudget(f"over its budget of {OBJECTS_RATE:.0f} objects per second")
        while delay > 0:
            await trio.sleep(delay)
            delay = self._objects.wait(peer.encode(), time.monotonic(), count)

    def settle_request(self, peer: str) -> bool:
        """Take one settle request from ``peer``'s budget; False when it is spent."""
        return self._settle.allow(peer.encode(), time.monotonic())

    def fresh_within_budget(self, objects: Iterable[Any], now: int) -> tuple[list[Any], list[Any]]:
        """Split verified objects into (kept, refused): fresh ones must be within their author's budget."""
        kept, refused = [], []
        monotonic = time.monotonic()
        for obj in objects:
            fresh = now - obj.created < FRESH_S
            if fresh and not self._authors.allow(obj.author, monotonic):
                refused.append(obj)
            else:
                kept.append(obj)
        return kept, refused

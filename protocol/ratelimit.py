"""Rate limits as token buckets, one per key (an author, a peer), sans-IO.

GossipSub's own spam cap counts messages per forwarding peer and silently drops
honest traffic (docs/LIBP2P.md §13), so the node turns it off and limits
here instead, where the author of each object (or the peer that sent it) is
known: a key may spend ``burst`` tokens at once and ``rate`` per second
sustained. The caller passes the time in; the table of buckets is bounded so
that many fake keys cannot grow it without limit (the least recently seen
bucket goes first).
"""

from __future__ import annotations

from collections import OrderedDict

AUTHOR_RATE = 5.0  # objects per second one author may publish, sustained (gossip's budget)
AUTHOR_BURST = 50.0


class AuthorRateLimiter:
    def __init__(self, *, rate: float = AUTHOR_RATE, burst: float = AUTHOR_BURST, max_authors: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_authors = max_authors
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()  # author -> (tokens, at)

    def allow(self, author: bytes, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens from ``author``'s bucket; False when it is empty."""
        tokens, at = self._buckets.pop(author, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        self._buckets[author] = (tokens, now)
        if len(self._buckets) > self.max_authors:
            self._buckets.popitem(last=False)
        return allowed

    def wait(self, key: bytes, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens and return 0.0 if ``key`` has them; else take nothing and return how many
        seconds until it will (``inf`` when ``cost`` is more than the burst: it never will)."""
        if cost > self.burst:
            return float("inf")
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        if self.allow(key, now, cost):
            return 0.0
        return (cost - tokens) / self.rate

"""Per-author rate limiting of gossiped objects (a token bucket per author, sans-IO).

GossipSub's own spam cap counts messages per forwarding peer and silently drops
honest traffic (docs/LIBP2P.md §13), so the node turns it off and limits
here instead, where the author of each object is known: an author may publish
``burst`` objects at once and ``rate`` per second sustained. The caller passes
the time in; the table of buckets is bounded so that many fake authors cannot
grow it without limit (the least recently seen bucket goes first).
"""

from __future__ import annotations

from collections import OrderedDict


class AuthorRateLimiter:
    def __init__(self, *, rate: float = 5.0, burst: float = 50.0, max_authors: int = 10_000) -> None:
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

"""Verified gossip: the one way a gossip topic's messages cross the trust boundary.

Every topic the node joins (listings, offers, settle, ledger) is a
:class:`VerifiedTopic`. Its validator runs inside py-libp2p *before* a message
is delivered to us or forwarded to anyone (so nothing unverified is passed on):

1. decode and verify the message through the topic's decoder (the trust
   boundary: :mod:`swapmeet.protocol.batch`, :mod:`swapmeet.protocol.replication`);
2. our own publications are accepted without a budget (the publisher paces them);
3. a peer's message is charged to the topic's :class:`Budget` (per author of
   the objects, or per publishing peer), and refused when over it;
4. the verified value is kept for the reader, keyed by the message's hash, so
   it is verified once; the hand-over cache is bounded (a reader may never
   claim an entry) and a reader that finds nothing there verifies again.

The verdict is forward, ignore or reject (:class:`Verdict`). py-libp2p 0.8.1's
validators can only say yes or no, so ignore counts as reject there (and costs
the sender the same score); the distinction is kept here for the day the
library can tell them apart (``docs/LIBP2P.md``).

Refusals go to the host's :class:`~swapmeet.node.refusals.RefusalLog`
(``rejected a <topic> message from <peer>: <reason>``, rate-limited per peer),
which also counts them in the node's activity.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any, Generic, Protocol, TypeVar

from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.ratelimit import AuthorRateLimiter

from .activity import Activity
from .host import P2PHost, Subscription

T = TypeVar("T")
HANDOVER_CACHE = 1024  # verified messages waiting for their reader, per topic


class Verdict(Enum):
    ACCEPT = "accept"  # valid: deliver and forward
    IGNORE = "ignore"  # valid but unwanted (over budget): neither deliver nor forward
    REJECT = "reject"  # invalid: neither deliver nor forward, and the sender is at fault


class Budget(Protocol):
    """What a peer may make us accept on a topic. ``reason`` completes "rejected ...: <reason>"."""

    reason: str

    def allow(self, from_peer: str, verified: Any, now: float) -> bool: ...


class PerAuthor:
    """Every object's author within its rate (:class:`AuthorRateLimiter`), whoever forwarded it.

    One instance may serve several topics: an author's budget is the same on all of them.
    """

    reason = "author over its rate limit"

    def __init__(self, limiter: AuthorRateLimiter | None = None) -> None:
        self.limiter = limiter or AuthorRateLimiter()

    def allow(self, from_peer: str, verified: Sequence[Any], now: float) -> bool:
        return all(self.limiter.allow(obj.author, now) for obj in verified)


class PerPublisher:
    """The publishing peer within its rate, one token per object (a message is StrictSigned by its publisher).

    For topics whose objects have several signers (an exchange): the publisher is who chose to send it.
    """

    reason = "publisher over its rate limit"

    def __init__(self, limiter: AuthorRateLimiter | None = None) -> None:
        self.limiter = limiter or AuthorRateLimiter()

    def allow(self, from_peer: str, verified: Sequence[Any], now: float) -> bool:
        return self.limiter.allow(from_peer.encode(), now, cost=len(verified))


class VerifiedTopic(Generic[T]):
    """One gossip topic: validated by ``decode`` and ``budget``, read as ``(from_peer, verified)``.

    ``decode(data)`` returns the verified value or raises :class:`InvalidObject`. Build it, then
    ``await join()``; read with ``async for from_peer, value in topic`` (our own publications are
    not read back); send with :meth:`publish`.
    """

    def __init__(
        self,
        host: P2PHost,
        topic_id: str,
        label: str,
        decode: Callable[[bytes], T],
        *,
        budget: Budget | None = None,
        activity: Activity | None = None,
    ) -> None:
        self.host = host
        self.activity = activity
        self.topic_id = topic_id
        self.label = label
        self._decode = decode
        self._budget = budget
        self._verified: OrderedDict[bytes, T] = OrderedDict()
        self._subscription: Subscription | None = None

    async def join(self) -> None:
        """Subscribe, with :meth:`validate` as the topic's validator."""
        self._subscription = await self.host.subscribe(self.topic_id, self.validate)

    def validate(self, from_peer: str, data: bytes) -> bool:
        """The validator py-libp2p runs before delivering or forwarding a message (True: forward)."""
        return self.judge(from_peer, data) is Verdict.ACCEPT

    def judge(self, from_peer: str, data: bytes) -> Verdict:
        try:
            verified = self._decode(data)
        except InvalidObject as err:
            self.host.refusals.refused(from_peer, f"a {self.label} message", str(err))
            return Verdict.REJECT
        if from_peer == self.host.peer_id:
            return Verdict.ACCEPT  # our own publication: paced by its publisher, not charged twice, not read back
        if self._budget is not None and not self._budget.allow(from_peer, verified, time.monotonic()):
            self.host.refusals.refused(from_peer, f"a {self.label} message", self._budget.reason)
            return Verdict.IGNORE
        self._verified[_key(data)] = verified
        while len(self._verified) > HANDOVER_CACHE:
            self._verified.popitem(last=False)
        return Verdict.ACCEPT

    async def publish(self, data: bytes) -> None:
        """Gossip ``data`` (raises the host's P2PError: PublishRejectedError if our own validator refuses it)."""
        await self.host.publish(self.topic_id, data)
        self._note("gossip_out")

    def _note(self, event: str) -> None:
        if self.activity is not None:
            self.activity.note(event)

    def __aiter__(self) -> VerifiedTopic[T]:
        return self

    async def __anext__(self) -> tuple[str, T]:
        """The next verified message from another peer (StopAsyncIteration when the subscription ends)."""
        assert self._subscription is not None, "join() first"
        async for from_peer, data in self._subscription:
            verified = self._verified.pop(_key(data), None)
            if from_peer == self.host.peer_id:
                continue  # our own publication: already acted on where it was made
            if verified is None:  # the hand-over cache turned over before we read it: verify again
                try:
                    verified = self._decode(data)
                except InvalidObject:
                    continue
            self._note("gossip_in")
            return from_peer, verified
        raise StopAsyncIteration


def _key(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()

"""GossipSub as the node runs it: settings, message ids, roomier queues, subscriptions."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.score import ScoreParams, TopicScoreParams
from swapmeet.protocol import gossip

from .liveness import open_connections

if TYPE_CHECKING:
    from .host import P2PHost

log = logging.getLogger("swapmeet.node.host")

#: Largest gossip payload we publish; the pubsub RPC limit is set a little above.
DEFAULT_MAX_MESSAGE_SIZE = 512 * 1024
#: Messages buffered per subscription before we start dropping (docs/LIBP2P.md §21).
SUBSCRIPTION_BUFFER = 10_000


@dataclass(frozen=True, slots=True)
class GossipSettings:
    """GossipSub knobs. The defaults are deliberate; see the comment on each."""

    # 1 s as in go-libp2p; the library default is 120 s, which makes mesh repair
    # glacial (docs/LIBP2P.md §11).
    heartbeat_interval: int = 1
    # Mesh degree D / D_lo / D_hi: the go-libp2p defaults. They have no defaults
    # in py-libp2p (docs/LIBP2P.md §11).
    degree: int = 6
    degree_low: int = 4
    degree_high: int = 12
    # Fanout TTL and message-cache windows: go-libp2p defaults.
    fanout_ttl: int = 60
    gossip_window: int = 3
    gossip_history: int = 5
    # Seen-message cache TTL (seconds): a message id seen within this window is
    # dropped as a duplicate. Ids are content hashes, so this also dedupes the same
    # object re-published by several peers.
    seen_ttl: int = 120
    # Largest payload we publish; inbound RPCs are capped slightly above it.
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    # Per-peer outbound RPC queue (library: 32, dropped when full). py-libp2p fills
    # it from tasks that never wait for the sender, so a short burst is enough to
    # drop (docs/LIBP2P.md §22). A relay cannot push back on its upstream, so the
    # queue must absorb a burst; publish() additionally waits for room (see there).
    outbound_queue_size: int = 512
    # Offer /meshsub/1.2.0 (IDONTWANT). Off: py-libp2p 0.8.1 sends one IDONTWANT
    # RPC per message to every 1.2 mesh peer whatever its size, even for our own
    # publishes (go-libp2p only does it above 1 KiB). That doubles the RPC count,
    # and RPCs, not bytes, are what cost CPU here (docs/LIBP2P.md §23). go/js
    # peers speak 1.1 as well.
    meshsub_v12: bool = False
    # P4, the invalid-message penalty, is the only score component we turn on:
    # it is the one that maps to "this peer forwards garbage". Each rejected
    # message costs `invalid_message_weight` points (linear, not squared as in
    # go-libp2p), the counter decays by `invalid_message_decay` per heartbeat
    # (0.99/s: half-life ~70 s). See docs/LIBP2P.md §15 (and §16: a score is
    # forgotten when the peer disconnects).
    invalid_message_weight: float = 10.0
    invalid_message_cap: float = 100.0
    invalid_message_decay: float = 0.99
    # Thresholds (gossip > publish > graylist, as in go-libp2p). A couple of
    # rejects (an honest peer with clock skew on an expiry) are tolerated;
    # a peer below `publish_threshold` has its messages dropped before our
    # validator even runs, and below `graylist_threshold` its GRAFTs are refused
    # (docs/LIBP2P.md §15).
    gossip_threshold: float = -20.0
    publish_threshold: float = -50.0
    graylist_threshold: float = -80.0

    def score_params(self) -> ScoreParams:
        return ScoreParams(
            p4_invalid_messages=TopicScoreParams(
                weight=self.invalid_message_weight,
                cap=self.invalid_message_cap,
                decay=self.invalid_message_decay,
            ),
            gossip_threshold=self.gossip_threshold,
            publish_threshold=self.publish_threshold,
            graylist_threshold=self.graylist_threshold,
            # PX is off (do_px=False below), so its threshold never matters.
            accept_px_threshold=0.0,
        )


def content_msg_id(msg: rpc_pb2.Message, per_publication: frozenset[str] = frozenset()) -> bytes:
    """Message id = SHA-256 over the topics and the payload (PROTOCOL.md §13.1, :mod:`swapmeet.protocol.gossip`).

    Hashing the payload (not the default from+seqno) makes identical payloads one
    message: an object re-announced by a second peer is a duplicate, not a new
    message. The topics are included because the library also caches *validation
    results* by message id (docs/LIBP2P.md §18): without them, bytes rejected by
    one topic's validator would be rejected from the cache on another topic.

    On ``per_publication`` topics the publisher and its sequence number go in too,
    so that every publication is a new message (relays still see one id for it).
    There a publisher re-sends the same bytes on purpose: a retry of a message that
    may have been lost. With content ids alone the retry would be dropped as a
    duplicate for ``seen_ttl`` seconds, by the publisher's own node first of all
    (py-libp2p's publish checks the seen cache: docs/LIBP2P.md §19).
    """
    if per_publication and any(t in per_publication for t in msg.topicIDs):
        return gossip.message_id(msg.topicIDs, msg.data, msg.from_id, msg.seqno)
    return gossip.message_id(msg.topicIDs, msg.data)


@lru_cache(maxsize=4096)
def peer_b58(raw_id: bytes) -> str:
    """The base58 PeerID of a message's ``from_id`` bytes, remembered (docs/LIBP2P.md §60).

    ``ID(raw).to_base58()`` costs about 0.2 ms (pure-Python base58 of a 38-byte id), and every
    message needs it twice (validator, subscription); a swarm has few originators.
    """
    return ID(raw_id).to_base58()


class RoomyQueues(dict[ID, Any]):
    """``Pubsub.peer_queues`` that enlarges each per-peer RpcQueue as it is added.

    ``Pubsub`` creates each ``RpcQueue()`` with the 32-slot default and no way to
    configure it (docs/LIBP2P.md §22); replacing the dict on our Pubsub instance is
    the narrowest hook (no module-level monkeypatching). Relies on
    ``RpcQueue._queue.max_size``.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size

    def __setitem__(self, peer: ID, queue: Any) -> None:
        queue._queue.max_size = max(queue._queue.max_size, self._size)
        super().__setitem__(peer, queue)


def resend_subscriptions(pubsub: Any, peer: ID) -> bool:
    """Queue our topic subscriptions to ``peer`` again (docs/LIBP2P.md §46); False if we hold no stream to it.

    When a connection to a peer closes while another stays, each side's pubsub forgets the other's
    subscriptions as the old streams end, and may do so after the hello on the new stream arrived:
    then it never sends that peer a topic message again. Each side sending its subscriptions again,
    once the old streams are gone, puts them back (a subscription already known is a no-op).
    """
    queue = pubsub.peer_queues.get(peer)
    if queue is None:
        return False
    return bool(queue.push(pubsub.get_hello_packet(), priority=True))


def keep_subscriptions_while_connected(pubsub: Any) -> None:
    """Make pubsub keep a peer's subscriptions when one of its streams ends while the peer stays
    connected (docs/LIBP2P.md §46); once per pubsub, before it runs.

    The library's dead-stream handling forgets every subscription of the peer, and the peer sends
    them only in the hello of a stream *it* opens. When its old stream ends after the hello of a
    new one (an overlapping reconnect, a retired relayed connection), we would never send it a
    topic message again. A peer's subscriptions change by its subscription messages, not because
    one of its streams ended; when its last connection is gone, they are forgotten as before.
    """
    forget = pubsub._handle_dead_peer

    def handle_dead_peer(peer_id: ID) -> None:
        topics = [t for t, peers in pubsub.peer_topics.items() if peer_id in peers]
        count = pubsub._peer_subscription_count.get(peer_id)
        forget(peer_id)
        if not topics or not pubsub._peer_is_connected(peer_id):
            return
        for topic in topics:
            pubsub.peer_topics.setdefault(topic, set()).add(peer_id)
        if count is not None:
            pubsub._peer_subscription_count[peer_id] = count

    pubsub._handle_dead_peer = handle_dead_peer


def drop_stale_stream(pubsub: Any, peer: ID) -> None:
    """Forget pubsub's stream to ``peer`` if the connection it ran on is closed while another is open
    (docs/LIBP2P.md §48); called on every connection opened or closed.

    The library drops a peer's stream only when a write to it fails, or when its last connection
    closes. A peer that comes back on a new connection before the old one's close is handled (a
    restarted node, a redial after liveness closed a silent link) keeps the dead stream: pubsub
    takes the peer for registered, never sends its hello on the new connection, and the peer never
    learns our subscriptions, so no mesh forms on a quiet topic. Dropping the stream here and
    registering the peer again sends the hello on a connection that remains.
    """
    stream = pubsub.peers.get(peer)
    if stream is None:
        return
    live = open_connections(pubsub.host.get_network(), peer)
    if not live or _runs_on(stream, live):
        return  # its connection is open, or the peer has none left (the library's own clean-up)
    # The library's clean-up of a dead stream: the stream, its queue and the router's state go, the
    # peer's subscriptions stay (keep_subscriptions_while_connected), and our stream is opened again,
    # with our hello, on a connection that remains.
    pubsub._handle_dead_peer(peer)


def _runs_on(stream: Any, conns: list[Any]) -> bool:
    """Whether ``stream`` runs on one of the connections ``conns``."""
    return any(c.muxed_conn is getattr(stream, "muxed_conn", None) for c in conns)


def mesh_diagnosis(pubsub: Any, topic: str, peer: ID) -> str:
    """Why ``peer`` may be missing from our mesh for ``topic``: what pubsub and the router hold for it.

    For the error of a mesh that does not form (a test's or a benchmark's wait): the connections,
    whether we hold a pubsub stream to the peer and on an open connection, whether it told us it
    subscribes, and any GRAFT back-off or score that keeps it out.
    """
    router = pubsub.router
    conns = pubsub.host.get_network().get_connections(peer)
    open_conns = open_connections(pubsub.host.get_network(), peer)
    stream = pubsub.peers.get(peer)
    if stream is None:
        stream_state = "none"
    else:
        stream_state = "on an open connection" if _runs_on(stream, open_conns) else "on a closed connection"
    back_off = router.back_off.get(topic, {}).get(peer)
    parts = [
        f"connections {len(open_conns)} open of {len(conns)}",
        f"stream {stream_state}",
        f"subscribed {peer in pubsub.peer_topics.get(topic, ())}",
        f"back-off {'none' if back_off is None else f'{back_off - time.time():+.0f} s'}",
    ]
    if router.scorer is not None:
        parts.append(f"score {router.scorer.score(peer, [topic]):.1f}")
    return f"{peer}: " + ", ".join(parts)


class CountingSend:
    """Stands in for the library's subscription send channel (docs/LIBP2P.md §21).

    The library calls ``send_nowait`` and, on WouldBlock, logs a warning on a
    logger we silence; so we count and log drops here.
    """

    def __init__(self, send: trio.MemorySendChannel[Any], subscription: Subscription) -> None:
        self._send = send
        self._subscription = subscription

    def send_nowait(self, msg: rpc_pb2.Message) -> None:
        try:
            self._send.send_nowait(msg)
        except trio.WouldBlock:
            sub = self._subscription
            if sub.dropped % 1000 == 0:
                log.warning(
                    "subscription to %s is %d messages behind; dropping (%d so far)",
                    sub.topic,
                    SUBSCRIPTION_BUFFER,
                    sub.dropped + 1,
                )
            sub.dropped += 1
            raise

    async def aclose(self) -> None:
        await self._send.aclose()


Validator = Callable[[str, bytes], bool]


class Subscription:
    """Messages that passed the topic validator, as ``(from_peer, data)``.

    ``from_peer`` is the message's signed originator (StrictSign), not the
    neighbour that forwarded it. Async-iterate it, or call :meth:`receive`.
    Our own publishes on the topic are delivered here as well (libp2p does that).
    """

    def __init__(self, host: P2PHost, topic_id: str, receive: trio.MemoryReceiveChannel[Any]):
        self.topic = topic_id
        #: Messages dropped because nobody read this subscription fast enough.
        self.dropped = 0
        self._host = host
        self._receive = receive

    async def receive(self) -> tuple[str, bytes]:
        msg: rpc_pb2.Message = await self._receive.receive()
        return peer_b58(msg.from_id), msg.data

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> tuple[str, bytes]:
        try:
            return await self.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def unsubscribe(self) -> None:
        await self._host.unsubscribe(self.topic)

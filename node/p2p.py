"""The libp2p layer of a swapmeet node, and the only module that imports py-libp2p.

Everything above this module speaks in plain ``str`` peer ids, ``str`` multiaddrs
and ``bytes``; everything libp2p-specific (key types, ``ID``, ``Multiaddr``,
services, pubsub internals) stays in here. That keeps the rest of the node
testable without sockets and keeps the ~1 s / ~80 MB cost of ``import libp2p`` out
of anything that does not run a host (the CLI talks to a running node over HTTP).

What it provides:

* :func:`identity_key_pair` - the node's Ed25519 seed as a libp2p key pair, so the
  PeerID *is* the trading identity (``swapmeet.protocol.identity.peer_id``).
* :func:`topic` / :func:`protocol_id` - names that carry the network name, so
  separate markets and test swarms never mix.
* :func:`open_host` - an async context manager that runs one host (TCP + Noise +
  Yamux), GossipSub with per-topic validators and peer scoring, framed stream
  protocols (request/response and long-lived streams), bootstrap dialling, and
  optionally mDNS and the Kademlia DHT, all inside one trio nursery; leaving it
  shuts everything down without leaking sockets, threads or tasks.

py-libp2p 0.8.1 has a number of sharp edges; each workaround below is marked
with the pitfall number from the team's field notes (``LIBP2P-NOTES.md``) and the
library source location that causes it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from functools import partial
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.ed25519 import create_new_key_pair as _ed25519_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as _x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.network.config import ConnectionConfig
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.peer.peerstore import PeerStoreError
from libp2p.pubsub.gossipsub import PROTOCOL_ID as GOSSIPSUB_V10
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11 as GOSSIPSUB_V11
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V12 as GOSSIPSUB_V12
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.score import ScoreParams, TopicScoreParams
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service
from libp2p.utils.address_validation import expand_wildcard_address
from libp2p.utils.varint import encode_uvarint
from swapmeet.protocol import gossip

from .config import validate_net

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DialError",
    "EndOfStream",
    "FrameTooLargeError",
    "FramedStream",
    "GossipSettings",
    "P2PError",
    "P2PHost",
    "P2PTimeoutError",
    "ProtocolNotSupportedError",
    "PublishRejectedError",
    "StreamClosedError",
    "Subscription",
    "configure_logging",
    "identity_key_pair",
    "open_host",
    "protocol_id",
    "topic",
    "validate_net",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- names

# Topic / protocol *names* ("listings", "offer-book-sync") follow the same
# alphabet; a slash or space inside a name would make the id ambiguous.
_NAME_RE = re.compile(r"[a-z0-9-]{1,64}")

DEFAULT_LISTEN_ADDRS: tuple[str, ...] = ("/ip4/0.0.0.0/tcp/0",)
#: Largest frame a stream protocol accepts unless a handler says otherwise.
DEFAULT_MAX_FRAME_SIZE = 1024 * 1024
#: Largest gossip payload we publish; the pubsub RPC limit is set a little above.
DEFAULT_MAX_MESSAGE_SIZE = 512 * 1024
_RPC_OVERHEAD = 64 * 1024
#: Seconds allowed for the shielded host.close() at shutdown (pitfall 3).
_CLOSE_TIMEOUT = 5.0
#: Messages buffered per subscription before we start dropping (pitfall 8).
_SUBSCRIPTION_BUFFER = 10_000
#: Longest publish() waits for a full outbound queue to drain (pitfall 13).
_PUBLISH_STALL = 2.0


def _validate_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"invalid {what} name {name!r}: use 1-64 characters from a-z, 0-9 and '-'")
    return name


def topic(net: str, name: str) -> str:
    """The gossip topic ``/swapmeet/<net>/<name>/1``."""
    return f"/swapmeet/{validate_net(net)}/{_validate_name(name, 'topic')}/1"


def protocol_id(net: str, name: str) -> str:
    """The stream protocol id ``/swapmeet/<net>/<name>/1.0.0``."""
    return f"/swapmeet/{validate_net(net)}/{_validate_name(name, 'protocol')}/1.0.0"


def identity_key_pair(seed: bytes) -> KeyPair:
    """The libp2p Ed25519 key pair of a 32-byte seed (the node's identity key).

    Its public key bytes are PyNaCl's ``VerifyKey`` bytes, so the host's PeerID is
    ``swapmeet.protocol.identity.peer_id(public_key)``.
    """
    if not isinstance(seed, bytes | bytearray) or len(seed) != 32:
        raise ValueError("an Ed25519 seed is exactly 32 bytes")
    return _ed25519_key_pair(bytes(seed))


# -------------------------------------------------------------------------- errors


class P2PError(Exception):
    """Base class of the errors this module raises."""


class DialError(P2PError):
    """A peer could not be dialled."""


class P2PTimeoutError(P2PError, TimeoutError):
    """A network operation did not finish in time."""


class FrameTooLargeError(P2PError):
    """A frame (or gossip payload) exceeds the configured maximum size."""


class StreamClosedError(P2PError):
    """The stream was reset by the peer, or ended in the middle of a frame."""


class EndOfStream(P2PError):
    """The peer closed its side of the stream cleanly, between two frames."""


class ProtocolNotSupportedError(P2PError):
    """The peer does not speak the requested stream protocol."""


class PublishRejectedError(P2PError):
    """Our own validator rejected a message we tried to publish."""


class RequestRefused(P2PError):
    """A request handler refuses what the peer sent (bad input, not a bug of ours).

    Raised by handlers; the stream is reset and one line is logged at info, without
    the traceback an unexpected handler error gets.
    """


# ------------------------------------------------------------------------- logging


# Loggers that print alarming multi-line ERROR/WARNING blocks for ordinary events
# (a peer disconnecting mid-stream, a stream we reset on purpose, a subscription
# queue we replaced). Pitfall 11: libp2p/host/basic_host.py:1048 logs "Failed to
# open stream" at ERROR for every failed negotiation. Without LIBP2P_DEBUG,
# libp2p/utils/logging.py:117-124 leaves the "libp2p" logger without handlers and
# non-propagating, so WARNING+ records fall through to Python's lastResort handler
# and land on stderr unformatted.
_NOISY_LOGGERS = (
    "libp2p.host.basic_host",
    "libp2p.network.swarm",
    # Sets its own level to INFO at import (network/auto_connector.py:137) and
    # reports every 30 s that it is "below target".
    "libp2p.network.auto_connector",
    "libp2p.network.connection.swarm_connection",
    "libp2p.protocol_muxer",
    "libp2p.pubsub.pubsub",
    "libp2p.pubsub.gossipsub",
    "libp2p.stream_muxer",
    "libp2p.identity",
    "libp2p.discovery",
    "libp2p.kad_dht",
    "libp2p.transport",
    "libp2p.security",
)


def configure_logging(debug: bool) -> None:
    """Quiet py-libp2p (default) or let all of it through to our handlers.

    Process-wide: logging configuration is global. Our own one-line messages are
    logged under ``swapmeet.node.p2p`` either way.

    Beware: libp2p/network/connection/swarm_connection.py:92 calls the *module*
    function ``logging.debug()``, which runs ``logging.basicConfig()`` when the root
    logger has no handler yet. An application should configure logging before it
    opens a host, or it gets a default stderr handler from the first connection.
    """
    root = logging.getLogger("libp2p")
    if debug:
        root.setLevel(logging.DEBUG)
        root.propagate = True
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        return
    # Genuine library errors still reach the application's handlers...
    root.setLevel(logging.ERROR)
    root.propagate = True
    # ...but the routine-disconnect noise does not.
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


# -------------------------------------------------------------------------- gossip


@dataclass(frozen=True, slots=True)
class GossipSettings:
    """GossipSub knobs. The defaults are deliberate; see the comment on each."""

    # 1 s as in go-libp2p; the library default is 120 s (pitfall 5,
    # libp2p/pubsub/gossipsub.py:179), which makes mesh repair glacial.
    heartbeat_interval: int = 1
    # Mesh degree D / D_lo / D_hi: the go-libp2p defaults. They have no defaults
    # in py-libp2p (gossipsub.py:171-173).
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
    # Per-peer outbound RPC queue (library: 32, rpc_queue.py:39, drop when full).
    # Pitfall 13: py-libp2p fills it from tasks that never wait for the sender, so
    # a burst of ~16 messages (each also costs an IDONTWANT RPC on /meshsub/1.2.0)
    # is enough to drop. A relay cannot push back on its upstream, so the queue
    # must absorb a burst; publish() additionally waits for room (see there).
    outbound_queue_size: int = 512
    # Offer /meshsub/1.2.0 (IDONTWANT). Off: py-libp2p 0.8.1 sends one IDONTWANT
    # RPC per message to every 1.2 mesh peer whatever its size, even for our own
    # publishes (gossipsub.py:1013, 2166-2197; go-libp2p only does it above
    # 1 KiB). That doubled the RPC count and halved throughput on a link
    # (measured: 500 msgs in 2.1 s on 1.1 vs 4.0 s on 1.2), and RPCs, not bytes,
    # are what cost CPU here. go/js peers speak 1.1 as well.
    meshsub_v12: bool = False
    # P4, the invalid-message penalty, is the only score component we turn on:
    # it is the one that maps to "this peer forwards garbage". Each rejected
    # message costs `invalid_message_weight` points (linear, not squared as in
    # go-libp2p: libp2p/pubsub/score.py:318), the counter decays by
    # `invalid_message_decay` per heartbeat (0.99/s: half-life ~70 s).
    invalid_message_weight: float = 10.0
    invalid_message_cap: float = 100.0
    invalid_message_decay: float = 0.99
    # Thresholds (gossip > publish > graylist, as in go-libp2p). A couple of
    # rejects (an honest peer with clock skew on an expiry) are tolerated;
    # a peer below `publish_threshold` has its messages dropped before our
    # validator even runs (pubsub.py:1735), and below `graylist_threshold` its
    # GRAFTs are refused (gossipsub.py:1861).
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


def _content_msg_id(msg: rpc_pb2.Message, per_publication: frozenset[str] = frozenset()) -> bytes:
    """Message id = SHA-256 over the topics and the payload.

    Hashing the payload (not the default from+seqno) makes identical payloads one
    message: an object re-announced by a second peer is a duplicate, not a new
    message. The topics are included because the library also caches *validation
    results* by message id (pubsub.py:1614-1622): without them, bytes rejected by
    one topic's validator would be rejected from the cache on another topic.

    On ``per_publication`` topics the publisher and its sequence number go in too,
    so that every publication is a new message (relays still see one id for it).
    There a publisher re-sends the same bytes on purpose: a retry of a message that
    may have been lost. With content ids alone the retry would be dropped as a
    duplicate for ``seen_ttl`` seconds, by the publisher's own node first of all
    (py-libp2p's publish checks the seen cache, pubsub.py push_msg).
    """
    if per_publication and any(t in per_publication for t in msg.topicIDs):
        return gossip.message_id(msg.topicIDs, msg.data, msg.from_id, msg.seqno)
    return gossip.message_id(msg.topicIDs, msg.data)


class _RoomyQueues(dict[ID, Any]):
    """``Pubsub.peer_queues`` that enlarges each per-peer RpcQueue as it is added.

    pubsub.py:948 creates ``RpcQueue()`` with the 32-slot default and no way to
    configure it; replacing the dict on our Pubsub instance is the narrowest hook
    (no module-level monkeypatching). Relies on ``RpcQueue._queue.max_size``.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size

    def __setitem__(self, peer: ID, queue: Any) -> None:
        queue._queue.max_size = max(queue._queue.max_size, self._size)
        super().__setitem__(peer, queue)


class _CountingSend:
    """Stands in for the library's subscription send channel (pitfall 8).

    The library calls ``send_nowait`` and, on WouldBlock, logs a warning on a
    logger we silence (pubsub.py:1370-1376); so we count and log drops here.
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
                    _SUBSCRIPTION_BUFFER,
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
        return ID(msg.from_id).to_base58(), msg.data

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> tuple[str, bytes]:
        try:
            return await self.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def unsubscribe(self) -> None:
        await self._host.unsubscribe(self.topic)


# ------------------------------------------------------------------------- streams


async def _read_some(stream: INetStream, n: int) -> bytes:
    """One read; b"" means end of stream (yamux raises StreamEOF, others may not)."""
    try:
        return await stream.read(n)
    except StreamEOF:
        return b""


class FramedStream:
    """A libp2p stream carrying unsigned-varint length-prefixed frames.

    The wire format is go-msgio's / ``libp2p.request_response``'s. We do not use
    ``libp2p.io.msgio.VarIntLengthMsgReadWriter`` because its reads go through
    ``libp2p.io.utils.read_exactly``, which cannot tell a clean end of stream
    between frames from a truncated frame (both become IncompleteReadError after
    up to 100 empty reads, io/utils.py:47-56) and which a long-lived sync stream
    needs to distinguish.
    """

    def __init__(self, stream: INetStream, max_frame_size: int) -> None:
        self._stream = stream
        self.max_frame_size = max_frame_size
        self.peer_id: str = stream.muxed_conn.peer_id.to_base58()
        self.protocol: str = str(stream.get_protocol())
        self._buffer = bytearray()

    async def send(self, frame: bytes) -> None:
        """Send one frame; FrameTooLargeError if it exceeds ``max_frame_size``."""
        if len(frame) > self.max_frame_size:
            raise FrameTooLargeError(
                f"refusing to send a {len(frame)}-byte frame on {self.protocol}: "
                f"the limit is {self.max_frame_size} bytes"
            )
        try:
            await self._stream.write(encode_uvarint(len(frame)) + bytes(frame))
        except BaseLibp2pError as exc:
            raise StreamClosedError(f"cannot write to {self.peer_id} on {self.protocol}: {exc!r}") from exc

    async def _fill(self, n: int, *, at_boundary: bool) -> None:
        while len(self._buffer) < n:
            try:
                chunk = await _read_some(self._stream, max(n - len(self._buffer), 4096))
            except StreamReset as exc:
                raise StreamClosedError(f"{self.peer_id} reset the stream on {self.protocol}") from exc
            except BaseLibp2pError as exc:
                raise StreamClosedError(f"reading from {self.peer_id} on {self.protocol} failed: {exc!r}") from exc
            if not chunk:
                if at_boundary and not self._buffer:
                    raise EndOfStream(f"{self.peer_id} closed the stream on {self.protocol}")
                raise StreamClosedError(f"{self.peer_id} closed the stream in the middle of a frame on {self.protocol}")
            self._buffer += chunk

    async def receive(self) -> bytes:
        """Receive one frame.

        EndOfStream if the peer closed its side cleanly; FrameTooLargeError (and the
        stream is reset) if the announced length exceeds ``max_frame_size``.
        """
        length = 0
        for i in range(10):  # a uvarint of a 64-bit length has at most 10 bytes
            await self._fill(i + 1, at_boundary=(i == 0))
            byte = self._buffer[i]
            length |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                del self._buffer[: i + 1]
                break
        else:
            await self.reset()
            raise StreamClosedError(f"{self.peer_id} sent a malformed frame length on {self.protocol}")
        if length > self.max_frame_size:
            # Never buffer it: reset so the sender learns at once.
            await self.reset()
            raise FrameTooLargeError(
                f"{self.peer_id} sent a {length}-byte frame on {self.protocol}: "
                f"the limit is {self.max_frame_size} bytes; stream reset"
            )
        await self._fill(length, at_boundary=False)
        frame = bytes(self._buffer[:length])
        del self._buffer[:length]
        return frame

    def __aiter__(self) -> FramedStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.receive()
        except EndOfStream:
            raise StopAsyncIteration from None

    async def close_write(self) -> None:
        """Half-close: tell the peer we will send no more frames (yamux FIN)."""
        try:
            await self._stream.close_write()
        except BaseLibp2pError as exc:
            log.debug("close_write on %s failed: %r", self.protocol, exc)

    async def aclose(self) -> None:
        """Close our side (the peer sees EndOfStream after the last frame)."""
        with trio.CancelScope(shield=True):
            try:
                await self._stream.close()
            except BaseLibp2pError as exc:
                log.debug("close on %s failed: %r", self.protocol, exc)

    async def reset(self) -> None:
        """Abort the stream in both directions."""
        with trio.CancelScope(shield=True):
            try:
                await self._stream.reset()
            except BaseLibp2pError as exc:
                log.debug("reset on %s failed: %r", self.protocol, exc)

    async def __aenter__(self) -> FramedStream:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            await self.aclose()
        else:
            await self.reset()


StreamHandler = Callable[[FramedStream], Awaitable[None]]
RequestHandler = Callable[[str, bytes], Awaitable[bytes]]


@dataclass(slots=True)
class _HandlerEntry:
    handler: StreamHandler
    max_frame_size: int
    limiter: trio.Semaphore


# ------------------------------------------------------------------ notifications


class _ConnectionNotifee(INotifee):
    """Forwards 'a connection opened' to our nursery (for DHT routing-table fill)."""

    def __init__(self, send: trio.MemorySendChannel[ID]) -> None:
        self._send = send

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        with suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self._send.send_nowait(conn.muxed_conn.peer_id)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        await trio.lowlevel.checkpoint()

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        await trio.lowlevel.checkpoint()

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        await trio.lowlevel.checkpoint()

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        await trio.lowlevel.checkpoint()

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        await trio.lowlevel.checkpoint()


# -------------------------------------------------------------------------- host


def _to_id(peer_id: str) -> ID:
    try:
        return ID.from_base58(peer_id)
    except Exception as exc:
        raise ValueError(f"not a PeerID: {peer_id!r}") from exc


def _parse_dial_addr(addr: str) -> tuple[multiaddr.Multiaddr, PeerInfo]:
    try:
        maddr = multiaddr.Multiaddr(addr)
        info = info_from_p2p_addr(maddr)
    except Exception as exc:
        raise ValueError(f"not a dialable multiaddr with /p2p/<peer id>: {addr!r} ({exc})") from exc
    return maddr, info


def _parse_listen_addr(addr: str) -> multiaddr.Multiaddr:
    try:
        maddr = multiaddr.Multiaddr(addr)
    except Exception as exc:
        raise ValueError(f"not a multiaddr: {addr!r}") from exc
    names = [p.name for p in maddr.protocols()]
    # TCP only: listen addrs also pick the transports in new_host()
    # (libp2p/__init__.py _build_transports_for_swarm), and we want no others.
    if len(names) != 2 or names[0] not in ("ip4", "ip6") or names[1] != "tcp":
        raise ValueError(f"listen address must be /ip4|ip6/<addr>/tcp/<port>, got {addr!r}")
    return maddr


class P2PHost:
    """A running libp2p host: identity, connections, gossip and stream protocols.

    Created by :func:`open_host`; valid only inside its ``async with`` block.
    """

    def __init__(
        self,
        *,
        host: IHost,
        pubsub: Pubsub,
        router: GossipSub,
        dht: Any | None,
        nursery: trio.Nursery,
        net: str,
        max_frame_size: int,
        max_message_size: int,
        outbound_queue_size: int,
        allowed_topics: frozenset[str] | None,
    ) -> None:
        self._host = host
        self._allowed_topics = allowed_topics
        self._pubsub = pubsub
        self._router = router
        self._dht = dht
        self._nursery = nursery
        self.net = net
        self._prefix = f"/swapmeet/{net}/"
        self._max_frame_size = max_frame_size
        self._max_message_size = max_message_size
        self._queue_high_water = max(1, outbound_queue_size * 3 // 4)
        self._validators: dict[str, Validator] = {}
        self._handlers: dict[str, _HandlerEntry] = {}
        self._my_id: ID = host.get_id()
        self.peer_id: str = self._my_id.to_base58()

    # ------------------------------------------------------------ identity

    def listen_addrs(self) -> list[str]:
        """Our dialable multiaddrs, each ending in ``/p2p/<peer id>``.

        Wildcard listen addresses (0.0.0.0, ::) are expanded to the interface
        addresses, since a peer cannot dial 0.0.0.0.
        """
        out: list[str] = []
        for addr in self._host.get_transport_addrs():
            names = {p.name for p in addr.protocols()}
            wildcard = ("ip4" in names and addr.value_for_protocol("ip4") == "0.0.0.0") or (
                "ip6" in names and addr.value_for_protocol("ip6") == "::"
            )
            concrete = expand_wildcard_address(addr) if wildcard else [addr]
            out.extend(f"{a}/p2p/{self.peer_id}" for a in concrete)
        return out

    # ---------------------------------------------------------- connections

    async def connect(self, addr: str, *, timeout: float = 10.0) -> str:
        """Dial ``/ip4/.../tcp/.../p2p/<id>`` (no-op if connected); return the peer id."""
        _, info = _parse_dial_addr(addr)
        if info.peer_id == self._my_id:
            raise ValueError("refusing to dial ourselves")
        network = self._host.get_network()
        if not network.get_connections(info.peer_id):
            # py-libp2p 0.8.1 workaround (the one place for it): Swarm.dial_peer dials a
            # single TCP address per peer, picked from everything the peerstore holds
            # (stale ones included: a peer restarted on a new port stays unreachable),
            # and after a failed dial it refuses every dial to that peer for 60 s (its
            # negative cache). So the address we are asked to dial becomes the only one
            # the peerstore holds, and the negative cache is lifted for this attempt.
            # Identify refills the peerstore once connected.
            self._host.get_peerstore().clear_addrs(info.peer_id)
            network.unblock_peer(info.peer_id)
        try:
            with trio.fail_after(timeout):
                await self._host.connect(info)
        except trio.TooSlowError as exc:
            raise P2PTimeoutError(f"dialling {addr} took longer than {timeout} s") from exc
        except (BaseLibp2pError, OSError) as exc:
            raise DialError(f"cannot dial {addr}: {exc}") from exc
        return info.peer_id.to_base58()

    async def disconnect(self, peer_id: str) -> None:
        """Close all connections to ``peer_id``."""
        await self._host.disconnect(_to_id(peer_id))

    def connected_peers(self) -> list[str]:
        """Peer ids with at least one open connection."""
        return sorted(p.to_base58() for p in self._host.get_connected_peers())

    def known_addrs(self, peer_id: str) -> list[str]:
        """Addresses the peerstore holds for ``peer_id`` (from dials, identify, mDNS, DHT)."""
        try:
            return [str(a) for a in self._host.get_peerstore().addrs(_to_id(peer_id))]
        except (BaseLibp2pError, PeerStoreError):
            # PeerStoreError is a KeyError, not a BaseLibp2pError (peerstore.py:491); it is raised
            # for a peer whose addresses expired or that disconnected a moment ago.
            return []

    # -------------------------------------------------------------- gossip

    def _check_topic(self, topic_id: str) -> None:
        # A topic of another network name would silently mix markets.
        if not topic_id.startswith(self._prefix):
            raise ValueError(f"topic {topic_id!r} is not on network {self.net!r} (expected {self._prefix}...)")
        if self._allowed_topics is not None and topic_id not in self._allowed_topics:
            raise ValueError(f"topic {topic_id!r} is not among this host's gossip_topics")

    async def subscribe(self, topic_id: str, validator: Validator) -> Subscription:
        """Join ``topic_id``; ``validator(from_peer, data) -> bool`` gates every message.

        The validator runs before a message is delivered to us *or forwarded* to our
        mesh peers (a libp2p topic validator). It must be fast and must not raise
        (an exception counts as a reject). ``from_peer`` is the signed originator.
        """
        self._check_topic(topic_id)
        if topic_id in self._validators:
            raise ValueError(f"already subscribed to {topic_id}")
        self._validators[topic_id] = validator
        my_id = self._my_id

        def libp2p_validator(forwarder: ID, msg: rpc_pb2.Message) -> bool:
            # publish() already validated our own messages; don't run it twice.
            if forwarder == my_id and msg.from_id == my_id.to_bytes():
                return True
            try:
                return bool(validator(ID(msg.from_id).to_base58(), msg.data))
            except Exception:
                # The library only catches ValidationError around sync validators
                # (pubsub.py:1639-1643, 1681); anything else would kill the message task.
                log.exception("validator for %s raised; treating the message as invalid", topic_id)
                return False

        self._pubsub.set_topic_validator(topic_id, libp2p_validator, False)
        await self._pubsub.subscribe(topic_id)
        # Pitfall 8: the library delivers into a 32-slot channel with send_nowait
        # and drops on overflow (pubsub.py:124, 1370-1376). A reader task does not
        # help: a burst is handed over by many tasks within one trio scheduling
        # batch, before any reader runs. So we swap in our own, larger channel
        # (the library closes whatever is in subscribed_topics_send on unsubscribe).
        send, receive = trio.open_memory_channel[rpc_pb2.Message](_SUBSCRIPTION_BUFFER)
        subscription = Subscription(self, topic_id, receive)
        old = self._pubsub.subscribed_topics_send[topic_id]
        self._pubsub.subscribed_topics_send[topic_id] = _CountingSend(send, subscription)
        await old.aclose()
        return subscription

    async def unsubscribe(self, topic_id: str) -> None:
        """Leave ``topic_id``; its Subscription ends."""
        self._validators.pop(topic_id, None)
        await self._pubsub.unsubscribe(topic_id)
        self._pubsub.remove_topic_validator(topic_id)

    async def publish(self, topic_id: str, data: bytes) -> None:
        """Sign (StrictSign) and gossip ``data`` on ``topic_id``.

        Raises PublishRejectedError if our own validator for the topic rejects it
        (the library would drop it silently, pitfall 7), FrameTooLargeError if it is
        larger than the configured maximum message size.
        """
        self._check_topic(topic_id)
        if len(data) > self._max_message_size:
            raise FrameTooLargeError(
                f"refusing to publish {len(data)} bytes on {topic_id}: the limit is {self._max_message_size}"
            )
        validator = self._validators.get(topic_id)
        if validator is not None and not validator(self.peer_id, data):
            raise PublishRejectedError(f"our own validator for {topic_id} rejects this message")
        await self._wait_for_outbound_room()
        await self._pubsub.publish(topic_id, bytes(data))

    async def _wait_for_outbound_room(self) -> None:
        # Pitfall 13: pubsub.publish() only *enqueues* per-peer RPCs and never
        # yields to the sender tasks, so publishing in a loop overflows the
        # queues and drops (gossipsub.py:2062-2064). Give the senders a chance
        # first; a peer that stays full for `_PUBLISH_STALL` s is left to drop
        # (as go-libp2p does) rather than stall every other peer.
        deadline = trio.current_time() + _PUBLISH_STALL
        while True:
            if all(len(q) < self._queue_high_water for q in self._pubsub.peer_queues.values()):
                return
            if trio.current_time() > deadline:
                log.debug("publishing although an outbound queue is still full")
                return
            await trio.sleep(0.001)

    def mesh_peers(self, topic_id: str) -> list[str]:
        """Peers in our GossipSub mesh for ``topic_id`` (we forward full messages to them)."""
        return sorted(p.to_base58() for p in self._router.mesh.get(topic_id, ()))

    def topic_peers(self, topic_id: str) -> list[str]:
        """Connected peers that told us they subscribe to ``topic_id``."""
        return sorted(p.to_base58() for p in self._pubsub.peer_topics.get(topic_id, ()))

    async def wait_for_mesh(
        self, topic_id: str, peers: Iterable[str] = (), *, min_peers: int = 1, timeout: float = 10.0
    ) -> None:
        """Wait until ``peers`` (or else any ``min_peers`` peers) are in our mesh for the topic.

        Pitfall 9: right after connecting, a publish can reach no one because the
        mesh is not formed yet. The wait is event-driven for named peers
        (GossipSub.wait_for_mesh) and a short poll otherwise.
        """
        wanted = [_to_id(p) for p in peers]
        try:
            with trio.fail_after(timeout):
                if wanted:
                    for pid in wanted:
                        # The router has its own (5 s default) timeout; ours bounds the total.
                        await self._router.wait_for_mesh(pid, topic_id, timeout=math.inf)
                else:
                    while len(self._router.mesh.get(topic_id, ())) < min_peers:
                        await trio.sleep(0.01)
        except trio.TooSlowError as exc:
            raise P2PTimeoutError(
                f"mesh for {topic_id} not ready after {timeout} s (have {self.mesh_peers(topic_id)})"
            ) from exc

    def dht_peers(self) -> list[str]:
        """Peer ids in our Kademlia routing table ([] without the DHT)."""
        if self._dht is None:
            return []
        return sorted(p.to_base58() for p in self._dht.routing_table.get_peer_ids())

    def peer_score(self, peer_id: str, topic_id: str) -> float:
        """The GossipSub score we give ``peer_id`` on ``topic_id`` (diagnostics)."""
        return float(self._router.scorer.score(_to_id(peer_id), [topic_id]))

    # ------------------------------------------------------------- streams

    def set_stream_handler(
        self,
        protocol: str,
        handler: StreamHandler,
        *,
        max_frame_size: int | None = None,
        max_concurrent: int = 64,
    ) -> None:
        """Serve ``protocol``: ``handler(stream)`` runs in our nursery per inbound stream.

        The stream is closed when the handler returns and reset if it raises.
        Beyond ``max_concurrent`` simultaneous streams, new ones are reset.
        """
        self._handlers[protocol] = _HandlerEntry(
            handler=handler,
            max_frame_size=max_frame_size or self._max_frame_size,
            limiter=trio.Semaphore(max_concurrent),
        )

        async def libp2p_handler(stream: INetStream) -> None:
            # The library awaits the handler in its own task and never closes the
            # stream itself (basic_host.py:1554). We move the work into our nursery
            # so it is cancelled with the host and obeys our concurrency limit.
            entry = self._handlers.get(protocol)
            if entry is None:
                await stream.reset()
                return
            try:
                entry.limiter.acquire_nowait()
            except trio.WouldBlock:
                log.warning(
                    "too many concurrent %s streams; resetting one from %s", protocol, stream.muxed_conn.peer_id
                )
                await stream.reset()
                return
            try:
                self._nursery.start_soon(self._run_handler, entry, stream)
            except RuntimeError:  # nursery closed: we are shutting down
                entry.limiter.release()
                await stream.reset()

        self._host.set_stream_handler(TProtocol(protocol), libp2p_handler)

    async def _run_handler(self, entry: _HandlerEntry, stream: INetStream) -> None:
        framed = FramedStream(stream, entry.max_frame_size)
        try:
            await entry.handler(framed)
        except (P2PError, BaseLibp2pError, trio.TooSlowError) as exc:
            log.info("%s stream from %s failed: %r", framed.protocol, framed.peer_id, exc)
            await framed.reset()
        except Exception:
            log.exception("%s handler crashed on a stream from %s", framed.protocol, framed.peer_id)
            await framed.reset()
        else:
            await framed.aclose()
        finally:
            entry.limiter.release()

    def set_request_handler(
        self,
        protocol: str,
        handler: RequestHandler,
        *,
        max_frame_size: int | None = None,
        timeout: float = 30.0,
        max_concurrent: int = 64,
    ) -> None:
        """Serve one-shot requests: ``response = await handler(from_peer, request)``.

        An oversize request or a handler error resets the stream, which the
        requester sees as StreamClosedError.
        """

        async def serve(stream: FramedStream) -> None:
            with trio.fail_after(timeout):
                request = await stream.receive()
                response = await handler(stream.peer_id, request)
                await stream.send(response)

        self.set_stream_handler(protocol, serve, max_frame_size=max_frame_size, max_concurrent=max_concurrent)

    def remove_stream_handler(self, protocol: str) -> None:
        self._handlers.pop(protocol, None)
        self._host.remove_stream_handler(TProtocol(protocol))

    async def open_stream(
        self, peer_id: str, protocol: str, *, timeout: float = 10.0, max_frame_size: int | None = None
    ) -> FramedStream:
        """Open a framed stream to ``peer_id`` (dialling from the peerstore if needed).

        Use it as ``async with await host.open_stream(...) as s:`` for multi-frame
        protocols (sync); the caller owns the stream.
        """
        pid = _to_id(peer_id)
        try:
            with trio.fail_after(timeout):
                stream = await self._host.new_stream(pid, [TProtocol(protocol)])
        except trio.TooSlowError as exc:
            raise P2PTimeoutError(f"opening {protocol} to {peer_id} took longer than {timeout} s") from exc
        except BaseLibp2pError as exc:
            if "protocol not supported" in repr(exc.__cause__).lower() or "not supported" in str(exc).lower():
                raise ProtocolNotSupportedError(f"{peer_id} does not speak {protocol}") from exc
            raise DialError(f"cannot open {protocol} to {peer_id}: {exc}") from exc
        return FramedStream(stream, max_frame_size or self._max_frame_size)

    async def request(
        self,
        peer_id: str,
        protocol: str,
        payload: bytes,
        timeout: float = 10.0,
        *,
        max_frame_size: int | None = None,
    ) -> bytes:
        """Send one request frame and return the one response frame."""
        limit = max_frame_size or self._max_frame_size
        if len(payload) > limit:
            # Check before dialling: no point opening a stream for it.
            raise FrameTooLargeError(
                f"refusing to send a {len(payload)}-byte request on {protocol}: the limit is {limit} bytes"
            )
        try:
            with trio.fail_after(timeout):
                stream = await self.open_stream(peer_id, protocol, timeout=math.inf, max_frame_size=limit)
                try:
                    await stream.send(payload)
                    await stream.close_write()
                    response = await stream.receive()
                except BaseException:
                    await stream.reset()
                    raise
                await stream.aclose()
                return response
        except trio.TooSlowError as exc:
            raise P2PTimeoutError(f"{protocol} request to {peer_id} took longer than {timeout} s") from exc
        except EndOfStream as exc:
            # A server refuses (oversize request, handler error) by resetting the
            # stream, but yamux in 0.8.1 often reports a RST as a clean EOF: it
            # drops the stream's buffer and event on RST (yamux.py:1565-1577,
            # 970-974) and the waiting reader then raises MuxedStreamEOF
            # (yamux.py:1148-1150). So both look the same here.
            raise StreamClosedError(
                f"{peer_id} closed or reset {protocol} without answering "
                "(request refused as too large, handler failed, or peer shutting down)"
            ) from exc

    # ----------------------------------------------------------------- DHT

    async def find_peer(self, peer_id: str, *, timeout: float = 10.0) -> list[str]:
        """Addresses of ``peer_id`` from the peerstore or a Kademlia lookup ([] if unknown)."""
        if self._dht is None:
            raise RuntimeError("the DHT is not enabled on this host (open_host(enable_dht=True))")
        with trio.move_on_after(timeout):
            info = await self._dht.find_peer(_to_id(peer_id))
            if info is not None:
                return [str(a) for a in info.addrs]
        return []


# ------------------------------------------------------------------ open_host


@dataclass(slots=True)
class _Background:
    """State of the optional discovery machinery, for the shutdown path."""

    mdns: Any | None = None
    mdns_handler: Callable[[PeerInfo], None] | None = None


def _connection_config(max_connections: int) -> ConnectionConfig:
    high = min(300, max_connections)
    low = min(100, high)
    return ConnectionConfig(
        # Pitfall 1: with the default of 3, every connect() sits in a fallback
        # dial timer for ~250 ms; one connection per peer is all we use anyway.
        max_connections_per_peer=1,
        max_connections=max_connections,
        high_watermark=high,
        low_watermark=low,
        min_connections=min(50, low),
    )


async def _close_connection(conn: INetConn) -> None:
    try:
        await conn.close()
    except Exception:
        log.debug("closing a connection failed", exc_info=True)


async def _close_host_shielded(host: IHost) -> None:
    # Pitfall 3: host.run()'s own cleanup runs while cancelled and leaks fds,
    # threads and tasks (the swarm's connections/listeners are never really
    # closed). An explicit host.close() that cannot be cancelled, but cannot hang
    # either, fixes it.
    with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT) as scope:
        # Pitfall 14: closing one connection sleeps a fixed 0.2 s (yamux.py:823
        # and swarm_connection.py:218, 0.1 s each) and Swarm.close() closes them
        # one after another (swarm.py:2303-2307): 50 peers would take 10 s. So we
        # close them concurrently first; host.close() then finds none left.
        async with trio.open_nursery() as nursery:
            for conn in host.get_network().get_connections():
                nursery.start_soon(_close_connection, conn)
        try:
            await host.close()
        except Exception:
            log.debug("host.close() failed", exc_info=True)
    if scope.cancelled_caught:
        log.warning("libp2p host did not close within %s s", _CLOSE_TIMEOUT)


@asynccontextmanager
async def open_host(
    seed: bytes,
    listen_addrs: Sequence[str] = DEFAULT_LISTEN_ADDRS,
    *,
    net: str,
    bootstrap: Sequence[str] = (),
    enable_mdns: bool = False,
    enable_dht: bool = False,
    gossip: GossipSettings | None = None,
    gossip_topics: Collection[str] | None = None,
    resend_topics: Collection[str] = (),
    max_connections: int = 200,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    bootstrap_interval: float = 30.0,
    debug: bool = False,
) -> AsyncIterator[P2PHost]:
    """Run a libp2p host for network ``net`` until the block exits.

    ``seed``: the node's 32-byte Ed25519 seed. ``listen_addrs``: TCP multiaddrs
    (port 0 picks a free port). ``bootstrap``: full multiaddrs dialled at start and
    re-dialled every ``bootstrap_interval`` s while disconnected; an unreachable one
    is logged, never fatal. ``enable_mdns``: find and dial peers of the same
    network on the LAN. ``enable_dht``: run a Kademlia DHT server (peer routing).
    ``gossip_topics``: if given, the topic *names* this node uses; remote
    subscriptions to anything else are ignored. ``resend_topics``: topic names
    where publishing the same bytes again is a retry, not a duplicate (see
    :func:`_content_msg_id`). ``debug``: let py-libp2p's own logging through.
    """
    validate_net(net)
    settings = gossip or GossipSettings()
    maddrs = [_parse_listen_addr(a) for a in listen_addrs]
    boot: list[tuple[str, multiaddr.Multiaddr, PeerInfo]] = []
    for addr in bootstrap:
        try:
            boot.append((addr, *_parse_dial_addr(addr)))
        except ValueError as exc:
            # A bad entry (e.g. in a saved-peers file) must not stop the node.
            log.warning("ignoring bootstrap address: %s", exc)
    allowed = frozenset(topic(net, n) for n in gossip_topics) if gossip_topics is not None else None
    configure_logging(debug)

    key_pair = identity_key_pair(seed)
    host = new_host(
        key_pair=key_pair,
        # Pitfall 2: without explicit options the host also offers plaintext and
        # SECIO (libp2p/__init__.py new_swarm, `sec_opt or {...}`).
        sec_opt={NOISE_PROTOCOL_ID: NoiseTransport(key_pair, noise_privkey=_x25519_key_pair().private_key)},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        listen_addrs=maddrs,
        connection_config=_connection_config(max_connections),
        # Discovery is ours (below): the built-in mDNS advertises on a fixed port
        # and service name shared by every libp2p app, and the built-in bootstrap
        # does not tell us which peers failed.
        enable_mDNS=False,
        bootstrap=None,
    )
    router = GossipSub(
        # 1.1 (scoring, PX) and 1.0 for old peers; 1.2 only on request (see
        # GossipSettings.meshsub_v12). 1.3/1.4/2.0 in this library are drafts.
        protocols=([GOSSIPSUB_V12] if settings.meshsub_v12 else []) + [GOSSIPSUB_V11, GOSSIPSUB_V10],
        degree=settings.degree,
        degree_low=settings.degree_low,
        degree_high=settings.degree_high,
        time_to_live=settings.fanout_ttl,
        gossip_window=settings.gossip_window,
        gossip_history=settings.gossip_history,
        heartbeat_initial_delay=0.1,
        heartbeat_interval=settings.heartbeat_interval,
        # Peer exchange off: peers come from bootstrap, mDNS and the DHT, not from
        # whoever PRUNEs us.
        do_px=False,
        score_params=settings.score_params(),
        # Pitfall 5: adaptive gossip stretches the heartbeat to 30-60 s after a
        # quiet spell (gossipsub.py:2860-2870).
        adaptive_gossip_enabled=False,
        # Pitfall 4: caps forwarding at 10 msgs/s per forwarding peer per topic,
        # our own publishes included (gossipsub.py:2872-2906). Rate limits belong
        # in our validators, which know the author.
        spam_protection_enabled=False,
        # IP-diversity grafting/pruning (gossipsub.py:2932-3028): every peer of a
        # LAN swarm behind one NAT, or of a test swarm on 127.0.0.1, shares an IP,
        # so it only adds churn for us.
        eclipse_protection_enabled=False,
    )
    pubsub = Pubsub(
        host,
        router,
        seen_ttl=settings.seen_ttl,
        # StrictSign: every message carries the originator's signature, which is
        # what go/js-libp2p expect (LIBP2P-NOTES "Interop").
        strict_signing=True,
        msg_id_constructor=partial(_content_msg_id, per_publication=frozenset(topic(net, n) for n in resend_topics)),
        max_inbound_rpc_size=settings.max_message_size + _RPC_OVERHEAD,
        allowed_topics=allowed,
    )
    pubsub.peer_queues = _RoomyQueues(settings.outbound_queue_size)
    # NB: Pubsub() has already started a thread (the seen-messages sweeper,
    # tools/timed_cache/base_timed_cache.py:25); from here on it must be stopped.
    dht: Any | None = None
    bg = _Background()
    try:
        if enable_dht:
            from libp2p.kad_dht.kad_dht import DHTMode, KadDHT

            dht = KadDHT(host, DHTMode.SERVER)
        async with (
            host.run(listen_addrs=maddrs),
            background_trio_service(pubsub),
            background_trio_service(router),
        ):
            await pubsub.wait_until_ready()
            try:
                async with trio.open_nursery() as nursery:
                    p2p = P2PHost(
                        host=host,
                        pubsub=pubsub,
                        router=router,
                        dht=dht,
                        nursery=nursery,
                        net=net,
                        max_frame_size=max_frame_size,
                        max_message_size=settings.max_message_size,
                        outbound_queue_size=settings.outbound_queue_size,
                        allowed_topics=allowed,
                    )
                    # The peerstore never expires addresses by itself.
                    nursery.start_soon(host.get_peerstore().start_cleanup_task, 300)
                    if dht is not None:
                        await nursery.start(_run_dht, host, dht)
                    if boot:
                        nursery.start_soon(_bootstrap_loop, p2p, boot, bootstrap_interval)
                    if enable_mdns:
                        await _start_mdns(p2p, host, net, nursery, bg)
                    try:
                        yield p2p
                    finally:
                        nursery.cancel_scope.cancel()
            finally:
                # Close connections while pubsub still runs, so its dead-peer
                # handling sees an orderly teardown rather than a stopped service.
                await _close_host_shielded(host)
    finally:
        await _close_host_shielded(host)  # idempotent; covers failures before run()
        pubsub.seen_messages.stop()
        await _stop_mdns(bg)


async def _run_dht(host: IHost, dht: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Run the DHT service and keep its routing table filled from our connections.

    Pitfall 10: connecting does not add a peer to the routing table; add_peer()
    must be called (routing_table.py:471). We do it on every new connection.
    """
    send, receive = trio.open_memory_channel[ID](1000)
    notifee = _ConnectionNotifee(send)
    host.get_network().register_notifee(notifee)
    async with background_trio_service(dht):
        for pid in host.get_connected_peers():
            await dht.add_peer(pid)
        task_status.started()
        async for pid in receive:
            try:
                await dht.add_peer(pid)
            except Exception:
                log.debug("DHT add_peer(%s) failed", pid, exc_info=True)


async def _bootstrap_loop(p2p: P2PHost, boot: list[tuple[str, multiaddr.Multiaddr, PeerInfo]], interval: float) -> None:
    """Dial the bootstrap peers now, and again whenever we lose them."""
    warned: set[str] = set()

    # One task per peer, trying its addresses one after the other in the order given
    # (explicit bootstrap addresses first, then the newest saved ones): concurrent
    # dials to one peer would wait on each other inside py-libp2p's swarm and share
    # one outcome, so a stale address could hide a good one.
    by_peer: dict[ID, list[str]] = {}
    for addr, _maddr, info in boot:
        if info.peer_id != p2p._my_id:
            by_peer.setdefault(info.peer_id, []).append(addr)

    async def dial(peer: ID, addrs: list[str]) -> None:
        for addr in addrs:
            if p2p._host.get_network().get_connections(peer):
                return
            try:
                await p2p.connect(addr, timeout=10.0)
            except (P2PError, ValueError) as exc:
                # One line, once per outage: an unreachable seed is normal.
                if addr not in warned:
                    warned.add(addr)
                    log.warning("bootstrap peer %s unreachable: %s", addr, exc)
                continue
            warned.difference_update(addrs)
            log.info("connected to bootstrap peer %s", addr)
            return

    while True:
        async with trio.open_nursery() as nursery:
            for peer, addrs in by_peer.items():
                nursery.start_soon(dial, peer, addrs)
        await trio.sleep(interval)


def _mdns_fingerprint(net: str) -> str:
    # DNS-SD service names are at most 15 characters ("p2p-" + 10 = 14), so the
    # network name goes in as a short hash; the libp2p mDNS spec's private-network
    # form is _p2p-<x>._udp.local.
    return "sm" + hashlib.sha256(net.encode()).hexdigest()[:8]


async def _start_mdns(p2p: P2PHost, host: IHost, net: str, nursery: trio.Nursery, bg: _Background) -> None:
    """Advertise ourselves on the LAN and dial peers of the same network we find."""
    from libp2p.discovery.events.peerDiscovery import peerDiscovery
    from libp2p.discovery.mdns.mdns import create_mdns_discovery

    all_addrs = [a.rsplit("/p2p/", 1)[0] for a in p2p.listen_addrs()]
    # Loopback is useless to other machines; advertise it only if it is all we have
    # (a swarm of nodes on one machine).
    addrs = [a for a in all_addrs if not a.startswith(("/ip4/127.", "/ip6/::1/"))] or all_addrs
    port = int(multiaddr.Multiaddr(addrs[0]).value_for_protocol("tcp")) if addrs else 0
    # Zeroconf() starts its own threads in here; bg.mdns is stopped on every exit path.
    bg.mdns = await trio.to_thread.run_sync(
        lambda: create_mdns_discovery(
            host.get_network(),
            port=port,
            listen_addrs=addrs,
            private_network_fingerprint=_mdns_fingerprint(net),
            host=None,
        )
    )
    found_send, found_receive = trio.open_memory_channel[PeerInfo](256)
    token = trio.lowlevel.current_trio_token()

    def on_found(info: PeerInfo) -> None:
        # Pitfall 10: called on zeroconf's thread. Hand over to trio; never block
        # zeroconf, and never fail if trio is already gone.
        with suppress(trio.WouldBlock, trio.RunFinishedError, trio.BrokenResourceError, trio.ClosedResourceError):
            trio.from_thread.run_sync(found_send.send_nowait, info, trio_token=token)

    bg.mdns_handler = on_found
    peerDiscovery.register_peer_discovered_handler(on_found)

    async def dial_found() -> None:
        listener = bg.mdns.listener
        async for info in found_receive:
            # peerDiscovery is process-global: only act on peers *our* listener saw
            # (another host in this process may run another network).
            if info.peer_id not in {pid for pid, _ in listener.discovered_services.values()}:
                continue
            if info.peer_id == p2p._my_id or host.get_network().get_connections(info.peer_id):
                continue
            for a in info.addrs:
                addr = f"{a}/p2p/{info.peer_id}" if "/p2p/" not in str(a) else str(a)
                try:
                    await p2p.connect(addr, timeout=5.0)
                    log.info("connected to mDNS peer %s", addr)
                    break
                except (P2PError, ValueError) as exc:
                    log.debug("mDNS peer %s not dialable: %s", addr, exc)

    async def sweep() -> None:
        while True:
            await trio.sleep(60)
            bg.mdns.listener.cleanup_stale_entries(max_age=240)

    nursery.start_soon(dial_found)
    nursery.start_soon(sweep)
    # register() announces with blocking waits (~1.5 s): off the trio thread, and
    # in the background so that open_host() does not wait for it.
    nursery.start_soon(partial(trio.to_thread.run_sync, bg.mdns.broadcaster.register, abandon_on_cancel=True))


async def _stop_mdns(bg: _Background) -> None:
    if bg.mdns_handler is not None:
        from libp2p.discovery.events.peerDiscovery import peerDiscovery

        peerDiscovery.unregister_peer_discovered_handler(bg.mdns_handler)
        bg.mdns_handler = None
    mdns, bg.mdns = bg.mdns, None
    if mdns is None:
        return

    def stop() -> None:
        mdns.broadcaster.unregister()
        mdns.listener.stop()
        mdns.zeroconf.close()

    # Unregistering sends goodbye packets with blocking waits; shielded so that it
    # runs even while we are being cancelled (else zeroconf's threads leak).
    with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT):
        await trio.to_thread.run_sync(stop, abandon_on_cancel=True)

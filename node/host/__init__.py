"""The libp2p host of a swapmeet node: the only package that imports py-libp2p.

Everything above it speaks in plain ``str`` peer ids, ``str`` multiaddrs and
``bytes``; everything libp2p-specific (key types, ``ID``, ``Multiaddr``,
services, pubsub internals) stays in here. That keeps the rest of the node
testable without sockets, and the ~1 s / ~80 MB cost of ``import libp2p`` out
of anything that does not run a host (the CLI talks to a running node over HTTP).

- :mod:`.host`: :func:`open_host` and :class:`P2PHost` (connections, gossip, streams).
- :mod:`.gossip`: GossipSub settings, message ids, per-peer queues, subscriptions.
- :mod:`.streams`: length-prefixed framed streams.
- :mod:`.discovery`: bootstrap dialling, mDNS, the DHT's routing table.
- :mod:`.fastpath`: py-libp2p's per-message costs cut (docs/LIBP2P.md §60-§64, §66, §67).
- :mod:`.liveness`: silent connections closed and redialled (docs/LIBP2P.md §65).
- :mod:`.names`: topic and protocol ids that carry the network name.
- :mod:`.errors`, :mod:`.logs`: what the host raises; keeping py-libp2p's logging quiet.

py-libp2p 0.8.1 has sharp edges. Each workaround here cites the section of
``docs/LIBP2P.md`` that says what the library does, why it hurts, what we do
and which test shows it. The names below are the package's public face: code
outside the package imports them from here.
"""

from .errors import (
    DialError,
    EndOfStream,
    FrameTooLargeError,
    P2PError,
    P2PTimeoutError,
    ProtocolNotSupportedError,
    PublishRejectedError,
    RequestRefused,
    StreamClosedError,
)
from .gossip import DEFAULT_MAX_MESSAGE_SIZE, GossipSettings, Subscription, Validator
from .host import P2PHost, identity_key_pair, open_host
from .liveness import LivenessSettings
from .logs import configure_logging
from .names import protocol_id, topic
from .streams import DEFAULT_MAX_FRAME_SIZE, FramedStream

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DialError",
    "EndOfStream",
    "FrameTooLargeError",
    "FramedStream",
    "GossipSettings",
    "LivenessSettings",
    "P2PError",
    "P2PHost",
    "P2PTimeoutError",
    "ProtocolNotSupportedError",
    "PublishRejectedError",
    "RequestRefused",
    "StreamClosedError",
    "Subscription",
    "Validator",
    "configure_logging",
    "identity_key_pair",
    "open_host",
    "protocol_id",
    "topic",
]

"""Keeping py-libp2p's logging quiet by default, and all of it available with ``--debug``."""

from __future__ import annotations

import logging

# Loggers that print alarming multi-line ERROR/WARNING blocks for ordinary events
# (a peer disconnecting mid-stream, a stream we reset on purpose, a subscription
# queue we replaced): BasicHost logs "Failed to open stream" at ERROR for every
# failed negotiation, and without LIBP2P_DEBUG the "libp2p" logger has no handler
# and does not propagate, so its records reach stderr unformatted
# (docs/LIBP2P.md §28).
_NOISY_LOGGERS = (
    "libp2p.host.basic_host",
    "libp2p.network.swarm",
    # Sets its own level to INFO at import and reports every 30 s that it is
    # "below target" (docs/LIBP2P.md §8, §28).
    "libp2p.network.auto_connector",
    # Kept though it has no effect today: that module logs through the root logger
    # (docs/LIBP2P.md §28), and this entry silences it the day it gets its own.
    "libp2p.network.connection.swarm_connection",
    "libp2p.protocol_muxer",
    "libp2p.pubsub.pubsub",
    "libp2p.pubsub.gossipsub",
    # "Failed to update the Certified-Addr-Book" at ERROR for every RPC whose sender record it
    # does not store: an out-of-date one is routine, a bad one is a peer's to send at will (§53).
    "libp2p.pubsub.utils",
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
    logged under ``swapmeet.node.host`` either way.

    Beware: py-libp2p's swarm connection calls the *module* function
    ``logging.debug()``, which runs ``logging.basicConfig()`` when the root logger
    has no handler yet (docs/LIBP2P.md §28). An application should configure
    logging before it opens a host, or it gets a default stderr handler from the
    first connection.
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

"""Keeping py-libp2p's logging quiet by default, and all of it available with ``--debug``."""

from __future__ import annotations

import logging

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
    logged under ``swapmeet.node.host`` either way.

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


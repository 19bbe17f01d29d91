"""Gossip message ids: the PROTOCOL.md §13 rule (§13.1), as a pure function (no I/O, no libp2p).

Every GossipSub peer names each message by an id; the seen cache drops a message
whose id it already holds, and the GossipSub specification has IHAVE/IWANT and
IDONTWANT name messages by it (py-libp2p's IHAVE/IWANT use ``from || seqno``
instead: PROTOCOL.md §13.1). Peers that compute ids differently still exchange
messages over one link, but they disagree across the swarm about which messages
are duplicates.

The id is SHA-256 over, in this order:

1. each of the message's topic ids, in the order the message lists them, as a
   4-byte big-endian length followed by its UTF-8 bytes;
2. the message's data (no length prefix);
3. only on a *per-publication* topic (``settle``: if any of the message's topics
   is one): ``00 "publication" 00``, the publisher's binary PeerID (the message's
   signed ``from`` field), ``00``, and the message's ``seqno`` bytes as carried.

Without step 3 the id depends on the content only, so the same bytes published
twice, by one peer or by two, are one message. On the settle topic a publisher
re-sends the same bytes on purpose (a retry of a message that may have been
lost, PROTOCOL.md §12.8 and §12.10), so there each publication must be its own
message. The message id constructor that the host (``node/host/gossip.py``) gives py-libp2p calls this
function.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

#: Topic *names* (``/swapmeet/<net>/<name>/1``) whose message ids also cover the publisher and seqno.
PER_PUBLICATION_TOPICS: tuple[str, ...] = ("settle",)

PUBLICATION_MARK = b"\x00publication\x00"


def message_id(topics: Iterable[str], data: bytes, publisher: bytes | None = None, seqno: bytes | None = None) -> bytes:
    """The §13 gossip message id of a message on ``topics`` carrying ``data``.

    ``publisher`` (the binary PeerID from the message's ``from`` field) and
    ``seqno`` (its ``seqno`` bytes) are given exactly when one of ``topics`` is a
    per-publication topic (:data:`PER_PUBLICATION_TOPICS`); both or neither.
    """
    if (publisher is None) != (seqno is None):
        raise ValueError("give both the publisher and the seqno, or neither")
    h = hashlib.sha256()
    for t in topics:
        raw = t.encode()
        h.update(len(raw).to_bytes(4, "big"))
        h.update(raw)
    h.update(data)
    if publisher is not None and seqno is not None:
        h.update(PUBLICATION_MARK + publisher + b"\x00" + seqno)
    return h.digest()


__all__ = ["PER_PUBLICATION_TOPICS", "PUBLICATION_MARK", "message_id"]

"""Frames of the offer-book sync stream protocol (``/swapmeet/<net>/book-sync/1.0.0``).

One session: the initiator and the responder exchange ``rec`` frames carrying
range-based set reconciliation messages (:mod:`.reconcile`) until the
initiator knows which ids it has that the responder lacks and which it lacks.
It then asks for what it lacks with ``get`` frames (each answered by one
``objs`` frame, a batch of signed objects, or null if the responder has none
of them any more), pushes what the responder lacks with ``put`` frames
(unanswered), and closes the session with ``end``. Each frame is the
deterministic CBOR array ``[tag, payload]``:

- ``["rec", bstr]``   a reconciliation message, either direction
- ``["get", [bstr(32), ...]]`` at most ``MAX_IDS_PER_GET`` ids, initiator only
- ``["objs", bstr / null]``   a batch (:mod:`.batch`), responder only
- ``["put", bstr]``   a batch, initiator only
- ``["end", null]``   initiator only; the responder closes the stream
"""

from __future__ import annotations

from typing import Any

from .. import batch, cbor
from ..errors import InvalidObject

MAX_IDS_PER_GET = 256
MAX_FRAME = batch.MAX_BATCH_SIZE + 64
TAGS = ("rec", "get", "objs", "put", "end")


def encode_frame(tag: str, payload: Any) -> bytes:
    if tag not in TAGS:
        raise ValueError(f"unknown sync frame tag {tag!r}")
    return cbor.encode([tag, payload])


def decode_frame(data: bytes) -> tuple[str, Any]:
    """``(tag, payload)`` with the payload's type checked for its tag."""
    value = cbor.decode(data, path="sync", max_size=MAX_FRAME, max_depth=3)
    if type(value) is not list or len(value) != 2 or value[0] not in TAGS:
        raise InvalidObject("sync", f"expected [tag, payload] with tag one of {', '.join(TAGS)}", "envelope")
    tag, payload = value
    if tag in ("rec", "put") and type(payload) is not bytes:
        raise InvalidObject(f"sync.{tag}", "payload must be a byte string", "type")
    if tag == "objs" and payload is not None and type(payload) is not bytes:
        raise InvalidObject("sync.objs", "payload must be a batch or null", "type")
    if tag == "end" and payload is not None:
        raise InvalidObject("sync.end", "payload must be null", "type")
    if tag == "get":
        if type(payload) is not list or not 1 <= len(payload) <= MAX_IDS_PER_GET:
            raise InvalidObject("sync.get", f"expected 1 to {MAX_IDS_PER_GET} ids", "length")
        for i, oid in enumerate(payload):
            if type(oid) is not bytes or len(oid) != 32:
                raise InvalidObject(f"sync.get[{i}]", "must be a 32-byte id", "type")
    return tag, payload

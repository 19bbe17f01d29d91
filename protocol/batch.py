"""Batches: several signed objects carried in one pubsub message or one sync frame.

py-libp2p's gossip costs about 3 ms of CPU per message per link, whatever the
message size, so the node packs objects waiting to be published into one
message. A batch is the deterministic CBOR array ``["swapmeet/1", "batch",
[object, ...]]`` of the objects' signed bytes. Decoding is strict: the
envelope is checked here and every object then goes through the trust
boundary on its own, so one bad object is reported with its index.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from . import boundary, cbor
from .errors import InvalidObject
from .objects import DOMAIN

BATCH = "batch"
MAX_BATCH_OBJECTS = 256
MAX_BATCH_SIZE = 1024 * 1024  # py-libp2p's default pubsub max message size is 1 MiB
_OVERHEAD = len(cbor.encode([DOMAIN, BATCH, []])) + 5  # envelope + the largest array head


def encode_batch(raws: Sequence[bytes]) -> bytes:
    if not 1 <= len(raws) <= MAX_BATCH_OBJECTS:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH_OBJECTS} objects, got {len(raws)}")
    return cbor.encode([DOMAIN, BATCH, list(raws)])


def pack(raws: Iterable[bytes], *, max_size: int = MAX_BATCH_SIZE) -> list[bytes]:
    """Split ``raws`` into as few batches as the size and count limits allow."""
    batches: list[bytes] = []
    current: list[bytes] = []
    size = _OVERHEAD
    for raw in raws:
        cost = len(raw) + 5  # the byte string head
        if current and (size + cost > max_size or len(current) == MAX_BATCH_OBJECTS):
            batches.append(encode_batch(current))
            current, size = [], _OVERHEAD
        current.append(raw)
        size += cost
    if current:
        batches.append(encode_batch(current))
    return batches


def split_batch(data: bytes) -> list[bytes]:
    """The objects' bytes in a batch, without verifying them yet."""
    value = cbor.decode(data, path="batch", max_size=MAX_BATCH_SIZE, max_depth=3)
    if type(value) is not list or len(value) != 3 or value[0] != DOMAIN or value[1] != BATCH:
        raise InvalidObject("batch", 'expected ["swapmeet/1", "batch", [objects...]]', "envelope")
    objects = value[2]
    if type(objects) is not list or not 1 <= len(objects) <= MAX_BATCH_OBJECTS:
        raise InvalidObject("batch[2]", f"expected an array of 1 to {MAX_BATCH_OBJECTS} objects", "length")
    for i, raw in enumerate(objects):
        if type(raw) is not bytes:
            raise InvalidObject(f"batch[2][{i}]", "must be a byte string holding a signed object", "type")
    return objects


def decode_batch(data: bytes, *, kinds: tuple[str, ...], now: int | None) -> list[object]:
    """Split and verify every object (``InvalidObject`` names the first bad one's index)."""
    return decode_objects(split_batch(data), kinds=kinds, now=now, path="batch[2]")


def decode_objects(raws: Sequence[bytes], *, kinds: tuple[str, ...], now: int | None, path: str) -> list[object]:
    """Verify every object through the trust boundary; ``InvalidObject`` names the first bad one ``path[i]``."""
    objects = []
    for i, raw in enumerate(raws):
        try:
            objects.append(boundary.decode(raw, kind=kinds, now=now))
        except InvalidObject as err:
            raise err.under(f"{path}[{i}]") from None
    return objects

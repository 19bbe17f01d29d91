"""Frames of ledger replication: the ``ledger-sync`` stream protocol and the ``ledger`` gossip topic.

Chains are replicated in two ways: new entries are announced on the gossip
topic ``/swapmeet/<net>/ledger/1``, and a node pulls what it misses over the
stream protocol ``/swapmeet/<net>/ledger-sync/1.0.0`` (compare heads, fetch
missing ranges). What to ask for and what to do with the answers is decided by
``swapmeet.ledger.replication``; this module only defines the bytes. Every
entry received is still verified by the ledger's ingest (the trust boundary):
these codecs check structure, counts and sizes, not signatures.

Stream frames are unsigned-varint length-prefixed (as the book sync), at most
``MAX_FRAME`` bytes, each the deterministic CBOR array ``[tag, payload]``
(depth <= 3). The requester sends one request and waits for its reply:

- ``["get-heads", [author, ...]]`` 1 to ``MAX_HEADS`` authors (32-byte keys,
  strictly increasing): the heads of these authors' chains.
- ``["get-heads", cursor]`` a byte string of 0 or 32 bytes: the heads of every
  chain the responder holds whose author is greater than ``cursor`` (empty:
  from the start), in author order, at most ``MAX_HEADS`` of them. A reply of
  exactly ``MAX_HEADS`` heads means "there may be more": ask again with the
  last author as the cursor.
- ``["heads", [[author, seq, id], ...]]`` the reply to ``get-heads``: 0 to
  ``MAX_HEADS`` heads (seq 1..2^53, id 32 bytes), authors strictly increasing,
  only chains the responder holds (and, for a list, only authors asked for).
- ``["get-range", [author, after, limit]]`` after 0..2^53, limit
  1..``MAX_RANGE``: ``author``'s chain entries with seq > ``after``.
- ``["entries", [entry, ...]]`` the reply to ``get-range``: 0 to
  ``MAX_RANGE`` signed entries (each a byte string of at most the entry size
  limit), consecutive from ``after + 1``, at most ``limit``, as many as fit
  one frame; empty if the responder holds none of them.
- ``["end", null]`` the requester is done; the responder closes the stream.

Gossip messages on the ledger topic (at most ``MAX_GOSSIP`` bytes, depth <= 3):

- ``["swapmeet/1", "announce", [entry, ...]]`` 1 to ``MAX_ANNOUNCE`` signed
  ledger entries, new ones, in chain order per author.
- ``["swapmeet/1", "fork-alert", proof]`` the bytes of a fork proof
  (:mod:`.evidence`), at most ``evidence.MAX_PROOF_SIZE``; the receiver checks
  it offline with :func:`verify_fork_alert` before acting on or forwarding it.

Decoding is strict: anything else raises :class:`InvalidObject` with a path
under ``ledger-sync`` or ``ledger-gossip`` and a code (``envelope``, ``type``,
``length``, ``range``, ``order``, or the CBOR layer's ``size``/``encoding``).
Encoding runs the same checks and raises ``ValueError`` for a frame a peer
would refuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from . import batch, boundary, cbor, evidence
from .errors import InvalidObject
from .evidence import ForkProof
from .objects import DOMAIN, KIND_ENTRY, LedgerEntry

SYNC_PROTOCOL = "ledger-sync"  # stream protocol name: /swapmeet/<net>/ledger-sync/1.0.0
GOSSIP_TOPIC = "ledger"  # gossip topic name: /swapmeet/<net>/ledger/1

MAX_HEADS = 4096  # heads per get-heads/heads frame: about 80 bytes each, 330 KB at most
MAX_RANGE = 256  # entries per get-range
MAX_ANNOUNCE = 16  # entries per announce message
MAX_ENTRY_SIZE = boundary.MAX_SIZE[KIND_ENTRY]
MAX_FRAME = batch.MAX_BATCH_SIZE + 64  # as the book sync: the host's frame limit
MAX_GOSSIP = batch.MAX_BATCH_SIZE  # py-libp2p's pubsub message limit
MAX_SEQ = boundary.MAX_SEQ
KEY_SIZE = boundary.KEY_SIZE
ID_SIZE = boundary.ID_SIZE

SYNC = "ledger-sync"
GOSSIP = "ledger-gossip"
ANNOUNCE = "announce"
FORK_ALERT = "fork-alert"


# --------------------------------------------------------------------------- frames


class Head(NamedTuple):
    author: bytes
    seq: int
    id: bytes


@dataclass(frozen=True, slots=True)
class GetHeads:
    """Ask for the heads of ``authors``; or (``authors`` None) of every chain held with author > ``after``."""

    authors: tuple[bytes, ...] | None = None
    after: bytes = b""


@dataclass(frozen=True, slots=True)
class Heads:
    heads: tuple[Head, ...]


@dataclass(frozen=True, slots=True)
class GetRange:
    author: bytes
    after: int
    limit: int


@dataclass(frozen=True, slots=True)
class Entries:
    raws: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class End:
    pass


Frame = GetHeads | Heads | GetRange | Entries | End
Request = GetHeads | GetRange


@dataclass(frozen=True, slots=True)
class Announce:
    raws: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ForkAlert:
    proof: bytes


Gossip = Announce | ForkAlert


# --------------------------------------------------------------------------- field checks


def _bytes(value: Any, path: str, sizes: tuple[int, ...]) -> bytes:
    if type(value) is not bytes:
        raise InvalidObject(path, f"must be a byte string, got {type(value).__name__}", "type")
    if len(value) not in sizes:
        raise InvalidObject(path, f"must be {' or '.join(map(str, sizes))} bytes, got {len(value)}", "length")
    return value


def _blob(value: Any, path: str, max_size: int) -> bytes:
    if type(value) is not bytes:
        raise InvalidObject(path, f"must be a byte string, got {type(value).__name__}", "type")
    if not 1 <= len(value) <= max_size:
        raise InvalidObject(path, f"must be 1 to {max_size} bytes, got {len(value)}", "length")
    return value


def _int(value: Any, path: str, low: int, high: int) -> int:
    if type(value) is not int:  # not bool, not float
        raise InvalidObject(path, f"must be an integer, got {type(value).__name__}", "type")
    if not low <= value <= high:
        raise InvalidObject(path, f"must be between {low} and {high}, got {value}", "range")
    return value


def _list(value: Any, path: str, low: int, high: int) -> list[Any]:
    if type(value) is not list:
        raise InvalidObject(path, f"must be an array, got {type(value).__name__}", "type")
    if not low <= len(value) <= high:
        raise InvalidObject(path, f"must have {low} to {high} elements, got {len(value)}", "length")
    return value


def _increasing(keys: list[bytes], path: str) -> None:
    for i in range(1, len(keys)):
        if keys[i - 1] >= keys[i]:
            raise InvalidObject(f"{path}[{i}]", "authors must be strictly increasing", "order")


# --------------------------------------------------------------------------- stream frames

_TAGS = ("get-heads", "heads", "get-range", "entries", "end")


def _frame_value(frame: Frame) -> list[Any]:
    if isinstance(frame, GetHeads):
        return ["get-heads", list(frame.authors) if frame.authors is not None else frame.after]
    if isinstance(frame, Heads):
        return ["heads", [list(h) for h in frame.heads]]
    if isinstance(frame, GetRange):
        return ["get-range", [frame.author, frame.after, frame.limit]]
    if isinstance(frame, Entries):
        return ["entries", list(frame.raws)]
    if isinstance(frame, End):
        return ["end", None]
    raise ValueError(f"not a ledger-sync frame: {frame!r}")


def _parse_frame(value: Any) -> Frame:
    if type(value) is not list or len(value) != 2 or value[0] not in _TAGS:
        raise InvalidObject(SYNC, f"expected [tag, payload] with tag one of {', '.join(_TAGS)}", "envelope")
    tag, payload = value
    path = f"{SYNC}.{tag}"
    if tag == "get-heads":
        if type(payload) is bytes:
            return GetHeads(None, _bytes(payload, path, (0, KEY_SIZE)))
        authors = [_bytes(a, f"{path}[{i}]", (KEY_SIZE,)) for i, a in enumerate(_list(payload, path, 1, MAX_HEADS))]
        _increasing(authors, path)
        return GetHeads(tuple(authors))
    if tag == "heads":
        heads = []
        for i, item in enumerate(_list(payload, path, 0, MAX_HEADS)):
            where = f"{path}[{i}]"
            author, seq, id_ = _list(item, where, 3, 3)
            heads.append(
                Head(
                    _bytes(author, f"{where}[0]", (KEY_SIZE,)),
                    _int(seq, f"{where}[1]", 1, MAX_SEQ),
                    _bytes(id_, f"{where}[2]", (ID_SIZE,)),
                )
            )
        _increasing([h.author for h in heads], path)
        return Heads(tuple(heads))
    if tag == "get-range":
        author, after, limit = _list(payload, path, 3, 3)
        return GetRange(
            _bytes(author, f"{path}[0]", (KEY_SIZE,)),
            _int(after, f"{path}[1]", 0, MAX_SEQ),
            _int(limit, f"{path}[2]", 1, MAX_RANGE),
        )
    if tag == "entries":
        raws = _list(payload, path, 0, MAX_RANGE)
        return Entries(tuple(_blob(raw, f"{path}[{i}]", MAX_ENTRY_SIZE) for i, raw in enumerate(raws)))
    if payload is not None:
        raise InvalidObject(path, "payload must be null", "type")
    return End()


def encode_frame(frame: Frame) -> bytes:
    """The bytes of ``frame``; ValueError if a peer would refuse it (a bug on our side)."""
    return _encode_checked(_frame_value(frame), _parse_frame, MAX_FRAME, "ledger-sync frame")


def _encode_checked(value: Any, parse: Any, limit: int, what: str) -> bytes:
    """Encode ``value`` after checking it with the same parser a receiving peer runs."""
    try:
        parse(value)
    except InvalidObject as exc:
        raise ValueError(f"cannot encode this {what}: {exc}") from None
    data = cbor.encode(value)
    if len(data) > limit:
        raise ValueError(f"{what} of {len(data)} bytes exceeds {limit}")
    return data


def decode_frame(data: bytes) -> Frame:
    """The frame in ``data``, every field checked; InvalidObject otherwise."""
    return _parse_frame(cbor.decode(data, path=SYNC, max_size=MAX_FRAME, max_depth=3))


def fit_entries(raws: Sequence[bytes]) -> Entries:
    """The longest prefix of ``raws`` (at most ``MAX_RANGE``) that fits one ``entries`` frame."""
    size = len(cbor.encode(["entries", []])) + 2  # + the largest array head growth (256 items)
    out: list[bytes] = []
    for raw in raws[:MAX_RANGE]:
        size += len(raw) + 5  # the byte string head
        if size > MAX_FRAME:
            break
        out.append(raw)
    return Entries(tuple(out))


# --------------------------------------------------------------------------- gossip


def _gossip_value(message: Gossip) -> list[Any]:
    if isinstance(message, Announce):
        return [DOMAIN, ANNOUNCE, list(message.raws)]
    if isinstance(message, ForkAlert):
        return [DOMAIN, FORK_ALERT, message.proof]
    raise ValueError(f"not a ledger gossip message: {message!r}")


def _parse_gossip(value: Any) -> Gossip:
    if type(value) is not list or len(value) != 3 or value[0] != DOMAIN or value[1] not in (ANNOUNCE, FORK_ALERT):
        raise InvalidObject(GOSSIP, f'expected ["{DOMAIN}", "announce" or "fork-alert", payload]', "envelope")
    path = f"{GOSSIP}.{value[1]}"
    if value[1] == ANNOUNCE:
        raws = _list(value[2], path, 1, MAX_ANNOUNCE)
        return Announce(tuple(_blob(raw, f"{path}[{i}]", MAX_ENTRY_SIZE) for i, raw in enumerate(raws)))
    return ForkAlert(_blob(value[2], path, evidence.MAX_PROOF_SIZE))


def encode_gossip(message: Gossip) -> bytes:
    """The bytes of a ledger gossip message; ValueError if a peer would refuse it."""
    return _encode_checked(_gossip_value(message), _parse_gossip, MAX_GOSSIP, "ledger gossip message")


def decode_gossip(data: bytes) -> Gossip:
    """The message in ``data``, structure checked (not yet the entries or the proof: see below)."""
    return _parse_gossip(cbor.decode(data, path=GOSSIP, max_size=MAX_GOSSIP, max_depth=3))


def fork_alert(proof: ForkProof) -> bytes:
    """The gossip message alerting the swarm to ``proof``."""
    return encode_gossip(ForkAlert(proof.raw))


def verify_announce(message: Announce, *, now: int | None) -> list[LedgerEntry]:
    """Every announced entry through the trust boundary (with freshness if ``now``); the first bad one raises."""
    entries = []
    for i, raw in enumerate(message.raws):
        try:
            entries.append(boundary.decode(raw, kind=KIND_ENTRY, now=now))
        except InvalidObject as err:
            raise InvalidObject(f"{GOSSIP}.{ANNOUNCE}[{i}].{err.path}", err.reason, err.code) from None
    return entries


def verify_fork_alert(message: ForkAlert) -> ForkProof:
    """The offline check of an alert: a valid fork proof (two entries, one author, one seq, both signed)."""
    proof = evidence.decode_proof(message.proof)
    if not isinstance(proof, ForkProof):
        raise InvalidObject(f"{GOSSIP}.{FORK_ALERT}", "carries a proof that is not a fork proof", "kind")
    return proof


# --------------------------------------------------------------------------- entry position


def entry_position(raw: bytes, path: str = "entry") -> tuple[bytes, int]:
    """The (author, seq) an entry's bytes *claim*, read without verifying anything.

    Only for refusing a reply early (entries of another author, or out of
    order): nothing is ever accepted on this reading; the ledger's ingest
    verifies every entry it stores.
    """
    value = cbor.decode(raw, path=path, max_size=MAX_ENTRY_SIZE)
    if type(value) is not list or len(value) != 5 or value[0] != DOMAIN or value[1] != KIND_ENTRY:
        raise InvalidObject(path, f'expected ["{DOMAIN}", "entry", author, body, signature]', "envelope")
    author = _bytes(value[2], f"{path}.author", (KEY_SIZE,))
    body = value[3]
    if type(body) is not dict or "seq" not in body:
        raise InvalidObject(f"{path}.body", "expected a map with a seq", "type")
    return author, _int(body["seq"], f"{path}.body.seq", 1, MAX_SEQ)

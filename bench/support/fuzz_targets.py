"""Fuzz targets: one per decoder that takes remote (or untrusted local) bytes, with seed corpora.

Each target takes bytes, hands them to the decoder exactly as the node (or the CLI) does, and
returns True if the decoder accepted them, False if it refused them with its documented refusal
exception (:class:`InvalidObject` for everything in ``protocol``, :class:`ExportFileError` for an
export file). Any other exception escapes: for the fuzzer (``bench/fuzz.py``) and the tests
(``tests/test_fuzz.py``) that is a crash. The entry points, and where the node calls them:

==================  ===============================================  ==========================================
target              decoder                                          where peer bytes reach it
==================  ===============================================  ==========================================
cbor                ``protocol.cbor.decode``                          under every decoder below
boundary            ``protocol.boundary.decode`` (any kind)           the one trust boundary (ingest, API, audit)
batch               ``protocol.batch.decode_batch``                   gossip topics (node.bookgossip, settle topic)
booksync_frame      ``booksync.frames.decode_frame`` + split_batch    node.booksync (both sides of the stream)
reconcile           ``booksync.reconcile.Reconciler`` respond and     node.booksync ``rec`` frames
                    reconcile (``decode_message`` first)
ledger_sync_frame   ``protocol.replication.decode_frame``             node.replication ledger-sync stream
ledger_gossip       ``replication.decode_gossip`` + verify_announce   node.replication ledger topic (``_verify``)
                    / verify_fork_alert
proof               ``protocol.evidence.decode_proof``                fork alerts, ``audit`` of proofs
settle_direct       ``boundary.decode`` of the settle stream's kinds  node.settlement ``_serve``
settle_state        ``Settlement.from_bytes``                         node.settlement ``load_state`` (a file)
export_file         ``ledger.export_file.ExportReader``               ``ledger import`` / ``audit FILE``
==================  ===============================================  ==========================================

Seeds are valid encodings built with the protocol's own builders from fixed keys and times (and
the golden vectors' bytes), so a fuzzer starts past the first byte. :data:`SELF_TESTS` are
deliberately broken targets that only exist to show the harness reports a crash and a hang.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from swapmeet.ledger.errors import ExportFileError
from swapmeet.ledger.export_file import ExportReader, write_export
from swapmeet.node.ingest import BOOK_KINDS  # what the node's book topics and book sync accept
from swapmeet.protocol import batch, boundary, build, cbor, evidence
from swapmeet.protocol import replication as wire
from swapmeet.protocol.booksync import frames
from swapmeet.protocol.booksync.reconcile import Reconciler
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.identity import Identity
from swapmeet.protocol.objects import (
    DOMAIN,
    KIND_ENTRY,
    KIND_EXCHANGE,
    KIND_LISTING,
    KIND_NOTICE,
    KIND_OFFER,
    KIND_WITHDRAWAL,
    KINDS,
    NOTICE_CANCEL,
    NOTICE_DECLINE,
    Exchange,
    Leg,
    Offer,
    Receipt,
)
from swapmeet.protocol.settlement import Accept, ExchangeReceived, OfferReceived, Settlement, Tick

T = 1_800_000_000
NOW = T + 100  # the clock of the targets that check freshness: every seed is live at NOW
ALICE = Identity(b"\x01" * 32)
BOB = Identity(b"\x02" * 32)
CAROL = Identity(b"\x03" * 32)
ZERO_ID = bytes(32)
SETTLE_KINDS = (KIND_EXCHANGE, KIND_NOTICE)  # node.settlement.SETTLE_KINDS (the settle topic)
DIRECT_KINDS = (KIND_OFFER, KIND_EXCHANGE, KIND_NOTICE)  # node.settlement.DIRECT_KINDS (the settle stream)
VECTORS = Path(__file__).resolve().parents[2] / "tests" / "vectors"

Target = Callable[[bytes], bool]


@dataclass(frozen=True)
class FuzzTarget:
    """A decoder's target, its seeds, and the refusal exceptions it documents."""

    name: str
    run: Target
    seeds: Callable[[], list[bytes]]
    decoder: str
    structured: bool = True  # CBOR with signed objects: :func:`restructure` applies


# --------------------------------------------------------------------------- valid objects


@cache
def _objects() -> dict[str, list[bytes]]:
    """Valid signed objects of every kind (fixed keys, fixed times), by kind."""
    item = build.parse_item
    listing = build.make_listing(
        ALICE,
        title="Road bike",
        desc="Well kept.\nNew tyres.",
        have=[item("2 x bike"), item("1 x bike light")],
        want=[item("3 kg x apples")],
        created=T,
        expires=T + 86_400,
        series=b"\x11" * 16,
        tags=["bikes"],
        category="sports/bikes",
        loc="u0yjj",
    )
    offer = build.make_offer(
        BOB, listing, take=[item("1 x bike")], give=[item("3 kg x apples")], created=T + 10, expires=T + 3600
    )
    half = build.sign_exchange(
        build.exchange_for_offer(offer, created=T + 20, deadline=T + 600, nonce=b"\x22" * 16), ALICE
    )
    complete = build.sign_exchange(half, BOB)
    ring = build.propose_exchange(
        parties=[ALICE.public_key, BOB.public_key, CAROL.public_key],
        legs=[Leg(0, 1, (item("1 x bike"),)), Leg(1, 2, (item("1 x cake"),)), Leg(2, 0, (item("1 x lesson"),))],
        created=T,
        deadline=T + 600,
        nonce=b"\x33" * 16,
    )
    ring = build.sign_exchange(ring, ALICE)
    rating = build.make_rating(BOB, complete, subject=ALICE.public_key, score=5, created=T + 30, comment="thanks")
    receipt = build.make_receipt(BOB, complete, legs=[0], created=T + 40)
    entry1 = build.make_entry(ALICE, seq=1, prev=ZERO_ID, time=T + 25, payload=complete)
    entry2 = build.make_entry(ALICE, seq=2, prev=entry1.id, time=T + 30, payload=_receipt_by(ALICE, complete))
    return {
        KIND_LISTING: [listing.raw],
        KIND_WITHDRAWAL: [build.make_withdrawal(ALICE, listing, created=T + 50).raw],
        KIND_OFFER: [offer.raw],
        KIND_EXCHANGE: [half.raw, complete.raw, ring.raw],
        "rating": [rating.raw],
        "receipt": [receipt.raw],
        KIND_ENTRY: [entry1.raw, entry2.raw],
        KIND_NOTICE: [
            build.make_notice(ALICE, offer, action=NOTICE_DECLINE, created=T + 15, note="no").raw,
            build.make_notice(CAROL, ring, action=NOTICE_CANCEL, created=T + 5).raw,
        ],
    }


def _receipt_by(who: Identity, exchange: Exchange) -> Receipt:
    """A receipt by ``who`` of leg 1 of ``exchange`` (a valid payload of ``who``'s chain)."""
    return build.make_receipt(who, exchange, legs=[1], created=T + 28)


def _all_objects() -> list[bytes]:
    return [raw for raws in _objects().values() for raw in raws]


@cache
def _vector_bytes() -> list[bytes]:
    """Every byte string of the golden vectors (valid and invalid cases): near-misses the fuzzer can mutate."""
    out: list[bytes] = []
    for path in sorted(VECTORS.glob("*.json")):
        data = json.loads(path.read_text())
        for case in [*data.get("valid", []), *data.get("invalid", [])]:
            if isinstance(case, dict) and isinstance(case.get("bytes"), str):
                try:
                    out.append(bytes.fromhex(case["bytes"]))
                except ValueError:
                    continue
    return out


@cache
def _fork_proof() -> evidence.ForkProof:
    item = build.parse_item
    entries = []
    for what in ("1 x kite", "1 x kettle"):
        x = build.propose_exchange(
            parties=[CAROL.public_key, BOB.public_key],
            legs=[Leg(0, 1, (item(what),)), Leg(1, 0, (item("1 x thanks"),))],
            created=T,
            deadline=T + 600,
            nonce=hashlib.sha256(what.encode()).digest()[:16],
        )
        x = build.sign_exchange(build.sign_exchange(x, CAROL), BOB)
        entries.append(build.make_entry(CAROL, seq=1, prev=ZERO_ID, time=T, payload=x))
    return evidence.fork_proof(*entries)


@cache
def _overcommit_proof() -> evidence.OvercommitProof:
    item = build.parse_item
    listing = build.make_listing(
        ALICE,
        title="One lamp",
        have=[item("1 x lamp")],
        want=[item("1 x cake")],
        created=T,
        expires=T + 86_400,
        series=b"\x44" * 16,
    )
    exchanges = []
    for taker, nonce in ((BOB, b"\x55" * 16), (CAROL, b"\x66" * 16)):
        offer = build.make_offer(
            taker, listing, take=[item("1 x lamp")], give=[item("1 x cake")], created=T + 1, expires=T + 3600
        )
        x = build.exchange_for_offer(offer, created=T + 2, deadline=T + 600, nonce=nonce)
        exchanges.append(build.sign_exchange(x, ALICE))
    return evidence.overcommit_proof(listing, exchanges)


# --------------------------------------------------------------------------- reconciliation


def _items(start: int, n: int) -> list[tuple[int, bytes]]:
    return [(T + i // 3, hashlib.sha256(i.to_bytes(4, "big")).digest()) for i in range(start, start + n)]


LOCAL_ITEMS = _items(0, 48)  # the set of the reconciling side under fuzz
PEER_ITEMS = _items(24, 48)  # the other side's set, for the seeds: half of it overlaps


@cache
def _reconcile_messages() -> list[bytes]:
    """A whole session's messages both ways between PEER_ITEMS and LOCAL_ITEMS, both roles."""
    out = []
    for a, b in ((PEER_ITEMS, LOCAL_ITEMS), (LOCAL_ITEMS, PEER_ITEMS), (_items(0, 400), LOCAL_ITEMS)):
        initiator, responder = Reconciler(a), Reconciler(b)
        message: bytes | None = initiator.initiate()
        while message is not None:
            out.append(message)
            reply = responder.respond(message)
            out.append(reply)
            message = initiator.reconcile(reply)
    return out


# --------------------------------------------------------------------------- structure-aware mutation

_KEYS = {i.public_key: i for i in (ALICE, BOB, CAROL)}
_LEAVES = (0, 1, -1, 2, 64, 65, 2**40 + 1, 2**53 + 1, 2**64 - 1, -(2**64), True, False, None, b"", bytes(16),
          bytes(32), b"\x01" * 64, "", "x", "pc", "a" * 81, "\u202e", "cancel", "decline", [], {}, [bytes(32)],
          T, NOW + 10**6)  # fmt: skip


def _decoded(data: bytes) -> Any:
    try:
        return cbor.decode(data, max_size=1 << 22, max_depth=64)
    except InvalidObject:
        return None


def signed_again(v: Any) -> bytes:
    """The bytes of a decoded object, every envelope whose signer is a fixture key signed again."""
    if type(v) is list and len(v) == 5 and v[0] == DOMAIN and type(v[2]) is bytes and v[2] in _KEYS:
        message = cbor.encode(v[:4])
        return b"\x85" + message[1:] + cbor.encode(_KEYS[v[2]].sign(message))
    if type(v) is list and len(v) == 4 and v[0] == DOMAIN and type(v[2]) is dict and type(v[3]) is list:
        message = cbor.encode(v[:3])
        parties = v[2].get("parties")
        parties = parties if type(parties) is list else []
        sigs = [
            _KEYS[p].sign(message) if s is not None and type(p) is bytes and p in _KEYS else s
            for p, s in zip(parties, v[3], strict=False)
        ]
        return cbor.encode([*v[:3], sigs + v[3][len(sigs) :]])
    return cbor.encode(v)


def restructure(rnd: random.Random, data: bytes, depth: int = 0) -> bytes:
    """``data`` decoded, one or two of its fields, elements or keys changed (embedded objects too), signed again.

    Byte mutations rarely get past a signature; the seeds are signed by the fixture keys, so a mutation
    of the structure signed again reaches the schema and the kind rules. ``data`` itself if it is not CBOR.
    """
    value = _decoded(data)
    if value is None:
        return data
    for _ in range(rnd.randint(1, 2)):
        paths: list[tuple[Any, ...]] = []
        todo: list[tuple[Any, ...]] = [()]
        while todo:
            path = todo.pop()
            paths.append(path)
            node = _at(value, path)
            keys = range(len(node)) if type(node) is list else list(node) if type(node) is dict else []
            todo.extend((*path, k) for k in keys)
        path = rnd.choice(paths)
        node, r = _at(value, path), rnd.random()
        if type(node) is bytes and depth < 4 and r < 0.5 and _decoded(node) is not None:
            new = restructure(rnd, node, depth + 1)
        elif r < 0.75:
            new = copy.deepcopy(rnd.choice(_LEAVES))
        elif type(node) is int:
            new = node + rnd.choice((-1, 1, -301, 301, 31 * 86_400))
        elif type(node) is list and node:
            new = [*node, node[rnd.randrange(len(node))]] if rnd.random() < 0.5 else node[1:]
        elif type(node) is dict and node:
            key = rnd.choice(list(node))
            new = {k: v for k, v in node.items() if k != key} if rnd.random() < 0.5 else {**node, f"z{key}": node[key]}
        else:
            continue
        if path:
            _at(value, path[:-1])[path[-1]] = new
        else:
            value = new
    try:
        return signed_again(value)
    except (ValueError, TypeError, OverflowError):  # not encodable (e.g. an int past 64 bits)
        return data


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


# --------------------------------------------------------------------------- targets


def _refused(call: Callable[[], object], *errors: type[BaseException]) -> bool:
    try:
        call()
    except (InvalidObject, *errors):
        return False
    return True


def fuzz_cbor(data: bytes) -> bool:
    """Strict deterministic CBOR, at the largest object size and the default depth."""
    return _refused(lambda: cbor.decode(data, path="fuzz", max_size=boundary.MAX_SIZE[KIND_ENTRY]))


def fuzz_boundary(data: bytes) -> bool:
    """The trust boundary, any kind, without and with the freshness rules."""
    return _refused(lambda: boundary.decode(data)) and _refused(lambda: boundary.decode(data, now=NOW))


def fuzz_batch(data: bytes) -> bool:
    """A gossip batch of book objects (and of settle objects), verified object by object."""
    book = _refused(lambda: batch.decode_batch(data, kinds=BOOK_KINDS, now=NOW))
    settle = _refused(lambda: batch.decode_batch(data, kinds=SETTLE_KINDS, now=NOW))
    return book or settle


def fuzz_booksync_frame(data: bytes) -> bool:
    """A book-sync frame; a ``put``/``objs`` payload is then split as the node does."""

    def run() -> None:
        tag, payload = frames.decode_frame(data)
        if tag in ("put", "objs") and payload is not None:
            for raw in batch.split_batch(payload):
                boundary.decode(raw, kind=BOOK_KINDS, now=NOW)

    return _refused(run)


def fuzz_reconcile(data: bytes) -> bool:
    """A ``rec`` message, to a responder and to an initiator that sent its first message."""
    responder = Reconciler(LOCAL_ITEMS)
    answered = _refused(lambda: responder.respond(data))
    initiator = Reconciler(LOCAL_ITEMS)
    initiator.initiate()
    reconciled = _refused(lambda: initiator.reconcile(data))
    return answered or reconciled


def fuzz_ledger_sync_frame(data: bytes) -> bool:
    """A ledger-sync frame; each entry of an ``entries`` reply then read as the node reads it first."""

    def run() -> None:
        frame = wire.decode_frame(data)
        if isinstance(frame, wire.Entries):
            for raw in frame.raws:
                wire.entry_position(raw)

    return _refused(run)


def fuzz_ledger_gossip(data: bytes) -> bool:
    """A ledger-topic message, checked as node.replication does: announced entries or a fork alert."""

    def run() -> None:
        message = wire.decode_gossip(data)
        if isinstance(message, wire.Announce):
            wire.verify_announce(message, now=NOW)
        else:
            wire.verify_fork_alert(message)

    return _refused(run)


def fuzz_proof(data: bytes) -> bool:
    """A fork or over-commitment proof, checked offline."""
    return _refused(lambda: evidence.decode_proof(data))


def fuzz_settle_direct(data: bytes) -> bool:
    """One object on the settle stream (offer, exchange or notice), live at NOW."""
    return _refused(lambda: boundary.decode(data, kind=DIRECT_KINDS, now=NOW))


def fuzz_settle_state(data: bytes) -> bool:
    """The settlement machine's state file, restored (every object re-verified), then used as the node does.

    A restored state must be usable: its views read, a restart's resume and a late tick run (a record holding
    a value of the wrong type would crash here, not in from_bytes).
    """

    def run() -> None:
        machine = Settlement.from_bytes(ALICE, data)
        machine.next_wakeup()
        machine.offers()
        machine.exchanges()
        machine.resume(NOW)
        machine.handle(Tick(NOW + 400 * 86_400))
        machine.to_bytes()

    return _refused(run)


# In memory where there is a tmpfs: a file on a disk costs ~2 ms per input, on /dev/shm ~60 us.
_EXPORT_DIR = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
_EXPORT_PATH = _EXPORT_DIR / f"swapmeet-fuzz-export-{os.getpid()}.bin"


def fuzz_export_file(data: bytes) -> bool:
    """An export file as ``ledger import`` / ``audit FILE`` read it (the file is written for each input)."""
    _EXPORT_PATH.write_bytes(data)
    return _refused(lambda: list(ExportReader(_EXPORT_PATH)), ExportFileError)


# --------------------------------------------------------------------------- seeds


def _seeds_cbor() -> list[bytes]:
    extra = [cbor.encode(v) for v in (0, -1, 2**64 - 1, -(2**64), b"", "", [], {}, [None, True, False], {"a": [1]})]
    return [*_all_objects(), *_vector_bytes(), *extra]


def _seeds_boundary() -> list[bytes]:
    return [*_all_objects(), *_vector_bytes()]


def _seeds_batch() -> list[bytes]:
    objs = _objects()
    book = objs[KIND_LISTING] + objs[KIND_WITHDRAWAL] + objs[KIND_OFFER]
    settle = objs[KIND_EXCHANGE] + objs[KIND_NOTICE]
    return [batch.encode_batch(book), batch.encode_batch(settle), batch.encode_batch(objs[KIND_OFFER])]


def _seeds_booksync_frame() -> list[bytes]:
    objs = _objects()
    book = batch.encode_batch(objs[KIND_LISTING] + objs[KIND_OFFER])
    ids = [boundary.object_id(raw) for raw in objs[KIND_LISTING] + objs[KIND_OFFER]]
    return [
        frames.encode_frame("rec", _reconcile_messages()[0]),
        frames.encode_frame("get", ids),
        frames.encode_frame("objs", book),
        frames.encode_frame("objs", None),
        frames.encode_frame("put", book),
        frames.encode_frame("end", None),
    ]


def _seeds_reconcile() -> list[bytes]:
    return _reconcile_messages()


def _seeds_ledger_sync_frame() -> list[bytes]:
    entries = _objects()[KIND_ENTRY]
    author = ALICE.public_key
    return [
        wire.encode_frame(wire.GetHeads(tuple(sorted((author, BOB.public_key))))),
        wire.encode_frame(wire.GetHeads(None, b"")),
        wire.encode_frame(wire.GetHeads(None, author)),
        wire.encode_frame(wire.Heads((wire.Head(author, 2, hashlib.sha256(entries[1]).digest()),))),
        wire.encode_frame(wire.GetRange(author, 0, 16)),
        wire.encode_frame(wire.Entries(tuple(entries))),
        wire.encode_frame(wire.End()),
    ]


def _seeds_ledger_gossip() -> list[bytes]:
    entries = _objects()[KIND_ENTRY]
    return [wire.encode_gossip(wire.Announce(tuple(entries))), wire.fork_alert(_fork_proof())]


def _seeds_proof() -> list[bytes]:
    return [_fork_proof().raw, _overcommit_proof().raw]


def _seeds_settle_direct() -> list[bytes]:
    objs = _objects()
    return [*objs[KIND_OFFER], *objs[KIND_EXCHANGE], *objs[KIND_NOTICE]]


@cache
def _seeds_settle_state() -> list[bytes]:
    objs = _objects()
    offer = boundary.decode(objs[KIND_OFFER][0], kind=KIND_OFFER)
    ring = boundary.decode(objs[KIND_EXCHANGE][2], kind=KIND_EXCHANGE)
    assert isinstance(offer, Offer) and isinstance(ring, Exchange)
    states = []
    machine = Settlement(ALICE)
    states.append(machine.to_bytes())
    machine.handle(OfferReceived(offer, NOW))
    states.append(machine.to_bytes())
    machine.handle(Accept(offer, NOW, b"\x77" * 16, NOW + 600))
    states.append(machine.to_bytes())
    machine.handle(ExchangeReceived(ring, NOW))
    states.append(machine.to_bytes())
    exchange = next(x for x in machine.exchanges() if x.exchange.id != ring.id).exchange
    machine.handle(ExchangeReceived(build.sign_exchange(exchange, BOB), NOW))
    states.append(machine.to_bytes())
    return states


def _seeds_export_file() -> list[bytes]:
    entries = _objects()[KIND_ENTRY]
    out = []
    for author in (None, ALICE.public_key):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "export.bin"
            write_export(path, entries, author=author)
            out.append(path.read_bytes())
            write_export(path, [], author=author)
            out.append(path.read_bytes())
    return out


TARGETS: dict[str, FuzzTarget] = {
    t.name: t
    for t in (
        FuzzTarget("cbor", fuzz_cbor, _seeds_cbor, "protocol.cbor.decode"),
        FuzzTarget("boundary", fuzz_boundary, _seeds_boundary, "protocol.boundary.decode"),
        FuzzTarget("batch", fuzz_batch, _seeds_batch, "protocol.batch.decode_batch"),
        FuzzTarget("booksync_frame", fuzz_booksync_frame, _seeds_booksync_frame, "booksync.frames.decode_frame"),
        FuzzTarget("reconcile", fuzz_reconcile, _seeds_reconcile, "booksync.reconcile.Reconciler", structured=False),
        FuzzTarget(
            "ledger_sync_frame", fuzz_ledger_sync_frame, _seeds_ledger_sync_frame, "protocol.replication.decode_frame"
        ),
        FuzzTarget("ledger_gossip", fuzz_ledger_gossip, _seeds_ledger_gossip, "protocol.replication.decode_gossip"),
        FuzzTarget("proof", fuzz_proof, _seeds_proof, "protocol.evidence.decode_proof"),
        FuzzTarget("settle_direct", fuzz_settle_direct, _seeds_settle_direct, "boundary.decode (settle stream)"),
        FuzzTarget("settle_state", fuzz_settle_state, _seeds_settle_state, "settlement.Settlement.from_bytes"),
        FuzzTarget(
            "export_file", fuzz_export_file, _seeds_export_file, "ledger.export_file.ExportReader", structured=False
        ),
    )
}


# --------------------------------------------------------------------------- harness self-tests


def broken_crash(data: bytes) -> bool:
    """Deliberately broken: a decoder that lets a KeyError escape for any input of 3 bytes or more."""
    if len(data) >= 3:
        raise KeyError("deliberate crash")
    return False


def broken_hang(data: bytes) -> bool:
    """Deliberately broken: a decoder that never returns on an input starting with 0x82."""
    if data[:1] == b"\x82":
        while True:
            time.sleep(0.01)
    return False


SELF_TESTS: dict[str, FuzzTarget] = {
    "selftest_crash": FuzzTarget(
        "selftest_crash", broken_crash, lambda: [b"\x00", b"\x01\x02"], "none (broken)", False
    ),
    "selftest_hang": FuzzTarget(
        "selftest_hang", broken_hang, lambda: [b"\x83\x01\x02"], "none (broken)", structured=False
    ),
}

__all__ = ["KINDS", "SELF_TESTS", "TARGETS", "FuzzTarget"]

"""The CPU-heavy half of the audit: verify raw entries and reduce them to compact summary rows.

Each audit worker process takes chunks of raw entry bytes, passes every entry
through :func:`swapmeet.protocol.boundary.decode` (the one trust boundary:
all signatures, embedded objects and rules) and sends back only small
tuples (:class:`Rows`): per entry its chain position and what it references,
per exchange its parties, listing uses and IOU legs, per rating who rated whom
for what. Rejected entries come back as findings (:func:`classify`). The
decoded objects never leave the worker, so the parent's memory does not grow
with the ledger.

Cache. The same embedded bytes come back over and over: one exchange is on
every party's chain and inside every rating of it, and a listing sits both in
an offer and in ``exchange.listings`` and is settled by several exchanges.
The parent sends all entries carrying one exchange to the same worker,
together (see ``audit._Buckets``), and each worker remembers the embedded
objects it decoded last (a :class:`boundary.DecodeCache`), keyed by their
exact bytes: a decode that succeeded depends on the bytes alone, so reusing it
for the same bytes weakens nothing (failures are never cached). On a synthetic
ledger this brings the signature checks down to within 2-3% of the distinct
signatures.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any

from swapmeet.protocol import boundary, cbor
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.objects import Exchange, LedgerEntry, Rating, Receipt

from .audit_findings import (
    BadSignature,
    BrokenLink,
    Finding,
    InvalidEntry,
    NonPartyEntry,
    RatingByNonParty,
    RatingWithoutExchange,
    UnsignedExchange,
    hexid,
    pid,
)
from .audit_peek import Peek, digest, peek

IOU_UNIT = "iou"
DEFAULT_CACHE_LIMIT = 8192  # decoded objects kept per worker (an exchange with its listing and offer: ~10 kB)


@dataclass(slots=True)
class Rows:
    """Summary rows for the parent's tables, one list per table (see ``audit_db.SCHEMA``)."""

    entry: list[tuple[Any, ...]] = field(default_factory=list)
    xchg: list[tuple[Any, ...]] = field(default_factory=list)
    luse: list[tuple[Any, ...]] = field(default_factory=list)
    iou: list[tuple[Any, ...]] = field(default_factory=list)
    rating: list[tuple[Any, ...]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    unplaced: int = 0
    """Entries not even laid out as an entry (no author to place them on a chain)."""


class _BoundedSet:
    """A set that forgets everything when it reaches ``limit`` (cheap, and bounded)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: set[bytes] = set()

    def __contains__(self, key: bytes) -> bool:
        return key in self.items

    def add(self, key: bytes) -> None:
        if len(self.items) >= self.limit:
            self.items.clear()
        self.items.add(key)


# --------------------------------------------------------------------------- summarising


class Summariser:
    """Turns raw entries into :class:`Rows`, remembering which exchanges it already described."""

    def __init__(self, described_limit: int = 1 << 14, cache_limit: int = 0) -> None:
        # An exchange is described once per worker (not once per entry carrying it);
        # the parent de-duplicates whatever repeats after this set forgets.
        self._described = _BoundedSet(described_limit)
        self._cache = boundary.DecodeCache(cache_limit) if cache_limit else None

    def chunk(self, raws: list[bytes]) -> Rows:
        rows = Rows()
        for raw in raws:
            self.entry(raw, rows)
        return rows

    def entry(self, raw: bytes, rows: Rows) -> None:
        try:
            entry: LedgerEntry = boundary.decode(raw, kind="entry", cache=self._cache)
        except InvalidObject as err:
            self._rejected(raw, err, rows)
            return
        payload = entry.payload
        if isinstance(payload, Exchange):
            kind, ref = "exchange", payload.id
            self._exchange(payload, rows)
        elif isinstance(payload, Rating):
            kind, ref = "rating", payload.exchange.id
            self._exchange(payload.exchange, rows)
            rows.rating.append((payload.id, payload.author, payload.subject, payload.exchange.id, entry.seq, entry.id))
        else:
            assert isinstance(payload, Receipt)
            kind, ref = "receipt", payload.exchange_id
        rows.entry.append((entry.author, entry.seq, entry.id, entry.prev, entry.time, kind, ref))

    def _exchange(self, x: Exchange, rows: Rows) -> None:
        if x.id in self._described:
            return
        self._described.add(x.id)
        rows.xchg.append((x.id, digest(x.raw), x.created, b"".join(x.parties)))
        for listing in x.listings:
            given = x.given_by(listing.author)
            rows.luse.extend(
                (listing.id, listing.author, x.id, item.item, item.unit, item.qty, given[item.key])
                for item in listing.have
                if given.get(item.key, 0) > 0
            )
        for index, leg in enumerate(x.legs):
            for item in leg.items:
                if item.unit == IOU_UNIT:
                    giver, receiver = x.parties[leg.giver], x.parties[leg.receiver]
                    rows.iou.append((x.id, index, giver, receiver, item.item, item.qty))

    def _rejected(self, raw: bytes, err: InvalidObject, rows: Rows) -> None:
        claimed = peek(raw)
        entry_id = digest(raw)
        if claimed is None:
            rows.unplaced += 1
        else:
            rows.entry.append((claimed.author, claimed.seq, entry_id, claimed.prev, None, "invalid", None))
        rows.findings.append(classify(err, claimed, entry_id))


# --------------------------------------------------------------------------- rejected entries


def classify(err: InvalidObject, claimed: Peek | None, entry_id: bytes) -> Finding:
    """The finding for an entry the boundary rejected with ``err``."""
    author = pid(claimed.author) if claimed else None
    seq = claimed.seq if claimed else None
    where = dict(author=author, seq=seq, entry=entry_id.hex())
    path, code = err.path, err.code
    payload_path = "entry.body.payload"
    rating_path = f"{payload_path}."
    if code == "signature":
        return BadSignature(**where, path=path, reason=err.reason)
    if code == "link":
        return BrokenLink(
            author=author or "?",
            seq=seq or 0,
            entry=entry_id.hex(),
            prev=claimed.prev.hex() if claimed else "",
            expected=[bytes(32).hex()] if seq == 1 else [],
        )
    if code == "incomplete" and path == payload_path:
        exchange = _decode_quietly(claimed.payload if claimed else None)
        unsigned = [] if exchange is None else [pid(p) or "" for p in exchange.parties if p not in exchange.signed_by]
        return UnsignedExchange(**where, exchange=hexid(exchange.id) if exchange else None, unsigned_by=unsigned)
    if code == "non-party" and path == payload_path:
        return NonPartyEntry(**where, reason=err.reason)
    if path.startswith(rating_path) and code in ("incomplete", "non-party"):  # inside the payload: a rating
        exchange = _decode_quietly(claimed.exchange if claimed else None)
        exchange_hex = hexid(exchange.id) if exchange else None
        if code == "incomplete":
            return RatingWithoutExchange(**where, exchange=exchange_hex, reason=err.reason)
        role = "rater" if path.endswith(".author") else "subject"
        return RatingByNonParty(**where, exchange=exchange_hex, role=role, peer=_rating_party(claimed, role))
    return InvalidEntry(**where, code=code, path=path, reason=err.reason)


def _decode_quietly(data: bytes | None) -> Exchange | None:
    """An exchange decoded on its own (to name it in evidence), or None if that fails too."""
    if data is None:
        return None
    try:
        return boundary.decode(data, kind="exchange")
    except InvalidObject:
        return None


def _rating_party(claimed: Peek | None, role: str) -> str | None:
    """The PeerID of a rejected rating's rater or subject, read from its (unverified) bytes."""
    if claimed is None:
        return None
    try:
        value = cbor.decode(claimed.payload, max_size=boundary.MAX_SIZE["rating"])
        key = value[2] if role == "rater" else value[3]["subject"]
        return pid(key) if isinstance(key, bytes) else None
    except (InvalidObject, IndexError, KeyError, TypeError):
        return None


# --------------------------------------------------------------------------- the process


def worker_main(inbox: Any, outbox: Any, index: int, cache_limit: int) -> None:
    """Body of a worker process: chunks in, :class:`Rows` out, until it receives None."""
    summariser = Summariser(cache_limit=cache_limit)
    try:
        while True:
            job = inbox.get()
            if job is None:
                break
            number, raws = job
            outbox.put(("rows", index, number, len(raws), summariser.chunk(raws)))
    except BaseException:  # a bug: hand the traceback to the parent, which aborts the audit
        outbox.put(("error", index, traceback.format_exc()))
        return
    outbox.put(("done", index, None, 0, None))

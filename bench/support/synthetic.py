"""Realistic synthetic ledgers, built fast: for the audit's tests and for ``bench/ledger.py``.

:class:`SyntheticLedger` plays a market of ``authors`` peers: makers publish
listings (goods, services, tasks, rentals, loans), takers make offers, and
each settled offer becomes a complete two-party exchange recorded on both
parties' chains; some trades are three-party rings; parties rate each other
and confirm receipt; some legs are IOUs (unit ``"iou"``). Listings are settled
at most up to their quantity, clocks advance, chains link: a clean synthetic
ledger has no audit findings.

Speed matters (the benchmark builds a million entries), so the bytes are made
directly with :func:`swapmeet.protocol.build.sign` and :func:`cbor.encode` and
signed with a cached Ed25519 key per author, never decoded: the builders in
:mod:`~swapmeet.protocol.build` decode everything they make, which would
verify each signature again. A test decodes a sample through the boundary to
keep this honest.

Defects can be injected for the audit's tests (``defects=``, names in
:data:`DEFECTS`); each injection is recorded in :attr:`SyntheticLedger.injected`
with the ids a finding should name.

Not part of the installed package: tests import it as ``bench.support.synthetic`` (the
repository root is on their ``sys.path``), bench scripts as ``support.synthetic``.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import nacl.signing
from swapmeet.protocol import build, cbor
from swapmeet.protocol.boundary import CLOCK_SKEW
from swapmeet.protocol.objects import DOMAIN, KIND_ENTRY, KIND_EXCHANGE, KIND_LISTING, KIND_OFFER, KIND_RATING

T0 = 1_800_000_000
DAY = 86_400
ZERO_ID = bytes(32)

DEFECTS = (
    "invalid-entry",
    "bad-signature",
    "unsigned-exchange",
    "non-party-entry",
    "rating-without-exchange",
    "rating-by-non-party",
    "broken-link",
    "gap",
    "fork",
    "missing-entry",
    "overcommit",
    "duplicate-rating",
    "iou-imbalance",
)
"""One per audit finding kind; each injection makes the audit report that kind (an IOU recorded by one
side only is also a ``missing-entry`` once the other side's chain goes on)."""

_GOODS = ("road bike", "cordless drill", "sewing machine", "tent", "camera", "ladder", "guitar", "kayak", "desk")
_SERVICES = ("garden work", "tutoring", "bike repair", "tax help", "dog walking", "translation", "plumbing")
_FOOD = ("apples", "eggs", "honey", "bread", "jam", "potatoes")
_IOUS = ("babysitting", "favour", "ride")
_WORDS = [
    "well",
    "kept",
    "works",
    "fine",
    "pick",
    "up",
    "evenings",
    "weekend",
    "nearby",
    "barely",
    "used",
    "spare",
    "parts",
    "included",
    "ask",
    "first",
]


class _Signer:
    """An author: the one object :func:`build.sign` needs (``public_key``, ``sign``), with its key cached.

    ``Identity`` derives its key pair from the seed on every call; a bench
    signing millions of objects cannot afford that.
    """

    __slots__ = ("head", "key", "last_time", "public_key", "seq")

    def __init__(self, seed: bytes) -> None:
        self.key = nacl.signing.SigningKey(seed)
        self.public_key = bytes(self.key.verify_key)
        self.seq = 0
        self.head = ZERO_ID
        self.last_time = 0

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message).signature


@dataclass(slots=True)
class _OpenListing:
    raw: bytes
    id: bytes
    author: int
    item: dict[str, Any]
    remaining: int
    expires: int


@dataclass(slots=True)
class Stats:
    """What the generator signed: every signature in the ledger was made once, so this counts distinct ones."""

    signatures: int = 0
    entries: int = 0
    exchanges: int = 0
    sample: list[tuple[bytes, bytes, bytes]] = field(default_factory=list)
    """A uniform sample of (public key, message, signature) triples, for a bare verify loop."""


class SyntheticLedger:
    """A deterministic market simulation yielding raw entries in the order they were appended."""

    def __init__(
        self,
        *,
        authors: int = 50,
        seed: int = 0,
        ring_share: float = 0.05,
        rating_share: float = 0.35,
        receipt_share: float = 0.15,
        iou_share: float = 0.1,
        defects: Iterable[str] = (),
        sample_size: int = 0,
    ) -> None:
        if authors < 3:
            raise ValueError("a market needs at least 3 authors")
        unknown = set(defects) - set(DEFECTS)
        if unknown:
            raise ValueError(f"unknown defects {sorted(unknown)}; known: {', '.join(DEFECTS)}")
        self.rng = random.Random(seed)
        self._sampling = random.Random(seed + 1)  # its own stream: the sample size must not change the ledger
        self.authors = [
            _Signer(hashlib.sha256(f"swapmeet-synthetic/{seed}/{i}".encode()).digest()) for i in range(authors)
        ]
        self.ring_share, self.rating_share = ring_share, rating_share
        self.receipt_share, self.iou_share = receipt_share, iou_share
        self.pending_defects = list(defects)
        self.injected: list[dict[str, Any]] = []
        self.stats = Stats()
        self.sample_size = sample_size
        self.now = T0
        self.open: list[_OpenListing] = []
        self._out: list[bytes] = []

    # ----------------------------------------------------------------------- public

    def entries(self, count: int) -> Iterator[bytes]:
        """About ``count`` raw entries (a trade's last entries may overshoot), defects spread through them."""
        produced = 0
        defect_every = max(1, count // (len(self.pending_defects) + 1))
        while produced < count:
            if self.pending_defects and produced >= defect_every * (len(self.injected) + 1):
                self._inject(self.pending_defects.pop(0))
            else:
                self._trade()
            for raw in self._out:
                produced += 1
                yield raw
            self._out.clear()

    def public_key(self, index: int) -> bytes:
        return self.authors[index].public_key

    # ----------------------------------------------------------------------- signing

    def _note(self, public_key: bytes, message: bytes, signature: bytes) -> None:
        stats = self.stats
        stats.signatures += 1
        if self.sample_size:
            # Reservoir sampling (algorithm R): every signature equally likely to be kept.
            if len(stats.sample) < self.sample_size:
                stats.sample.append((public_key, message, signature))
            else:
                slot = self._sampling.randrange(stats.signatures)
                if slot < self.sample_size:
                    stats.sample[slot] = (public_key, message, signature)

    def _sign(self, author: _Signer, kind: str, body: dict[str, object]) -> bytes:
        raw = build.sign(author, kind, body)  # type: ignore[arg-type]  # duck-typed Identity, see _Signer
        self._note(author.public_key, b"\x84" + raw[1:-66], raw[-64:])
        return raw

    def _exchange(
        self, parties: list[int], body: dict[str, object], unsigned: int | None = None
    ) -> tuple[bytes, bytes]:
        """(raw, id) of an exchange signed by every party (but ``unsigned``)."""
        message = cbor.encode([DOMAIN, KIND_EXCHANGE, body])
        signatures: list[bytes | None] = []
        for index in parties:
            if index == unsigned:
                signatures.append(None)
                continue
            signer = self.authors[index]
            signature = signer.sign(message)
            self._note(signer.public_key, message, signature)
            signatures.append(signature)
        return b"\x84" + message[1:] + cbor.encode(signatures), hashlib.sha256(message).digest()

    def _append(
        self, index: int, payload: bytes, time: int, *, seq: int | None = None, prev: bytes | None = None
    ) -> bytes:
        author = self.authors[index]
        time = max(time, author.last_time)
        body = {
            "seq": author.seq + 1 if seq is None else seq,
            "prev": author.head if prev is None else prev,
            "time": time,
            "payload": payload,
        }
        raw = self._sign(author, KIND_ENTRY, body)
        author.seq = body["seq"]  # type: ignore[assignment]
        author.head = hashlib.sha256(raw).digest()
        author.last_time = time
        self.stats.entries += 1
        self._out.append(raw)
        return raw

    # ----------------------------------------------------------------------- market

    def _tick(self) -> int:
        self.now += self.rng.randint(5, 90)
        return self.now

    def _two(self) -> tuple[int, int]:
        a, b = self.rng.sample(range(len(self.authors)), 2)
        return a, b

    def _listing(self, maker: int, quantity: int | None = None) -> _OpenListing:
        rng, now = self.rng, self.now
        kind = rng.choices(("goods", "service", "task", "rental", "loan"), (6, 3, 1, 1, 1))[0]
        if kind in ("service", "task"):
            have = {"item": rng.choice(_SERVICES), "qty": rng.randint(1, 8), "unit": "h"}
        else:
            have = {"item": rng.choice(_GOODS), "qty": rng.randint(1, 4), "unit": "pc"}
        if quantity is not None:
            have["qty"] = quantity
        body: dict[str, object] = {
            "rev": 0,
            "desc": " ".join(rng.choices(_WORDS, k=rng.randint(4, 16))).capitalize() + ".",
            "have": [have],
            "tags": sorted(set(rng.choices(("tools", "outdoor", "home", "kids", "food", "music"), k=2))),
            "type": kind,
            "want": [{"item": rng.choice(_FOOD), "qty": rng.randint(1, 12), "unit": "kg"}],
            "title": f"{have['item'].capitalize()} ({kind})",
            "series": rng.randbytes(16),
            "created": now,
            "expires": now + 30 * DAY,
            "category": rng.choice(("tools", "sports/bikes", "home/garden", "services", "music")),
            "loc": rng.choice(("u0yjj", "u0yj", "gcpvj", "u33db")),
        }
        if kind == "rental":
            body["window"] = [now + DAY, now + 3 * DAY]
        if kind == "loan":
            body["due"] = now + 20 * DAY
        raw = self._sign(self.authors[maker], KIND_LISTING, body)
        listing = _OpenListing(raw, hashlib.sha256(raw).digest(), maker, have, have["qty"], now + 30 * DAY)
        self.open.append(listing)
        return listing

    def _pick_listing(self, maker: int) -> _OpenListing:
        # Reuse a listing with quantity left (several takers settle one listing), else list something new.
        while self.open and (self.open[0].remaining == 0 or self.open[0].expires < self.now + 2 * DAY):
            self.open.pop(0)
        candidates = [x for x in self.open[:64] if x.remaining > 0 and x.expires >= self.now + 2 * DAY]
        if candidates and self.rng.random() < 0.4:
            return self.rng.choice(candidates)
        return self._listing(maker)

    def _trade(self) -> None:
        if self.rng.random() < self.ring_share:
            self._ring()
            return
        maker, taker = self._two()
        listing = self._pick_listing(maker)
        maker = listing.author
        if taker == maker:
            taker = (maker + 1) % len(self.authors)
        take = self.rng.randint(1, listing.remaining)
        listing.remaining -= take
        self._settle(listing, maker, taker, take)

    def _settle(
        self, listing: _OpenListing, maker: int, taker: int, take: int, *, record: tuple[bool, bool] = (True, True)
    ) -> bytes:
        rng, now = self.rng, self._tick()
        take_item = {**listing.item, "qty": take}
        if rng.random() < self.iou_share:
            give = {"item": rng.choice(_IOUS), "qty": rng.randint(1, 5), "unit": "iou"}
        else:
            give = {"item": rng.choice(_FOOD), "qty": rng.randint(1, 12), "unit": "kg"}
        offer_body: dict[str, object] = {
            "give": [give],
            "take": [take_item],
            "taker": self.authors[taker].public_key,
            "created": now,
            "expires": min(listing.expires, now + 7 * DAY),
            "listing": listing.raw,
        }
        offer = self._sign(self.authors[taker], KIND_OFFER, offer_body)
        created = self._tick()
        body = {
            "legs": [{"from": 0, "to": 1, "items": [take_item]}, {"from": 1, "to": 0, "items": [give]}],
            "nonce": rng.randbytes(16),
            "parties": [self.authors[maker].public_key, self.authors[taker].public_key],
            "created": created,
            "deadline": created + DAY,
            "listings": [listing.raw],
            "offer": offer,
        }
        exchange, xid = self._exchange([maker, taker], body)
        self.stats.exchanges += 1
        at = self._tick()
        for index, keep in zip((maker, taker), record, strict=True):
            if keep:
                self._append(index, exchange, at)
        for rater, subject, leg in ((maker, taker, 1), (taker, maker, 0)):
            if record[(maker, taker).index(rater)]:
                self._after(rater, subject, exchange, xid, leg)
        return exchange

    def _ring(self) -> None:
        a, b, c = self.rng.sample(range(len(self.authors)), 3)
        created = self._tick()
        what = [{"item": self.rng.choice(_GOODS), "qty": 1, "unit": "pc"} for _ in range(3)]
        body = {
            "legs": [{"from": i, "to": (i + 1) % 3, "items": [what[i]]} for i in range(3)],
            "nonce": self.rng.randbytes(16),
            "parties": [self.authors[i].public_key for i in (a, b, c)],
            "created": created,
            "deadline": created + DAY,
            "listings": [],
        }
        exchange, xid = self._exchange([a, b, c], body)
        self.stats.exchanges += 1
        at = self._tick()
        for index in (a, b, c):
            self._append(index, exchange, at)
        self._after(b, a, exchange, xid, 0)

    def _after(self, rater: int, subject: int, exchange: bytes, xid: bytes, received_leg: int) -> None:
        """The follow-ups of a trade on ``rater``'s chain: maybe a rating, maybe a receipt."""
        if self.rng.random() < self.rating_share:
            self._rate(rater, subject, exchange, self.rng.randint(3, 5))
        if self.rng.random() < self.receipt_share:
            body = {"legs": [received_leg], "created": self._tick(), "exchange": xid}
            self._append(rater, self._sign(self.authors[rater], "receipt", body), self.now)

    def _rate(self, rater: int, subject: int, exchange: bytes, score: int) -> bytes:
        body = {
            "score": score,
            "comment": self.rng.choice(("", "Smooth trade, thanks!", "On time.", "Friendly and quick.")),
            "created": self._tick(),
            "subject": self.authors[subject].public_key,
            "exchange": exchange,
        }
        rating = self._sign(self.authors[rater], KIND_RATING, body)
        return self._append(rater, rating, self.now)

    # ----------------------------------------------------------------------- defects

    def _plain_exchange(self, a: int, b: int, *, unsigned: int | None = None, iou: bool = False) -> tuple[bytes, bytes]:
        """A two-party barter settling no listing: ``a`` gives goods, ``b`` food (or an IOU)."""
        rng, created = self.rng, self._tick()
        back = (
            {"item": rng.choice(_IOUS), "qty": rng.randint(1, 5), "unit": "iou"}
            if iou
            else {"item": rng.choice(_FOOD), "qty": rng.randint(1, 12), "unit": "kg"}
        )
        body = {
            "legs": [
                {"from": 0, "to": 1, "items": [{"item": rng.choice(_GOODS), "qty": 1, "unit": "pc"}]},
                {"from": 1, "to": 0, "items": [back]},
            ],
            "nonce": rng.randbytes(16),
            "parties": [self.authors[a].public_key, self.authors[b].public_key],
            "created": created,
            "deadline": created + DAY,
            "listings": [],
        }
        if unsigned is None:
            self.stats.exchanges += 1
        return self._exchange([a, b], body, unsigned=unsigned)

    def _inject(self, defect: str) -> None:
        a, b = self._two()
        author = self.authors[a]
        record: dict[str, Any] = {"defect": defect, "author": author.public_key}
        if defect in ("bad-signature", "broken-link", "gap", "fork"):
            receipt_body = {"legs": [0], "created": self._tick(), "exchange": self.rng.randbytes(32)}
            payload = self._sign(author, "receipt", receipt_body)
            if defect == "bad-signature":
                raw = self._append(a, payload, self.now)
                raw = raw[:-1] + bytes([raw[-1] ^ 1])
                self._out[-1] = raw
                author.head = hashlib.sha256(raw).digest()  # the chain goes on after the damaged entry
            elif defect == "broken-link":
                raw = self._append(a, payload, self.now, prev=self.rng.randbytes(32))
            elif defect == "gap":
                raw = self._append(a, payload, self.now, seq=author.seq + 2)
            else:
                seq, prev, last = author.seq + 1, author.head, author.last_time
                first = self._append(a, payload, self.now)
                author.seq, author.head, author.last_time = seq - 1, prev, last
                other = self._sign(author, "receipt", {**receipt_body, "legs": [1]})
                raw = self._append(a, other, self.now)
                record["other"] = hashlib.sha256(first).digest()
                # The chain goes on from the second entry: hand it out first, as a store would (chain entry first,
                # then the fork entry), so ingesting the ledger keeps every later entry.
                self._out[-2:] = self._out[-1:-3:-1]
            record.update(seq=author.seq, entry=hashlib.sha256(raw).digest())
        elif defect == "missing-entry":
            listing = self._listing(a)
            listing.remaining = 0
            exchange = self._settle(listing, a, b, 1, record=(True, False))
            self._append(
                b,
                self._sign(self.authors[b], "receipt", {"legs": [0], "created": self._tick(), "exchange": bytes(32)}),
                self.now + 600,
            )
            record.update(party=self.authors[b].public_key, exchange=exchange)
        elif defect == "invalid-entry":
            # An entry timed long before the receipt it records was made: the boundary refuses it ("expiry").
            body = {"legs": [0], "created": self.now + 10 * CLOCK_SKEW, "exchange": bytes(32)}
            raw = self._append(a, self._sign(author, "receipt", body), self._tick())
            record.update(seq=author.seq, entry=hashlib.sha256(raw).digest())
        elif defect in ("unsigned-exchange", "rating-without-exchange"):
            exchange, xid = self._plain_exchange(a, b, unsigned=b)
            if defect == "unsigned-exchange":
                self._append(a, exchange, self._tick())
            else:
                self._rate(a, b, exchange, 1)
            record.update(seq=author.seq, exchange=xid)
        elif defect in ("non-party-entry", "rating-by-non-party"):
            c = next(i for i in range(len(self.authors)) if i not in (a, b))
            exchange, xid = self._plain_exchange(a, b)
            if defect == "non-party-entry":
                self._append(c, exchange, self._tick())
                self.stats.exchanges -= 1  # recorded by no party: the audit does not count it
            else:
                for index in (a, b):
                    self._append(index, exchange, self.now)
                self._rate(c, a, exchange, 1)
            record.update(author=self.authors[c].public_key, seq=self.authors[c].seq, exchange=xid)
        elif defect == "iou-imbalance":
            exchange, xid = self._plain_exchange(a, b, iou=True)
            self._append(a, exchange, self._tick())
            record.update(exchange=xid)
        elif defect == "overcommit":
            listing = self._listing(a, quantity=2)
            listing.remaining = 0
            for _ in range(2):
                self._settle(listing, a, b, 2)
            record.update(listing=listing.id)
        elif defect == "duplicate-rating":
            listing = self._listing(a)
            listing.remaining = 0
            exchange = self._settle(listing, a, b, 1)
            self._rate(a, b, exchange, 1)
            self._rate(a, b, exchange, 2)
            record.update(subject=self.authors[b].public_key)
        self.injected.append(record)

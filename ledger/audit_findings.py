"""The findings an audit reports: one dataclass per kind, each carrying its evidence.

Evidence is stored ready to print and to serialise: authors and parties as
PeerIDs (``12D3KooW...``), ids and proofs as lowercase hex. A finding's JSON
form (:meth:`Finding.to_json`) is ``{"kind": <kind>, <field>: <value>, ...}``
with exactly the dataclass fields. Where a transferable proof exists (forks,
over-commitments: see :mod:`swapmeet.protocol.evidence`) its bytes are in
``proof`` and anyone can check them offline with ``evidence.decode_proof``.

Entries the trust boundary rejects become findings too. The boundary raises
one :class:`InvalidObject` with a stable ``code`` and a field ``path``; the
codes that mean something to an auditor get their own kind (see
``audit_worker.classify``), every other rejection is an ``invalid-entry``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from swapmeet.protocol.identity import peer_id


def pid(key: bytes | None) -> str | None:
    """The PeerID of a public key (None stays None; a malformed key is shown as hex)."""
    if key is None:
        return None
    return peer_id(key) if len(key) == 32 else key.hex()


def hexid(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


@dataclass(frozen=True, slots=True)
class Finding:
    """Base of every finding. ``kind`` is a class-level constant, also the JSON ``kind``."""

    kind: ClassVar[str] = "finding"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}


# --------------------------------------------------------------------------- rejected entries


@dataclass(frozen=True, slots=True)
class InvalidEntry(Finding):
    """The boundary rejected the entry for a reason without a kind of its own.

    ``author``/``seq`` are what the bytes claim (None if they are not even laid
    out as an entry); ``entry`` is the SHA-256 of the bytes.
    """

    kind: ClassVar[str] = "invalid-entry"
    author: str | None
    seq: int | None
    entry: str
    code: str
    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class BadSignature(Finding):
    """A signature on the entry or on an object it embeds (``path`` says which) does not verify."""

    kind: ClassVar[str] = "bad-signature"
    author: str | None
    seq: int | None
    entry: str
    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class UnsignedExchange(Finding):
    """An exchange recorded on a chain lacks the signature of ``unsigned_by``."""

    kind: ClassVar[str] = "unsigned-exchange"
    author: str | None
    seq: int | None
    entry: str
    exchange: str | None
    unsigned_by: list[str]


@dataclass(frozen=True, slots=True)
class NonPartyEntry(Finding):
    """The chain's author recorded an exchange it is not a party to, or another author's rating/receipt."""

    kind: ClassVar[str] = "non-party-entry"
    author: str | None
    seq: int | None
    entry: str
    reason: str


@dataclass(frozen=True, slots=True)
class RatingWithoutExchange(Finding):
    """A rating whose exchange is not complete (some party never signed it)."""

    kind: ClassVar[str] = "rating-without-exchange"
    author: str | None
    seq: int | None
    entry: str
    exchange: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class RatingByNonParty(Finding):
    """A rating whose rater (``role`` "rater") or subject (``role`` "subject") is not a party to the exchange."""

    kind: ClassVar[str] = "rating-by-non-party"
    author: str | None
    seq: int | None
    entry: str
    exchange: str | None
    role: str
    peer: str | None


# --------------------------------------------------------------------------- chains


@dataclass(frozen=True, slots=True)
class BrokenLink(Finding):
    """Entry ``seq`` names ``prev`` as its predecessor, but the entry we hold at ``seq - 1`` is ``expected``."""

    kind: ClassVar[str] = "broken-link"
    author: str
    seq: int
    entry: str
    prev: str
    expected: list[str]


@dataclass(frozen=True, slots=True)
class Gap(Finding):
    """Sequence numbers ``missing_from``..``missing_to`` of the chain are absent (``after`` is the last seq held)."""

    kind: ClassVar[str] = "gap"
    author: str
    after: int
    missing_from: int
    missing_to: int


@dataclass(frozen=True, slots=True)
class Fork(Finding):
    """Two or more valid, different entries at one (author, seq); ``proof`` is a fork proof of the first two."""

    kind: ClassVar[str] = "fork"
    author: str
    seq: int
    entries: list[str]
    proof: str | None


# --------------------------------------------------------------------------- exchanges and listings


@dataclass(frozen=True, slots=True)
class MissingEntry(Finding):
    """A complete exchange that ``party`` signed is on other parties' chains but not on ``party``'s.

    Reported only when we hold ``party``'s chain up to a later point:
    ``later_entry`` (seq, id, time) is timed after the exchange's ``created`` + CLOCK_SKEW.
    """

    kind: ClassVar[str] = "missing-entry"
    exchange: str
    created: int
    party: str
    recorded_by: list[dict[str, Any]]
    later_entry: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Overcommit(Finding):
    """The listing's author signed complete exchanges giving ``given`` of an item it listed only ``listed`` of."""

    kind: ClassVar[str] = "overcommit"
    listing: str
    author: str
    item: str
    unit: str
    listed: int
    given: int
    exchanges: list[str]
    proof: str | None


@dataclass(frozen=True, slots=True)
class DuplicateRating(Finding):
    """``rater`` rated ``subject`` more than once for the same exchange."""

    kind: ClassVar[str] = "duplicate-rating"
    rater: str
    subject: str
    exchange: str
    ratings: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class IouImbalance(Finding):
    """The IOU balances of ``item`` over the chains we hold sum to ``total`` instead of 0.

    ``balances`` has every non-zero balance; ``one_sided`` lists (up to 20 of)
    the exchanges with IOU legs that only one of the two sides recorded.
    """

    kind: ClassVar[str] = "iou-imbalance"
    item: str
    total: int
    balances: dict[str, int]
    one_sided: list[dict[str, Any]] = field(default_factory=list)


FINDING_KINDS: tuple[type[Finding], ...] = (
    InvalidEntry,
    BadSignature,
    UnsignedExchange,
    NonPartyEntry,
    RatingWithoutExchange,
    RatingByNonParty,
    BrokenLink,
    Gap,
    Fork,
    MissingEntry,
    Overcommit,
    DuplicateRating,
    IouImbalance,
)

"""Transferable proofs of misbehaviour that any third party can check offline.

Everything in them is signed by the accused, so no trust in whoever presents
the proof is needed:

- fork proof: two different valid ledger entries by one author with the same
  sequence number. An honest author's chain never has two entries at one seq.
  Wire form ``["swapmeet/1", "fork-proof", entry_a, entry_b]`` with the two
  entries' bytes ordered by id, so one fork has one proof encoding.
- over-commitment proof: a listing plus exchanges, each including that
  listing and each signed by the listing's author (complete or not: the
  author's signature is its commitment), in which the author gives more
  of a listed item in total than the listing offered. Wire form
  ``["swapmeet/1", "overcommit-proof", listing, [exchange, ...]]`` with the
  exchanges ordered by id.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from . import boundary, cbor
from .errors import InvalidObject
from .objects import DOMAIN, KIND_ENTRY, KIND_EXCHANGE, KIND_LISTING, Exchange, LedgerEntry, Listing

FORK_PROOF = "fork-proof"
OVERCOMMIT_PROOF = "overcommit-proof"
MAX_PROOF_SIZE = 2 * boundary.MAX_SIZE[KIND_ENTRY] + 64
MAX_OVERCOMMIT_EXCHANGES = 64


@dataclass(frozen=True, slots=True)
class ForkProof:
    author: bytes
    seq: int
    first: LedgerEntry
    second: LedgerEntry

    @property
    def raw(self) -> bytes:
        return cbor.encode([DOMAIN, FORK_PROOF, self.first.raw, self.second.raw])


@dataclass(frozen=True, slots=True)
class OvercommitProof:
    listing: Listing
    exchanges: tuple[Exchange, ...]
    item: tuple[str, str]
    listed: int
    given: int

    @property
    def author(self) -> bytes:
        return self.listing.author

    @property
    def raw(self) -> bytes:
        return cbor.encode([DOMAIN, OVERCOMMIT_PROOF, self.listing.raw, [x.raw for x in self.exchanges]])


def fork_proof(a: LedgerEntry, b: LedgerEntry) -> ForkProof:
    """The proof that ``a`` and ``b`` fork their author's chain; InvalidObject if they don't."""
    if a.author != b.author:
        raise InvalidObject("fork-proof", "the two entries have different authors", "not-a-fork")
    if a.seq != b.seq:
        raise InvalidObject(
            "fork-proof", f"the entries have different sequence numbers ({a.seq}, {b.seq})", "not-a-fork"
        )
    if a.id == b.id:
        raise InvalidObject("fork-proof", "the two entries are the same entry", "not-a-fork")
    first, second = sorted((a, b), key=lambda e: e.id)
    return ForkProof(author=a.author, seq=a.seq, first=first, second=second)


def overcommit_proof(listing: Listing, exchanges: Iterable[Exchange]) -> OvercommitProof:
    """The proof that ``listing``'s author signed away more than it listed; InvalidObject if not."""
    chosen = sorted({x.id: x for x in exchanges}.values(), key=lambda x: x.id)
    if not chosen:
        raise InvalidObject("overcommit-proof", "no exchanges given", "not-overcommitted")
    if len(chosen) > MAX_OVERCOMMIT_EXCHANGES:
        raise InvalidObject("overcommit-proof", f"more than {MAX_OVERCOMMIT_EXCHANGES} exchanges", "length")
    for i, x in enumerate(chosen):
        where = f"overcommit-proof.exchanges[{i}]"
        if listing.id not in {x_listing.id for x_listing in x.listings}:
            raise InvalidObject(where, "does not include the listing", "not-overcommitted")
        if listing.author not in x.signed_by:
            raise InvalidObject(where, "is not signed by the listing's author", "not-overcommitted")
    for item in listing.have:
        given = sum(x.given_by(listing.author).get(item.key, 0) for x in chosen)
        if given > item.qty:
            return OvercommitProof(listing, tuple(chosen), item.key, item.qty, given)
    raise InvalidObject("overcommit-proof", "the exchanges stay within the listed quantities", "not-overcommitted")


def decode_proof(data: bytes) -> ForkProof | OvercommitProof:
    """Check a proof from its bytes alone (the offline check a third party runs)."""
    value = cbor.decode(data, path="proof", max_size=MAX_PROOF_SIZE + 8 * boundary.MAX_SIZE[KIND_EXCHANGE])
    if type(value) is not list or len(value) != 4 or value[0] != DOMAIN:
        raise InvalidObject("proof", 'expected ["swapmeet/1", proof-kind, ...]', "envelope")
    if value[1] == FORK_PROOF:
        entries = [boundary.decode(_raw(v, f"proof[{i + 2}]"), kind=KIND_ENTRY) for i, v in enumerate(value[2:])]
        proof = fork_proof(*entries)
    elif value[1] == OVERCOMMIT_PROOF:
        listing = boundary.decode(_raw(value[2], "proof[2]"), kind=KIND_LISTING)
        if type(value[3]) is not list:
            raise InvalidObject("proof[3]", "expected an array of exchanges", "type")
        # Counted before any of them is decoded: each costs signature checks.
        if len(value[3]) > MAX_OVERCOMMIT_EXCHANGES:
            raise InvalidObject("proof[3]", f"more than {MAX_OVERCOMMIT_EXCHANGES} exchanges", "length")
        exchanges = [boundary.decode(_raw(v, f"proof[3][{i}]"), kind=KIND_EXCHANGE) for i, v in enumerate(value[3])]
        proof = overcommit_proof(listing, exchanges)
    else:
        raise InvalidObject("proof[1]", f"unknown proof kind {value[1]!r}", "kind")
    if proof.raw != data:  # one proof, one encoding
        raise InvalidObject("proof", "not in canonical order", "encoding")
    return proof


def _raw(value: object, path: str) -> bytes:
    if type(value) is not bytes:
        raise InvalidObject(path, "must be a byte string", "type")
    return value

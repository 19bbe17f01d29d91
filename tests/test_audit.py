"""The audit: every finding kind, built into a small ledger by hand, with its evidence checked.

Entries are signed with ``build.sign`` directly (not ``build.make_entry``,
which would refuse the broken ones), so each test states exactly what is on
the chains. Audits run with two worker processes, as in production.
"""

from __future__ import annotations

import hashlib
import random

import pytest
from swapmeet.ledger.audit import AuditReport, _Buckets, audit
from swapmeet.ledger.audit_peek import grouping_key, peek
from swapmeet.protocol import boundary, build, cbor, evidence
from swapmeet.protocol.identity import Identity, peer_id
from swapmeet.protocol.objects import DOMAIN, Exchange, Leg

from bench.support.synthetic import DEFECTS as SYNTHETIC_DEFECTS
from bench.support.synthetic import SyntheticLedger
from tests.protocol_fixtures import ALICE, BOB, CAROL, NONCE, T, complete_exchange, item, listing

WORKERS = 2
ZERO = bytes(32)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Chain:
    """One author's chain, signed by hand so that broken entries can be made too."""

    def __init__(self, who: Identity) -> None:
        self.who = who
        self.seq = 0
        self.head = ZERO
        self.raws: list[bytes] = []

    def add(self, payload: bytes, time: int, *, seq: int | None = None, prev: bytes | None = None) -> bytes:
        seq = self.seq + 1 if seq is None else seq
        body = {"seq": seq, "prev": self.head if prev is None else prev, "time": time, "payload": payload}
        raw = build.sign(self.who, "entry", body)
        self.seq, self.head = seq, hashlib.sha256(raw).digest()
        self.raws.append(raw)
        return raw

    def receipt(self, time: int, exchange_id: bytes = b"\x33" * 32) -> bytes:
        body = {"legs": [0], "created": time, "exchange": exchange_id}
        return self.add(build.sign(self.who, "receipt", body), time)


def run(*chains: Chain | list[bytes], workers: int = WORKERS) -> AuditReport:
    raws = [raw for c in chains for raw in (c.raws if isinstance(c, Chain) else c)]
    return audit(raws, workers=workers)


def only(report: AuditReport, kind: str) -> dict:
    found = [f.to_json() for f in report.findings]
    assert [f["kind"] for f in found] == [kind], found
    return found[0]


def pid(who: Identity) -> str:
    return peer_id(who.public_key)


def traded() -> tuple[Chain, Chain, Exchange]:
    """Alice and Bob each recorded their complete exchange at seq 1."""
    x = complete_exchange()
    alice, bob = Chain(ALICE), Chain(BOB)
    alice.add(x.raw, T + 30)
    bob.add(x.raw, T + 30)
    return alice, bob, x


def unsigned_by_bob(x: Exchange) -> bytes:
    """``x`` with Bob's signature slot emptied (still a well-formed exchange)."""
    value = cbor.decode(x.raw, max_size=boundary.MAX_SIZE["exchange"])
    return cbor.encode([DOMAIN, "exchange", value[2], [value[3][0], None]])


# --------------------------------------------------------------------------- clean ledgers


def test_a_clean_synthetic_ledger_has_no_findings_and_right_totals() -> None:
    market = SyntheticLedger(authors=12, seed=7)
    raws = list(market.entries(600))
    report = audit(raws, workers=WORKERS)
    assert report.findings == []
    assert report.entries == len(raws) == market.stats.entries
    assert report.chains == 12
    assert report.exchanges == market.stats.exchanges
    assert report.parties == 12
    assert report.to_json()["findings"] == []


def test_synthetic_bytes_pass_the_boundary() -> None:
    market = SyntheticLedger(authors=8, seed=3, iou_share=0.5, ring_share=0.2)
    raws = list(market.entries(400))
    kinds = set()
    for raw in random.Random(1).sample(raws, 120):
        entry = boundary.decode(raw, kind="entry")
        kinds.add(entry.payload.kind)
    assert kinds == {"exchange", "rating", "receipt"}


def test_order_and_worker_count_do_not_change_the_result() -> None:
    market = SyntheticLedger(authors=6, seed=11, defects=["fork", "gap", "overcommit", "missing-entry"])
    raws = list(market.entries(300))
    expected = audit(raws, workers=1).to_json()
    assert len(expected["findings"]) == 4
    shuffled = raws[:]
    random.Random(5).shuffle(shuffled)
    assert audit(shuffled, workers=WORKERS).to_json() == expected
    # A one-shot iterator works too: the input is read once, into the buckets the proofs are found in.
    assert audit(iter(raws), workers=WORKERS).to_json() == expected


def test_an_identical_copy_of_an_entry_is_not_a_fork() -> None:
    alice, bob, _ = traded()
    report = run(alice, bob, [alice.raws[0]])
    assert report.findings == []
    assert report.entries == 2


def test_empty_input() -> None:
    assert run([]).to_json() == {"chains": 0, "entries": 0, "exchanges": 0, "parties": 0, "findings": []}


# --------------------------------------------------------------------------- rejected entries


def test_bad_entry_signature() -> None:
    alice = Chain(ALICE)
    alice.receipt(T)
    raw = alice.receipt(T + 10)
    alice.raws[-1] = raw[:-1] + bytes([raw[-1] ^ 1])
    found = only(run(alice), "bad-signature")
    assert found["author"] == pid(ALICE)
    assert found["seq"] == 2
    assert found["entry"] == sha(alice.raws[-1])
    assert found["path"] == "entry.signature"


def test_bad_signature_inside_the_exchange() -> None:
    x = complete_exchange()
    value = cbor.decode(x.raw, max_size=boundary.MAX_SIZE["exchange"])
    forged = cbor.encode([DOMAIN, "exchange", value[2], [value[3][0], bytes(64)]])
    alice = Chain(ALICE)
    alice.add(forged, T + 30)
    found = only(run(alice), "bad-signature")
    assert found["seq"] == 1
    assert found["path"] == "entry.body.payload.signatures[1]"


def test_exchange_lacking_a_party_signature() -> None:
    x = complete_exchange()
    alice = Chain(ALICE)
    alice.add(unsigned_by_bob(x), T + 30)
    found = only(run(alice), "unsigned-exchange")
    assert found["author"] == pid(ALICE)
    assert found["seq"] == 1
    assert found["entry"] == sha(alice.raws[0])
    assert found["exchange"] == x.id.hex()
    assert found["unsigned_by"] == [pid(BOB)]


def test_exchange_recorded_by_a_non_party() -> None:
    carol = Chain(CAROL)
    carol.add(complete_exchange().raw, T + 30)
    found = only(run(carol), "non-party-entry")
    assert (found["author"], found["seq"]) == (pid(CAROL), 1)
    assert "not a party" in found["reason"]


def test_other_invalid_entry_keeps_the_boundary_code_and_path() -> None:
    alice = Chain(ALICE)
    alice.add(complete_exchange().raw, T - 1000)  # timed before the exchange it records was created
    found = only(run(alice), "invalid-entry")
    assert (found["author"], found["seq"], found["code"], found["path"]) == (pid(ALICE), 1, "expiry", "entry.body.time")


def test_garbage_bytes_are_an_invalid_entry_without_author() -> None:
    alice, bob, _ = traded()
    found = only(run(alice, bob, [b"\x01garbage"]), "invalid-entry")
    assert found["author"] is None
    assert found["entry"] == sha(b"\x01garbage")
    assert found["code"] == "encoding"


def test_rating_without_a_complete_exchange() -> None:
    alice, bob, x = traded()
    body = {"score": 5, "comment": "", "created": T + 40, "subject": BOB.public_key, "exchange": unsigned_by_bob(x)}
    alice.add(build.sign(ALICE, "rating", body), T + 40)
    found = only(run(alice, bob), "rating-without-exchange")
    assert (found["author"], found["seq"], found["exchange"]) == (pid(ALICE), 2, x.id.hex())


def test_rating_by_a_non_party() -> None:
    alice, bob, x = traded()
    carol = Chain(CAROL)
    body = {"score": 1, "comment": "", "created": T + 40, "subject": BOB.public_key, "exchange": x.raw}
    carol.add(build.sign(CAROL, "rating", body), T + 40)
    found = only(run(alice, bob, carol), "rating-by-non-party")
    assert (found["author"], found["seq"], found["exchange"]) == (pid(CAROL), 1, x.id.hex())
    assert (found["role"], found["peer"]) == ("rater", pid(CAROL))


def test_rating_of_a_non_party() -> None:
    alice, bob, x = traded()
    body = {"score": 1, "comment": "", "created": T + 40, "subject": CAROL.public_key, "exchange": x.raw}
    alice.add(build.sign(ALICE, "rating", body), T + 40)
    found = only(run(alice, bob), "rating-by-non-party")
    assert (found["role"], found["peer"], found["seq"]) == ("subject", pid(CAROL), 2)


# --------------------------------------------------------------------------- chains


def test_broken_link() -> None:
    alice = Chain(ALICE)
    first = alice.receipt(T)
    alice.add(build.sign(ALICE, "receipt", {"legs": [0], "created": T, "exchange": ZERO}), T, prev=b"\x07" * 32)
    found = only(run(alice), "broken-link")
    assert (found["author"], found["seq"], found["entry"]) == (pid(ALICE), 2, sha(alice.raws[1]))
    assert found["prev"] == (b"\x07" * 32).hex()
    assert found["expected"] == [sha(first)]


def test_first_entry_naming_a_predecessor_is_a_broken_link() -> None:
    alice = Chain(ALICE)
    alice.add(build.sign(ALICE, "receipt", {"legs": [0], "created": T, "exchange": ZERO}), T, prev=b"\x07" * 32)
    found = only(run(alice), "broken-link")
    assert (found["seq"], found["prev"], found["expected"]) == (1, (b"\x07" * 32).hex(), [ZERO.hex()])


def test_gap() -> None:
    alice = Chain(ALICE)
    alice.receipt(T)
    alice.receipt(T + 1)
    alice.seq += 2  # seq 3 and 4 never reach us
    alice.receipt(T + 2)
    found = only(run(alice), "gap")
    assert (found["author"], found["after"], found["missing_from"], found["missing_to"]) == (pid(ALICE), 2, 3, 4)


def test_chain_not_starting_at_one_is_a_gap() -> None:
    alice = Chain(ALICE)
    for t in range(3):
        alice.receipt(T + t)
    found = only(run(alice.raws[2:]), "gap")
    assert (found["after"], found["missing_from"], found["missing_to"]) == (0, 1, 2)


def test_fork_with_a_proof_anyone_can_check() -> None:
    alice = Chain(ALICE)
    alice.receipt(T)
    a = alice.receipt(T + 1)
    alice.seq, alice.head = 1, hashlib.sha256(alice.raws[0]).digest()
    b = alice.receipt(T + 2, exchange_id=b"\x44" * 32)
    alice.receipt(T + 3)
    found = only(run(alice), "fork")
    assert (found["author"], found["seq"]) == (pid(ALICE), 2)
    assert found["entries"] == sorted([sha(a), sha(b)])
    proof = evidence.decode_proof(bytes.fromhex(found["proof"]))
    assert isinstance(proof, evidence.ForkProof)
    assert (proof.author, proof.seq) == (ALICE.public_key, 2)
    assert {proof.first.raw, proof.second.raw} == {a, b}


# --------------------------------------------------------------------------- exchanges and listings


def test_exchange_missing_from_a_party_chain_held_to_a_later_point() -> None:
    x = complete_exchange()
    alice, bob = Chain(ALICE), Chain(BOB)
    recorded = alice.add(x.raw, T + 30)
    bob.receipt(T + 10)  # before the exchange: fine
    later = bob.receipt(x.created + boundary.CLOCK_SKEW + 1)
    found = only(run(alice, bob), "missing-entry")
    assert found["exchange"] == x.id.hex()
    assert found["created"] == x.created
    assert found["party"] == pid(BOB)
    assert found["recorded_by"] == [{"author": pid(ALICE), "seq": 1, "entry": sha(recorded)}]
    assert found["later_entry"] == {"seq": 2, "entry": sha(later), "time": x.created + boundary.CLOCK_SKEW + 1}


def test_no_missing_entry_while_the_party_chain_ends_within_the_clock_skew() -> None:
    x = complete_exchange()
    alice, bob = Chain(ALICE), Chain(BOB)
    alice.add(x.raw, T + 30)
    bob.receipt(x.created + boundary.CLOCK_SKEW)  # could have been made before Bob heard of it
    assert run(alice, bob).findings == []


def test_listing_settled_beyond_its_quantity() -> None:
    two_bikes = listing(have=[item("2 x bike")])
    alice, bob, carol = Chain(ALICE), Chain(BOB), Chain(CAROL)
    exchanges = []
    for taker, chain, nonce in ((BOB, bob, b"\x01"), (CAROL, carol, b"\x02")):
        o = build.make_offer(
            taker, two_bikes, take=[item("2 x bike")], give=[item("1 x cake")], created=T + 10, expires=T + 3600
        )
        x = build.exchange_for_offer(o, created=T + 20, deadline=T + 600, nonce=nonce * 16)
        x = build.sign_exchange(build.sign_exchange(x, ALICE), taker)
        alice.add(x.raw, T + 30)
        chain.add(x.raw, T + 30)
        exchanges.append(x)
    found = only(run(alice, bob, carol), "overcommit")
    assert (found["listing"], found["author"]) == (two_bikes.id.hex(), pid(ALICE))
    assert (found["item"], found["unit"], found["listed"], found["given"]) == ("bike", "pc", 2, 4)
    assert sorted(found["exchanges"]) == sorted(x.id.hex() for x in exchanges)
    proof = evidence.decode_proof(bytes.fromhex(found["proof"]))
    assert isinstance(proof, evidence.OvercommitProof)
    assert proof.listing.id == two_bikes.id
    assert (proof.listed, proof.given) == (2, 4)


def test_overcommit_counts_exchanges_seen_only_inside_ratings() -> None:
    one_bike = listing(have=[item("1 x bike")])
    alice, bob = Chain(ALICE), Chain(BOB)
    for n, created in ((1, T + 20), (2, T + 25)):
        o = build.make_offer(
            BOB, one_bike, take=[item("1 x bike")], give=[item("1 x cake")], created=T + 10, expires=T + 3600
        )
        x = build.exchange_for_offer(o, created=created, deadline=T + 600, nonce=bytes([n]) * 16)
        x = build.sign_exchange(build.sign_exchange(x, ALICE), BOB)
        if n == 1:
            alice.add(x.raw, T + 30)
            bob.add(x.raw, T + 30)
        else:  # the second sale shows up only in Bob's rating of it
            bob.add(build.make_rating(BOB, x, subject=ALICE.public_key, score=1, created=T + 40).raw, T + 40)
    found = [f.to_json() for f in run(alice, bob).findings]
    over = [f for f in found if f["kind"] == "overcommit"]
    assert len(over) == 1 and over[0]["given"] == 2
    assert isinstance(evidence.decode_proof(bytes.fromhex(over[0]["proof"])), evidence.OvercommitProof)


def test_duplicate_rating() -> None:
    alice, bob, x = traded()
    first = build.make_rating(ALICE, x, subject=BOB.public_key, score=5, created=T + 40)
    second = build.make_rating(ALICE, x, subject=BOB.public_key, score=1, created=T + 50)
    e1 = alice.add(first.raw, T + 40)
    e2 = alice.add(second.raw, T + 50)
    bob.add(build.make_rating(BOB, x, subject=ALICE.public_key, score=5, created=T + 40).raw, T + 40)
    found = only(run(alice, bob), "duplicate-rating")
    assert (found["rater"], found["subject"], found["exchange"]) == (pid(ALICE), pid(BOB), x.id.hex())
    assert found["ratings"] == [
        {"rating": first.id.hex(), "seq": 2, "entry": sha(e1)},
        {"rating": second.id.hex(), "seq": 3, "entry": sha(e2)},
    ]


def iou_exchange(nonce: bytes = NONCE) -> Exchange:
    """Alice gives Bob a bike; Bob gives Alice 3 IOU of babysitting."""
    x = build.propose_exchange(
        parties=[ALICE.public_key, BOB.public_key],
        legs=[Leg(0, 1, (item("1 x bike"),)), Leg(1, 0, (item("3 iou x babysitting"),))],
        created=T,
        deadline=T + 600,
        nonce=nonce,
    )
    return build.sign_exchange(build.sign_exchange(x, ALICE), BOB)


def test_iou_balances_that_do_not_sum_to_zero() -> None:
    x = iou_exchange()
    alice, bob = Chain(ALICE), Chain(BOB)
    alice.add(x.raw, T + 30)
    bob.receipt(T + 40)  # Bob's chain is held, but it does not record the IOU
    found = only(run(alice, bob), "iou-imbalance")
    assert (found["item"], found["total"]) == ("babysitting", 3)
    assert found["balances"] == {pid(ALICE): 3}
    assert found["one_sided"] == [{"exchange": x.id.hex(), "recorded_by": pid(ALICE), "not_recorded_by": pid(BOB)}]


def test_iou_recorded_by_both_sides_balances() -> None:
    x = iou_exchange()
    alice, bob = Chain(ALICE), Chain(BOB)
    alice.add(x.raw, T + 30)
    bob.add(x.raw, T + 30)
    assert run(alice, bob).findings == []


def test_iou_with_a_party_whose_chain_we_do_not_hold_is_not_counted() -> None:
    alice = Chain(ALICE)
    alice.add(iou_exchange().raw, T + 30)
    assert run(alice).findings == []


def test_ring_exchange_on_all_three_chains_is_clean() -> None:
    from tests.protocol_fixtures import ring

    x = ring()
    chains = [Chain(who) for who in (ALICE, BOB, CAROL)]
    for c in chains:
        c.add(x.raw, T + 30)
    report = run(*chains)
    assert report.findings == []
    assert (report.chains, report.entries, report.exchanges, report.parties) == (3, 3, 1, 3)


# --------------------------------------------------------------------------- machinery


def test_peek_reads_the_claimed_layout() -> None:
    alice, _bob, x = traded()
    claimed = peek(alice.raws[0])
    assert claimed is not None
    assert (claimed.author, claimed.seq, claimed.prev, claimed.exchange) == (ALICE.public_key, 1, ZERO, x.raw)
    rating = build.make_rating(ALICE, x, subject=BOB.public_key, score=5, created=T + 40, comment="hexchange")
    rated = alice.add(rating.raw, T + 40)
    claimed = peek(rated)
    assert claimed is not None and claimed.exchange == x.raw
    assert peek(b"") is None and peek(alice.raws[0][:-1]) is None
    # The fast grouping key agrees, and falls back to the entry itself for anything else.
    assert grouping_key(alice.raws[0]) == grouping_key(rated) == x.raw
    receipt = Chain(BOB).receipt(T)
    assert grouping_key(receipt) == receipt
    assert grouping_key(b"\x01garbage") == b"\x01garbage"


def test_large_buckets_are_read_through_their_index(monkeypatch: pytest.MonkeyPatch) -> None:
    market = SyntheticLedger(authors=5, seed=9, defects=["fork"])
    raws = list(market.entries(150))
    expected = audit(raws, workers=1).to_json()
    monkeypatch.setattr(_Buckets, "IN_MEMORY", 0)
    assert audit(raws, workers=1).to_json() == expected


@pytest.mark.parametrize("defect", SYNTHETIC_DEFECTS)
def test_synthetic_defects_are_found(defect: str) -> None:
    market = SyntheticLedger(authors=5, seed=2, defects=[defect])
    report = audit(list(market.entries(120)), workers=1)
    kinds = [f.kind for f in report.findings]
    if defect == "iou-imbalance":  # one-sided, so also a missing entry if the other side's chain goes on
        assert "iou-imbalance" in kinds and set(kinds) <= {"iou-imbalance", "missing-entry"}, kinds
    else:
        assert kinds == [defect]

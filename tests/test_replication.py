"""Ledger replication: the ledger-sync/gossip codecs and the sans-IO planner, run between real stores in memory.

Every frame of the simulated sessions goes through ``rwire.encode_frame``
and ``decode_frame``, as it would over a stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from swapmeet.ledger.replication import (
    Policy,
    Puller,
    answer_heads,
    answer_range,
    followup,
    plan_announce,
    plan_fork_alert,
)
from swapmeet.ledger.store import IngestResult, LedgerStore
from swapmeet.protocol import build, cbor, evidence
from swapmeet.protocol import replication as rwire
from swapmeet.protocol.boundary import ZERO_ID
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.identity import Identity
from swapmeet.protocol.objects import LedgerEntry
from swapmeet.protocol.replication import (
    MAX_ANNOUNCE,
    MAX_FRAME,
    MAX_HEADS,
    MAX_RANGE,
    Announce,
    End,
    Entries,
    ForkAlert,
    GetHeads,
    GetRange,
    Head,
    Heads,
)

from tests.protocol_fixtures import ALICE, BOB, CAROL, T, listing, ring

X = ring()  # Alice, Bob and Carol are its parties: each may record it
A, B, C = ALICE.public_key, BOB.public_key, CAROL.public_key
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_chain(identity: Identity, n: int, *, prev: bytes = ZERO_ID, start: int = 1, time: int = T + 30):
    """``n`` linked entries from seq ``start``, built without a store."""
    out: list[LedgerEntry] = []
    for seq in range(start, start + n):
        entry = build.make_entry(identity, seq=seq, prev=prev, time=time + seq, payload=X)
        out.append(entry)
        prev = entry.id
    return out


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[LedgerStore, LedgerStore]]:
    """(ours, theirs): two real ledger databases."""
    with LedgerStore.open(tmp_path / "ours.sqlite") as ours, LedgerStore.open(tmp_path / "theirs.sqlite") as theirs:
        yield ours, theirs


def wire(frame):
    """A frame as the other side receives it."""
    return rwire.decode_frame(rwire.encode_frame(frame))


def serve(request, store: LedgerStore, *, per_reply: int = MAX_RANGE):
    """The responder: answers one request from ``store`` (at most ``per_reply`` entries per range)."""
    if isinstance(request, GetHeads):
        return answer_heads(request, store.heads())
    assert isinstance(request, GetRange)
    return answer_range(request, lambda a, s, n: store.entries_after(a, s, min(n, per_reply)))


def session(puller: Puller, ours: LedgerStore, theirs: LedgerStore, **kw) -> tuple[list, list[bytes]]:
    """Run a whole session in memory; the requests sent and the fork alerts published."""
    sent, alerts = [], []
    while not isinstance(request := wire(puller.next_frame()), End):
        sent.append(request)
        raws = puller.on_reply(wire(serve(request, theirs, **kw)))
        if raws:
            for author, seq in puller.on_ingested(ours.ingest(raws)):
                proof = next(p for p in ours.fork_proofs(author) if p.seq == seq)
                alerts.append(rwire.fork_alert(proof))
    return sent, alerts


def same_chains(a: LedgerStore, b: LedgerStore, author: bytes) -> bool:
    return a.head(author) == b.head(author) and list(a.iter_raw(author)) == list(b.iter_raw(author))


# --------------------------------------------------------------------------- pull


def test_fetch_exactly_the_missing_range_and_converge(stores) -> None:
    ours, theirs = stores
    entries = [theirs.append_own(ALICE, X, T + 30 + i) for i in range(10)]
    assert ours.ingest(e.raw for e in entries[:4]).accepted == 4
    puller = Puller(Policy(counterparties=frozenset({A})), ours.heads(), forked=ours.forked_authors())
    sent, alerts = session(puller, ours, theirs)
    assert sent == [GetHeads((A,)), GetRange(A, 4, 6)]
    assert same_chains(ours, theirs, A)
    assert alerts == [] and puller.faults == [] and puller.forks == []
    # Converged: a second session asks the heads and nothing else.
    sent, _ = session(Puller(Policy(counterparties=frozenset({A})), ours.heads()), ours, theirs)
    assert sent == [GetHeads((A,))]


def test_long_chains_come_in_ranges_and_short_replies_are_continued(stores) -> None:
    ours, theirs = stores
    theirs.ingest(e.raw for e in make_chain(ALICE, 2 * MAX_RANGE + 10))
    sent, _ = session(Puller(Policy(followed=frozenset({A})), ours.heads()), ours, theirs)
    assert sent[1:] == [GetRange(A, 0, MAX_RANGE), GetRange(A, MAX_RANGE, MAX_RANGE), GetRange(A, 2 * MAX_RANGE, 10)]
    assert same_chains(ours, theirs, A)


def test_a_stingy_responder_is_asked_again_from_where_we_stopped(stores) -> None:
    ours, theirs = stores
    theirs.ingest(e.raw for e in make_chain(ALICE, 7))
    sent, _ = session(Puller(Policy(followed=frozenset({A})), ours.heads()), ours, theirs, per_reply=3)
    assert sent[1:] == [GetRange(A, 0, 7), GetRange(A, 3, 4), GetRange(A, 6, 1)]
    assert same_chains(ours, theirs, A)


def test_ranges_are_prioritised_and_the_session_is_bounded(stores) -> None:
    ours, theirs = stores
    for who, n in ((ALICE, 5), (BOB, 3), (CAROL, 2)):
        theirs.ingest(e.raw for e in make_chain(who, n))
    policy = Policy(counterparties=frozenset({C}), followed=frozenset({A, B}))
    sent, _ = session(Puller(policy, ours.heads()), ours, theirs)
    # Counterparties first, then the followed authors, shortest first.
    assert sent == [GetHeads(tuple(sorted((A, B, C)))), GetRange(C, 0, 2), GetRange(B, 0, 3), GetRange(A, 0, 5)]
    assert all(same_chains(ours, theirs, who) for who in (A, B, C))

    with LedgerStore.open(ours.path.with_name("fresh.sqlite")) as fresh:
        sent, _ = session(Puller(policy, fresh.heads(), budget=2), fresh, theirs)
        assert sent == [GetHeads(tuple(sorted((A, B, C)))), GetRange(C, 0, 2)]
        assert set(fresh.heads()) == {C}


def test_never_asks_beyond_what_the_peer_has_nor_when_it_is_behind(stores) -> None:
    ours, theirs = stores
    chain = make_chain(ALICE, 6)
    ours.ingest(e.raw for e in chain)
    theirs.ingest(e.raw for e in chain[:3])
    sent, _ = session(Puller(Policy(followed=frozenset({A})), ours.heads()), ours, theirs)
    assert sent == [GetHeads((A,))]


def test_authors_we_do_not_replicate_are_left_alone_unless_archive(stores) -> None:
    ours, theirs = stores
    for who in (ALICE, BOB, CAROL):
        theirs.ingest(e.raw for e in make_chain(who, 3))
    sent, _ = session(Puller(Policy(followed=frozenset({A})), ours.heads()), ours, theirs)
    assert sent == [GetHeads((A,)), GetRange(A, 0, 3)]
    assert set(ours.heads()) == {A}
    # Archive: every chain we hear of, except our own (only append_own writes it).
    sent, _ = session(Puller(Policy(archive=True, own=B), ours.heads()), ours, theirs)
    assert sent == [GetHeads(None, b""), GetRange(C, 0, 3)]
    assert set(ours.heads()) == {A, C}


def test_archive_heads_are_paged_with_a_cursor() -> None:
    keys = sorted(bytes([i // 256, i % 256]) * 16 for i in range(MAX_HEADS + 5))
    theirs = {k: (1, b"\x07" * 32) for k in keys}
    puller = Puller(Policy(archive=True), {}, budget=2 * len(keys))
    first = wire(puller.next_frame())
    assert first == GetHeads(None, b"")
    reply = wire(answer_heads(first, theirs))
    assert len(reply.heads) == MAX_HEADS and [h.author for h in reply.heads] == keys[:MAX_HEADS]
    puller.on_reply(reply)
    second = wire(puller.next_frame())
    assert second == GetHeads(None, keys[MAX_HEADS - 1])
    puller.on_reply(wire(answer_heads(second, theirs)))
    ranges = []
    while not isinstance(request := puller.next_frame(), End):
        ranges.append(request)
        puller.on_reply(Entries(()))  # (a peer with nothing after all: a fault, not an error)
    assert len(ranges) == len(keys) == len(puller.faults)
    assert {r.author for r in ranges} == set(keys) and all(r.after == 0 and r.limit == 1 for r in ranges)


# --------------------------------------------------------------------------- forks


def forked_stores(ours: LedgerStore, theirs: LedgerStore, *, ours_len: int, theirs_len: int) -> LedgerEntry:
    """A shared prefix of 3 entries, then Alice forks: ``theirs`` and ``ours`` get different seq 4 onwards."""
    prefix = make_chain(ALICE, 3)
    for store in (ours, theirs):
        store.ingest(e.raw for e in prefix)
    mine = make_chain(ALICE, ours_len, prev=prefix[-1].id, start=4, time=T + 1000)
    other = make_chain(ALICE, theirs_len, prev=prefix[-1].id, start=4, time=T + 2000)
    ours.ingest(e.raw for e in mine)
    theirs.ingest(e.raw for e in other)
    return other[0]


def check_alert(alert: bytes, seq: int) -> None:
    """What any third party does with an alert: decode the gossip, check the proof offline."""
    message = rwire.decode_gossip(alert)
    assert isinstance(message, ForkAlert)
    proof = evidence.decode_proof(message.proof)
    assert isinstance(proof, evidence.ForkProof)
    assert (proof.author, proof.seq) == (A, seq)
    assert rwire.verify_fork_alert(message) == proof


@pytest.mark.parametrize("ours_len,theirs_len", [(1, 3), (1, 1), (2, 4)])
def test_a_fork_on_the_peers_side_is_found_and_alerted(stores, ours_len: int, theirs_len: int) -> None:
    ours, theirs = stores
    forked_stores(ours, theirs, ours_len=ours_len, theirs_len=theirs_len)
    puller = Puller(Policy(counterparties=frozenset({A})), ours.heads())
    sent, alerts = session(puller, ours, theirs)
    fork_seq = 3 + ours_len if theirs_len == ours_len else 4 + ours_len - 1
    if theirs_len > ours_len:
        # The range is refused as a bad link at ours_len + 4; then the one entry before it.
        assert sent == [GetHeads((A,)), GetRange(A, 3 + ours_len, theirs_len - ours_len), GetRange(A, 2 + ours_len, 1)]
    else:
        assert sent == [GetHeads((A,)), GetRange(A, 2 + ours_len, 1)]
    assert ours.forked_authors() == {A}
    assert puller.forks == [(A, fork_seq)] and puller.faults == []
    assert len(alerts) == 1
    check_alert(alerts[0], fork_seq)


def test_a_known_forked_author_is_not_probed_again(stores) -> None:
    ours, theirs = stores
    forked_stores(ours, theirs, ours_len=1, theirs_len=3)
    sent, alerts = session(Puller(Policy(followed=frozenset({A})), ours.heads(), forked={A}), ours, theirs)
    assert sent == [GetHeads((A,)), GetRange(A, 4, 2)]
    assert alerts == []


def test_a_fork_alert_marks_the_author_on_a_third_node(stores, tmp_path: Path) -> None:
    ours, theirs = stores
    forked_stores(ours, theirs, ours_len=1, theirs_len=1)
    _, alerts = session(Puller(Policy(followed=frozenset({A})), ours.heads()), ours, theirs)
    alert = rwire.decode_gossip(alerts[0])
    with LedgerStore.open(tmp_path / "third.sqlite") as third:
        third.ingest(e.raw for e in make_chain(ALICE, 3))
        plan = plan_fork_alert(Policy(followed=frozenset({A})), alert, third.forked_authors())
        assert plan.new and plan.proof.seq == 4 and len(plan.ingest) == 2
        assert third.ingest(plan.ingest).forks == [(A, 4)]
        assert third.forked_authors() == {A}
        again = plan_fork_alert(Policy(followed=frozenset({A})), alert, third.forked_authors())
        assert not again.new
    # Not replicated: checked and marked, nothing to ingest.
    assert plan_fork_alert(Policy(), alert).ingest == ()


def test_fork_alerts_that_prove_nothing_are_refused() -> None:
    prefix = make_chain(ALICE, 1)
    with pytest.raises(InvalidObject):  # the same entry twice
        plan_fork_alert(Policy(), ForkAlert(cbor.encode(["swapmeet/1", "fork-proof", prefix[0].raw, prefix[0].raw])))
    with pytest.raises(InvalidObject):
        plan_fork_alert(Policy(), ForkAlert(b"\x00garbage"))
    other = make_chain(BOB, 1)[0]
    with pytest.raises(InvalidObject, match="different authors"):
        rwire.verify_fork_alert(ForkAlert(cbor.encode(["swapmeet/1", "fork-proof", prefix[0].raw, other.raw])))


# --------------------------------------------------------------------------- gossip


def announced(*entries: LedgerEntry) -> list[LedgerEntry]:
    """Entries as a receiver gets them: gossip bytes, decoded, then verified."""
    message = rwire.decode_gossip(rwire.encode_gossip(Announce(tuple(e.raw for e in entries))))
    assert isinstance(message, Announce)
    return rwire.verify_announce(message, now=T + 10_000)


def test_announce_decisions(stores) -> None:
    ours, theirs = stores
    chain = make_chain(ALICE, 8)
    theirs.ingest(e.raw for e in chain)
    ours.ingest(e.raw for e in chain[:3])
    policy = Policy(followed=frozenset({A}))
    heads = ours.heads()
    # Extends our chain: ingest; so do entries chained after it in the same message.
    assert plan_announce(policy, heads, announced(chain[3])).ingest == (chain[3].raw,)
    assert plan_announce(policy, heads, announced(chain[4], chain[3])).ingest == (chain[3].raw, chain[4].raw)
    # Our head: nothing to do. Older: the store tells a copy from a fork.
    assert plan_announce(policy, heads, announced(chain[2])).ignored == 1
    assert plan_announce(policy, heads, announced(chain[1])).ingest == (chain[1].raw,)
    assert ours.ingest([chain[1].raw]).duplicates == 1
    # Not replicated: ignored, unless archive; our own chain never.
    bob = make_chain(BOB, 1)
    assert plan_announce(policy, heads, announced(bob[0])).ignored == 1
    assert plan_announce(Policy(archive=True), heads, announced(bob[0])).ingest == (bob[0].raw,)
    assert plan_announce(Policy(archive=True, own=B), heads, announced(bob[0])).ignored == 1
    # A gap: fetch up to the announced entry, which then comes with the range.
    plan = plan_announce(policy, heads, announced(chain[3], chain[7]))
    assert plan.ingest == (chain[3].raw,) and plan.fetch == ((A, 8),)


def test_a_gap_from_an_announce_becomes_a_range_request(stores) -> None:
    ours, theirs = stores
    chain = make_chain(ALICE, 8)
    theirs.ingest(e.raw for e in chain)
    ours.ingest(e.raw for e in chain[:3])
    policy = Policy(followed=frozenset({A}))
    plan = plan_announce(policy, ours.heads(), announced(chain[7]))
    assert plan.ingest == () and plan.fetch == ((A, 8),)
    puller = Puller(policy, ours.heads(), ask_heads=False)
    for author, seq in plan.fetch * 2:  # (wanted twice, asked once)
        puller.want(author, seq)
    sent, _ = session(puller, ours, theirs)
    assert sent == [GetRange(A, 3, 5)]
    assert same_chains(ours, theirs, A)


def make_theirs_entry(store: LedgerStore, seq: int) -> LedgerEntry:
    raw = store.get(A, seq)
    assert raw is not None
    return rwire.verify_announce(Announce((raw,)), now=None)[0]


def test_an_announced_fork_entry_is_probed_and_proven(stores) -> None:
    ours, theirs = stores
    forked_stores(ours, theirs, ours_len=1, theirs_len=2)
    policy = Policy(followed=frozenset({A}))
    # The peer announces its seq 5, which links to its own seq 4, not ours.
    plan = plan_announce(policy, ours.heads(), announced(make_theirs_entry(theirs, 5)))
    step = followup(ours.ingest(plan.ingest))
    assert step.probes == ((A, 4),) and step.forks == () and step.faults == ()
    puller = Puller(policy, ours.heads(), ask_heads=False)
    for author, seq in step.probes:
        puller.probe(author, seq)
    sent, alerts = session(puller, ours, theirs)
    assert sent == [GetRange(A, 3, 1)]
    check_alert(alerts[0], 4)


# --------------------------------------------------------------------------- misbehaving peers


def test_a_peer_that_breaks_the_protocol_ends_the_session(stores) -> None:
    ours, theirs = stores
    theirs.ingest(e.raw for e in make_chain(ALICE, 3))
    theirs.ingest(e.raw for e in make_chain(BOB, 3))
    policy = Policy(followed=frozenset({A}))

    def started() -> Puller:
        puller = Puller(policy, ours.heads())
        puller.on_reply(wire(serve(wire(puller.next_frame()), theirs)))
        assert puller.next_frame() == GetRange(A, 0, 3)
        return puller

    with pytest.raises(InvalidObject, match="author asked for") as err:  # another author's entries
        started().on_reply(Entries(tuple(theirs.entries_after(B, 0, 3))))
    assert err.value.code == "protocol"
    with pytest.raises(InvalidObject, match="author asked for"):  # not from after + 1
        started().on_reply(Entries(tuple(theirs.entries_after(A, 1, 2))))
    with pytest.raises(InvalidObject, match="expected entries"):
        started().on_reply(Heads(()))
    puller = Puller(policy, ours.heads())
    puller.next_frame()
    with pytest.raises(InvalidObject, match="not asked for"):
        puller.on_reply(Heads((Head(B, 3, b"\x01" * 32),)))
    with pytest.raises(InvalidObject, match="expected no reply"):
        Puller(policy, {}).on_reply(Heads(()))
    with pytest.raises(InvalidObject, match="more than"):
        started().on_reply(Entries(tuple(theirs.entries_after(A, 0, 3)) * 2))


def test_invalid_entries_and_empty_replies_are_faults(stores) -> None:
    ours, theirs = stores
    chain = make_chain(ALICE, 3)
    theirs.ingest(e.raw for e in chain)
    policy = Policy(followed=frozenset({A}))
    puller = Puller(policy, ours.heads())
    puller.on_reply(wire(serve(wire(puller.next_frame()), theirs)))
    assert puller.next_frame() == GetRange(A, 0, 3)
    forged = chain[1].raw[:-1] + bytes([chain[1].raw[-1] ^ 1])  # a broken signature
    raws = puller.on_reply(wire(Entries((chain[0].raw, forged, chain[2].raw))))
    assert puller.on_ingested(ours.ingest(raws)) == []
    assert len(puller.faults) == 1 and "invalid" in puller.faults[0]  # the gap after it is no fault of its own
    assert isinstance(puller.next_frame(), End)  # not continued
    assert ours.head(A) == (1, chain[0].id)

    puller = Puller(policy, ours.heads())
    puller.on_reply(wire(serve(wire(puller.next_frame()), theirs)))
    assert puller.next_frame() == GetRange(A, 1, 2)
    assert puller.on_reply(wire(Entries(()))) == []
    assert puller.faults and isinstance(puller.next_frame(), End)


def test_the_puller_is_strictly_request_reply() -> None:
    puller = Puller(Policy(followed=frozenset({A})), {})
    puller.next_frame()
    with pytest.raises(RuntimeError):
        puller.next_frame()
    with pytest.raises(RuntimeError):
        puller.on_ingested(IngestResult())


# --------------------------------------------------------------------------- codecs


def test_frames_round_trip_and_are_canonical() -> None:
    chain = make_chain(ALICE, 2)
    frames = [
        GetHeads(tuple(sorted((A, B)))),
        GetHeads(None, b""),
        GetHeads(None, C),
        Heads(tuple(sorted((Head(A, 1, chain[0].id), Head(B, 2**53, b"\x09" * 32))))),
        Heads(()),
        GetRange(A, 0, 1),
        GetRange(A, 2**53, MAX_RANGE),
        Entries((chain[0].raw, chain[1].raw)),
        Entries(()),
        End(),
    ]
    for frame in frames:
        data = rwire.encode_frame(frame)
        assert rwire.decode_frame(data) == frame
        assert cbor.encode(cbor.decode(data, max_size=MAX_FRAME)) == data
    for message in (Announce((chain[0].raw,)), ForkAlert(b"\x01" * 40)):
        assert rwire.decode_gossip(rwire.encode_gossip(message)) == message


@pytest.mark.parametrize(
    "value,code",
    [
        (["get-heads", [A] * 2], "order"),
        (["get-heads", sorted((A, B), reverse=True)], "order"),
        (["get-heads", [bytes([i // 256, i % 256]) * 16 for i in range(MAX_HEADS + 1)]], "length"),
        (["get-heads", []], "length"),
        (["get-heads", b"\x01" * 31], "length"),
        (["get-heads", None], "type"),
        (["heads", [[A, 0, b"\x01" * 32]]], "range"),
        (["heads", [[A, True, b"\x01" * 32]]], "type"),
        (["heads", [[A, 1.0, b"\x01" * 32]]], "type"),
        (["heads", [[A, 1, b"\x01" * 31]]], "length"),
        (["heads", [[A, 1]]], "length"),
        (["heads", [[k, 1, b"\x01" * 32] for k in sorted((A, B), reverse=True)]], "order"),
        (["get-range", [A, 0, 0]], "range"),
        (["get-range", [A, 0, MAX_RANGE + 1]], "range"),
        (["get-range", [A, -1, 1]], "range"),
        (["get-range", [A, 2**53 + 1, 1]], "range"),
        (["get-range", [A, 0, 1, 2]], "length"),
        (["get-range", {"author": A}], "type"),
        (["entries", [b"\x01"] * (MAX_RANGE + 1)], "length"),
        (["entries", [b""]], "length"),
        (["entries", ["text"]], "type"),
        (["entries", None], "type"),
        (["end", 0], "type"),
        (["nope", None], "envelope"),
        (["end"], "envelope"),
        ({"end": None}, "envelope"),
    ],
)
def test_hostile_frames_are_refused_with_a_code(value, code: str) -> None:
    with pytest.raises(InvalidObject) as err:
        rwire.decode_frame(cbor.encode(value))
    assert err.value.code == code and err.value.path.startswith("ledger-sync")


@pytest.mark.parametrize(
    "frame",
    [
        GetRange(A, 0, 0),
        GetRange(A, 0, MAX_RANGE + 1),
        GetRange(b"short", 0, 1),
        GetHeads(()),
        GetHeads((A, A)),
        GetHeads(None, b"\x01"),
        Heads((Head(A, 0, b"\x01" * 32),)),
        Entries((b"",)),
        "end",
    ],
)
def test_we_never_encode_a_frame_a_peer_refuses(frame) -> None:
    with pytest.raises(ValueError):
        rwire.encode_frame(frame)


@pytest.mark.parametrize(
    "value,code",
    [
        (["swapmeet/1", "announce", []], "length"),
        (["swapmeet/1", "announce", [b"\x01"] * (MAX_ANNOUNCE + 1)], "length"),
        (["swapmeet/1", "announce", b"\x01"], "type"),
        (["swapmeet/1", "fork-alert", [b"\x01"]], "type"),
        (["swapmeet/1", "fork-alert", b""], "length"),
        (["swapmeet/2", "fork-alert", b"\x01"], "envelope"),
        (["swapmeet/1", "batch", [b"\x01"]], "envelope"),
        (["swapmeet/1", "announce"], "envelope"),
    ],
)
def test_hostile_gossip_is_refused_with_a_code(value, code: str) -> None:
    with pytest.raises(InvalidObject) as err:
        rwire.decode_gossip(cbor.encode(value))
    assert err.value.code == code and err.value.path.startswith("ledger-gossip")


def test_oversized_frames_and_messages_are_refused() -> None:
    big = b"\x01" * (200 * 1024)
    fitted = rwire.fit_entries([big] * 10)
    assert len(fitted.raws) == 5 and len(rwire.encode_frame(fitted)) <= MAX_FRAME
    with pytest.raises(ValueError):
        rwire.encode_frame(Entries((big,) * 6))
    with pytest.raises(InvalidObject) as err:
        rwire.decode_frame(cbor.encode(["entries", [big] * 6]))
    assert err.value.code == "size"
    with pytest.raises(ValueError):
        rwire.encode_gossip(Announce((big,) * 6))
    with pytest.raises(InvalidObject):
        rwire.decode_frame(cbor.encode(["entries", [b"\x01" * (rwire.MAX_ENTRY_SIZE + 1)]]))
    assert len(rwire.fit_entries([b"\x01"] * (MAX_RANGE + 9)).raws) == MAX_RANGE


def test_announced_entries_must_verify() -> None:
    entry = make_chain(ALICE, 1)[0]
    forged = entry.raw[:-1] + bytes([entry.raw[-1] ^ 1])
    with pytest.raises(InvalidObject) as err:
        rwire.verify_announce(Announce((entry.raw, forged)), now=None)
    assert err.value.path.startswith("ledger-gossip.announce[1].entry") and err.value.code == "signature"
    with pytest.raises(InvalidObject) as err:
        rwire.verify_announce(Announce((listing().raw,)), now=None)
    assert err.value.code == "kind"
    with pytest.raises(InvalidObject) as err:  # from the future
        rwire.verify_announce(Announce((entry.raw,)), now=T - 10_000)
    assert err.value.code == "future"


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False)
    | st.binary(max_size=40)
    | st.sampled_from([A, B, b"", b"\x01" * 32])
    | st.sampled_from(["get-heads", "heads", "get-range", "entries", "end", "swapmeet/1", "announce", "fork-alert"])
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=20,
)
frames = st.one_of(
    st.builds(
        GetHeads,
        st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=5, unique=True).map(
            lambda keys: tuple(sorted(keys))
        ),
    ),
    st.builds(GetHeads, st.none(), st.sampled_from([b"", A, C])),
    st.builds(
        Heads,
        st.lists(
            st.builds(
                Head, st.binary(min_size=32, max_size=32), st.integers(1, 2**53), st.binary(min_size=32, max_size=32)
            ),
            max_size=5,
            unique_by=lambda h: h.author,
        ).map(lambda heads: tuple(sorted(heads))),
    ),
    st.builds(GetRange, st.binary(min_size=32, max_size=32), st.integers(0, 2**53), st.integers(1, MAX_RANGE)),
    st.builds(Entries, st.lists(st.binary(min_size=1, max_size=64), max_size=5).map(tuple)),
    st.just(End()),
)


def decoded_or_refused(decode, data: bytes):
    try:
        return decode(data)
    except InvalidObject:
        return None


@SETTINGS
@given(frames)
def test_valid_frames_round_trip(frame) -> None:
    assert rwire.decode_frame(rwire.encode_frame(frame)) == frame


@SETTINGS
@given(st.binary(max_size=300) | cbor_values.map(cbor.encode))
def test_hostile_bytes_raise_only_invalid_object(data: bytes) -> None:
    frame = decoded_or_refused(rwire.decode_frame, data)
    if frame is not None:  # accepted: then it is the one encoding of that frame
        assert rwire.encode_frame(frame) == data
    message = decoded_or_refused(rwire.decode_gossip, data)
    if message is not None:
        assert rwire.encode_gossip(message) == data
        if isinstance(message, ForkAlert):
            decoded_or_refused(rwire.verify_fork_alert, message)
        else:
            decoded_or_refused(lambda m: rwire.verify_announce(m, now=T), message)
    decoded_or_refused(rwire.entry_position, data)


@SETTINGS
@given(cbor_values)
def test_hostile_values_in_frames_raise_only_invalid_object(payload) -> None:
    for tag in ("get-heads", "heads", "get-range", "entries", "end"):
        data = cbor.encode([tag, payload])
        frame = decoded_or_refused(rwire.decode_frame, data)
        if frame is not None:
            assert rwire.encode_frame(frame) == data
    for kind in ("announce", "fork-alert"):
        decoded_or_refused(rwire.decode_gossip, cbor.encode(["swapmeet/1", kind, payload]))


ALICE_4 = make_chain(ALICE, 4)


@SETTINGS
@given(st.data())
def test_hostile_replies_raise_only_invalid_object(data) -> None:
    """Whatever a peer answers, to heads or to a range, the puller takes it or raises InvalidObject."""
    puller = Puller(Policy(followed=frozenset({A, B})), {A: (2, b"\x05" * 32)})
    request = puller.next_frame()
    if data.draw(st.booleans()):
        puller.on_reply(Heads((Head(A, 9, b"\x06" * 32),)))
        request = puller.next_frame()
        assert request == GetRange(A, 2, 7)
    chain = ALICE_4
    real = st.lists(st.sampled_from([e.raw for e in chain]), max_size=4).map(lambda raws: Entries(tuple(raws)))
    reply = data.draw(frames | real)
    try:
        raws = puller.on_reply(reply)
    except InvalidObject:
        return
    if isinstance(request, GetHeads):
        assert isinstance(reply, Heads) and raws == []
    else:
        assert isinstance(reply, Entries) and raws == [chain[2].raw, chain[3].raw][: len(raws)]

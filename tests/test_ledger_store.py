"""The ledger store: appending, ingesting from peers, forks, append-only triggers, export/import, damage checks."""

from __future__ import annotations

import hashlib
import itertools
import sqlite3
import threading
from pathlib import Path

import pytest
from swapmeet.ledger import schema
from swapmeet.ledger.errors import ExportFileError, LedgerDamaged, LedgerMissing
from swapmeet.ledger.export_file import ENTRY_PREFIX, read_export, validate_export, write_export
from swapmeet.ledger.store import DECODE_CHUNK, LedgerStore
from swapmeet.protocol import build, cbor, evidence
from swapmeet.protocol.boundary import ZERO_ID
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.objects import LedgerEntry

from tests.protocol_fixtures import ALICE, BOB, CAROL, T, complete_exchange, listing

X = complete_exchange()  # Alice and Bob are its parties: both may record it


def make_chain(identity=ALICE, n: int = 5, *, start_time: int = T + 30) -> list[LedgerEntry]:
    """A valid chain of ``n`` entries, built without a store."""
    out: list[LedgerEntry] = []
    prev = ZERO_ID
    for seq in range(1, n + 1):
        entry = build.make_entry(identity, seq=seq, prev=prev, time=start_time + seq, payload=X)
        out.append(entry)
        prev = entry.id
    return out


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite"


@pytest.fixture
def store(db: Path):
    with LedgerStore.open(db) as s:
        yield s


def snapshot(store: LedgerStore) -> list[bytes]:
    return list(store.iter_raw())


# --------------------------------------------------------------------------- append_own


def test_append_own_builds_a_linked_chain(store: LedgerStore) -> None:
    entries = [store.append_own(ALICE, X, T + 30 + i) for i in range(5)]
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev == ZERO_ID
    for before, after in itertools.pairwise(entries):
        assert after.prev == before.id
    assert store.heads() == {ALICE.public_key: (5, entries[-1].id)}
    assert [e.raw for e in store.chain(ALICE.public_key)] == [e.raw for e in entries]
    assert store.entries_after(ALICE.public_key, 3, 10) == [entries[3].raw, entries[4].raw]
    assert store.entries_after(ALICE.public_key, 0, 2) == [entries[0].raw, entries[1].raw]
    assert store.get(ALICE.public_key, 2) == entries[1].raw
    counts = store.counts()
    assert (counts.chains, counts.entries, counts.forks) == (1, 5, 0)


def test_append_own_once_returns_the_entry_already_holding_the_payload(store: LedgerStore) -> None:
    first = store.append_own(ALICE, X, T + 30, once=True)
    again = store.append_own(ALICE, X, T + 40, once=True)  # a retry after a crash: nothing new
    assert again == first and store.head(ALICE.public_key) == (1, first.id)
    store.append_own(ALICE, X, T + 50)  # without once: appended again
    assert store.head(ALICE.public_key)[0] == 2  # type: ignore[index]
    bobs = store.append_own(BOB, X, T + 60, once=True)  # once is per chain
    holders = [(e.author, e.seq) for e in store.entries_with_payload(X.id)]
    assert sorted(holders) == sorted([(ALICE.public_key, 1), (ALICE.public_key, 2), (BOB.public_key, bobs.seq)])


def test_append_own_refuses_a_payload_not_of_the_author(store: LedgerStore) -> None:
    with pytest.raises(InvalidObject, match="not a party"):
        store.append_own(CAROL, X, T + 30)
    assert store.heads() == {}


def test_reopen_persists_and_continues(db: Path) -> None:
    with LedgerStore.open(db) as s:
        first = [s.append_own(ALICE, X, T + 30 + i) for i in range(3)]
    with LedgerStore.open(db) as s:
        assert s.heads()[ALICE.public_key] == (3, first[-1].id)
        fourth = s.append_own(ALICE, X, T + 40)
        assert (fourth.seq, fourth.prev) == (4, first[-1].id)
    with LedgerStore.open(db, readonly=True) as s:
        assert [e.seq for e in s.chain(ALICE.public_key)] == [1, 2, 3, 4]
        assert s.verify().ok


def test_appends_from_worker_threads(store: LedgerStore) -> None:
    # The node calls the store through trio.to_thread: the connection must work from any thread.
    errors: list[BaseException] = []

    def work(identity) -> None:
        try:
            for i in range(5):
                store.append_own(identity, X, T + 30 + i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(who,)) for who in (ALICE, BOB)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert {a: seq for a, (seq, _) in store.heads().items()} == {ALICE.public_key: 5, BOB.public_key: 5}
    assert store.verify().ok


def test_missing_ledger_is_not_created_by_readonly_open(db: Path) -> None:
    with pytest.raises(LedgerMissing):
        LedgerStore.open(db, readonly=True)
    assert not db.exists()


# --------------------------------------------------------------------------- append-only schema


def test_update_and_delete_of_chain_rows_are_refused_by_triggers(store: LedgerStore, db: Path) -> None:
    chain = [store.append_own(ALICE, X, T + 30 + i) for i in range(3)]
    other = build.make_entry(ALICE, seq=2, prev=chain[0].id, time=T + 99, payload=X)
    assert store.ingest([other.raw]).forks == [(ALICE.public_key, 2)]
    before = snapshot(store)
    raw_conn = sqlite3.connect(db, isolation_level=None)
    try:
        for statement in (
            "UPDATE entries SET time = 0",
            "UPDATE entries SET raw = x'00' WHERE seq = 2",
            "DELETE FROM entries WHERE seq = 3",
            "DELETE FROM entries",
            "UPDATE forks SET seq = 1",
            "DELETE FROM forks",
            # REPLACE would delete the old row without a DELETE trigger firing: the insert guard stops it.
            "INSERT OR REPLACE INTO entries SELECT * FROM entries WHERE seq = 2",
            "INSERT INTO entries SELECT author, 9, randomblob(32), prev, time, kind, payload_id, raw"
            " FROM entries WHERE seq = 3",
            "INSERT INTO forks SELECT * FROM entries WHERE seq = 1",
        ):
            with pytest.raises(sqlite3.IntegrityError):
                raw_conn.execute(statement)
    finally:
        raw_conn.close()
    assert snapshot(store) == before


# --------------------------------------------------------------------------- ingest


def test_ingest_stores_the_valid_prefix_and_says_why_the_rest_was_refused(store: LedgerStore) -> None:
    alice = make_chain(ALICE, 9)
    bob = make_chain(BOB, 3)
    batch = [e.raw for e in alice[:3]] + [e.raw for e in alice[4:]] + [e.raw for e in bob]
    result = store.ingest(batch)
    assert result.accepted == 3 + 3
    assert result.refused == 5  # seq 5..9 of Alice: 4 is missing
    assert store.head(ALICE.public_key) == (3, alice[2].id)
    assert store.head(BOB.public_key) == (3, bob[2].id)  # another author's entries are unaffected
    first = result.refusals[0]
    assert (first.author, first.seq, first.code) == (ALICE.public_key, 5, "gap")
    assert "missing seq 4" in first.reason
    assert "missing seq 4..8" in result.refusals[-1].reason
    assert result.heads == {ALICE.public_key: 3, BOB.public_key: 3}
    assert not result.ok
    # The positions of what was stored: the only items a node may pass on to its peers.
    assert result.stored == [0, 1, 2, 8, 9, 10]
    assert store.ingest(batch).stored == []  # held now: duplicates, not stored again


def test_ingest_refuses_a_bad_link(store: LedgerStore) -> None:
    alice = make_chain(ALICE, 3)
    stray = build.make_entry(ALICE, seq=4, prev=b"\x99" * 32, time=T + 50, payload=X)
    result = store.ingest([*(e.raw for e in alice), stray.raw])
    assert result.accepted == 3
    [refusal] = result.refusals
    assert (refusal.seq, refusal.code) == (4, "link")
    assert "bad link" in refusal.reason and "seq 3" in refusal.reason
    assert store.head(ALICE.public_key) == (3, alice[2].id)


def test_ingest_refuses_a_flipped_signature_byte_with_the_field_path(store: LedgerStore) -> None:
    alice = make_chain(ALICE, 4)
    tampered = bytearray(alice[2].raw)
    tampered[-1] ^= 0x01  # the entry's signature is the last element of its envelope
    result = store.ingest([alice[0].raw, alice[1].raw, bytes(tampered), alice[3].raw])
    assert result.accepted == 2
    bad, after = result.refusals
    assert (bad.author, bad.seq, bad.code) == (ALICE.public_key, 3, "invalid")
    assert "entry.signature" in bad.reason
    assert (after.seq, after.code) == (4, "gap")
    assert "entry.signature" in str(bad) and "seq 3" in str(bad)


def test_ingest_reports_garbage_without_an_author(store: LedgerStore) -> None:
    result = store.ingest([b"\xff\x00 not cbor", b""])
    assert result.refused == 2 and result.accepted == 0
    assert all(r.author is None and r.code == "invalid" for r in result.refusals)
    assert str(result.refusals[0]).startswith("item 0: invalid:")


def test_identical_copy_is_not_a_fork(store: LedgerStore) -> None:
    alice = make_chain(ALICE, 3)
    store.ingest([e.raw for e in alice])
    again = store.ingest([e.raw for e in alice])
    assert (again.accepted, again.duplicates, again.forks, again.refused) == (0, 3, [], 0)
    assert store.forked_authors() == set()
    assert store.fork_proofs() == []


def test_a_different_valid_entry_at_a_held_seq_is_a_fork(store: LedgerStore) -> None:
    alice = make_chain(ALICE, 4)
    store.ingest([e.raw for e in alice])
    other = build.make_entry(ALICE, seq=2, prev=alice[0].id, time=T + 77, payload=X)
    result = store.ingest([other.raw])
    assert result.forks == [(ALICE.public_key, 2)] and result.ok
    # Both are kept: the chain as it was, and the fork entry as evidence.
    assert store.get(ALICE.public_key, 2) == alice[1].raw
    assert store.head(ALICE.public_key) == (4, alice[3].id)
    assert other.raw in snapshot(store)
    assert store.forked_authors() == {ALICE.public_key}
    assert store.counts().forks == 1
    [proof] = store.fork_proofs()
    assert store.fork_proofs(BOB.public_key) == []
    checked = evidence.decode_proof(proof.raw)  # what a third party runs, offline, from the bytes alone
    assert isinstance(checked, evidence.ForkProof)
    assert (checked.author, checked.seq) == (ALICE.public_key, 2)
    assert {checked.first.id, checked.second.id} == {alice[1].id, other.id}
    # Receiving the fork entry again is a duplicate, not a second fork.
    assert store.ingest([other.raw]).duplicates == 1
    assert store.counts().forks == 1
    assert store.verify().ok


def test_fork_entries_per_author_are_capped(store: LedgerStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from swapmeet.ledger import store as store_module

    monkeypatch.setattr(store_module, "MAX_FORKS_PER_AUTHOR", 2)
    alice = make_chain(ALICE, 2)
    variants = [build.make_entry(ALICE, seq=2, prev=alice[0].id, time=T + 100 + i, payload=X) for i in range(3)]
    result = store.ingest([*(e.raw for e in alice), *(v.raw for v in variants)])
    assert len(result.forks) == 2
    [refusal] = result.refusals
    assert refusal.code == "fork-limit" and "proof enough" in refusal.reason
    assert store.forked_authors() == {ALICE.public_key}


def test_ingest_rolls_back_the_whole_batch_when_the_source_fails(store: LedgerStore) -> None:
    alice = make_chain(ALICE, 3)

    def source():
        # More than one decode chunk, so the failure comes inside the write transaction.
        for _ in range(DECODE_CHUNK):
            yield alice[0].raw
        yield alice[1].raw
        raise ExportFileError("the file went bad half-way")

    with pytest.raises(ExportFileError):
        store.ingest(source())
    assert store.heads() == {}


def test_own_chain_continues_after_ingesting_it_elsewhere(tmp_path: Path) -> None:
    with LedgerStore.open(tmp_path / "a.sqlite") as a, LedgerStore.open(tmp_path / "b.sqlite") as b:
        for i in range(3):
            a.append_own(ALICE, X, T + 30 + i)
        assert b.ingest(a.entries_after(ALICE.public_key, 0, 100)).accepted == 3
        a.append_own(ALICE, X, T + 40)
        seq, _ = b.head(ALICE.public_key)
        assert b.ingest(a.entries_after(ALICE.public_key, seq, 100)).accepted == 1
        assert b.heads() == a.heads()


# --------------------------------------------------------------------------- export / import


def populated(store: LedgerStore) -> None:
    alice = make_chain(ALICE, 5)
    bob = make_chain(BOB, 3)
    fork = build.make_entry(ALICE, seq=3, prev=alice[1].id, time=T + 88, payload=X)
    result = store.ingest([*(e.raw for e in alice), *(e.raw for e in bob), fork.raw])
    assert result.ok and result.forks


def test_export_then_import_into_a_fresh_store_round_trips_exactly(store: LedgerStore, tmp_path: Path) -> None:
    populated(store)
    path = tmp_path / "ledger.cbor"
    assert store.export(path) == 9
    assert validate_export(path) == 9
    with LedgerStore.open(tmp_path / "fresh.sqlite") as fresh:
        result = fresh.import_file(path)
        assert (result.accepted, len(result.forks), result.refused) == (8, 1, 0)
        assert snapshot(fresh) == snapshot(store)
        assert fresh.heads() == store.heads()
        assert fresh.forked_authors() == {ALICE.public_key}
        assert [p.raw for p in fresh.fork_proofs()] == [p.raw for p in store.fork_proofs()]
        again = fresh.import_file(path)
        assert (again.accepted, again.duplicates, again.forks) == (0, 9, [])
    # The export of the same ledger is byte-identical (no timestamps, canonical order).
    second = tmp_path / "again.cbor"
    store.export(second)
    assert second.read_bytes() == path.read_bytes()


def test_export_of_one_author(store: LedgerStore, tmp_path: Path) -> None:
    populated(store)
    path = tmp_path / "bob.cbor"
    assert store.export(path, author=BOB.public_key) == 3
    assert list(read_export(path)) == list(store.iter_raw(BOB.public_key))
    # A one-author export refuses an entry by someone else.
    bad = tmp_path / "mixed.cbor"
    write_export(bad, [*store.iter_raw(BOB.public_key), store.get(ALICE.public_key, 1) or b""], author=BOB.public_key)
    with pytest.raises(ExportFileError, match="another author"):
        validate_export(bad)


def _export_bytes(store: LedgerStore, tmp_path: Path) -> bytes:
    path = tmp_path / "good.cbor"
    store.export(path)
    return path.read_bytes()


def bad_files(good: bytes, entry_raw: bytes) -> dict[str, tuple[bytes, str]]:
    """name -> (file bytes, a fragment of the expected message)."""
    header = cbor.encode(["swapmeet/1", "ledger-export", {}])
    end = cbor.encode(["swapmeet/1", "ledger-export-end", {"entries": 1}])
    a_listing = listing().raw
    return {
        "empty": (b"", "empty file"),
        "truncated-inside-entry": (good[: len(good) // 2], "truncated"),
        "truncated-between-items": (header + cbor.encode(entry_raw), "without the end marker"),
        "garbage": (b"\x00garbage\xff" * 50, "not a ledger export"),
        "random-bytes": (hashlib.sha256(b"x").digest() * 40, "not a ledger export"),
        "a-listing-not-an-export": (a_listing, "single swapmeet listing"),
        "a-listing-inside": (header + cbor.encode(a_listing) + end, "found a listing"),
        "wrong-header-kind": (cbor.encode(["swapmeet/1", "fork-proof", {}]) + end, "found a fork-proof"),
        "huge-entry-length": (header + b"\x5b" + (1 << 40).to_bytes(8, "big") + b"\x00" * 64, "exceeds the limit"),
        "huge-header": (b"\x83\x6aswapmeet/1\x6dledger-export\xa1\x66author\x5a\x7f\xff\xff\xff", "larger than"),
        "wrong-count": (header + cbor.encode(entry_raw) + end[:-1] + b"\x02", "says 2 entries"),
        "trailing-data": (good + b"\x00", "after the end marker"),
        "indefinite-length": (header + b"\x5f" + cbor.encode(entry_raw) + b"\xff", "indefinite"),
        "not-an-entry-item": (header + cbor.encode(42) + end, "expected an entry"),
        "unknown-header-field": (cbor.encode(["swapmeet/1", "ledger-export", {"x": 1}]) + end, "unknown header field"),
        "bad-header-author": (cbor.encode(["swapmeet/1", "ledger-export", {"author": b"short"}]), "32-byte"),
        "entry-prefix-garbage": (header + cbor.encode(ENTRY_PREFIX + b"junk") + end, ""),
    }


def test_bad_export_files_are_refused_with_a_position_and_import_nothing(store: LedgerStore, tmp_path: Path) -> None:
    populated(store)
    good = _export_bytes(store, tmp_path)
    entry_raw = store.get(ALICE.public_key, 1) or b""
    with LedgerStore.open(tmp_path / "target.sqlite") as target:
        target.ingest([entry_raw])
        before = snapshot(target)
        for name, (data, fragment) in bad_files(good, entry_raw).items():
            path = tmp_path / f"{name}.cbor"
            path.write_bytes(data)
            if name == "entry-prefix-garbage":
                # Framing is fine; the entry itself fails the boundary: refused, not a bad file.
                result = target.import_file(path)
                assert result.refused == 1 and result.refusals[0].code == "invalid", name
                continue
            with pytest.raises(ExportFileError) as err:
                target.import_file(path)
            message = str(err.value)
            assert str(path) in message and fragment in message, (name, message)
            assert "\n" not in message
            assert err.value.exit_code == 2
            assert snapshot(target) == before, name


def test_missing_export_file(tmp_path: Path) -> None:
    with pytest.raises(ExportFileError, match="cannot read"):
        validate_export(tmp_path / "nope.cbor")


# --------------------------------------------------------------------------- damage


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_garbage_file_is_refused_and_left_alone(db: Path) -> None:
    db.write_bytes(b"this is not a database at all" * 100)
    digest = _digest(db)
    with pytest.raises(LedgerDamaged, match="not an SQLite database"):
        LedgerStore.open(db)
    assert _digest(db) == digest


def test_corrupted_page_is_refused_and_left_alone(db: Path) -> None:
    with LedgerStore.open(db) as s:
        s.ingest([e.raw for e in make_chain(ALICE, 40)])
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) > 4 * page
    for i in range(2 * page + 16, 3 * page):  # trash a whole page past the schema page
        data[i] = 0xA5
    db.write_bytes(bytes(data))
    digest = _digest(db)
    with pytest.raises(LedgerDamaged) as err:
        LedgerStore.open(db)
    assert str(db) in str(err.value) and "not opened" in str(err.value)
    assert _digest(db) == digest
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0


def test_truncated_database_is_refused(db: Path) -> None:
    with LedgerStore.open(db) as s:
        s.ingest([e.raw for e in make_chain(ALICE, 40)])
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])
    with pytest.raises(LedgerDamaged):
        LedgerStore.open(db)


@pytest.mark.parametrize(
    ("tamper", "fragment"),
    [
        ("DROP TRIGGER entries_no_delete", "modified outside swapmeet"),
        ("CREATE TRIGGER sneaky AFTER INSERT ON heads BEGIN SELECT 1; END", "unexpected: sneaky"),
        ("PRAGMA user_version = 7", "schema version 7"),
        ("PRAGMA application_id = 1", "not a swapmeet ledger"),
    ],
)
def test_schema_changes_are_refused(db: Path, tamper: str, fragment: str) -> None:
    with LedgerStore.open(db) as s:
        s.append_own(ALICE, X, T + 30)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(tamper)
    conn.close()
    with pytest.raises(LedgerDamaged, match=fragment):
        LedgerStore.open(db)


def test_verify_finds_rows_altered_behind_the_triggers(db: Path) -> None:
    with LedgerStore.open(db) as s:
        alice = [s.append_own(ALICE, X, T + 30 + i) for i in range(4)]
    # Someone with the file drops the trigger, rewrites history, and puts the trigger back.
    trigger_sql = next(
        sql for kind, name, _, sql in schema.EXPECTED if kind == "trigger" and name == "entries_no_update"
    )
    tampered = bytearray(alice[2].raw)
    tampered[-1] ^= 1
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("UPDATE entries SET time = 1 WHERE seq = 2")
    conn.execute("UPDATE entries SET raw = ? WHERE seq = 3", (bytes(tampered),))
    conn.execute(trigger_sql)
    conn.close()
    with LedgerStore.open(db, readonly=True) as s:
        report = s.verify()
        assert not report.ok
        assert report.problem_count == 2
        assert "seq 2: the indexed columns do not match" in report.problems[0]
        assert "seq 3: the stored entry does not verify: entry.signature" in report.problems[1]
        with pytest.raises(LedgerDamaged, match="no longer verifies"):
            list(s.chain(ALICE.public_key))


def test_interrupted_creation_leaves_an_empty_file_that_is_initialized(db: Path) -> None:
    db.write_bytes(b"")  # the process died between creating the file and committing the schema
    with LedgerStore.open(db) as s:
        assert s.append_own(ALICE, X, T + 30).seq == 1


def test_streaming_spans_many_pages(store: LedgerStore) -> None:
    # More rows than one page for two authors, plus forks: order and completeness across page boundaries.
    alice = make_chain(ALICE, 300)
    bob = make_chain(BOB, 10)
    forks = [build.make_entry(BOB, seq=5, prev=bob[3].id, time=T + 500 + i, payload=X) for i in range(3)]
    result = store.ingest([*(e.raw for e in alice), *(e.raw for e in bob), *(f.raw for f in forks)])
    assert result.accepted == 310 and len(result.forks) == 3
    raws = snapshot(store)
    assert len(raws) == 313
    expected_bob = [e.raw for e in bob[:5]] + sorted((f.raw for f in forks), key=lambda r: hashlib.sha256(r).digest())
    expected_bob += [e.raw for e in bob[5:]]
    by_author = sorted([(ALICE.public_key, [e.raw for e in alice]), (BOB.public_key, expected_bob)])
    assert raws == [r for _, chain in by_author for r in chain]
    assert [e.seq for e in store.chain(ALICE.public_key)] == list(range(1, 301))
    assert len(store.fork_proofs(BOB.public_key)) == 3
    report = store.verify()
    assert report.ok and (report.entries, report.forks, report.forked_authors) == (310, 3, 1)

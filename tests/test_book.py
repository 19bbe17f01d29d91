"""The offer book (node/book.py): add semantics, search, offers, expiry, restarts, hostile queries.

Every object is built with the protocol builders, so it went through the trust
boundary exactly as one from the network would. Throughput and latency figures
are measured by ``python bench/book.py``, not here.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from swapmeet.node.book import AddStatus, BookError, OfferBook, fts_query
from swapmeet.node.home import Home
from swapmeet.protocol import build
from swapmeet.protocol.boundary import MAX_LISTING_LIFETIME
from swapmeet.protocol.identity import Identity
from swapmeet.protocol.objects import Listing

from .protocol_fixtures import ALICE, BOB, CAROL, T, item

DAY = 86_400


def mk(
    author: Identity = ALICE,
    title: str = "Road bike",
    *,
    series: bytes | None = None,
    rev: int = 0,
    created: int = T,
    expires: int = T + DAY,
    have: tuple[str, ...] = ("2 x bike",),
    want: tuple[str, ...] = ("3 kg x apples",),
    **kw: object,
) -> Listing:
    return build.make_listing(
        author,
        title=title,
        have=[item(h) for h in have],
        want=[item(w) for w in want],
        created=created,
        expires=expires,
        series=series,
        rev=rev,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def book(tmp_path: Path) -> Iterator[OfferBook]:
    b = OfferBook(tmp_path / "book.sqlite")
    yield b
    b.close()


def titles(listings: list[Listing]) -> list[str]:
    return [x.title for x in listings]


# ---------------------------------------------------------------------- adding and text search


def test_add_and_search_by_title_description_tags_and_items(book: OfferBook) -> None:
    bike = mk(title="Road bike, barely used", desc="Aluminium frame, 56 cm", tags=["cycling"])
    drill = mk(BOB, title="Cordless drill", desc="Comes with two batteries", tags=["tools", "diy"], have=("1 x drill",))
    sofa = mk(CAROL, title="Moving out sale", desc="Everything must go", have=("1 x sofa",))
    for x in (bike, drill, sofa):
        assert book.add(x).status is AddStatus.NEW
    assert titles(book.search("bike", now=T)) == ["Road bike, barely used"]
    assert titles(book.search("batteries", now=T)) == ["Cordless drill"]  # description
    assert titles(book.search("diy", now=T)) == ["Cordless drill"]  # tag
    assert titles(book.search("sofa", now=T)) == ["Moving out sale"]  # name of an item it has
    assert titles(book.search("cordless drill", now=T)) == ["Cordless drill"]  # terms are ANDed
    assert book.search("cordless bike", now=T) == []
    assert sorted(titles(book.search("bike OR sofa", now=T))) == ["Moving out sale", "Road bike, barely used"]
    assert titles(book.search("DRILL", now=T)) == ["Cordless drill"]  # case-insensitive
    assert titles(book.search("batter", now=T)) == ["Cordless drill"]  # prefix
    assert titles(book.search("aluminium", now=T)) == titles(book.search("alumínium", now=T))  # diacritics folded
    assert len(book.search(now=T)) == 3  # no query: every live listing, newest first
    assert book.search("...", now=T) == []  # text with nothing searchable matches nothing


def test_title_hits_rank_above_description_hits(book: OfferBook) -> None:
    book.add(mk(title="Garden hose", desc="Also fits a lawn mower attachment"))
    book.add(mk(BOB, title="Lawn mower", desc="Petrol, self propelled"))
    book.add(mk(CAROL, title="Assorted tools", desc="a mower blade somewhere", tags=["mower"]))
    assert titles(book.search("mower", now=T)) == ["Lawn mower", "Assorted tools", "Garden hose"]


def test_filters_kind_category_author_wants_have(book: OfferBook) -> None:
    book.add(mk(title="Road bike", category="sports/bikes", want=("3 kg x Apples",)))
    book.add(mk(title="Tennis racket", category="sports", have=("1 x racket",), want=("1 x lesson",)))
    book.add(mk(BOB, title="Jacket", category="sportswear", have=("1 x jacket",), want=()))
    book.add(mk(BOB, title="Piano lessons", type="service", category="music", have=("1 h x lesson",), want=()))
    book.add(mk(CAROL, title="Cargo bike rental", type="rental", window=(T, T + 3600), category="sports/bikes/cargo"))
    assert titles(book.search(kind="service", now=T)) == ["Piano lessons"]
    assert sorted(titles(book.search(category="sports", now=T))) == ["Cargo bike rental", "Road bike", "Tennis racket"]
    assert sorted(titles(book.search(category="sports/bikes/", now=T))) == ["Cargo bike rental", "Road bike"]
    assert titles(book.search(category="sports/bikes/cargo", now=T)) == ["Cargo bike rental"]
    assert book.search(category="sports/bike", now=T) == []  # whole segments only
    assert sorted(titles(book.search(author=BOB.public_key, now=T))) == ["Jacket", "Piano lessons"]
    assert sorted(titles(book.search(wants="apples", now=T))) == ["Cargo bike rental", "Road bike"]
    assert titles(book.search(wants="lesson", now=T)) == ["Tennis racket"]
    assert titles(book.search(have="lesson", now=T)) == ["Piano lessons"]
    assert titles(book.search("bike", kind="rental", wants="APPLES", now=T)) == ["Cargo bike rental"]
    assert book.search("bike", author=BOB.public_key, now=T) == []
    assert book.search(kind="loan", now=T) == []


def test_search_hides_expired_and_honours_limit(book: OfferBook) -> None:
    for i in range(5):
        book.add(mk(title=f"Chair {i}", created=T + i, expires=T + 100 + i))
    assert titles(book.search("chair", now=T + 102)) == ["Chair 4", "Chair 3"]  # equal rank: newest first
    assert titles(book.search(now=T, limit=2)) == ["Chair 4", "Chair 3"]
    assert titles(book.search(now=T, limit=2, offset=2)) == ["Chair 2", "Chair 1"]
    assert book.search("chair", now=T + 200) == []


def test_add_refuses_bytes_and_other_kinds(book: OfferBook) -> None:
    listing = mk()
    with pytest.raises(TypeError):
        book.add(listing.raw)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        book.add_many([listing, b"raw"])  # type: ignore[list-item]
    assert book.stats().total == 0


# ---------------------------------------------------------------------- versions and withdrawals


def test_newer_rev_replaces_older_rev_is_stale(book: OfferBook) -> None:
    series = b"\x51" * 16
    v0 = mk(title="Road bike", series=series, rev=0)
    v1 = mk(title="Road bike, price lowered", series=series, rev=1, created=T + 60)
    assert book.add(v0).status is AddStatus.NEW
    assert book.add(v0).status is AddStatus.DUPLICATE
    r = book.add(v1)
    assert r.status is AddStatus.REPLACEMENT and r.forward and r.removed == (v0.id,)
    assert not book.has(v0.id) and book.get(v1.id) == v1.raw
    assert titles(book.search("bike", now=T)) == ["Road bike, price lowered"]
    assert book.search("lowered", now=T)[0].id == v1.id
    r = book.add(v0)
    assert r.status is AddStatus.STALE and not r.forward
    assert book.stats().listings == 1
    # Another author's listing with the same series is a different listing.
    assert book.add(mk(BOB, series=series, rev=0)).status is AddStatus.NEW


def test_equal_rev_is_decided_by_smaller_id_in_any_order(tmp_path: Path) -> None:
    series = b"\x52" * 16
    a = mk(title="Version A", series=series, rev=3)
    b = mk(title="Version B", series=series, rev=3)
    winner, loser = sorted((a, b), key=lambda x: x.id)
    with OfferBook(tmp_path / "1.sqlite") as one, OfferBook(tmp_path / "2.sqlite") as two:
        assert one.add(winner).status is AddStatus.NEW
        assert one.add(loser).status is AddStatus.STALE
        assert two.add(loser).status is AddStatus.NEW
        assert two.add(winner).status is AddStatus.REPLACEMENT
        # Both nodes converge on the same live set, whatever order the versions arrived in.
        assert one.ids_with_times() == two.ids_with_times() == [(T, winner.id)]


def test_withdrawal_removes_and_blocks_resurrection(book: OfferBook) -> None:
    series = b"\x53" * 16
    v0 = mk(title="Desk for a day", series=series, rev=0)
    v1 = mk(title="Desk for a day (with chair)", series=series, rev=1, created=T + 10)
    offer = build.make_offer(
        BOB, v1, take=[item("1 x bike")], give=[item("1 x cake")], created=T + 20, expires=T + 3600
    )
    book.add(v1)
    book.add(offer)
    w = build.make_withdrawal(ALICE, v1, created=T + 30)
    r = book.add(w)
    assert r.status is AddStatus.NEW and r.forward
    assert set(r.removed) == {v1.id, offer.id}
    assert book.search("desk", now=T) == [] and book.offers() == []
    # Versions created before the withdrawal arrive late: they stay withdrawn.
    assert book.add(v0).status is AddStatus.WITHDRAWN
    assert book.add(v1).status is AddStatus.WITHDRAWN
    assert book.add(offer).status is AddStatus.WITHDRAWN
    assert book.add(w).status is AddStatus.DUPLICATE
    # The tombstone is part of the live set, so sync carries it to peers.
    assert book.ids_with_times() == [(w.created, w.id)]
    assert book.withdrawal_of(ALICE.public_key, series) == w
    # An older withdrawal of the same series adds nothing; a newer one supersedes the tombstone.
    assert book.add(build.make_withdrawal(ALICE, v1, created=T + 25)).status is AddStatus.STALE
    # The author may re-list under the same series after withdrawing.
    v2 = mk(title="Desk again", series=series, rev=2, created=T + 40)
    assert book.add(v2).status is AddStatus.NEW
    w2 = build.make_withdrawal(ALICE, v2, created=T + 50)
    r = book.add(w2)
    assert r.status is AddStatus.REPLACEMENT and set(r.removed) == {w.id, v2.id}
    assert book.stats().withdrawals == 1 and book.stats().listings == 0


def test_withdrawal_before_listing_and_newer_version_survives(book: OfferBook) -> None:
    series = b"\x54" * 16
    v0 = mk(series=series, rev=0)
    w = build.make_withdrawal(ALICE, v0, created=T + 5)
    v1 = mk(series=series, rev=1, created=T + 10)
    book.add(v1)
    r = book.add(w)
    assert r.status is AddStatus.NEW and r.removed == ()  # v1 was created after the withdrawal
    assert book.has(v1.id)
    assert book.add(v0).status is AddStatus.WITHDRAWN


def test_add_with_now_refuses_expired(book: OfferBook) -> None:
    listing = mk(expires=T + 100)
    assert book.add(listing, now=T + 100).status is AddStatus.EXPIRED
    assert not book.has(listing.id)
    assert book.add(listing, now=T + 99).status is AddStatus.NEW


# ---------------------------------------------------------------------- offers


def test_offers_indexed_by_parties_and_listing(book: OfferBook) -> None:
    series = b"\x55" * 16
    v0 = mk(series=series, have=("2 x bike",))
    v1 = mk(series=series, rev=1, created=T + 5, have=("2 x bike",))
    o_bob = build.make_offer(
        BOB, v0, take=[item("1 x bike")], give=[item("3 kg x apples")], created=T + 10, expires=T + 600
    )
    counter = build.make_offer(
        ALICE,
        v0,
        take=[item("1 x bike")],
        give=[item("5 kg x apples")],
        counters=o_bob,
        created=T + 20,
        expires=T + 600,
    )
    o_carol = build.make_offer(
        CAROL, v1, take=[item("2 x bike")], give=[item("1 x cake")], created=T + 30, expires=T + 600
    )
    other = mk(BOB, title="Lamp", have=("1 x lamp",))
    o_other = build.make_offer(
        CAROL, other, take=[item("1 x lamp")], give=[item("1 x cake")], created=T + 40, expires=T + 600
    )
    for x in (v0, v1, o_bob, counter, o_carol, other, o_other):
        assert book.add(x).forward
    assert book.add(o_bob).status is AddStatus.DUPLICATE
    ids = lambda offers: {o.id for o in offers}  # noqa: E731
    assert ids(book.offers(party=ALICE.public_key)) == {o_bob.id, counter.id, o_carol.id}
    assert ids(book.offers(party=BOB.public_key)) == {o_bob.id, counter.id, o_other.id}
    # By listing id: offers on any version of that listing's series.
    assert ids(book.offers(listing=v1.id)) == {o_bob.id, counter.id, o_carol.id}
    assert ids(book.offers(listing=v0.id)) == {o_bob.id, counter.id, o_carol.id}
    assert ids(book.offers(listing=other.id)) == {o_other.id}
    assert ids(book.offers(incoming_for=ALICE.public_key)) == {o_bob.id, o_carol.id}
    assert ids(book.offers(incoming_for=BOB.public_key)) == {counter.id, o_other.id}
    assert ids(book.offers(outgoing_from=ALICE.public_key)) == {counter.id}
    assert ids(book.offers(outgoing_from=CAROL.public_key, listing=other.id)) == {o_other.id}
    assert [o.id for o in book.offers()] == [o_other.id, o_carol.id, counter.id, o_bob.id]  # newest first
    assert book.offers(party=ALICE.public_key)[0].listing == v1
    assert book.stats().offers == 4


# ---------------------------------------------------------------------- expiry


def test_prune_deletes_expired_listings_offers_and_fts_rows(book: OfferBook) -> None:
    short = mk(title="Short lived lamp", have=("1 x lamp",), expires=T + 100)
    long = mk(BOB, title="Long lived lamp", have=("1 x lamp",), expires=T + 10 * DAY)
    offer = build.make_offer(
        CAROL, long, take=[item("1 x lamp")], give=[item("1 x cake")], created=T + 1, expires=T + 200
    )
    for x in (short, long, offer):
        book.add(x)
    assert book.prune(T + 99) == 0
    assert book.prune(T + 100) == 1
    assert not book.has(short.id)
    assert book.prune(T + 200) == 1
    assert book.offers() == [] and book.stats().listings == 1
    # Gone from the full-text index too, not merely hidden by the expiry filter.
    assert titles(book.search("lamp", now=T)) == ["Long lived lamp"]
    db = sqlite3.connect(book.path)
    assert db.execute("SELECT count(*) FROM listings_fts WHERE listings_fts MATCH 'lamp'").fetchone() == (1,)
    assert db.execute("SELECT count(*) FROM listing_items").fetchone() == (2,)  # its have and want
    db.execute("INSERT INTO listings_fts (listings_fts) VALUES ('integrity-check')")  # raises if out of sync
    db.close()


def test_prune_in_chunks_and_add_many_results(book: OfferBook, monkeypatch: pytest.MonkeyPatch) -> None:
    import swapmeet.node.book as book_module

    monkeypatch.setattr(book_module, "_PRUNE_CHUNK", 2)
    series = b"\x59" * 16
    batch = [mk(title=f"Stool {i}", created=T + i, expires=T + 100) for i in range(5)]
    batch += [mk(title="Table", series=series), mk(title="Table, oak", series=series, rev=1)]
    results = book.add_many([*batch, batch[0]])
    assert [r.status for r in results] == [AddStatus.NEW] * 6 + [AddStatus.REPLACEMENT, AddStatus.DUPLICATE]
    assert book.prune(T + 100) == 5
    assert titles(book.search(now=T)) == ["Table, oak"]


def test_tombstone_outlives_the_listings_it_can_cover(book: OfferBook) -> None:
    series = b"\x56" * 16
    listing = mk(series=series, expires=T + DAY)
    w = build.make_withdrawal(ALICE, listing, created=T + 10)
    book.add(w)
    book.prune(T + 2 * DAY)
    assert book.has(w.id)
    assert book.add(listing).status is AddStatus.WITHDRAWN  # e.g. re-verified without `now` by a peer
    assert book.prune(w.created + MAX_LISTING_LIFETIME - 1) == 0
    assert book.prune(w.created + MAX_LISTING_LIFETIME) == 1
    assert book.stats().total == 0


# ---------------------------------------------------------------------- the live set


def test_ids_with_times_reflects_the_live_set(book: OfferBook) -> None:
    series = b"\x57" * 16
    a0 = mk(series=series, created=T + 3)
    a1 = mk(series=series, rev=1, created=T + 4)
    b = mk(BOB, created=T + 1, expires=T + 50)
    o = build.make_offer(CAROL, a0, take=[item("1 x bike")], give=[item("1 x cake")], created=T + 5, expires=T + 600)
    c = mk(CAROL, title="Kayak", have=("1 x kayak",), created=T + 2)
    expected: set[tuple[int, bytes]] = set()
    for x in (a0, b, o, c):
        book.add(x)
        expected.add((x.created, x.id))
    assert book.ids_with_times() == sorted(expected)
    book.add(a1)
    expected = (expected - {(a0.created, a0.id)}) | {(a1.created, a1.id)}
    assert book.ids_with_times() == sorted(expected)
    w = build.make_withdrawal(CAROL, c, created=T + 6)
    book.add(w)
    expected = (expected - {(c.created, c.id)}) | {(w.created, w.id)}
    assert book.ids_with_times() == sorted(expected)
    assert (b.created, b.id) not in book.ids_with_times(now=T + 50)  # expired but not yet pruned
    book.prune(T + 50)
    expected.discard((b.created, b.id))
    assert book.ids_with_times() == sorted(expected)
    ids = [i for _, i in sorted(expected)]
    assert book.raws([*ids, b"\x00" * 32]) == [book.get(i) for i in ids]
    assert book.raws([]) == []
    assert book.load(o.id) == o and book.load(b.id) is None and book.get(b.id) is None


def test_ids_with_prefix_resolves_short_ids(book: OfferBook) -> None:
    listings = [mk(title=f"Thing {i}", created=T + i) for i in range(40)]
    book.add_many(listings)
    for x in listings[:10]:
        hexid = x.id.hex()
        for n in (1, 2, 3, 7, 8, 64):
            expected = sorted(y.id for y in listings if y.id.hex().startswith(hexid[:n]))
            assert book.ids_with_prefix(hexid[:n], 100) == expected
            assert book.ids_with_prefix(hexid[:n].upper(), 1) == expected[:1]
    assert len(book.ids_with_prefix("", 100)) == 40
    assert sorted(book.ids_with_prefix("f", 100)) == sorted(y.id for y in listings if y.id.hex()[0] == "f")
    assert book.ids_with_prefix("xyz", 5) == [] and book.ids_with_prefix("0" * 65, 5) == []


# ---------------------------------------------------------------------- persistence and schema


def test_survives_restart(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    series = b"\x58" * 16
    v0 = mk(title="Canoe", series=series, have=("1 x canoe",))
    w = build.make_withdrawal(ALICE, v0, created=T + 10)
    kept = mk(BOB, title="Canoe paddle", have=("2 x paddle",), tags=["water"])
    offer = build.make_offer(
        CAROL, kept, take=[item("1 x paddle")], give=[item("1 x cake")], created=T + 1, expires=T + 600
    )
    with OfferBook.in_home(home) as book:
        for x in (v0, w, kept, offer):
            book.add(x)
        before = book.ids_with_times()
    assert home.book_db.exists()
    with OfferBook.in_home(home) as book:
        assert book.ids_with_times() == before
        assert titles(book.search("canoe", now=T)) == ["Canoe paddle"]
        assert titles(book.search("water", now=T)) == ["Canoe paddle"]
        assert book.offers(incoming_for=BOB.public_key) == [offer]
        assert book.add(v0).status is AddStatus.WITHDRAWN
        assert book.stats().listings == 1 and book.stats().withdrawals == 1 and book.stats().offers == 1
        assert sqlite3.connect(home.book_db).execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_opening_checks_schema_version_and_file_kind(tmp_path: Path) -> None:
    path = tmp_path / "book.sqlite"
    OfferBook(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(BookError, match="schema version 99"):
        OfferBook(path)
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(BookError, match="not an offer book"):
        OfferBook(other)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(BookError):
        OfferBook(junk)


def test_rows_are_verified_on_the_way_out(tmp_path: Path) -> None:
    path = tmp_path / "book.sqlite"
    genuine = mk(title="Genuine")
    other = mk(BOB, title="Other")
    with OfferBook(path) as book:
        book.add(genuine)
    # Someone edits the file: the row of `genuine` now carries another object's bytes.
    db = sqlite3.connect(path)
    db.execute("UPDATE objects SET raw = ? WHERE id = ?", (other.raw, genuine.id))
    db.commit()
    db.close()
    with OfferBook(path) as book:
        assert book.search(now=T) == []
        assert book.load(genuine.id) is None


def test_concurrent_adds_from_threads(book: OfferBook) -> None:
    listings = [mk(title=f"Thread item {i}", created=T + i) for i in range(40)]
    errors: list[BaseException] = []

    def worker(part: list[Listing]) -> None:
        try:
            for x in part:
                book.add(x)
                book.search("thread", now=T)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(listings[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert book.stats().listings == 40


# ---------------------------------------------------------------------- hostile queries

HOSTILE = [
    '"',
    '""',
    '"unterminated',
    "*",
    "**",
    "bike*",
    "*bike",
    "AND OR NOT",
    "AND",
    "OR",
    "NOT bike",
    "bike NOT",
    "bike AND",
    "NEAR(",
    "NEAR(bike trailer, 2)",
    "NEAR bike",
    "(",
    ")",
    "((bike)",
    "title:bike",
    "{title desc}: bike",
    "-bike",
    "^bike",
    "+",
    "bike's",
    "'",
    ";DROP TABLE listings;--",
    "\x00",
    "bike\x00trailer",
    "日本語のテキスト",
    "Fahrräder straße",
    "🚲🚲",
    "ǅ ² ́",
    "_",
    "a" * 10_000,
    " ".join(["bike"] * 500),
    "OR OR OR bike OR OR",
    "\u202e",
]


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_queries_never_raise(book: OfferBook, query: str) -> None:
    book.add(mk(title="Bike trailer", desc="Fahrräder straße 日本語", tags=["bike-parts"]))
    result = book.search(query, now=T)
    assert isinstance(result, list)
    # Hostile text in the other filters is data too.
    assert book.search(query, kind=query, category=query, author=query.encode(), wants=query, have=query, now=T) == []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.text(max_size=60))
def test_any_text_is_a_safe_query(book: OfferBook, query: str) -> None:
    if book.stats().listings == 0:
        book.add(mk(title="Bike trailer", desc="two wheels"))
    book.search(query, now=T)


def test_fts_query_quotes_every_term() -> None:
    assert fts_query(None) is None and fts_query("") is None and fts_query('" * ( NEAR') == '"NEAR"*'
    assert fts_query("road bike") == '"road"* "bike"*'
    assert fts_query("bike OR trailer hitch") == '("bike"*) OR ("trailer"* "hitch"*)'
    assert fts_query("OR") is None
    assert fts_query("x " * 100).count('"x"*') == 16  # bounded number of terms


def test_live_listings_for_matching_are_current_unexpired_in_id_order_and_bounded(book: OfferBook) -> None:
    old = mk(title="Bike v0", series=b"\x01" * 16)
    new = mk(title="Bike v1", series=b"\x01" * 16, rev=1)
    short = mk(BOB, title="Short-lived", expires=T + 10)
    other = mk(CAROL, title="Kayak", have=("1 x kayak",))
    for x in (old, new, short, other):
        book.add(x, now=T)
    live = book.live_listings(T + 100, 10)
    assert titles(live) == titles(sorted([new, other], key=lambda x: x.id))  # no superseded, no expired
    assert [x.id for x in book.live_listings(T, 10)] == sorted(x.id for x in (new, short, other))
    assert len(book.live_listings(T, 2)) == 2

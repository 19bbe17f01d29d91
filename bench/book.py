"""Benchmark of the offer book (node/book.py): adds, searches, the live set and prune, against bare SQLite.

Builds ``--listings`` signed listings (10,000; 2,000 with ``--quick``) of varied text by
50 authors (:func:`varied_listing`: random words from a small vocabulary, so common and
rare terms both occur), then measures, in one run on one machine and file system:

- ``build``: listings built and signed per second (the setup, not the book);
- ``add_one``: :meth:`OfferBook.add` one listing at a time (a transaction each), listings/s
  and µs each; ``add_many``: :meth:`OfferBook.add_many` by 100;
- ``raw_one`` / ``raw_many``, the baseline: the same listings' signed bytes and id inserted
  into a plain SQLite table (``id`` unique, ``raw``), one transaction per row and by 100,
  with the book's connection settings (WAL, ``synchronous=NORMAL``, ``temp_store=MEMORY``,
  ``BEGIN IMMEDIATE`` ... ``COMMIT``). ``ratio_add_one`` / ``ratio_add_many`` are book / raw
  in time per listing (how many raw inserts one book add costs: its indexes, item rows and
  full-text index). ``raw_fts_one`` / ``raw_fts_many``: the same inserts with an FTS5 table
  of the book's text columns filled alongside, the floor of what its full-text index costs;
- ``search``: per case (the cases of the former ``tests/test_book.py`` measurement: text
  common, two terms, rare, text + kind + category, category prefix, wants, author, hostile
  text) the hits, the first search on a freshly opened book (``cold``: the decode cache is
  empty, as after a restart, so the hits are verified through the trust boundary; SQLite's
  page cache is cold only for the first case) and the p50 and max of the repeats (``warm``);
- the raw FTS5 baseline, for the text-only cases: the same ``MATCH`` expression
  (:func:`swapmeet.node.book.fts_query` of the same text, made outside the timing) over
  ``raw_fts_one``'s file (built a transaction per listing, as the searched book), an FTS5
  table with the book's text columns, tokenizer, prefix indexes and bm25 weights, joined
  to the raw table for the signed bytes, ``LIMIT`` the book's default; ``cold`` is the
  first run of that query on a freshly opened connection. It has no expiry filter and
  decodes nothing: SQLite's floor. The cases with other filters (kind, category, wants,
  author) have no such baseline: a fair one would need the book's own tables and indexes,
  i.e. the book itself. ``ratio_cold`` / ``ratio_warm`` are book / raw (cold; warm p50);
- ``ids_with_times``: the reconciliation set of the whole book (p50 of 5 calls);
- ``prune``: deleting every listing at their common expiry (FTS5 un-indexing included).

Run: ``python bench/book.py [--quick] [--listings N]`` (``--quick`` is under 60 s on 2 cores).
The last line printed is a JSON object of every figure.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support.benchkit import loadavg, pct, run_bench
from swapmeet.node.book import _WEIGHTS, DEFAULT_LIMIT, OfferBook, fts_query
from swapmeet.protocol import build
from swapmeet.protocol.identity import Identity
from swapmeet.protocol.objects import Listing

T0 = time.monotonic()
NOW = 1_800_000_000  # the listings' clock: created from NOW on, all expiring at NOW + 30 days
DAY = 86_400
BATCH = 100

WORDS = ["bike", "trailer", "drill", "ladder", "sofa", "table", "chair", "lamp", "desk", "kayak", "canoe", "tent",
    "stove", "kettle", "guitar", "piano", "violin", "lesson", "repair", "cleaning", "moving", "garden", "hose",
    "mower", "saw", "hammer", "wrench", "camera", "lens", "tripod", "laptop", "monitor", "keyboard", "phone",
    "charger", "book", "novel", "textbook", "jacket", "boots", "scarf", "bread", "cake", "apples", "pears", "honey",
    "eggs", "firewood", "compost", "seeds", "plants", "bucket", "paint", "brush", "roller", "cargo", "van", "car",
    "room", "night", "parking"]  # fmt: skip
CATEGORIES = ["tools", "tools/garden", "tools/power", "home/furniture", "sports/bikes", "food", "services/lessons", ""]
TYPES = ["goods", "goods", "goods", "service", "loan", "task"]


def say(text: str) -> None:
    print(text, flush=True)


def varied_listing(rng: random.Random, i: int) -> Listing:
    """Listing ``i`` of the bench book: by one of 50 authors, its own series, random words throughout."""
    who = Identity(bytes([1 + i % 50]) * 32)
    words = rng.sample(WORDS, 6)
    kind = rng.choice(TYPES)
    return build.make_listing(
        who,
        title=f"{words[0]} {words[1]} number {i}",
        desc=" ".join(rng.choices(WORDS, k=20)),
        tags=sorted(set(rng.sample(WORDS, 3))),
        category=rng.choice(CATEGORIES),
        type=kind,
        have=[build.parse_item(f"{rng.randint(1, 9)} x {words[2]}")],
        want=[build.parse_item(f"{rng.randint(1, 9)} x {words[3]}")],
        due=NOW + 30 * DAY if kind == "loan" else None,
        created=NOW + i,
        expires=NOW + 30 * DAY,
        series=i.to_bytes(16, "big"),
    )


def search_cases(n: int) -> list[tuple[str, dict[str, Any]]]:
    """(name, search arguments); the rare term is a title number that exists at any book size."""
    return [
        ("text_common", {"query": "bike"}),
        ("text_two_terms", {"query": "garden mower"}),
        ("text_rare", {"query": f"number {n * 4321 // 10_000}"}),
        ("text_kind_category", {"query": "lamp", "kind": "goods", "category": "home"}),
        ("category_prefix", {"category": "tools"}),
        ("wants", {"wants": "apples"}),
        ("author", {"author": Identity(b"\x07" * 32).public_key}),
        ("hostile_text", {"query": 'NEAR( "bike * AND OR'}),
    ]


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rate(count: int, seconds: float) -> dict[str, float]:
    return {"per_s": round(count / seconds, 1), "us_each": round(seconds * 1e6 / count, 1)}


# ---------------------------------------------------------------------- the bare SQLite baseline

_FTS_TEXT = ", ".join(_WEIGHTS)  # the book's text columns, in its order
_RAW_BM25 = f"bm25(raw_fts, {', '.join(str(w) for w in _WEIGHTS.values())})"


def raw_open(path: Path, *, fts: bool) -> sqlite3.Connection:
    """A plain table of (id, signed bytes), with the book's connection settings; ``fts``: and an FTS5 table."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA temp_store = MEMORY")
    db.execute("CREATE TABLE IF NOT EXISTS raw (n INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, raw BLOB NOT NULL)")
    if fts:
        db.execute(
            # the tokenizer and prefix indexes of node/book.py's listings_fts
            f"CREATE VIRTUAL TABLE IF NOT EXISTS raw_fts USING fts5 ({_FTS_TEXT},"
            " tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3')"
        )
    return db


def raw_insert(path: Path, listings: list[Listing], batch: int, *, fts: bool = False) -> float:
    """Seconds to insert ``listings`` in transactions of ``batch`` rows (and their text, with ``fts``)."""
    db = raw_open(path, fts=fts)
    try:
        start = time.perf_counter()
        for first in range(0, len(listings), batch):
            db.execute("BEGIN IMMEDIATE")
            for x in listings[first : first + batch]:
                n = db.execute("INSERT INTO raw (id, raw) VALUES (?, ?)", (x.id, x.raw)).lastrowid
                if fts:
                    text = (x.title, x.desc, " ".join(x.tags), " ".join(i.item for i in x.have))
                    db.execute(f"INSERT INTO raw_fts (rowid, {_FTS_TEXT}) VALUES (?, ?, ?, ?, ?)", (n, *text))
            db.execute("COMMIT")
        return time.perf_counter() - start
    finally:
        db.close()


def raw_search(db: sqlite3.Connection, match: str) -> list[bytes]:
    sql = (
        "SELECT r.raw FROM raw_fts JOIN raw r ON r.n = raw_fts.rowid"
        f" WHERE raw_fts MATCH ? ORDER BY {_RAW_BM25}, r.n DESC LIMIT ?"
    )
    return [row[0] for row in db.execute(sql, (match, DEFAULT_LIMIT))]


# ---------------------------------------------------------------------- the run


def measure_adds(tmp: Path, listings: list[Listing]) -> dict[str, Any]:
    """Book and raw inserts of the same listings, each into a fresh file; the raw ones first in each pair."""
    n = len(listings)
    f: dict[str, Any] = {}
    f["raw_one"] = rate(n, raw_insert(tmp / "raw-one.sqlite", listings, 1))
    f["raw_fts_one"] = rate(n, raw_insert(tmp / "raw-fts-one.sqlite", listings, 1, fts=True))
    with OfferBook(tmp / "one.sqlite") as book:
        f["add_one"] = rate(n, timed(lambda: [book.add(x) for x in listings]))
        stored = book.stats().listings
    if stored != n:
        raise RuntimeError(f"the book holds {stored} listings after adding {n}")
    f["raw_many"] = rate(n, raw_insert(tmp / "raw-many.sqlite", listings, BATCH))
    f["raw_fts_many"] = rate(n, raw_insert(tmp / "raw-fts-many.sqlite", listings, BATCH, fts=True))
    with OfferBook(tmp / "many.sqlite") as book:
        f["add_many"] = rate(n, timed(lambda: [book.add_many(listings[i : i + BATCH]) for i in range(0, n, BATCH)]))
    f["ratio_add_one"] = round(f["add_one"]["us_each"] / f["raw_one"]["us_each"], 2)
    f["ratio_add_many"] = round(f["add_many"]["us_each"] / f["raw_many"]["us_each"], 2)
    return f


def latencies(search: Callable[[], list[Any]], repeats: int) -> dict[str, Any]:
    """One search case: its hits, the first run (cold) and the p50 and max of ``repeats`` more (warm)."""
    cold = timed(search)
    warm = [timed(search) for _ in range(repeats)]
    return {
        "hits": len(search()),
        "cold_ms": round(cold * 1e3, 3),
        "warm_p50_ms": round(pct(warm, 50) * 1e3, 3),
        "warm_max_ms": round(max(warm) * 1e3, 3),
    }


def measure_searches(tmp: Path, n: int, repeats: int) -> dict[str, Any]:
    """Every case on a freshly opened book (cold, then warm), and the text-only ones on raw FTS5."""
    out: dict[str, Any] = {}
    # Built as the searched book was (a transaction per listing: the same FTS5 segment history), opened afresh.
    raw = raw_open(tmp / "raw-fts-one.sqlite", fts=True)
    try:
        with OfferBook(tmp / "one.sqlite") as book:  # a fresh book: cold decode cache, as after a restart
            for name, kw in search_cases(n):
                case = latencies(lambda kw=kw: book.search(**kw, now=NOW), repeats)
                match = fts_query(kw["query"]) if set(kw) == {"query"} else None
                if match is not None:
                    case["raw"] = base = latencies(lambda match=match: raw_search(raw, match), repeats)
                    case["ratio_cold"] = round(case["cold_ms"] / base["cold_ms"], 2)
                    case["ratio_warm"] = round(case["warm_p50_ms"] / base["warm_p50_ms"], 2)
                out[name] = case
    finally:
        raw.close()
    return out


def run(args: argparse.Namespace, tmp: Path, cleanup: list[Callable[[], Any]]) -> dict[str, Any]:
    n = args.listings or (2_000 if args.quick else 10_000)
    repeats = 20 if args.quick else 50
    f: dict[str, Any] = {"listings": n, "quick": args.quick, "search_repeats": repeats, "loadavg_start": loadavg()}
    say(f"book bench: {n} listings, {repeats} repeats per search; files in {tmp}")
    rng = random.Random(4)
    start = time.perf_counter()
    listings = [varied_listing(rng, i) for i in range(n)]
    f["build"] = rate(n, time.perf_counter() - start)
    f.update(measure_adds(tmp, listings))
    f["search"] = measure_searches(tmp, n, repeats)
    with OfferBook(tmp / "one.sqlite") as book:
        times = [timed(book.ids_with_times) for _ in range(5)]
        f["ids_with_times"] = {"n": len(book.ids_with_times()), "p50_ms": round(pct(times, 50) * 1e3, 2)}
        start = time.perf_counter()
        pruned = book.prune(NOW + 30 * DAY)
        seconds = time.perf_counter() - start
    f["prune"] = {"n": pruned, "ms": round(seconds * 1e3, 1), **rate(max(pruned, 1), seconds)}
    return f


def report(f: dict[str, Any]) -> None:
    n = f["listings"]
    say(f"built+signed {n} listings: {f['build']['per_s']:,.0f}/s (setup, not the book)")
    for key, label, raw in (("add_one", "add one at a time", "raw_one"), ("add_many", "add_many by 100 ", "raw_many")):
        book, base = f[key], f[raw]
        say(
            f"{label}: {book['per_s']:8,.0f} listings/s ({book['us_each']:7.1f} us each);"
            f" raw SQLite {base['per_s']:8,.0f}/s ({base['us_each']:5.1f} us); book/raw {f['ratio_' + key]}x"
        )
    for key, label in (("raw_fts_one", "one at a time"), ("raw_fts_many", "by 100")):
        say(f"raw SQLite + FTS5 {label}: {f[key]['per_s']:,.0f} listings/s ({f[key]['us_each']:.1f} us each)")
    for name, c in f["search"].items():
        line = (
            f"search {name:18s} {c['hits']:3d} hits  cold {c['cold_ms']:7.2f} ms"
            f"  warm p50 {c['warm_p50_ms']:6.2f} ms  max {c['warm_max_ms']:6.2f} ms"
        )
        if "raw" in c:
            r = c["raw"]
            line += (
                f"  | raw FTS5 {r['hits']:3d} hits cold {r['cold_ms']:5.2f} p50 {r['warm_p50_ms']:5.2f} ms;"
                f" book/raw cold {c['ratio_cold']}x warm {c['ratio_warm']}x"
            )
        say(line)
    say(f"ids_with_times over {f['ids_with_times']['n']}: {f['ids_with_times']['p50_ms']} ms (p50 of 5)")
    say(f"prune of {f['prune']['n']}: {f['prune']['ms']} ms ({f['prune']['us_each']} us each)")
    say(f"wall {f['wall_s']} s, CPU {f['cpu_s']} s, load average at start {f['loadavg_start']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under 60 s on 2 cores: 2,000 listings, 20 repeats")
    parser.add_argument("--listings", type=int, default=0, help="listings in the book (default 10,000, 2,000 quick)")
    parser.add_argument("--keep", action="store_true", help="keep the book files (their path is printed)")
    return run_bench(parser.parse_args(), run, report, prefix="swapmeet-book-bench-", started=T0, say=say)


if __name__ == "__main__":
    sys.exit(main())

"""The offer book: a SQLite index of the live listings, withdrawals and offers.

The book is what a node knows about the market *right now*. Gossip and
catch-up sync feed it; the local API searches it. Unlike the ledger it is a
cache of live objects: expired objects are deleted, replaced listing versions
are deleted, and a lost book is refilled by sync from any peer. So rows here
are deleted freely and the database runs with ``synchronous=NORMAL`` (WAL):
a crash may lose the last few adds, never corrupt the file.

Only verified, typed objects enter (:meth:`OfferBook.add` refuses bytes): every
object was produced by :func:`swapmeet.protocol.boundary.decode` (directly or
through the builders), and what comes back out is decoded through it again.

Semantics of :meth:`OfferBook.add`:

- listing: one live version per ``(author, series)``. A higher ``rev``
  replaces the held version; a lower one is stale. Two *different* versions
  with the same ``rev`` are decided by the smaller id, so that every node keeps
  the same one and set reconciliation converges instead of trading the two
  forever.
- withdrawal: removes every version of ``(author, series)`` created at or
  before ``withdrawal.created``, and the offers made on those versions. It
  stays in the book as a tombstone (and in the reconciled set, so tombstones
  propagate by sync) until ``created + MAX_LISTING_LIFETIME``: by then every
  version it can withdraw has expired anyway. One tombstone per series: the
  latest wins (ties: smaller id), as for listings.
- offer: kept with its listing reference (listing id, maker, series), indexed
  by maker, taker, author and recipient. An offer on a withdrawn listing
  version is refused.

The :class:`AddResult` says what happened; ``result.forward`` (new or
replacement) is what the gossip layer forwards.

Threading: one connection, ``check_same_thread=False``, and a lock around
every method, because the node calls in from ``trio.to_thread`` worker
threads (one at a time per call, but from different threads).
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from swapmeet.protocol import boundary
from swapmeet.protocol.boundary import MAX_LISTING_LIFETIME
from swapmeet.protocol.errors import InvalidObject, SwapmeetError
from swapmeet.protocol.objects import KIND_LISTING, KIND_OFFER, KIND_WITHDRAWAL, Listing, Offer, Withdrawal

from .home import Home

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
APPLICATION_ID = 0x736D626B  # "smbk": tells a book file from any other SQLite file

BookObject = Listing | Withdrawal | Offer

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
MAX_QUERY_TERMS = 16  # bounds the cost of one search, whatever the user pastes in
MAX_TERM_CHARS = 64
_CACHE_SIZE = 4096  # decoded objects kept in memory: a decode costs ~0.35 ms (CBOR + Ed25519)
_CHUNK = 500  # ids per IN (...) query, well under SQLite's variable limit
_PRUNE_CHUNK = 500  # objects deleted per prune transaction (the lock is released between them)

# bm25 column weights: a hit in the title counts most, then tags, then item names, then the description.
_WEIGHTS = {"title": 10.0, "description": 1.0, "tags": 5.0, "items": 3.0}
_FTS_COLUMNS = tuple(_WEIGHTS)
_BM25 = f"bm25(listings_fts, {', '.join(str(w) for w in _WEIGHTS.values())})"

# A search term: a run of letters/digits (no underscore: the unicode61 tokenizer splits on it).
_TERM = re.compile(r"[^\W_]+")

_SCHEMA = f"""
-- Every live object once: what has/get/raws and reconciliation read.
-- expires: a listing's or offer's own expiry; a withdrawal's tombstone expiry.
CREATE TABLE objects (
    id      BLOB PRIMARY KEY CHECK (length(id) = 32),
    kind    TEXT NOT NULL CHECK (kind IN ('listing', 'withdrawal', 'offer')),
    created INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    raw     BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX objects_created ON objects (created, id);
CREATE INDEX objects_expires ON objects (expires);

-- The current version of each listing series. n is the FTS rowid.
CREATE TABLE listings (
    n           INTEGER PRIMARY KEY,
    id          BLOB NOT NULL UNIQUE,
    author      BLOB NOT NULL,
    series      BLOB NOT NULL,
    rev         INTEGER NOT NULL,
    type        TEXT NOT NULL,
    category    TEXT NOT NULL,
    title       TEXT NOT NULL,
    description TEXT NOT NULL,
    tags        TEXT NOT NULL,  -- space separated
    items       TEXT NOT NULL,  -- names of the items it has, space separated (searchable)
    created     INTEGER NOT NULL,
    expires     INTEGER NOT NULL,
    UNIQUE (author, series)
);
-- No index on expires: nearly every held listing is unexpired, so newest-first searches walk this one
-- backwards and stop at the limit; prune finds expired listings through objects_expires.
CREATE INDEX listings_created ON listings (created);
CREATE INDEX listings_type ON listings (type, created);
-- Covering (a category search reads no table rows): a broad category holds many listings, which are sorted.
CREATE INDEX listings_category ON listings (category, created, expires, id);

-- What each listing has and wants, by casefolded item name (the wants/have filters).
CREATE TABLE listing_items (
    side    TEXT NOT NULL CHECK (side IN ('have', 'want')),
    name    TEXT NOT NULL,
    listing INTEGER NOT NULL,
    PRIMARY KEY (side, name, listing)
) WITHOUT ROWID;
CREATE INDEX listing_items_listing ON listing_items (listing);

-- Full-text index over listings (external content: the text is stored once, in listings).
CREATE VIRTUAL TABLE listings_fts USING fts5 (
    {", ".join(_FTS_COLUMNS)},
    content = 'listings', content_rowid = 'n',
    tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3'
);
CREATE TRIGGER listings_fts_insert AFTER INSERT ON listings BEGIN
    INSERT INTO listings_fts (rowid, {", ".join(_FTS_COLUMNS)})
    VALUES (new.n, {", ".join("new." + c for c in _FTS_COLUMNS)});
END;
CREATE TRIGGER listings_fts_delete AFTER DELETE ON listings BEGIN
    INSERT INTO listings_fts (listings_fts, rowid, {", ".join(_FTS_COLUMNS)})
    VALUES ('delete', old.n, {", ".join("old." + c for c in _FTS_COLUMNS)});
END;
CREATE TRIGGER listings_fts_update AFTER UPDATE ON listings BEGIN
    INSERT INTO listings_fts (listings_fts, rowid, {", ".join(_FTS_COLUMNS)})
    VALUES ('delete', old.n, {", ".join("old." + c for c in _FTS_COLUMNS)});
    INSERT INTO listings_fts (rowid, {", ".join(_FTS_COLUMNS)})
    VALUES (new.n, {", ".join("new." + c for c in _FTS_COLUMNS)});
END;

-- Tombstones: the latest withdrawal of each (author, series).
CREATE TABLE withdrawals (
    id      BLOB PRIMARY KEY,
    author  BLOB NOT NULL,
    series  BLOB NOT NULL,
    created INTEGER NOT NULL,
    UNIQUE (author, series)
) WITHOUT ROWID;

CREATE TABLE offers (
    id              BLOB PRIMARY KEY,
    listing_id      BLOB NOT NULL,
    maker           BLOB NOT NULL,
    series          BLOB NOT NULL,
    listing_created INTEGER NOT NULL,  -- decides whether a withdrawal covers the offer's listing version
    taker           BLOB NOT NULL,
    author          BLOB NOT NULL,
    recipient       BLOB NOT NULL,
    created         INTEGER NOT NULL,
    expires         INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX offers_listing ON offers (listing_id);
CREATE INDEX offers_series ON offers (maker, series);
CREATE INDEX offers_taker ON offers (taker);
CREATE INDEX offers_author ON offers (author);
CREATE INDEX offers_recipient ON offers (recipient);
CREATE INDEX offers_expires ON offers (expires);
"""


# Facets of a listing that searches filter on and the node looks up, one row each: 'loc' (its geohash,
# for the location-prefix filter) and 'photo' (hex SHA-256 of a photo it names: the photo store keeps
# exactly the photos that held listings name). A table added after schema version 1: created where
# missing and filled from the listings held (see _setup_facets), so no version bump and no lost book.
_FACETS_SCHEMA = """
CREATE TABLE listing_facets (
    facet   TEXT NOT NULL,
    value   TEXT NOT NULL,
    listing INTEGER NOT NULL,
    PRIMARY KEY (facet, value, listing)
) WITHOUT ROWID;
CREATE INDEX listing_facets_listing ON listing_facets (listing);
"""


class BookError(SwapmeetError):
    """The book file cannot be opened: not a book, another schema version, or damaged."""


class AddStatus(StrEnum):
    NEW = "new"  # stored; nothing of its series was held before
    REPLACEMENT = "replacement"  # stored, superseding the held version (listing) or tombstone (withdrawal)
    DUPLICATE = "duplicate"  # this very object is already held
    STALE = "stale"  # a newer version (or tombstone) of the same series is held; not stored
    WITHDRAWN = "withdrawn"  # the listing (or the offer's listing) is covered by a tombstone; not stored
    EXPIRED = "expired"  # already expired at the ``now`` passed to add(); not stored


@dataclass(frozen=True, slots=True)
class AddResult:
    status: AddStatus
    id: bytes
    removed: tuple[bytes, ...] = ()  # ids this add took out of the book (older version, withdrawn listings/offers)

    @property
    def forward(self) -> bool:
        """Whether gossip should pass the object on: it changed the live book."""
        return self.status in (AddStatus.NEW, AddStatus.REPLACEMENT)

    @property
    def stored(self) -> bool:
        return self.forward


@dataclass(frozen=True, slots=True)
class BookStats:
    listings: int
    offers: int
    withdrawals: int

    @property
    def total(self) -> int:
        return self.listings + self.offers + self.withdrawals


def fts_query(text: str | None) -> str | None:
    """Turn what a user typed into a safe FTS5 query, or ``None`` if it has no searchable term.

    Every term becomes a quoted prefix match (``"bike"*``), so FTS5 operators,
    quotes, parentheses, ``NEAR(``, ``*`` and column filters in the input are
    inert text and can never cause a syntax error. Terms are ANDed; a bare
    uppercase ``OR`` between terms is kept as the one operator people expect to
    work (``bike OR trailer``). Prefix matching makes ``bike`` find ``bikes``.
    """
    if not text:
        return None
    groups: list[list[str]] = [[]]
    count = 0
    for term in _TERM.findall(text):
        if term == "OR":
            if groups[-1]:
                groups.append([])
            continue
        if count == MAX_QUERY_TERMS:
            break
        count += 1
        # _TERM never matches a double quote, so quoting needs no escaping.
        groups[-1].append(f'"{term[:MAX_TERM_CHARS]}"*')
    groups = [g for g in groups if g]
    if not groups:
        return None
    if len(groups) == 1:
        return " ".join(groups[0])
    return " OR ".join(f"({' '.join(g)})" for g in groups)


def _item_name(name: str) -> str:
    """How item names are compared by the have/wants filters: case- and space-insensitive at the ends."""
    return name.strip().casefold()


def _tombstone_expiry(w: Withdrawal) -> int:
    # Every version a withdrawal covers was created at or before it, so it has expired by this time.
    return w.created + MAX_LISTING_LIFETIME


class OfferBook:
    """The live offer book in one SQLite file (``home.book_db``). See the module docstring.

    Size: one connection, one lock and one decode cache serve every method; each public method
    is one query or one write path (add, search, prune...) and each private one a step of ``add``.
    Split into several classes, they would share that connection and lock anyway.
    """

    def __init__(self, path: str | Path, *, cache_size: int = _CACHE_SIZE) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._cache: OrderedDict[bytes, BookObject] = OrderedDict()
        self._cache_size = cache_size
        try:
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT), see _write().
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
        except sqlite3.Error as exc:
            raise BookError(f"cannot open the offer book {self.path}: {exc}") from exc
        try:
            self._setup()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise BookError(f"cannot open the offer book {self.path}: {exc}") from exc
        except BookError:
            self._db.close()
            raise

    @classmethod
    def in_home(cls, home: Home) -> OfferBook:
        home.ensure()
        return cls(home.book_db)

    def _setup(self) -> None:
        db = self._db
        db.execute("PRAGMA journal_mode = WAL")
        # A cache refilled by sync: durability of the last commits is not worth an fsync per add.
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA temp_store = MEMORY")
        db.execute("BEGIN IMMEDIATE")  # two processes opening a fresh file: one creates, the other waits
        try:
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if app_id == 0 and version == 0:
                if db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]:
                    raise BookError(f"{self.path} is a SQLite file but not an offer book")
                for statement in _split_sql(_SCHEMA):
                    db.execute(statement)
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self._setup_facets(db)
            elif app_id != APPLICATION_ID:
                raise BookError(f"{self.path} is a SQLite file but not an offer book")
            elif version != SCHEMA_VERSION:
                raise BookError(
                    f"the offer book {self.path} has schema version {version}, this swapmeet uses"
                    f" {SCHEMA_VERSION}; the book is a cache: delete the file and sync refills it"
                )
            else:
                self._setup_facets(db)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @staticmethod
    def _setup_facets(db: sqlite3.Connection) -> None:
        """Create the facets table where it is missing, filled from the listings already held (once)."""
        if db.execute("SELECT 1 FROM sqlite_schema WHERE name = 'listing_facets'").fetchone():
            return
        for statement in _split_sql(_FACETS_SCHEMA):
            db.execute(statement)
        rows = db.execute("SELECT l.n, o.raw FROM listings l JOIN objects o ON o.id = l.id").fetchall()
        for n, raw in rows:
            listing = boundary.decode(raw, kind=KIND_LISTING)  # stored verified: decodes again
            db.executemany("INSERT OR IGNORE INTO listing_facets VALUES (?, ?, ?)", _facets(listing, n))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> OfferBook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """The lock and one write transaction (rolled back on any error)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ------------------------------------------------------------------ adding

    def add(self, obj: BookObject, now: int | None = None) -> AddResult:
        """Apply one verified listing, withdrawal or offer (see the module docstring).

        With ``now``, an object already expired at ``now`` is refused (``EXPIRED``).
        """
        _check_type(obj)
        with self._write() as db:
            return self._add(db, obj, now)

    def add_many(self, objs: Iterable[BookObject], now: int | None = None) -> list[AddResult]:
        """:meth:`add` for a batch, in one transaction (what a gossip batch or a sync fetch delivers)."""
        objs = list(objs)
        for obj in objs:
            _check_type(obj)
        with self._write() as db:
            return [self._add(db, obj, now) for obj in objs]

    def _add(self, db: sqlite3.Connection, obj: BookObject, now: int | None) -> AddResult:
        if db.execute("SELECT 1 FROM objects WHERE id = ?", (obj.id,)).fetchone():
            return AddResult(AddStatus.DUPLICATE, obj.id)
        if isinstance(obj, Listing):
            result = self._add_listing(db, obj, now)
        elif isinstance(obj, Withdrawal):
            result = self._add_withdrawal(db, obj, now)
        else:
            result = self._add_offer(db, obj, now)
        if result.stored:
            self._remember(obj)
        return result

    def _add_listing(self, db: sqlite3.Connection, listing: Listing, now: int | None) -> AddResult:
        if now is not None and listing.expires <= now:
            return AddResult(AddStatus.EXPIRED, listing.id)
        key = (listing.author, listing.series)
        tomb = db.execute("SELECT created FROM withdrawals WHERE author = ? AND series = ?", key).fetchone()
        if tomb is not None and listing.created <= tomb[0]:
            return AddResult(AddStatus.WITHDRAWN, listing.id)
        held = db.execute("SELECT n, id, rev FROM listings WHERE author = ? AND series = ?", key).fetchone()
        removed: tuple[bytes, ...] = ()
        if held is not None:
            n, held_id, held_rev = held
            if (listing.rev, _neg(listing.id)) <= (held_rev, _neg(held_id)):
                return AddResult(AddStatus.STALE, listing.id)
            self._delete_listings(db, [(n, held_id)])
            removed = (held_id,)
        db.execute(
            "INSERT INTO objects (id, kind, created, expires, raw) VALUES (?, ?, ?, ?, ?)",
            (listing.id, KIND_LISTING, listing.created, listing.expires, listing.raw),
        )
        cur = db.execute(
            "INSERT INTO listings (id, author, series, rev, type, category, title, description, tags, items,"
            " created, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                listing.id,
                listing.author,
                listing.series,
                listing.rev,
                listing.type,
                listing.category,
                listing.title,
                listing.desc,
                " ".join(listing.tags),
                " ".join(i.item for i in listing.have),
                listing.created,
                listing.expires,
            ),
        )
        n = cur.lastrowid
        names = {("have", _item_name(i.item)) for i in listing.have} | {
            ("want", _item_name(i.item)) for i in listing.want
        }
        db.executemany(
            "INSERT INTO listing_items (side, name, listing) VALUES (?, ?, ?)", [(s, name, n) for s, name in names]
        )
        db.executemany("INSERT OR IGNORE INTO listing_facets VALUES (?, ?, ?)", _facets(listing, n))
        return AddResult(AddStatus.REPLACEMENT if removed else AddStatus.NEW, listing.id, removed)

    def _add_withdrawal(self, db: sqlite3.Connection, w: Withdrawal, now: int | None) -> AddResult:
        expiry = _tombstone_expiry(w)
        if now is not None and expiry <= now:
            return AddResult(AddStatus.EXPIRED, w.id)
        key = (w.author, w.series)
        removed: list[bytes] = []
        held = db.execute("SELECT id, created FROM withdrawals WHERE author = ? AND series = ?", key).fetchone()
        if held is not None:
            held_id, held_created = held
            if (w.created, _neg(w.id)) <= (held_created, _neg(held_id)):
                return AddResult(AddStatus.STALE, w.id)
            db.execute("DELETE FROM withdrawals WHERE id = ?", (held_id,))
            db.execute("DELETE FROM objects WHERE id = ?", (held_id,))
            removed.append(held_id)
        covered = db.execute(
            "SELECT n, id FROM listings WHERE author = ? AND series = ? AND created <= ?", (*key, w.created)
        ).fetchall()
        self._delete_listings(db, covered)
        removed.extend(i for _, i in covered)
        # Offers on a withdrawn version can no longer be accepted: drop them too.
        offers = [
            r[0]
            for r in db.execute(
                "SELECT id FROM offers WHERE maker = ? AND series = ? AND listing_created <= ?", (*key, w.created)
            )
        ]
        self._delete_offers(db, offers)
        removed.extend(offers)
        db.execute(
            "INSERT INTO objects (id, kind, created, expires, raw) VALUES (?, ?, ?, ?, ?)",
            (w.id, KIND_WITHDRAWAL, w.created, expiry, w.raw),
        )
        db.execute("INSERT INTO withdrawals (id, author, series, created) VALUES (?, ?, ?, ?)", (w.id, *key, w.created))
        status = AddStatus.REPLACEMENT if held is not None else AddStatus.NEW
        return AddResult(status, w.id, tuple(removed))

    def _add_offer(self, db: sqlite3.Connection, offer: Offer, now: int | None) -> AddResult:
        if now is not None and offer.expires <= now:
            return AddResult(AddStatus.EXPIRED, offer.id)
        listing = offer.listing
        tomb = db.execute(
            "SELECT created FROM withdrawals WHERE author = ? AND series = ?", (listing.author, listing.series)
        ).fetchone()
        if tomb is not None and listing.created <= tomb[0]:
            return AddResult(AddStatus.WITHDRAWN, offer.id)
        db.execute(
            "INSERT INTO objects (id, kind, created, expires, raw) VALUES (?, ?, ?, ?, ?)",
            (offer.id, KIND_OFFER, offer.created, offer.expires, offer.raw),
        )
        db.execute(
            "INSERT INTO offers (id, listing_id, maker, series, listing_created, taker, author, recipient, created,"
            " expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                offer.id,
                listing.id,
                offer.maker,
                listing.series,
                listing.created,
                offer.taker,
                offer.author,
                offer.recipient,
                offer.created,
                offer.expires,
            ),
        )
        return AddResult(AddStatus.NEW, offer.id)

    @staticmethod
    def _delete_listings(db: sqlite3.Connection, rows: Sequence[tuple[int, bytes]]) -> None:
        """Delete listings by (n, id): the row (its FTS entry goes with it, by trigger), its items, its object."""
        db.executemany("DELETE FROM listing_items WHERE listing = ?", [(n,) for n, _ in rows])
        db.executemany("DELETE FROM listing_facets WHERE listing = ?", [(n,) for n, _ in rows])
        db.executemany("DELETE FROM listings WHERE n = ?", [(n,) for n, _ in rows])
        db.executemany("DELETE FROM objects WHERE id = ?", [(i,) for _, i in rows])

    @staticmethod
    def _delete_offers(db: sqlite3.Connection, ids: Sequence[bytes]) -> None:
        db.executemany("DELETE FROM offers WHERE id = ?", [(i,) for i in ids])
        db.executemany("DELETE FROM objects WHERE id = ?", [(i,) for i in ids])

    # ------------------------------------------------------------------ the live set

    def has(self, oid: bytes) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM objects WHERE id = ?", (oid,)).fetchone() is not None

    def get(self, oid: bytes) -> bytes | None:
        """The signed bytes of a live object, or ``None``."""
        with self._lock:
            row = self._db.execute("SELECT raw FROM objects WHERE id = ?", (oid,)).fetchone()
        return None if row is None else row[0]

    def load(self, oid: bytes) -> BookObject | None:
        """A live object, typed (decoded through the trust boundary, or from the cache), or ``None``."""
        with self._lock:
            row = self._db.execute("SELECT id, kind, raw FROM objects WHERE id = ?", (oid,)).fetchone()
            if row is None:
                return None
            objs = self._decode_rows([row])
        return objs[0] if objs else None

    def ids_with_prefix(self, prefix_hex: str, limit: int = 2) -> list[bytes]:
        """Ids of live objects whose hex form starts with ``prefix_hex`` (at most ``limit``; not hex: none).

        For resolving the short ids people type; ``limit=2`` is enough to tell unique from ambiguous.
        """
        prefix_hex = prefix_hex.strip().lower()
        if len(prefix_hex) > 64 or not re.fullmatch(r"[0-9a-f]*", prefix_hex):
            return []
        width = len(prefix_hex)
        # The ids in [prefix 000..., next prefix 000...): a range scan of the primary key.
        pad = "0" * (width % 2)  # an odd number of hex digits: pad the last byte's low nibble
        sql, args = "SELECT id FROM objects WHERE id >= ?", [bytes.fromhex(prefix_hex + pad)]
        following = int(prefix_hex, 16) + 1 if width else 16**width
        if following < 16**width:  # no upper bound past "fff..."
            sql += " AND id < ?"
            args.append(bytes.fromhex(f"{following:0{width}x}" + pad))
        sql += " ORDER BY id LIMIT ?"
        args.append(max(0, limit))
        with self._lock:
            return [r[0] for r in self._db.execute(sql, args)]

    def raws(self, ids: Iterable[bytes]) -> list[bytes]:
        """The signed bytes of those of ``ids`` that are live, in the order asked (unknown ids are skipped)."""
        ids = list(ids)
        found: dict[bytes, bytes] = {}
        with self._lock:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                found.update(self._db.execute(f"SELECT id, raw FROM objects WHERE id IN ({marks})", chunk))
        return [found[i] for i in ids if i in found]

    def has_author(self, author: bytes) -> bool:
        """Whether the book holds a live listing or offer by ``author`` (someone its user may trade with)."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM listings WHERE author = ? UNION ALL SELECT 1 FROM offers WHERE author = ? LIMIT 1",
                (author, author),
            ).fetchone()
        return row is not None

    def held(self, ids: Iterable[bytes]) -> set[bytes]:
        """Those of ``ids`` the book holds (live or not yet pruned)."""
        ids = list(ids)
        found: set[bytes] = set()
        with self._lock:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                found.update(row[0] for row in self._db.execute(f"SELECT id FROM objects WHERE id IN ({marks})", chunk))
        return found

    def ids_with_times(self, now: int | None = None) -> list[tuple[int, bytes]]:
        """The live set for reconciliation: ``(created, id)`` of every listing, offer and tombstone, sorted.

        With ``now``, objects that expired at ``now`` but were not pruned yet are left out.
        """
        with self._lock:
            if now is None:
                rows = self._db.execute("SELECT created, id FROM objects ORDER BY created, id").fetchall()
            else:
                rows = self._db.execute(
                    "SELECT created, id FROM objects WHERE expires > ? ORDER BY created, id", (now,)
                ).fetchall()
        return rows

    # ------------------------------------------------------------------ queries

    def search(
        self,
        query: str | None = None,
        *,
        kind: str | None = None,
        category: str | None = None,
        author: bytes | None = None,
        wants: str | None = None,
        have: str | None = None,
        tag: str | None = None,
        loc: str | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
        now: int | None = None,
    ) -> list[Listing]:
        """Live listings matching every given filter; with a ``query``, best match first, else newest first.

        ``query``: free text over title, description, tags and the names of the
        items it has (any input is safe, see :func:`fts_query`); ``kind``: the
        listing type; ``category``: the category or anything under it
        (``tools`` matches ``tools/garden``); ``author``: public key; ``wants`` /
        ``have``: an item name it wants / has (case-insensitive); ``tag``: one of its
        tags, exactly; ``loc``: a prefix of its geohash (``u33`` matches ``u33db``). ``now``
        (default: the clock) hides listings expired by then.
        """
        now = int(time.time()) if now is None else now
        limit = max(0, min(limit, MAX_LIMIT))
        where = ["l.expires > ?"]
        args: list[Any] = [now]
        if kind is not None:
            where.append("l.type = ?")
            args.append(kind)
        category = (category or "").strip().strip("/").lower()
        if category:
            # Prefix on whole path segments, as an index range: '/' + 1 == '0'.
            where.append("(l.category = ? OR (l.category > ? AND l.category < ?))")
            args += [category, category + "/", category + "0"]
        if author is not None:
            where.append("l.author = ?")
            args.append(author)
        for side, name in (("want", wants), ("have", have)):
            if name is not None:
                where.append("l.n IN (SELECT listing FROM listing_items WHERE side = ? AND name = ?)")
                args += [side, _item_name(name)]
        if tag is not None:
            if not re.fullmatch(r"[a-z0-9-]+", tag):
                return []  # no listing has such a tag (and LIKE's wildcards never reach the query)
            where.append("(' ' || l.tags || ' ') LIKE ?")
            args.append(f"% {tag} %")
        if loc is not None:
            # a geohash prefix as an index range: every geohash character sorts below '~'
            where.append("l.n IN (SELECT listing FROM listing_facets WHERE facet = 'loc' AND value BETWEEN ? AND ?)")
            args += [loc, loc + "~"]
        match = fts_query(query)
        if match is not None:
            sql = (
                "SELECT l.id FROM listings_fts JOIN listings l ON l.n = listings_fts.rowid"
                f" WHERE listings_fts MATCH ? AND {' AND '.join(where)}"
                f" ORDER BY {_BM25}, l.created DESC, l.n DESC LIMIT ? OFFSET ?"
            )
            args = [match, *args]
        elif query and query.strip():
            return []  # text given but nothing searchable in it (only punctuation): nothing matches
        else:
            sql = (
                f"SELECT l.id FROM listings l WHERE {' AND '.join(where)}"
                " ORDER BY l.created DESC, l.n DESC LIMIT ? OFFSET ?"
            )
        args += [limit, max(0, offset)]
        with self._lock:
            try:
                # Ids first, bytes after: the sort then moves 32-byte ids, not whole objects.
                ids = [r[0] for r in self._db.execute(sql, args)]
            except sqlite3.OperationalError as exc:
                # fts_query makes syntax errors impossible; if FTS5 still refuses a query, it matches nothing.
                if "fts5" not in str(exc):
                    raise
                log.warning("full-text query %r refused: %s", match, exc)
                return []
            return self._load_ids(ids)  # type: ignore[return-value]

    def live_listings(self, now: int, limit: int) -> list[Listing]:
        """Every listing live at ``now`` (the current revision of each series: the book keeps no other), in id
        order, at most ``limit`` of them (matching's input, :mod:`.matching`)."""
        with self._lock:
            ids = [
                r[0]
                for r in self._db.execute("SELECT id FROM listings WHERE expires > ? ORDER BY id LIMIT ?", (now, limit))
            ]
            return self._load_ids(ids)  # type: ignore[return-value]

    def offers(
        self,
        party: bytes | None = None,
        listing: bytes | None = None,
        incoming_for: bytes | None = None,
        outgoing_from: bytes | None = None,
        *,
        now: int | None = None,
    ) -> list[Offer]:
        """Live offers matching every given filter, newest first.

        ``party``: maker or taker; ``listing``: a listing id, matching offers on
        any version of that listing's series; ``incoming_for``: offers waiting
        for this key's answer (its recipient); ``outgoing_from``: offers this
        key wrote. With ``now``, offers expired by then are left out.
        """
        where: list[str] = []
        args: list[Any] = []
        if party is not None:
            where.append("(f.maker = ? OR f.taker = ?)")
            args += [party, party]
        if listing is not None:
            # The series of that listing id, learned from the listing itself or from any offer made on it.
            where.append(
                "(f.listing_id = ? OR (f.maker, f.series) IN (SELECT author, series FROM listings WHERE id = ?"
                " UNION SELECT maker, series FROM offers WHERE listing_id = ?))"
            )
            args += [listing, listing, listing]
        if incoming_for is not None:
            where.append("f.recipient = ?")
            args.append(incoming_for)
        if outgoing_from is not None:
            where.append("f.author = ?")
            args.append(outgoing_from)
        if now is not None:
            where.append("f.expires > ?")
            args.append(now)
        sql = "SELECT f.id FROM offers f"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY f.created DESC, f.id"
        with self._lock:
            return self._load_ids([r[0] for r in self._db.execute(sql, args)])  # type: ignore[return-value]

    def photo_hashes(self) -> set[bytes]:
        """Every photo hash a held listing names (what the photo store keeps)."""
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT value FROM listing_facets WHERE facet = 'photo'").fetchall()
        return {bytes.fromhex(r[0]) for r in rows}

    def withdrawal_of(self, author: bytes, series: bytes) -> Withdrawal | None:
        """The tombstone held for a listing series, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT o.id, o.kind, o.raw FROM withdrawals w JOIN objects o ON o.id = w.id"
                " WHERE w.author = ? AND w.series = ?",
                (author, series),
            ).fetchone()
            objs = self._decode_rows([row]) if row else []
        return objs[0] if objs else None  # type: ignore[return-value]

    def stats(self) -> BookStats:
        with self._lock:
            counts = dict(self._db.execute("SELECT kind, count(*) FROM objects GROUP BY kind").fetchall())
        return BookStats(
            listings=counts.get(KIND_LISTING, 0),
            offers=counts.get(KIND_OFFER, 0),
            withdrawals=counts.get(KIND_WITHDRAWAL, 0),
        )

    # ------------------------------------------------------------------ expiry

    def prune(self, now: int) -> int:
        """Delete listings and offers expired at ``now`` and tombstones past their expiry; returns how many.

        Works in transactions of at most ``_PRUNE_CHUNK`` objects and releases the
        lock between them: un-indexing a listing costs ~0.1 ms (FTS5 re-tokenizes
        its text), and gossip must not wait for a whole day's expiries at once.
        """
        total = 0
        while True:
            with self._write() as db:
                rows = db.execute(
                    "SELECT id, kind FROM objects WHERE expires <= ? LIMIT ?", (now, _PRUNE_CHUNK)
                ).fetchall()
                by_kind: dict[str, list[bytes]] = {KIND_LISTING: [], KIND_OFFER: [], KIND_WITHDRAWAL: []}
                for oid, kind in rows:
                    by_kind[kind].append(oid)
                listings = [
                    row
                    for oid in by_kind[KIND_LISTING]
                    for row in db.execute("SELECT n, id FROM listings WHERE id = ?", (oid,))
                ]
                self._delete_listings(db, listings)
                self._delete_offers(db, by_kind[KIND_OFFER])
                db.executemany("DELETE FROM withdrawals WHERE id = ?", [(i,) for i in by_kind[KIND_WITHDRAWAL]])
                # Also catches a listing row missing from `listings`, so the loop always makes progress.
                db.executemany("DELETE FROM objects WHERE id = ?", [(oid,) for oid, _ in rows])
                for oid, _ in rows:
                    self._cache.pop(oid, None)
            total += len(rows)
            if len(rows) < _PRUNE_CHUNK:
                return total

    # ------------------------------------------------------------------ decoding

    def _remember(self, obj: BookObject) -> None:
        self._cache[obj.id] = obj
        self._cache.move_to_end(obj.id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _load_ids(self, ids: Sequence[bytes]) -> list[BookObject]:
        """Typed objects for ``ids`` (all live), in that order; the caller holds the lock."""
        missing = [i for i in ids if i not in self._cache]
        rows: dict[bytes, tuple[bytes, str, bytes]] = {}
        for start in range(0, len(missing), _CHUNK):
            chunk = missing[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in self._db.execute(f"SELECT id, kind, raw FROM objects WHERE id IN ({marks})", chunk):
                rows[row[0]] = row
        out: list[BookObject] = []
        for oid in ids:
            obj = self._cache.get(oid)
            if obj is not None:
                self._cache.move_to_end(oid)
                out.append(obj)
            elif oid in rows:
                out.extend(self._decode_rows([rows[oid]]))
        return out

    def _decode_rows(self, rows: Iterable[tuple[bytes, str, bytes]]) -> list[BookObject]:
        """Typed objects for (id, kind, raw) rows; the caller holds the lock.

        What leaves the book is decoded through the trust boundary again (no
        ``now``: freshness was checked on the way in), so a tampered file
        cannot smuggle anything past it; the cache saves repeating that work.
        """
        out: list[BookObject] = []
        for oid, kind, raw in rows:
            obj = self._cache.get(oid)
            if obj is None:
                try:
                    obj = boundary.decode(raw, kind=kind)
                except InvalidObject as exc:
                    log.warning("offer book row %s fails verification, skipped: %s", oid.hex()[:16], exc)
                    continue
                if obj.id != oid:
                    log.warning("offer book row %s holds another object, skipped", oid.hex()[:16])
                    continue
                self._remember(obj)
            else:
                self._cache.move_to_end(oid)
            out.append(obj)
        return out


def _facets(listing: Listing, n: int) -> list[tuple[str, str, int]]:
    rows = [("photo", h.hex(), n) for h in listing.photos]
    if listing.loc is not None:
        rows.append(("loc", listing.loc, n))
    return rows


def _neg(oid: bytes) -> bytes:
    """Bytes whose order is the reverse of ``oid``'s (same length): the smaller id wins a tie."""
    return bytes(255 - b for b in oid)


def _check_type(obj: object) -> None:
    # Raw bytes never enter: they must pass the trust boundary first.
    if not isinstance(obj, Listing | Withdrawal | Offer):
        raise TypeError(f"the offer book takes a decoded Listing, Withdrawal or Offer, not {type(obj).__name__}")


def _split_sql(script: str) -> list[str]:
    """Statements of the schema script (triggers contain ';' inside BEGIN ... END)."""
    statements: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return statements


__all__ = ["AddResult", "AddStatus", "BookError", "BookObject", "BookStats", "OfferBook", "fts_query"]

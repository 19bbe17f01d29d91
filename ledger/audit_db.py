"""The audit's bookkeeping: summary rows in a temporary SQLite database, and the cross-chain checks.

Workers reduce every entry to a few small rows (see ``audit_worker.Rows``); the
parent appends them here. Nothing is de-duplicated or indexed while loading
(plain appends are the cheapest writes; the same exchange may be described by
several workers): the checks at the end use DISTINCT and build the indexes
they need in one sort each. Because every check is a query, the order in which
entries arrived does not matter, and memory stays at SQLite's page cache
(``CACHE_KIB``) however large the ledger: the database lives on disk in a
temporary directory and is deleted with it.

Tables (keys and ids are raw bytes):

- ``entry(author, seq, id, prev, time, kind, ref)``: one row per entry held;
  ``kind`` is exchange/rating/receipt, or ``invalid`` for a rejected entry
  placed at its claimed (author, seq); ``ref`` is the exchange id it records,
  rates or acknowledges.
- ``xchg(id, digest, created, parties)``: every complete exchange seen (on a
  chain or inside a rating); ``digest`` is the SHA-256 of its encoding, used
  to find its bytes again for evidence; ``parties`` their keys concatenated
  (one row instead of one per party: rows are what loading costs), split into
  the ``party(xid, party)`` table once loading is done.
- ``luse(listing, lauthor, xid, item, unit, listed, given)``: per exchange and
  listing it settles, per listed item: how much the listing's author gives.
- ``iou(xid, leg, giver, receiver, item, qty)``: the IOU items of each leg.
- ``rating(id, rater, subject, xid, seq, entry)``.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swapmeet.protocol.boundary import CLOCK_SKEW

from .audit_findings import (
    BrokenLink,
    DuplicateRating,
    Finding,
    Gap,
    IouImbalance,
    MissingEntry,
    hexid,
    pid,
)
from .audit_worker import Rows

CACHE_KIB = 32 * 1024
MAX_ONE_SIDED = 20

SCHEMA = """
CREATE TABLE entry(author BLOB, seq INTEGER, id BLOB, prev BLOB, time INTEGER, kind TEXT, ref BLOB);
CREATE TABLE xchg(id BLOB, digest BLOB, created INTEGER, parties BLOB);
CREATE TABLE luse(listing BLOB, lauthor BLOB, xid BLOB, item TEXT, unit TEXT, listed INTEGER, given INTEGER);
CREATE TABLE iou(xid BLOB, leg INTEGER, giver BLOB, receiver BLOB, item TEXT, qty INTEGER);
CREATE TABLE rating(id BLOB, rater BLOB, subject BLOB, xid BLOB, seq INTEGER, entry BLOB);
"""

# Run once loading is done. Each de-duplicated table is filled in its key order (cheap b-tree appends).
_FINISH = (
    # Covering: the chain walk, the per-author latest time and the totals read only this index, in order.
    "CREATE INDEX entry_chain ON entry(author, seq, id, prev, kind, time)",
    "CREATE INDEX entry_ref ON entry(ref, author) WHERE kind = 'exchange'",
    "CREATE TABLE recorded(xid BLOB, author BLOB, PRIMARY KEY (xid, author)) WITHOUT ROWID",
    "INSERT INTO recorded SELECT DISTINCT ref, author FROM entry WHERE kind = 'exchange' ORDER BY ref, author",
    "CREATE INDEX xchg_id ON xchg(id)",
    "CREATE TABLE xinfo(id BLOB PRIMARY KEY, created INTEGER, parties BLOB) WITHOUT ROWID",
    "INSERT INTO xinfo SELECT id, MIN(created), parties FROM xchg GROUP BY id ORDER BY id",
    "CREATE TABLE party(xid BLOB, party BLOB, PRIMARY KEY (xid, party)) WITHOUT ROWID",
    # Split each exchange's concatenated 32-byte party keys into rows.
    """INSERT OR IGNORE INTO party
        WITH RECURSIVE split(xid, i, parties) AS (
            SELECT id, 0, parties FROM xinfo
            UNION ALL
            SELECT xid, i + 1, parties FROM split WHERE (i + 1) * 32 < length(parties)
        )
        SELECT xid, substr(parties, i * 32 + 1, 32) FROM split""",
    "CREATE TABLE held(author BLOB PRIMARY KEY, last INTEGER) WITHOUT ROWID",
    "INSERT INTO held SELECT author, MAX(time) FROM entry WHERE kind != 'invalid' GROUP BY author",
)

_INSERTS = {
    "entry": "INSERT INTO entry VALUES (?, ?, ?, ?, ?, ?, ?)",
    "xchg": "INSERT INTO xchg VALUES (?, ?, ?, ?)",
    "luse": "INSERT INTO luse VALUES (?, ?, ?, ?, ?, ?, ?)",
    "iou": "INSERT INTO iou VALUES (?, ?, ?, ?, ?, ?)",
    "rating": "INSERT INTO rating VALUES (?, ?, ?, ?, ?, ?)",
}


@dataclass(slots=True)
class Totals:
    chains: int = 0
    entries: int = 0
    exchanges: int = 0
    parties: int = 0


@dataclass(slots=True)
class Wanted:
    """Bytes the evidence pass must find again: fork entries and over-committing exchanges."""

    forks: dict[tuple[bytes, int], set[bytes]] = field(default_factory=dict)
    """(author, seq) -> entry ids (SHA-256 of the entry bytes)."""
    exchanges: dict[bytes, bytes] = field(default_factory=dict)
    """digest of an exchange's bytes -> exchange id."""


@dataclass(slots=True)
class PendingFork:
    author: bytes
    seq: int
    ids: list[bytes]


@dataclass(slots=True)
class PendingOvercommit:
    listing: bytes
    author: bytes
    item: str
    unit: str
    listed: int
    given: int
    exchanges: list[bytes]


class SummaryDB:
    """The temporary database of one audit."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "audit.sqlite"
        self.db = sqlite3.connect(self.path, isolation_level=None)
        # A scratch database: nothing here needs to survive a crash.
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self.db.execute("PRAGMA temp_store=FILE")
        self.db.executescript(SCHEMA)
        self.db.execute("BEGIN")
        self.unplaced = 0
        self.chains = 0
        self.entries = 0

    def add(self, rows: Rows) -> None:
        for table, sql in _INSERTS.items():
            values = getattr(rows, table)
            if values:
                self.db.executemany(sql, values)
        self.unplaced += rows.unplaced

    def close(self) -> None:
        self.db.close()

    def finish_loading(self) -> None:
        """Build what the checks query: indexes, and de-duplicated tables sorted by their keys."""
        self.db.execute("COMMIT")
        for statement in _FINISH:
            self.db.execute(statement)

    # ----------------------------------------------------------------------- totals

    def totals(self) -> Totals:
        """Totals; call after :meth:`chain_findings`, which counts chains and entries on its walk."""
        q = self.db.execute
        return Totals(
            chains=self.chains,
            entries=self.entries + self.unplaced,
            exchanges=q("SELECT COUNT(DISTINCT xid) FROM recorded").fetchone()[0],
            parties=q("SELECT COUNT(DISTINCT party) FROM party WHERE xid IN (SELECT xid FROM recorded)").fetchone()[0],
        )

    # ----------------------------------------------------------------------- chains

    def chain_findings(self, forks: list[PendingFork]) -> Iterator[Finding]:
        """Gaps, broken links and forks, walking every chain once in (author, seq) order (the covering index)."""
        rows = self.db.execute("SELECT author, seq, id, prev, kind FROM entry ORDER BY author, seq, id")
        author: bytes | None = None
        last_seq = 0
        previous: list[bytes] = []  # ids of the entries held at last_seq
        group: list[tuple[bytes, bytes, str]] = []  # (id, prev, kind) of the entries at group_seq
        group_seq = 0
        for row_author, seq, entry_id, prev, kind in rows:
            if seq == group_seq and row_author == author:
                if entry_id != group[-1][0]:  # rows come sorted by id: an identical copy is listed once
                    group.append((entry_id, prev, kind))
                continue
            if author is not None:
                yield from self._close(author, last_seq, previous, group_seq, group, forks)
                last_seq, previous = group_seq, [i for i, _p, _k in group]
            if row_author != author:
                author, last_seq, previous = row_author, 0, []
                self.chains += 1
            group, group_seq = [(entry_id, prev, kind)], seq
        if author is not None:
            yield from self._close(author, last_seq, previous, group_seq, group, forks)

    def _close(
        self,
        author: bytes,
        last_seq: int,
        previous: list[bytes],
        seq: int,
        group: list[tuple[bytes, bytes, str]],
        forks: list[PendingFork],
    ) -> list[Finding]:
        """The findings about the entries held at one (author, seq), given those held at the seq before."""
        self.entries += len(group)
        found: list[Finding] = []
        if seq != last_seq + 1:
            found.append(Gap(pid(author) or "", last_seq, last_seq + 1, seq - 1))
        elif seq > 1:
            for entry_id, prev, kind in group:
                # A rejected entry is already a finding; only valid ones are held to their link.
                if kind != "invalid" and prev not in previous:
                    expected = sorted(i.hex() for i in previous)
                    found.append(BrokenLink(pid(author) or "", seq, entry_id.hex(), prev.hex(), expected))
        if len(group) > 1:
            valid = [entry_id for entry_id, _prev, kind in group if kind != "invalid"]
            if len(valid) > 1:
                forks.append(PendingFork(author, seq, valid))
        return found

    # ----------------------------------------------------------------------- exchanges

    def missing_entries(self) -> Iterator[Finding]:
        """Complete exchanges on some party's chain, absent from another party's chain held to a later point."""
        rows = self.db.execute(
            """
            SELECT x.id, x.created, p.party
            FROM xinfo AS x
            JOIN party AS p ON p.xid = x.id
            JOIN held AS h ON h.author = p.party
            WHERE EXISTS (SELECT 1 FROM recorded AS r WHERE r.xid = x.id)
              AND h.last > x.created + ?
              AND NOT EXISTS (SELECT 1 FROM recorded AS r WHERE r.xid = x.id AND r.author = p.party)
            ORDER BY x.id, p.party
            """,
            (CLOCK_SKEW,),
        ).fetchall()
        for xid, created, party in rows:
            recorded_by = [
                {"author": pid(a), "seq": s, "entry": e.hex()}
                for a, s, e in self.db.execute(
                    "SELECT DISTINCT author, seq, id FROM entry WHERE kind = 'exchange' AND ref = ?"
                    " ORDER BY author, seq",
                    (xid,),
                )
            ]
            seq, entry_id, time = self.db.execute(
                "SELECT seq, id, time FROM entry WHERE author = ? AND kind != 'invalid' AND time > ?"
                " ORDER BY seq LIMIT 1",
                (party, created + CLOCK_SKEW),
            ).fetchone()
            yield MissingEntry(
                exchange=xid.hex(),
                created=created,
                party=pid(party) or "",
                recorded_by=recorded_by,
                later_entry={"seq": seq, "entry": entry_id.hex(), "time": time},
            )

    def overcommits(self, max_exchanges: int) -> list[PendingOvercommit]:
        """Listings whose author gave away more of a listed item, over all complete exchanges, than listed."""
        rows = self.db.execute(
            """
            SELECT listing, lauthor, item, unit, listed, SUM(given)
            FROM (SELECT DISTINCT listing, lauthor, xid, item, unit, listed, given FROM luse WHERE given > 0)
            GROUP BY listing, item, unit
            HAVING SUM(given) > listed
            ORDER BY listing, item, unit
            """
        ).fetchall()
        found: list[PendingOvercommit] = []
        if rows:  # only now is an index worth building
            self.db.execute("CREATE INDEX IF NOT EXISTS luse_listing ON luse(listing)")
        for listing, lauthor, item, unit, listed, given in rows:
            uses = self.db.execute(
                "SELECT DISTINCT xid, given FROM luse WHERE listing = ? AND item = ? AND unit = ? AND given > 0"
                " ORDER BY given DESC, xid",
                (listing, item, unit),
            ).fetchall()
            # The proof needs only enough exchanges to exceed the listed quantity (and at most max_exchanges).
            chosen, total = [], 0
            for xid, amount in uses:
                if total > listed or len(chosen) == max_exchanges:
                    break
                chosen.append(xid)
                total += amount
            found.append(PendingOvercommit(listing, lauthor, item, unit, listed, given, chosen))
        return found

    def digests_of(self, xids: list[bytes]) -> dict[bytes, bytes]:
        """digest -> exchange id, for every encoding of these exchanges we saw."""
        out = {}
        for xid in xids:
            for (found,) in self.db.execute("SELECT DISTINCT digest FROM xchg WHERE id = ?", (xid,)):
                out[found] = xid
        return out

    def duplicate_ratings(self) -> Iterator[Finding]:
        rows = self.db.execute(
            """
            SELECT rater, subject, xid FROM (SELECT DISTINCT id, rater, subject, xid FROM rating)
            GROUP BY rater, subject, xid HAVING COUNT(*) > 1 ORDER BY rater, subject, xid
            """
        ).fetchall()
        if rows:
            self.db.execute("CREATE INDEX IF NOT EXISTS rating_rater ON rating(rater, subject, xid)")
        for rater, subject, xid in rows:
            ratings = [
                {"rating": r.hex(), "seq": s, "entry": e.hex()}
                for r, s, e in self.db.execute(
                    "SELECT DISTINCT id, seq, entry FROM rating WHERE rater = ? AND subject = ? AND xid = ?"
                    " ORDER BY seq",
                    (rater, subject, xid),
                )
            ]
            yield DuplicateRating(pid(rater) or "", pid(subject) or "", xid.hex(), ratings)

    def iou_imbalances(self) -> Iterator[Finding]:
        """Per IOU item: the balances over held chains must sum to zero (see ``audit`` for the definition)."""
        self.db.executescript(
            """
            CREATE TEMP TABLE iou_leg AS
                SELECT DISTINCT xid, leg, giver, receiver, item, qty FROM iou
                WHERE giver IN (SELECT author FROM held) AND receiver IN (SELECT author FROM held);
            CREATE INDEX temp.iou_leg_x ON iou_leg(xid);
            """
        )
        rows = self.db.execute(
            """
            SELECT l.item, r.author, SUM(CASE WHEN l.receiver = r.author THEN l.qty ELSE -l.qty END)
            FROM recorded AS r JOIN iou_leg AS l ON l.xid = r.xid AND r.author IN (l.giver, l.receiver)
            GROUP BY l.item, r.author
            ORDER BY l.item, r.author
            """
        )
        balances: dict[str, dict[bytes, int]] = defaultdict(dict)
        for item, author, balance in rows:
            balances[item][author] = balance
        for item, per_author in balances.items():
            total = sum(per_author.values())
            if total == 0:
                continue
            yield IouImbalance(
                item=item,
                total=total,
                balances={pid(a) or "": b for a, b in sorted(per_author.items()) if b},
                one_sided=self._one_sided(item),
            )

    def _one_sided(self, item: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            """
            SELECT l.xid, l.giver, l.receiver,
                   EXISTS (SELECT 1 FROM recorded r WHERE r.xid = l.xid AND r.author = l.giver),
                   EXISTS (SELECT 1 FROM recorded r WHERE r.xid = l.xid AND r.author = l.receiver)
            FROM (SELECT DISTINCT xid, giver, receiver FROM iou_leg WHERE item = ?) AS l
            ORDER BY l.xid
            """,
            (item,),
        )
        out: list[dict[str, Any]] = []
        for xid, giver, receiver, by_giver, by_receiver in rows:
            if by_giver != by_receiver:
                recorder, other = (giver, receiver) if by_giver else (receiver, giver)
                out.append({"exchange": hexid(xid), "recorded_by": pid(recorder), "not_recorded_by": pid(other)})
                if len(out) == MAX_ONE_SIDED:
                    break
        return out

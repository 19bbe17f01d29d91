"""The ledger store: every chain this node holds (its own and its peers'), in one SQLite database.

:class:`LedgerStore` is the only code that writes ``<home>/ledger.sqlite``
(schema and triggers in :mod:`.schema`). What it guarantees:

- Nothing unverified is stored: every entry is either built and signed here
  (:meth:`LedgerStore.append_own`, via ``protocol.build.make_entry``, which
  decodes what it built) or came through ``boundary.decode`` in
  :meth:`LedgerStore.ingest`.
- Chains only grow: seq = head + 1 and prev = head id, enforced here and again
  by the schema's triggers; nothing is ever updated or deleted.
- Durability: ``append_own`` builds, stores and commits in one transaction and
  returns only after the commit is fsynced (``synchronous=FULL``), so an entry
  it returned survives ``kill -9`` and power loss.
- Forks are evidence, not errors: a second valid entry at an (author, seq) we
  hold goes to the ``forks`` table and the author counts as forked.

The API is synchronous and does no network I/O: the node calls it through
``trio.to_thread.run_sync``. One connection is shared by all threads
(``check_same_thread=False``) and every use of it is serialized by a lock;
streaming readers (:meth:`chain`, :meth:`iter_raw`) fetch a page of rows at a
time under the lock, so a long export or audit never blocks appends for long
and never holds the whole ledger in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import itertools
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swapmeet.protocol import boundary, build, cbor, evidence
from swapmeet.protocol.boundary import ZERO_ID
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.evidence import ForkProof
from swapmeet.protocol.identity import Identity, peer_id
from swapmeet.protocol.objects import KIND_ENTRY, LedgerEntry, Payload

from . import schema
from .durable import fsync_dir
from .errors import LedgerBusy, LedgerDamaged, LedgerError, LedgerMissing
from .export_file import read_export, validate_export, write_export

PAGE_ROWS = 256  # rows per page when streaming: bounded memory, short lock holds
DECODE_CHUNK = 256  # ingest decodes this many entries before taking the write lock
MAX_REFUSALS_KEPT = 1000  # an import of a garbage file must not grow an unbounded list
# One fork proves an author forked; an author signing endless variants must not be
# able to fill our disk with them, so fork entries beyond this are refused.
MAX_FORKS_PER_AUTHOR = 64

Progress = Callable[[int], None]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why one item of an ingested batch was not stored.

    ``code`` is ``invalid`` (failed the trust boundary: ``reason`` is the
    InvalidObject message with its field path), ``gap`` (entries before it are
    missing) or ``link`` (its prev is not the id of the entry before it).
    ``author``/``seq`` are what the item claims, when it could be read at all.
    """

    index: int
    author: bytes | None
    seq: int | None
    code: str
    reason: str

    def __str__(self) -> str:
        who = f"item {self.index}"
        if self.author is not None:
            who = f"{peer_id(self.author)} seq {self.seq if self.seq is not None else '?'}"
        return f"{who}: {self.code}: {self.reason}"


@dataclass(slots=True)
class IngestResult:
    """What :meth:`LedgerStore.ingest` did with a batch.

    ``accepted`` new chain entries were stored; ``duplicates`` were identical
    copies of entries already held (not an error, not a fork); ``forks`` lists
    (author, seq) of new fork entries stored as evidence; ``refused`` items were
    not stored, the first ``MAX_REFUSALS_KEPT`` of them described in
    ``refusals``. ``heads`` is the new head seq of every chain that grew;
    ``stored`` the batch positions of the accepted entries (verified and stored:
    what may be passed on to peers).
    """

    accepted: int = 0
    duplicates: int = 0
    forks: list[tuple[bytes, int]] = field(default_factory=list)
    refused: int = 0
    refusals: list[Refusal] = field(default_factory=list)
    heads: dict[bytes, int] = field(default_factory=dict)
    stored: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was refused (forks and duplicates are not refusals)."""
        return self.refused == 0

    def _refuse(self, refusal: Refusal) -> None:
        self.refused += 1
        if len(self.refusals) < MAX_REFUSALS_KEPT:
            self.refusals.append(refusal)


@dataclass(frozen=True, slots=True)
class LedgerCounts:
    chains: int
    entries: int
    forks: int
    forked_authors: int


@dataclass(slots=True)
class VerifyReport:
    """The result of :meth:`LedgerStore.verify`: totals and every problem found (the first 1000 described)."""

    chains: int = 0
    entries: int = 0
    forks: int = 0
    forked_authors: int = 0
    problem_count: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def _problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_REFUSALS_KEPT:
            self.problems.append(text)


# --------------------------------------------------------------------------- the store


def _where(author: bytes, seq: int) -> str:
    return f"{peer_id(author)} seq {seq}"


def _row_of(entry: LedgerEntry) -> tuple[Any, ...]:
    return (entry.author, entry.seq, entry.id, entry.prev, entry.time, entry.payload.kind, entry.payload.id, entry.raw)


def _peek(raw: object) -> tuple[bytes | None, int | None]:
    """Best-effort (author, seq) of bytes that failed the boundary, for the refusal message only."""
    try:
        value = cbor.decode(bytes(raw), max_size=boundary.MAX_SIZE[KIND_ENTRY])  # type: ignore[arg-type]
        author = value[2] if type(value[2]) is bytes and len(value[2]) == 32 else None
        seq = value[3].get("seq") if type(value[3]) is dict else None
        return author, seq if type(seq) is int else None
    except Exception:  # anything at all: this is only for a nicer message
        return None, None


def _span(first: int, last: int) -> str:
    return f"seq {first}" if first == last else f"seq {first}..{last}"


class LedgerStore:
    """The ledger database. Open with :meth:`open`; close with :meth:`close` or use as a context manager.

    Size: one connection and one lock serve every method; each public method is one query or one
    write path (append, ingest, import, verify, heads, ranges, forks). Split into several classes,
    they would share that connection and its transactions anyway.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, readonly: bool) -> None:
        self._conn = conn
        self._lock = threading.RLock()
        self.path = path
        self.readonly = readonly

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, readonly: bool = False) -> LedgerStore:
        """Open (and, unless ``readonly``, create) the ledger database at ``path``.

        An existing file is checked first (schema version, every table and
        trigger as expected, ``PRAGMA quick_check``) on a read-only connection;
        a damaged one raises :class:`LedgerDamaged` and is left untouched.
        ``readonly`` raises :class:`LedgerMissing` when there is no ledger yet.
        The parent directory must exist (``Home.ensure()``).
        """
        path = Path(path)
        empty = schema.check(path) if path.exists() else True
        if readonly and empty:
            raise LedgerMissing(f"no ledger at {path} yet (nothing has been stored)")
        try:
            conn = schema.connect(path, readonly=readonly)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the ledger database {path}: {exc}") from exc
        try:
            if not readonly:
                cls._configure(conn)
                if empty:
                    schema.initialize(conn)
                    fsync_dir(path.parent)  # the new file's directory entry must survive power loss too
        except sqlite3.OperationalError as exc:
            conn.close()
            if "locked" in str(exc) or "busy" in str(exc):
                raise LedgerBusy(f"the ledger database {path} is locked by another process") from exc
            raise LedgerError(f"cannot open the ledger database {path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return cls(conn, path, readonly)

    @staticmethod
    def _configure(conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise LedgerError(f"the ledger database cannot use WAL mode (got {mode!r})")
        # Durability: in WAL mode synchronous=NORMAL fsyncs only at checkpoints,
        # so the last commits can vanish on power loss (though not on a process
        # crash). FULL fsyncs the WAL at every commit, which is what lets
        # append_own promise that a returned entry survives a power cut; the
        # price is one fsync per append. fullfsync makes macOS flush the drive's
        # cache too (plain fsync there does not); it is a no-op elsewhere.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA fullfsync=ON")
        conn.execute("PRAGMA checkpoint_fullfsync=ON")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> LedgerStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                raise _wrap(exc, self.path) from exc

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: BEGIN IMMEDIATE (take the write lock up front), COMMIT or ROLLBACK."""
        if self.readonly:
            raise LedgerError(f"the ledger {self.path} was opened read-only")
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                raise _wrap(exc, self.path) from exc
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.DatabaseError):
                    raise _wrap(exc, self.path) from exc
                raise

    # ------------------------------------------------------------------ writing

    def append_own(self, identity: Identity, payload: Payload, time: int, *, once: bool = False) -> LedgerEntry:
        """Append ``payload`` to ``identity``'s own chain; durable once this returns.

        Reads the head, builds and signs the entry (seq = head + 1, prev = head
        id), stores it and commits, all inside one write transaction, so two
        writers can never both take the same seq. Raises InvalidObject if the
        payload cannot go on this chain (e.g. an exchange the identity is not a
        party to).

        ``once``: if the chain already holds an entry with this payload, return
        that entry instead of appending another (checked in the same
        transaction). Settlement appends a completed exchange this way, so a
        crash between the append and the bookkeeping after it never appends
        the exchange twice on restart.
        """
        author = identity.public_key
        with self._write() as conn:
            if once:
                held = conn.execute(
                    "SELECT raw FROM entries WHERE author = ? AND payload_id = ? ORDER BY seq LIMIT 1",
                    (author, payload.id),
                ).fetchone()
                if held is not None:
                    return self._verified(held[0])
            head = conn.execute("SELECT seq, id FROM heads WHERE author = ?", (author,)).fetchone()
            seq, prev = (head[0] + 1, head[1]) if head else (1, ZERO_ID)
            entry = build.make_entry(identity, seq=seq, prev=prev, time=time, payload=payload)
            conn.execute("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _row_of(entry))
        return entry

    def ingest(self, raws: Iterable[bytes], progress: Progress | None = None) -> IngestResult:
        """Verify and store entries from a peer or a file; one transaction for the whole batch.

        An item whose bytes we already hold (same SHA-256 id) is a duplicate and
        is not decoded again: gossip delivers most entries several times. Every
        other item goes through ``boundary.decode(raw, kind="entry")``. It is
        stored if it extends its author's chain (seq = head + 1, prev = head id);
        ignored if it is an identical copy of an entry held; stored in ``forks``
        if it is a different valid entry at a seq already held. Anything else is
        refused with a reason, so per author the valid prefix of the batch is
        stored. Entries of one author must come in seq order (as
        :meth:`entries_after` and export files give them). If iterating ``raws``
        raises (e.g. a bad export file), the transaction is rolled back and
        nothing of the batch is stored.
        """
        result = IngestResult()
        chunks = _decoded_chunks(raws, self._held_ids)
        # The first chunk is verified before taking the write lock: for the
        # usual small batch from a peer, the lock is then held only for inserts.
        first = next(chunks, [])
        if not first:
            return result
        with self._write() as conn:
            for chunk in itertools.chain([first], chunks):
                for index, raw, entry in chunk:
                    if entry is None:
                        result.duplicates += 1
                    elif isinstance(entry, InvalidObject):
                        author, seq = _peek(raw)
                        result._refuse(Refusal(index, author, seq, "invalid", str(entry)))
                    else:
                        self._ingest_one(conn, index, entry, result)
                if progress is not None:
                    progress(len(chunk))
        return result

    def _ingest_one(self, conn: sqlite3.Connection, index: int, entry: LedgerEntry, result: IngestResult) -> None:
        head = conn.execute("SELECT seq, id FROM heads WHERE author = ?", (entry.author,)).fetchone()
        head_seq, head_id = head if head else (0, ZERO_ID)
        if entry.seq == head_seq + 1:
            if entry.prev != head_id:
                reason = (
                    f"bad link: prev {entry.prev.hex()[:16]} is not the id of seq {head_seq}"
                    f" ({head_id.hex()[:16]}); the author may have forked at seq {head_seq}"
                )
                result._refuse(Refusal(index, entry.author, entry.seq, "link", reason))
                return
            conn.execute("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _row_of(entry))
            result.accepted += 1
            result.stored.append(index)
            result.heads[entry.author] = entry.seq
        elif entry.seq <= head_seq:
            held = conn.execute(
                "SELECT id FROM entries WHERE author = ? AND seq = ?", (entry.author, entry.seq)
            ).fetchone()
            if (
                held[0] == entry.id
                or conn.execute(
                    "SELECT 1 FROM forks WHERE author = ? AND seq = ? AND id = ?", (entry.author, entry.seq, entry.id)
                ).fetchone()
            ):
                result.duplicates += 1
                return
            held_forks = conn.execute("SELECT count(*) FROM forks WHERE author = ?", (entry.author,)).fetchone()[0]
            if held_forks >= MAX_FORKS_PER_AUTHOR:
                reason = f"fork limit: {held_forks} fork entries of this author are held already (proof enough)"
                result._refuse(Refusal(index, entry.author, entry.seq, "fork-limit", reason))
                return
            conn.execute("INSERT INTO forks VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _row_of(entry))
            result.forks.append((entry.author, entry.seq))
        else:
            reason = f"missing {_span(head_seq + 1, entry.seq - 1)} (held up to seq {head_seq})"
            result._refuse(Refusal(index, entry.author, entry.seq, "gap", reason))

    def _held_ids(self, ids: list[bytes]) -> set[bytes]:
        """Which of ``ids`` are stored already (chain or fork entries)."""
        marks = ",".join("?" * len(ids))
        sql = f"SELECT id FROM entries WHERE id IN ({marks}) UNION ALL SELECT id FROM forks WHERE id IN ({marks})"
        return {row[0] for row in self._rows(sql, (*ids, *ids))}

    # ------------------------------------------------------------------ reading: the network layer's API

    def heads(self) -> dict[bytes, tuple[int, bytes]]:
        """author -> (head seq, head id) for every chain held."""
        return {author: (seq, id_) for author, seq, id_ in self._rows("SELECT author, seq, id FROM heads")}

    def head(self, author: bytes) -> tuple[int, bytes] | None:
        rows = self._rows("SELECT seq, id FROM heads WHERE author = ?", (author,))
        return (rows[0][0], rows[0][1]) if rows else None

    def entries_after(self, author: bytes, seq: int, limit: int) -> list[bytes]:
        """Signed bytes of ``author``'s chain entries with seq > ``seq``, in order, at most ``limit``."""
        rows = self._rows(
            "SELECT raw FROM entries WHERE author = ? AND seq > ? ORDER BY seq LIMIT ?", (author, seq, max(limit, 0))
        )
        return [row[0] for row in rows]

    def get(self, author: bytes, seq: int) -> bytes | None:
        """The signed bytes of the chain entry at (author, seq), if held."""
        rows = self._rows("SELECT raw FROM entries WHERE author = ? AND seq = ?", (author, seq))
        return rows[0][0] if rows else None

    def fork_proofs(self, author: bytes | None = None) -> list[ForkProof]:
        """One proof per fork entry held (the chain entry and the fork entry at that seq), checkable offline."""
        sql = (
            "SELECT e.raw, f.raw FROM forks f JOIN entries e ON e.author = f.author AND e.seq = f.seq"
            + (" WHERE f.author = ?" if author is not None else "")
            + " ORDER BY f.author, f.seq, f.id"
        )
        proofs = []
        for chain_raw, fork_raw in self._rows(sql, (author,) if author is not None else ()):
            proofs.append(evidence.fork_proof(self._verified(chain_raw), self._verified(fork_raw)))
        return proofs

    def entries_with_payload(self, payload_id: bytes) -> list[LedgerEntry]:
        """Every chain entry (any author) whose payload has this id, re-verified; e.g. who holds an exchange."""
        rows = self._rows("SELECT raw FROM entries WHERE payload_id = ? ORDER BY author, seq", (payload_id,))
        return [self._verified(row[0]) for row in rows]

    def forked_authors(self) -> set[bytes]:
        return {row[0] for row in self._rows("SELECT DISTINCT author FROM forks")}

    def kind_counts(self, kind: str) -> dict[bytes, int]:
        """Per author, how many entries of its chain carry a payload of ``kind`` (e.g. completed exchanges)."""
        return dict(self._rows("SELECT author, count(*) FROM entries WHERE kind = ? GROUP BY author", (kind,)))

    def raws_of_kind(self, kind: str) -> list[bytes]:
        """Signed bytes of every chain entry carrying a payload of ``kind`` (ratings: few per exchange)."""
        return [row[0] for row in self._rows("SELECT raw FROM entries WHERE kind = ?", (kind,))]

    def counts(self) -> LedgerCounts:
        chains, entries = self._rows("SELECT count(*), coalesce(sum(seq), 0) FROM heads")[0]
        forks, forked = self._rows("SELECT count(*), count(DISTINCT author) FROM forks")[0]
        # Chains are contiguous from seq 1, so the sum of head seqs is the number of chain entries.
        return LedgerCounts(chains=chains, entries=entries, forks=forks, forked_authors=forked)

    # ------------------------------------------------------------------ streaming

    def chain(self, author: bytes) -> Iterator[LedgerEntry]:
        """``author``'s chain, seq 1 upwards, each entry re-verified through the boundary; streamed."""
        for _, _, raw in self._pages("entries", author):
            yield self._verified(raw)

    def iter_raw(self, author: bytes | None = None) -> Iterator[bytes]:
        """Signed bytes of every entry held, fork entries included, in (author, seq) order; streamed.

        At one (author, seq) the chain entry comes first, then its fork entries
        by id: the order export files use, so importing one rebuilds the same
        chains. Rows appended while iterating may or may not be included.
        """
        chains = ((a, s, 0, raw) for a, s, raw in self._pages("entries", author))
        forks = ((a, s, 1, raw) for a, s, raw in self._pages("forks", author))
        for *_, raw in heapq.merge(chains, forks, key=lambda row: row[:3]):
            yield raw

    def _pages(self, table: str, author: bytes | None) -> Iterator[tuple[bytes, int, bytes]]:
        """(author, seq, raw) rows of ``table`` in (author, seq, id) order; see :meth:`_stream_rows`."""
        for row_author, seq, _id, raw in self._stream_rows("SELECT author, seq, id, raw", table, author):
            yield row_author, seq, raw

    def _stream_rows(self, columns: str, table: str, author: bytes | None = None) -> Iterator[tuple[Any, ...]]:
        """Rows of ``table`` (first three columns must be author, seq, id) by keyset pagination.

        One short locked query per page of ``PAGE_ROWS``: bounded memory, and
        writers wait for at most one page. Each WHERE clause is written so that
        SQLite seeks the primary-key index instead of rescanning (checked with
        EXPLAIN QUERY PLAN): (author, seq) is unique in ``entries``, forks need id too.
        """
        one = author is not None
        if table == "entries":
            where, order = ("author = ? AND seq > ?", "seq") if one else ("(author, seq) > (?, ?)", "author, seq")
        elif one:
            where, order = "author = ? AND (seq, id) > (?, ?)", "seq, id"
        else:
            where, order = "(author, seq, id) > (?, ?, ?)", "author, seq, id"
        sql = f"{columns} FROM {table} WHERE {where} ORDER BY {order} LIMIT {PAGE_ROWS}"
        width = 2 if table == "entries" else 3  # how many key columns the WHERE clause takes
        key: tuple[Any, ...] = (author if one else b"", 0, b"")
        while True:
            rows = self._rows(sql, key[:width])
            yield from rows
            if len(rows) < PAGE_ROWS:
                return
            key = (rows[-1][0], rows[-1][1], rows[-1][2])

    def _verified(self, raw: bytes) -> LedgerEntry:
        try:
            return boundary.decode(raw, kind=KIND_ENTRY)
        except InvalidObject as exc:
            raise LedgerDamaged(
                f"a stored entry no longer verifies ({exc}): the database {self.path} was altered; "
                "run `swapmeet ledger verify`"
            ) from exc

    # ------------------------------------------------------------------ verify

    def verify(self, progress: Progress | None = None) -> VerifyReport:
        """Re-verify everything stored: every entry through the boundary, every link, the heads and forks.

        Streams; memory is O(authors). A problem means the file was altered
        outside swapmeet (the schema refuses such writes through SQLite).
        """
        report = VerifyReport()
        heads = self.heads()
        seen: dict[bytes, tuple[int, bytes]] = {}
        last: tuple[bytes, int, bytes] | None = None  # (author, seq, id) of the previous row

        def finish_chain(author: bytes, seq: int, id_: bytes) -> None:
            seen[author] = (seq, id_)
            if heads.get(author) != (seq, id_):
                report._problem(f"{peer_id(author)}: the heads table says {heads.get(author)}, the chain ends at {seq}")

        columns = "SELECT author, seq, id, prev, time, kind, payload_id, raw"
        for row in self._stream_rows(columns, "entries"):
            author, seq, id_ = row[0], row[1], row[2]
            if last is not None and last[0] != author:
                finish_chain(*last)
            expected_seq, expected_prev = (last[1] + 1, last[2]) if last and last[0] == author else (1, ZERO_ID)
            self._check_row(row, report)
            if seq != expected_seq:
                report._problem(f"{_where(author, seq)}: expected seq {expected_seq} (rows missing)")
            elif row[3] != expected_prev:
                report._problem(f"{_where(author, seq)}: prev does not match the id of seq {seq - 1}")
            report.entries += 1
            last = (author, seq, id_)
            if progress is not None:
                progress(1)
        if last is not None:
            finish_chain(*last)
        for author in heads.keys() - seen.keys():
            report._problem(f"{peer_id(author)}: the heads table names a chain that has no entries")
        report.chains = len(seen)
        forked: set[bytes] = set()
        for row in self._stream_rows(columns, "forks"):
            author, seq, id_ = row[0], row[1], row[2]
            self._check_row(row, report)
            chain_raw = self.get(author, seq)
            if chain_raw is None or boundary.object_id(chain_raw) == id_:
                report._problem(f"{_where(author, seq)}: fork row without a different chain entry at that seq")
            report.forks += 1
            forked.add(author)
            if progress is not None:
                progress(1)
        report.forked_authors = len(forked)
        return report

    def _check_row(self, row: tuple[Any, ...], report: VerifyReport) -> None:
        author, seq, id_, prev, time, kind, payload_id, raw = row
        try:
            entry = boundary.decode(raw, kind=KIND_ENTRY)
        except InvalidObject as exc:
            report._problem(f"{_where(author, seq)}: the stored entry does not verify: {exc}")
            return
        if _row_of(entry) != (author, seq, id_, prev, time, kind, payload_id, raw):
            report._problem(f"{_where(author, seq)}: the indexed columns do not match the signed entry")

    # ------------------------------------------------------------------ files

    def export(self, path: str | os.PathLike[str], author: bytes | None = None) -> int:
        """Write every entry held (or ``author``'s chain and forks) to an export file; the number written."""
        return write_export(path, self.iter_raw(author), author=author)

    def import_file(self, path: str | os.PathLike[str], progress: Progress | None = None) -> IngestResult:
        """Import an export file: its framing is validated in full first, then one :meth:`ingest`.

        A bad file (truncated, garbage, wrong kind, too large) raises
        ExportFileError before anything is stored; if the file changes between
        the two passes, the ingest transaction rolls back on the error instead.
        """
        validate_export(path)
        return self.ingest(read_export(path), progress=progress)


def _decoded_chunks(
    raws: Iterable[bytes], held_ids: Callable[[list[bytes]], set[bytes]]
) -> Iterator[list[tuple[int, bytes, LedgerEntry | InvalidObject | None]]]:
    """The batch in chunks of (index, raw, the entry | why it failed the boundary | None if already held)."""
    index = 0
    iterator = iter(raws)
    while chunk := [bytes(raw) for raw in itertools.islice(iterator, DECODE_CHUNK)]:
        ids = [hashlib.sha256(raw).digest() for raw in chunk]
        held = held_ids(ids)
        out: list[tuple[int, bytes, LedgerEntry | InvalidObject | None]] = []
        for raw, id_ in zip(chunk, ids, strict=True):
            if id_ in held:
                # Identical bytes to a stored (hence verified) entry: nothing to verify or store.
                out.append((index, raw, None))
            else:
                try:
                    out.append((index, raw, boundary.decode(raw, kind=KIND_ENTRY)))
                except InvalidObject as exc:
                    out.append((index, raw, exc))
            index += 1
        yield out


def _wrap(exc: sqlite3.DatabaseError, path: Path) -> LedgerError:
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return LedgerBusy(f"the ledger database {path} is locked by another process; try again")
    if isinstance(exc, sqlite3.IntegrityError):
        return LedgerError(f"the ledger database {path} refused a write: {text}")
    if "malformed" in text or "not a database" in text or "corrupt" in text:
        return LedgerDamaged(f"the ledger database {path} is damaged: {text}")
    return LedgerError(f"ledger database {path}: {text}")

"""The ledger database schema, its version, and the consistency check run before a store opens it.

Tables (all ``STRICT``):

``entries``
    The chains: one row per ledger entry, ``(author, seq)`` the primary key.
    ``raw`` holds the exact signed bytes; the other columns are indexed copies
    of fields inside them (``kind`` and ``payload_id`` are the payload's).
``forks``
    Second (third...) valid entries at an ``(author, seq)`` that ``entries``
    already holds with a different id. Together with the ``entries`` row at the
    same place each one is a fork proof; "author is forked" is derived from
    this table (``SELECT DISTINCT author FROM forks``), never stored as a flag.
``heads``
    ``author -> (seq, id)`` of the last entry of each chain. Derived data kept
    only so that ``heads()`` costs O(authors) rather than a scan of every
    entry; written by a trigger, never by code, and re-checked by ``verify``.

Triggers make rewriting history impossible through SQL:

- ``entries`` and ``forks`` refuse every UPDATE and DELETE;
- an INSERT into ``entries`` must extend its chain (seq 1 with a zero prev for
  a new author, else seq = head + 1 and prev = the head's id), which also
  stops ``INSERT OR REPLACE`` from swapping out an entry: the BEFORE trigger
  runs before the conflict resolution that would delete the old row;
- an INSERT into ``forks`` must conflict with a held entry.

Someone with the file can still drop a trigger, so :func:`check` compares the
whole schema with the expected one before every open. The schema version is
``PRAGMA user_version``; ``PRAGMA application_id`` marks the file as a
swapmeet ledger.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .errors import LedgerDamaged

SCHEMA_VERSION = 1
APPLICATION_ID = 0x534D4C47  # "SMLG": swapmeet ledger
SQLITE_MAGIC = b"SQLite format 3\x00"

SCHEMA = """
CREATE TABLE entries (
    author     BLOB    NOT NULL CHECK (length(author) = 32),
    seq        INTEGER NOT NULL CHECK (seq >= 1),
    id         BLOB    NOT NULL UNIQUE CHECK (length(id) = 32),
    prev       BLOB    NOT NULL CHECK (length(prev) = 32),
    time       INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    payload_id BLOB    NOT NULL CHECK (length(payload_id) = 32),
    raw        BLOB    NOT NULL,
    PRIMARY KEY (author, seq)
) STRICT;

CREATE INDEX entries_by_payload ON entries (payload_id);

CREATE TABLE forks (
    author     BLOB    NOT NULL CHECK (length(author) = 32),
    seq        INTEGER NOT NULL CHECK (seq >= 1),
    id         BLOB    NOT NULL CHECK (length(id) = 32),
    prev       BLOB    NOT NULL CHECK (length(prev) = 32),
    time       INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    payload_id BLOB    NOT NULL CHECK (length(payload_id) = 32),
    raw        BLOB    NOT NULL,
    PRIMARY KEY (author, seq, id)
) STRICT;

CREATE INDEX forks_by_id ON forks (id);

CREATE TABLE heads (
    author BLOB    PRIMARY KEY,
    seq    INTEGER NOT NULL,
    id     BLOB    NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only: UPDATE refused'); END;

CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only: DELETE refused'); END;

CREATE TRIGGER entries_extend_only BEFORE INSERT ON entries
WHEN EXISTS (SELECT 1 FROM entries WHERE author = NEW.author AND seq = NEW.seq)
  OR NOT (
       (NEW.seq = 1 AND NEW.prev = zeroblob(32))
    OR EXISTS (SELECT 1 FROM entries WHERE author = NEW.author AND seq = NEW.seq - 1 AND id = NEW.prev)
  )
BEGIN SELECT RAISE(ABORT, 'ledger entries only extend their chain: seq = head + 1 and prev = head id'); END;

CREATE TRIGGER entries_advance_head AFTER INSERT ON entries
BEGIN
    INSERT INTO heads (author, seq, id) VALUES (NEW.author, NEW.seq, NEW.id)
    ON CONFLICT (author) DO UPDATE SET seq = excluded.seq, id = excluded.id;
END;

CREATE TRIGGER forks_no_update BEFORE UPDATE ON forks
BEGIN SELECT RAISE(ABORT, 'fork evidence is append-only: UPDATE refused'); END;

CREATE TRIGGER forks_no_delete BEFORE DELETE ON forks
BEGIN SELECT RAISE(ABORT, 'fork evidence is append-only: DELETE refused'); END;

CREATE TRIGGER forks_only_conflicts BEFORE INSERT ON forks
WHEN EXISTS (SELECT 1 FROM forks WHERE author = NEW.author AND seq = NEW.seq AND id = NEW.id)
  OR NOT EXISTS (SELECT 1 FROM entries WHERE author = NEW.author AND seq = NEW.seq AND id != NEW.id)
BEGIN SELECT RAISE(ABORT, 'a fork row needs a different entry held at the same (author, seq)'); END;
"""

SchemaRow = tuple[str, str, str, str | None]


def _schema_rows(conn: sqlite3.Connection) -> set[SchemaRow]:
    return set(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_stat%'"))


def _expected_rows() -> set[SchemaRow]:
    # SQLite normalizes the CREATE text it stores; comparing against a fresh
    # in-memory copy of the same DDL avoids re-implementing that normalization.
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(SCHEMA)
        return _schema_rows(conn)
    finally:
        conn.close()


EXPECTED = _expected_rows()


def connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    """A connection usable from any thread (callers serialize it), in autocommit mode.

    Transactions are explicit (``BEGIN IMMEDIATE`` ... ``COMMIT``): Python's
    implicit transaction handling would otherwise open them at surprising points.
    """
    mode = "ro" if readonly else "rwc"
    uri = f"{path.absolute().as_uri()}?mode={mode}"  # as_uri percent-encodes '?' and '#' in the path
    return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=10.0)


def initialize(conn: sqlite3.Connection) -> None:
    """Create the schema in an empty database, in one transaction (a crash leaves it empty, not half-made)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Re-check under the write lock: another process may have initialized it meanwhile.
        if not conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone():
            for statement in _statements(SCHEMA):
                conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _statements(script: str) -> list[str]:
    # Split on statement boundaries; trigger bodies contain ';' so let sqlite3 tell complete ones apart.
    out: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    return out


def check(path: Path) -> bool:
    """Check an existing database file before opening it; True if it is empty (a new ledger to initialize).

    Read-only: the checks run on a ``mode=ro`` connection, which never writes
    the database and never checkpoints its WAL on close, so a damaged file is
    left exactly as it was. Raises :class:`LedgerDamaged` with the reason.
    """
    try:
        with path.open("rb") as f:
            magic = f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise LedgerDamaged(f"cannot read the ledger database {path}: {exc.strerror}") from exc
    wal = path.with_name(path.name + "-wal")
    if magic == b"" and not (wal.exists() and wal.stat().st_size > 0):
        return True  # an empty file: created, then the process died before the schema committed
    if magic and magic != SQLITE_MAGIC:
        raise LedgerDamaged(f"{path} is not an SQLite database (damaged, or not a swapmeet ledger); not opened")
    try:
        conn = connect(path, readonly=True)
    except sqlite3.Error as exc:
        raise LedgerDamaged(f"cannot open the ledger database {path}: {exc}") from exc
    try:
        return _check_open(conn, path)
    except sqlite3.DatabaseError as exc:
        raise LedgerDamaged(f"the ledger database {path} is damaged ({exc}); not opened, not modified") from exc
    finally:
        conn.close()


def _check_open(conn: sqlite3.Connection, path: Path) -> bool:
    application_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    rows = _schema_rows(conn)
    if application_id == 0 and version == 0 and not rows:
        return True
    if application_id != APPLICATION_ID:
        raise LedgerDamaged(f"{path} is an SQLite database but not a swapmeet ledger (application_id {application_id})")
    if version != SCHEMA_VERSION:
        newer = " (written by a newer swapmeet: upgrade)" if version > SCHEMA_VERSION else ""
        raise LedgerDamaged(
            f"{path} has ledger schema version {version}, this swapmeet reads version {SCHEMA_VERSION}{newer}"
        )
    if rows != EXPECTED:
        missing = sorted(name for _, name, _, _ in EXPECTED - rows)
        extra = sorted(name for _, name, _, _ in rows - EXPECTED)
        parts = []
        if missing:
            parts.append(f"missing or changed: {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected: {', '.join(extra)}")
        raise LedgerDamaged(
            f"the ledger database {path} was modified outside swapmeet ({'; '.join(parts)}); not opened"
        )
    problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
    if problems != ["ok"]:
        raise LedgerDamaged(f"the ledger database {path} failed its integrity check: {problems[0]}; not opened")
    return False

"""Audit any set of ledger chains: verify everything, cross-check the chains, report findings with evidence.

``audit(raw_entries)`` takes raw entry bytes (from the local store, export
files, or anything else, in any order; (author, seq) order is what the store
and exports give) and returns an :class:`AuditReport`: totals and a list of
findings (:mod:`.audit_findings`), each with its evidence.

What is checked, and the finding kind it gives:

- every entry passes the trust boundary (``boundary.decode``: all signatures,
  embedded objects and rules). Rejections: ``bad-signature``,
  ``unsigned-exchange`` (an exchange on a chain lacking a party's signature),
  ``non-party-entry``, ``rating-without-exchange``, ``rating-by-non-party``,
  ``broken-link`` (seq 1 with a predecessor), else ``invalid-entry``;
- each chain: ``gap`` (missing sequence numbers, including a chain not
  starting at 1), ``broken-link`` (``prev`` is not the entry held at
  ``seq - 1``), ``fork`` (two valid different entries at one (author, seq);
  evidence: an ``evidence.fork_proof``);
- ``missing-entry``: a complete exchange recorded on one party's chain but on
  not another party's, although we hold that party's chain up to an entry
  timed after the exchange's creation + ``CLOCK_SKEW``;
- ``overcommit``: a listing whose author signed complete exchanges (on chains
  or inside ratings) that include the listing and together give more of a
  listed item than listed (evidence: an ``evidence.overcommit_proof``);
- ``duplicate-rating``: one rater rating one subject twice for one exchange
  (two different rating objects);
- ``iou-imbalance``, defined as follows. Items whose unit is exactly ``"iou"``
  are promises (``5 iou x hours-of-babysitting``). For each IOU item name,
  each author whose chain we hold has a balance: the IOU it received minus the
  IOU it gave, over the distinct exchanges on its own chain, counting only
  legs whose giver and receiver both have a chain we hold. Every such leg is
  +q on the receiver's chain and -q on the giver's, so if both sides recorded
  the exchange the balances sum to 0 over all authors; a non-zero sum means one
  side recorded an IOU the other did not. The finding gives the sum, the
  non-zero balances and (up to 20) exchanges with that IOU recorded by one side only.

Totals: ``chains`` (authors with at least one entry), ``entries`` (distinct
entries), ``exchanges`` (distinct complete exchanges recorded on the chains),
``parties`` (distinct parties of those exchanges).

How it scales. Signature checks dominate, so they run in ``workers`` processes
(:mod:`.audit_worker`). The parent first copies the input into temporary
bucket files grouped by the exchange each entry carries (:class:`_Buckets`),
so that every record of one exchange, and every rating of it, reaches the
same worker at about the same time; the worker's caches then decode and
verify that exchange once instead of once per chain. The parent stores the
workers' compact summary rows in a temporary SQLite database
(:mod:`.audit_db`) and runs the cross-chain checks as queries at the end, so
the order of the input does not matter. Memory is bounded by the chunk queue,
one bucket's index and SQLite's page cache, not by the ledger; temporary disk
use is about the size of the input. The bucket files are also what a second
pass reads to fetch the bytes behind fork and over-commitment proofs, so the
input itself is read exactly once and may be any iterable.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import struct
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from swapmeet.protocol import boundary, evidence
from swapmeet.protocol.errors import InvalidObject, SwapmeetError
from swapmeet.protocol.objects import Exchange, LedgerEntry

from .audit_db import PendingFork, PendingOvercommit, SummaryDB, Totals
from .audit_findings import FINDING_KINDS, Finding, Fork, Overcommit, pid
from .audit_peek import digest, grouping_key, peek
from .audit_worker import DEFAULT_CACHE_LIMIT, Rows, Summariser, worker_main

__all__ = ["FINDING_KINDS", "AuditError", "AuditReport", "Finding", "audit"]

CHUNK = 256  # entries per message to a worker: big enough to amortise IPC, small enough to balance
IN_FLIGHT = 3  # chunks queued per worker: keeps workers busy while bounding memory
Progress = Callable[[int], None]


class AuditError(SwapmeetError):
    """The audit itself could not run (a worker process died)."""

    exit_code = 70


@dataclass(slots=True)
class AuditReport:
    chains: int
    entries: int
    exchanges: int
    parties: int
    findings: list[Finding] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    """Wall seconds per phase: copy (input to buckets), verify (workers), checks (queries and evidence)."""

    @property
    def clean(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {
            "chains": self.chains,
            "entries": self.entries,
            "exchanges": self.exchanges,
            "parties": self.parties,
            "findings": [f.to_json() for f in self.findings],
        }


def audit(
    raw_entries: Iterable[bytes], *, workers: int | None = os.cpu_count(), progress: Progress | None = None
) -> AuditReport:
    """Audit the chains whose raw entries ``raw_entries`` yields; see the module docstring.

    ``workers`` processes verify signatures (1 or less: everything in this
    process, without the workers' object cache); ``progress(n)`` is called with the
    number of entries verified so far.
    """
    workers = workers or 1
    with tempfile.TemporaryDirectory(prefix="swapmeet-audit-") as scratch:
        directory = Path(scratch)
        buckets = _Buckets(directory)
        # The workers start (a fresh interpreter each) while the input is being copied.
        pool = _Pool(workers, DEFAULT_CACHE_LIMIT) if workers > 1 else None
        db: SummaryDB | None = None
        timings: dict[str, float] = {}
        started = time.perf_counter()
        try:
            buckets.fill(raw_entries)
            timings["copy"] = time.perf_counter() - started
            db = SummaryDB(directory)
            rejected: list[Finding] = []
            if pool is None:
                _run_inline(buckets.grouped(), db, rejected, progress)
            else:
                _run_pool(pool, buckets.grouped(), db, rejected, progress)
                pool.close()
            timings["verify"] = time.perf_counter() - started - timings["copy"]
            db.finish_loading()
            findings = rejected
            forks: list[PendingFork] = []
            findings.extend(db.chain_findings(forks))
            findings.extend(db.missing_entries())
            overcommits = db.overcommits(evidence.MAX_OVERCOMMIT_EXCHANGES)
            findings.extend(db.duplicate_ratings())
            findings.extend(db.iou_imbalances())
            if forks or overcommits:
                findings.extend(_with_evidence(buckets.replay(), db, forks, overcommits))
            findings.sort(key=_order)
            totals: Totals = db.totals()
            timings["checks"] = time.perf_counter() - started - timings["copy"] - timings["verify"]
        finally:
            if pool is not None:
                pool.close()
            if db is not None:
                db.close()
    return AuditReport(totals.chains, totals.entries, totals.exchanges, totals.parties, findings, timings)


_KIND_ORDER = {cls.kind: i for i, cls in enumerate(FINDING_KINDS)}


def _order(finding: Finding) -> tuple[int, str, int, str]:
    """Report order: by kind (entries, chains, exchanges, ratings, IOUs), then where."""
    data = finding.to_json()
    where = (str(data.get("author") or ""), int(data.get("seq") or 0), str(data.get("entry") or ""))
    return (_KIND_ORDER[finding.kind], *where)


# --------------------------------------------------------------------------- running the workers


def _run_inline(
    source: Iterable[tuple[int, bytes]], db: SummaryDB, rejected: list[Finding], progress: Progress | None
) -> None:
    summariser = Summariser()
    done = 0
    chunk: list[bytes] = []
    for _key, raw in source:
        chunk.append(raw)
        if len(chunk) == CHUNK:
            done += _store(summariser.chunk(chunk), len(chunk), db, rejected, progress, done)
            chunk = []
    if chunk:
        _store(summariser.chunk(chunk), len(chunk), db, rejected, progress, done)


def _store(rows: Rows, count: int, db: SummaryDB, rejected: list[Finding], progress: Progress | None, done: int) -> int:
    db.add(rows)
    rejected.extend(rows.findings)
    if progress is not None:
        progress(done + count)
    return count


class _Pool:
    """Worker processes, one inbox each (routing needs affinity), one shared outbox."""

    def __init__(self, workers: int, cache_limit: int) -> None:
        # spawn: a fresh interpreter per worker, safe whatever threads the caller runs.
        context = multiprocessing.get_context("spawn")
        self.outbox = context.Queue()
        self.inboxes = [context.Queue() for _ in range(workers)]
        self.processes = [
            context.Process(target=worker_main, args=(inbox, self.outbox, i, cache_limit), daemon=True)
            for i, inbox in enumerate(self.inboxes)
        ]
        for process in self.processes:
            process.start()
        self.in_flight = [0] * workers
        self.running = workers
        self.sent = 0
        self.closed = False

    def submit(self, worker: int, chunk: list[bytes], receive: Callable[[Rows, int], None]) -> None:
        while self.in_flight[worker] >= IN_FLIGHT:
            self._receive(receive)
        self.inboxes[worker].put((self.sent, chunk))
        self.sent += 1
        self.in_flight[worker] += 1

    def finish(self, receive: Callable[[Rows, int], None]) -> None:
        for inbox in self.inboxes:
            inbox.put(None)
        while self.running:
            self._receive(receive)

    def _receive(self, receive: Callable[[Rows, int], None]) -> None:
        while True:
            try:
                what, worker, _number, count, payload = self.outbox.get(timeout=1.0)
                break
            except queue.Empty:
                for process in self.processes:
                    if process.exitcode not in (None, 0):
                        raise AuditError(f"audit worker {process.pid} died (exit code {process.exitcode})") from None
        if what == "error":
            raise AuditError(f"audit worker failed: {payload}")
        if what == "done":
            self.running -= 1
            return
        self.in_flight[worker] -= 1
        receive(payload, count)

    def close(self) -> None:
        """Stop and reap the workers (idempotent); joining also makes their usage count as our children's."""
        if self.closed:
            return
        self.closed = True
        for process in self.processes:
            if process.is_alive():
                process.terminate()
            process.join()
        for q in (*self.inboxes, self.outbox):
            q.close()
            q.cancel_join_thread()


def _run_pool(
    pool: _Pool,
    source: Iterable[tuple[int, bytes]],
    db: SummaryDB,
    rejected: list[Finding],
    progress: Progress | None,
) -> None:
    done = 0

    def receive(rows: Rows, count: int) -> None:
        nonlocal done
        done += _store(rows, count, db, rejected, progress, done)

    workers = len(pool.inboxes)
    buffers: list[list[bytes]] = [[] for _ in range(workers)]
    for key, raw in source:
        # Every entry carrying one exchange has the same key (see _Buckets): same worker, same chunk.
        worker = key % workers
        buffer = buffers[worker]
        buffer.append(raw)
        if len(buffer) == CHUNK:
            pool.submit(worker, buffer, receive)
            buffers[worker] = []
    for worker, buffer in enumerate(buffers):
        if buffer:
            pool.submit(worker, buffer, receive)
    pool.finish(receive)


# --------------------------------------------------------------------------- evidence


def _with_evidence(
    source: Iterable[bytes], db: SummaryDB, forks: list[PendingFork], overcommits: list[PendingOvercommit]
) -> list[Finding]:
    """Second pass: find the bytes behind fork and over-commitment findings and build their proofs."""
    fork_ids = {(f.author, f.seq): set(f.ids) for f in forks}
    wanted_x = db.digests_of(sorted({x for o in overcommits for x in o.exchanges}))
    entries: dict[bytes, LedgerEntry] = {}
    exchanges: dict[bytes, Exchange] = {}
    for raw in source:
        if fork_ids:
            claimed = peek(raw)
            ids = fork_ids.get((claimed.author, claimed.seq)) if claimed is not None else None
            if ids and digest(raw) in ids:
                entries[digest(raw)] = boundary.decode(raw, kind="entry")
        if wanted_x:
            carried = grouping_key(raw)  # the exchange an entry records or rates (or the entry itself)
            xid = wanted_x.get(digest(carried))
            if xid is not None and xid not in exchanges:
                exchanges[xid] = boundary.decode(carried, kind="exchange")
    found: list[Finding] = []
    for f in forks:
        proof = None
        if f.ids[0] in entries and f.ids[1] in entries:
            proof = evidence.fork_proof(entries[f.ids[0]], entries[f.ids[1]]).raw.hex()
        found.append(Fork(pid(f.author) or "", f.seq, [i.hex() for i in f.ids], proof))
    for o in overcommits:
        found.append(
            Overcommit(
                listing=o.listing.hex(),
                author=pid(o.author) or "",
                item=o.item,
                unit=o.unit,
                listed=o.listed,
                given=o.given,
                exchanges=[x.hex() for x in o.exchanges],
                proof=_overcommit_proof(o, [exchanges[x] for x in o.exchanges if x in exchanges]),
            )
        )
    return found


def _overcommit_proof(pending: PendingOvercommit, exchanges: list[Exchange]) -> str | None:
    listing = next((item for x in exchanges for item in x.listings if item.id == pending.listing), None)
    if listing is None:
        return None
    try:
        return evidence.overcommit_proof(listing, exchanges).raw.hex()
    except InvalidObject:  # e.g. not all exchanges were found again: report without a proof
        return None


# --------------------------------------------------------------------------- grouping by exchange


class _Buckets:
    """A temporary copy of the input, regrouped so that the entries carrying one exchange come together.

    In (author, seq) order the two records of one exchange are a whole ledger
    apart; the workers' object cache can only reuse a decoded exchange if its
    copies (and ratings) arrive together. So the input is written to
    ``COUNT`` bucket files by a key derived from the exchange bytes an entry
    carries (an external sort's first pass), and each bucket is then read back
    in key order, using an in-memory index of (key, offset, size) only. The
    copy is also what the evidence pass reads again, so the input is read
    exactly once (any iterable will do). Disk: the size of the input; memory:
    one bucket's index.
    """

    COUNT = 64
    IN_MEMORY = 32 * 1024 * 1024  # a bucket up to this size is read whole
    _HEAD = struct.Struct(">qI")

    def __init__(self, directory: Path) -> None:
        self.paths = [directory / f"bucket-{i:02d}.bin" for i in range(self.COUNT)]

    def fill(self, source: Iterable[bytes]) -> None:
        files = [path.open("wb") for path in self.paths]
        try:
            for raw in source:
                raw = bytes(raw)
                # hash() of bytes is stable within this process, which is all the grouping needs.
                key = hash(grouping_key(raw))
                files[(key >> 8) % self.COUNT].write(self._HEAD.pack(key, len(raw)) + raw)
        finally:
            for f in files:
                f.close()

    def grouped(self) -> Iterator[tuple[int, bytes]]:
        """(key, raw) of every entry, bucket by bucket, in key order within a bucket."""
        for path in self.paths:
            if path.stat().st_size <= self.IN_MEMORY:
                data = path.read_bytes()  # a small bucket: one read, then slices
                index = list(self._index(data))
                index.sort()
                for key, offset, size in index:
                    yield key, data[offset : offset + size]
                continue
            # A large bucket: keep only its index in memory and seek to each entry.
            with path.open("rb") as f:
                index = []
                while header := f.read(self._HEAD.size):
                    key, size = self._HEAD.unpack(header)
                    index.append((key, f.tell(), size))
                    f.seek(size, os.SEEK_CUR)
                index.sort()
                for key, offset, size in index:
                    f.seek(offset)
                    yield key, f.read(size)

    def _index(self, data: bytes) -> Iterator[tuple[int, int, int]]:
        unpack, step, offset = self._HEAD.unpack_from, self._HEAD.size, 0
        while offset < len(data):
            key, size = unpack(data, offset)
            yield key, offset + step, size
            offset += step + size

    def replay(self) -> Iterator[bytes]:
        for path in self.paths:
            with path.open("rb") as data:
                yield from self._read(data)

    def _read(self, data: BinaryIO) -> Iterator[bytes]:
        while header := data.read(self._HEAD.size):
            _key, size = self._HEAD.unpack(header)
            yield data.read(size)

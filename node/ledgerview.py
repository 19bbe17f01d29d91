"""The ledger as the local user reads it: chains held, one chain's entries, reputations, and an audit run.

Reads go through a read-only :class:`~swapmeet.ledger.store.LedgerStore` of
its own, opened per call in a worker thread (SQLite WAL: readers never block
the node's writer), as ``swapmeet ledger`` and ``swapmeet audit`` do from the
CLI. Reputations -- each author's completed trades (entries of its own chain)
and the ratings others gave it -- are computed from the whole store and
cached until the store's entry count changes, so a market page of 100
listings costs one dictionary lookup per author.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio
from swapmeet.ledger.audit import AuditReport, audit
from swapmeet.ledger.store import LedgerStore
from swapmeet.protocol import boundary
from swapmeet.protocol.objects import KIND_EXCHANGE, KIND_RATING, LedgerEntry, Rating

INLINE_AUDIT = 20_000  # entries: below this the audit runs in one thread, above it in worker processes


@dataclass(frozen=True, slots=True)
class Reputation:
    """``trades``: complete exchanges on the author's chain (None: this node holds no chain of it);
    ``ratings``: ratings others gave it, ``score``: their mean (None without ratings)."""

    trades: int | None
    ratings: int
    score: float | None


@dataclass(frozen=True, slots=True)
class ChainHeld:
    author: bytes
    length: int
    head: bytes
    forked: bool


class LedgerViews:
    """Read-only views of the node's ledger for the local user."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cache: tuple[int, dict[bytes, int], dict[bytes, list[int]]] | None = None
        self._lock = trio.Lock()

    def _open(self) -> LedgerStore | None:
        return LedgerStore.open(self.path, readonly=True) if self.path.exists() else None

    def _read(self, fn: Callable[[LedgerStore], object], empty: object) -> object:
        store = self._open()
        if store is None:
            return empty
        try:
            return fn(store)
        finally:
            store.close()

    async def chains(self) -> list[ChainHeld]:
        def read(store: LedgerStore) -> list[ChainHeld]:
            forked = store.forked_authors()
            return [ChainHeld(a, seq, head, a in forked) for a, (seq, head) in sorted(store.heads().items())]

        return await trio.to_thread.run_sync(self._read, read, [])  # type: ignore[return-value]

    async def chain(self, author: bytes, limit: int) -> list[LedgerEntry]:
        """The newest ``limit`` entries of ``author``'s chain, newest first ([] when not held)."""

        def read(store: LedgerStore) -> list[LedgerEntry]:
            head = store.head(author)
            if head is None:
                return []
            first = max(1, head[0] - limit + 1)
            raws = [store.get(author, seq) for seq in range(head[0], first - 1, -1)]
            return [boundary.decode(raw, kind="entry") for raw in raws if raw is not None]

        return await trio.to_thread.run_sync(self._read, read, [])  # type: ignore[return-value]

    async def reputation(self, authors: Sequence[bytes]) -> dict[bytes, Reputation]:
        async with self._lock:
            trades, scores = await trio.to_thread.run_sync(self._tallies)
        out = {}
        for a in authors:
            given = scores.get(a, [])
            out[a] = Reputation(trades.get(a), len(given), sum(given) / len(given) if given else None)
        return out

    def _tallies(self) -> tuple[dict[bytes, int], dict[bytes, list[int]]]:
        store = self._open()
        if store is None:
            return {}, {}
        try:
            entries = store.counts().entries
            if self._cache is not None and self._cache[0] == entries:
                return self._cache[1], self._cache[2]
            trades = {a: 0 for a in store.heads()} | store.kind_counts(KIND_EXCHANGE)
            scores: dict[bytes, list[int]] = {}
            seen: set[tuple[bytes, bytes, bytes]] = set()  # one rating per (rater, subject, exchange)
            for raw in store.raws_of_kind(KIND_RATING):
                rating = boundary.decode(raw, kind="entry").payload
                if isinstance(rating, Rating):
                    key = (rating.author, rating.subject, rating.exchange.id)
                    if key not in seen:
                        seen.add(key)
                        scores.setdefault(rating.subject, []).append(rating.score)
            self._cache = (entries, trades, scores)
            return trades, scores
        finally:
            store.close()

    async def audit(self, progress: Callable[[int, int], None] | None = None) -> AuditReport:
        """Audit every chain held (fork entries included); ``progress(done, total)`` as entries are verified."""

        def run() -> AuditReport:
            store = self._open()
            if store is None:
                return audit([], workers=1)
            try:
                counts = store.counts()
                total = counts.entries + counts.forks
                workers = 1 if total < INLINE_AUDIT else os.cpu_count()

                class _Entries:  # re-iterable: the audit may read twice (evidence)
                    def __iter__(self):  # type: ignore[no-untyped-def]
                        return store.iter_raw()

                report = audit(
                    _Entries(), workers=workers, progress=(lambda n: progress(n, total)) if progress else None
                )
                return report
            finally:
                store.close()

        return await trio.to_thread.run_sync(run)

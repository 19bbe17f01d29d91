"""Benchmark of the ledger: durable appends, batch ingest, and the audit of a large synthetic ledger.

Builds a synthetic market ledger (``bench/support/synthetic.py``: many authors,
two-party exchanges on both chains, three-party rings, ratings, receipts,
IOUs; 1M entries in the full run, 15k with ``--quick``), writes it as an
export file in (author, seq) order, audits it with one worker per core and
measures, in the same run:

- ``durable_appends_per_s``: ``LedgerStore.append_own``, each append fsynced;
- ``batch_ingest_per_s``: ``LedgerStore.ingest`` of peers' chains into a fresh store;
- ``audit_entries_per_s``: entries audited per second of wall time;
- ``audit_ratio`` = bare / (cores x audit wall time), where *bare* is the time
  a single-core loop of PyNaCl ``VerifyKey(pk).verify(msg, sig)`` takes over
  exactly the distinct signatures the audit must check for this ledger (every
  entry's signature plus every distinct embedded one: listings, offers,
  exchange party signatures, ratings, receipts). The generator counts those
  signatures as it makes them (each is made once); the per-signature time is
  measured on a uniform sample of them. 1.0 means the audit runs as fast as
  bare signature checks spread perfectly over all cores;
- ``peak_rss_mb``: ``getrusage`` max RSS over this process and its children
  (the audit workers), each counted on its own.

Goals (issue 3): audit_ratio >= 0.7; peak RSS < 300 MB and a full audit in
< 60 s on 2 cores for 1M entries. The last line printed is a JSON object of
every figure. Run: ``python bench/ledger.py [--quick] [--entries N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import nacl.signing
from support.synthetic import T0, SyntheticLedger
from swapmeet.ledger.audit import audit
from swapmeet.ledger.audit_peek import peek
from swapmeet.ledger.export_file import read_export, write_export
from swapmeet.ledger.store import LedgerStore
from swapmeet.protocol import build
from swapmeet.protocol.identity import Identity

GOAL_RATIO = 0.7
GOAL_RSS_MB = 300
GOAL_SECONDS_1M_2_CORES = 60


def say(text: str) -> None:
    print(text, flush=True)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the audit workers, once joined)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    peak = max(own, children)  # ru_maxrss is in bytes on macOS, KiB elsewhere
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


class ExportSource:
    """An export file, re-readable (the audit may read it twice)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __iter__(self) -> Iterator[bytes]:
        return read_export(self.path)


def build_ledger(directory: Path, entries: int, authors: int, sample: int) -> tuple[SyntheticLedger, Path, Path]:
    """Generate the ledger, sort it into (author, seq) order through SQLite, write the export file."""
    market = SyntheticLedger(authors=authors, seed=1, sample_size=sample)
    sorter_path = directory / "sorter.sqlite"
    sorter = sqlite3.connect(sorter_path)
    sorter.execute("PRAGMA journal_mode=OFF")
    sorter.execute("PRAGMA synchronous=OFF")
    sorter.execute("CREATE TABLE e(author BLOB, seq INTEGER, raw BLOB)")
    start = time.perf_counter()
    batch: list[tuple[bytes, int, bytes]] = []
    for raw in market.entries(entries):
        claimed = peek(raw)
        assert claimed is not None
        batch.append((claimed.author, claimed.seq, raw))
        if len(batch) == 10_000:
            sorter.executemany("INSERT INTO e VALUES (?, ?, ?)", batch)
            batch.clear()
    sorter.executemany("INSERT INTO e VALUES (?, ?, ?)", batch)
    sorter.commit()
    generated = time.perf_counter() - start
    export = directory / "ledger.smx"
    rows = (raw for (raw,) in sorter.execute("SELECT raw FROM e ORDER BY author, seq"))
    write_export(export, rows)
    sorter.execute("CREATE INDEX e_author ON e(author, seq)")
    sorter.close()
    say(
        f"built {market.stats.entries} entries by {authors} authors ({market.stats.exchanges} exchanges, "
        f"{market.stats.signatures} signatures) in {generated:.1f} s; export file {export.stat().st_size / 1e6:.0f} MB"
    )
    return market, export, sorter_path


def bench_appends(directory: Path, count: int) -> float:
    me, peer = Identity(b"\x05" * 32), Identity(b"\x06" * 32)
    listing = build.make_listing(
        me, title="Desk for a day", have=[build.parse_item("1 x desk")], created=T0, expires=T0 + 86_400
    )
    offer = build.make_offer(
        peer, listing, take=[build.parse_item("1 x desk")], give=[build.parse_item("2 kg x apples")],
        created=T0 + 10, expires=T0 + 3600,
    )  # fmt: skip
    exchange = build.exchange_for_offer(offer, created=T0 + 20, deadline=T0 + 600)
    exchange = build.sign_exchange(build.sign_exchange(exchange, me), peer)
    receipt = build.make_receipt(me, exchange, legs=[1], created=T0 + 30)
    with LedgerStore.open(directory / "appends.sqlite") as store:
        store.append_own(me, exchange, T0 + 30)
        start = time.perf_counter()
        for i in range(count):
            store.append_own(me, receipt, T0 + 40 + i)
        elapsed = time.perf_counter() - start
    return count / elapsed


def bench_ingest(directory: Path, sorter_path: Path, limit: int) -> tuple[float, int]:
    """Ingest whole chains of the synthetic ledger (as a node syncing peers) into a fresh store."""
    sorter = sqlite3.connect(sorter_path)
    authors = [a for (a,) in sorter.execute("SELECT DISTINCT author FROM e")]
    raws: list[bytes] = []
    for author in authors:
        chain = [raw for (raw,) in sorter.execute("SELECT raw FROM e WHERE author = ? ORDER BY seq", (author,))]
        raws.extend(chain[: limit - len(raws)])
        if len(raws) >= limit:
            break
    sorter.close()
    with LedgerStore.open(directory / "ingest.sqlite") as store:
        start = time.perf_counter()
        result = store.ingest(raws)
        elapsed = time.perf_counter() - start
    assert result.ok, result.refusals[:3]
    return len(raws) / elapsed, len(raws)


def bare_verify_seconds(sample: list[tuple[bytes, bytes, bytes]]) -> float:
    """Seconds per signature of a bare single-core PyNaCl verify loop over ``sample`` (best of 3)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for key, message, signature in sample:
            nacl.signing.VerifyKey(key).verify(message, signature)
        best = min(best, time.perf_counter() - start)
    return best / len(sample)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (15k entries, under 40 s on 2 cores)")
    parser.add_argument("--entries", type=int, help="ledger size (default: 1,000,000, or 15,000 with --quick)")
    parser.add_argument("--workers", type=int, default=cores(), help="audit worker processes (default: all cores)")
    args = parser.parse_args()
    entries = args.entries or (15_000 if args.quick else 1_000_000)
    authors = max(20, min(2000, entries // 500))
    n_cores = cores()
    sample_size = 4000 if args.quick else 20_000

    with tempfile.TemporaryDirectory(prefix="swapmeet-bench-") as scratch:
        directory = Path(scratch)
        market, export, sorter_path = build_ledger(directory, entries, authors, sample_size)
        appends = bench_appends(directory, 100 if args.quick else 1000)
        say(f"durable appends: {appends:,.0f}/s (append_own, one fsynced transaction each)")
        ingest, ingested = bench_ingest(directory, sorter_path, 2000 if args.quick else 20_000)
        say(f"batch ingest: {ingest:,.0f} entries/s ({ingested} entries of peers' chains, one transaction)")

        load_before = os.getloadavg()[0]
        cpu_before = cpu_seconds()
        start = time.perf_counter()
        report = audit(ExportSource(export), workers=args.workers)
        audit_seconds = time.perf_counter() - start
        audit_cpu = cpu_seconds() - cpu_before
        load_after = os.getloadavg()[0]
        assert report.entries == market.stats.entries, (report.entries, market.stats.entries)
        per_signature = bare_verify_seconds(market.stats.sample)

    signatures = market.stats.signatures
    bare_seconds = per_signature * signatures
    ratio = bare_seconds / (n_cores * audit_seconds)
    rss = peak_rss_mb()
    audit_rate = report.entries / audit_seconds
    say(
        f"audit: {report.entries:,} entries, {report.chains} chains, {report.exchanges:,} exchanges, "
        f"{len(report.findings)} findings in {audit_seconds:.1f} s with {args.workers} workers on {n_cores} cores: "
        f"{audit_rate:,.0f} entries/s"
    )
    say("audit phases: " + ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in report.timings.items()))
    say(
        f"bare single-core PyNaCl verify: {1 / per_signature:,.0f} signatures/s (best of 3 over a sample of "
        f"{len(market.stats.sample):,}); this ledger has {signatures:,} distinct signatures "
        f"({signatures / report.entries:.2f} per entry) = {bare_seconds:.1f} s on one core"
    )
    say(
        "audit_ratio = bare single-core verify time of those signatures / (cores x audit wall time) = "
        f"{bare_seconds:.1f} / ({n_cores} x {audit_seconds:.1f}) = {ratio:.3f} (goal >= {GOAL_RATIO})"
    )
    say(
        f"audit CPU time {audit_cpu:.1f} s (parent and workers): bare / audit CPU = {bare_seconds / audit_cpu:.3f}, "
        f"i.e. the efficiency the audit_ratio would have on otherwise idle cores; "
        f"load average {load_before:.1f} before, {load_after:.1f} after"
    )
    say(f"peak RSS (max of this process and each audit worker): {rss:.0f} MB (goal < {GOAL_RSS_MB} MB at 1M)")
    floor = bare_seconds / n_cores
    if entries >= 1_000_000:
        say(
            f"1M-entry audit goal: < {GOAL_SECONDS_1M_2_CORES} s on 2 cores; measured {audit_seconds:.1f} s "
            f"(the bare signature checks alone need {floor:.1f} s on these {n_cores} cores)"
        )
    print(
        json.dumps(
            {
                "entries": report.entries,
                "authors": authors,
                "cores": n_cores,
                "workers": args.workers,
                "durable_appends_per_s": round(appends, 1),
                "batch_ingest_per_s": round(ingest, 1),
                "audit_entries_per_s": round(audit_rate, 1),
                "audit_seconds": round(audit_seconds, 2),
                "audit_ratio": round(ratio, 3),
                "audit_cpu_seconds": round(audit_cpu, 2),
                "audit_phase_seconds": {phase: round(seconds, 2) for phase, seconds in report.timings.items()},
                "audit_cpu_ratio": round(bare_seconds / audit_cpu, 3),
                "load_average": [round(load_before, 2), round(load_after, 2)],
                "peak_rss_mb": round(rss, 1),
                "signatures": signatures,
                "baselines": {
                    "bare_verify_per_s_single_core": round(1 / per_signature, 1),
                    "bare_verify_seconds_single_core": round(bare_seconds, 2),
                    "bare_verify_seconds_all_cores": round(floor, 2),
                },
                "goals": {
                    "audit_ratio": GOAL_RATIO,
                    "peak_rss_mb_at_1m": GOAL_RSS_MB,
                    "audit_seconds_1m_2_cores": GOAL_SECONDS_1M_2_CORES,
                },
            }
        )
    )


if __name__ == "__main__":
    main()

"""The exact JSON of ``swapmeet ledger show|export|import|verify --json``, pinned byte for byte.

These shapes are a documented interface (docs/GUIDE.md section 6, rendered by
:mod:`swapmeet.node.jsonview`): scripts parse them. Each case runs the real command on a
small deterministic ledger (fixed keys and times, so fixed ids and signatures) and compares
its exit code and standard output with ``tests/golden/ledger-json.txt``: key order, spacing
and escaping included. A deliberate change (a field added) regenerates the file with
``SWAPMEET_TEST_UPDATE_GOLDEN=1 python -m pytest tests/test_cli_ledger_json.py``; review the diff.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from swapmeet.ledger.export_file import write_export
from swapmeet.ledger.store import LedgerStore
from swapmeet.protocol import build
from swapmeet.protocol.boundary import ZERO_ID
from swapmeet.protocol.identity import peer_id
from swapmeet.protocol.objects import LedgerEntry, Payload

from tests.cli_helpers import run_cli
from tests.protocol_fixtures import ALICE, BOB, CAROL, T, complete_exchange, ring

GOLDEN = Path(__file__).parent / "golden" / "ledger-json.txt"
UPDATE = os.environ.get("SWAPMEET_TEST_UPDATE_GOLDEN") == "1"


def chain(identity, payloads: list[Payload], start: int = 0) -> list[LedgerEntry]:
    out: list[LedgerEntry] = []
    prev = ZERO_ID
    for seq, payload in enumerate(payloads, start=1):
        out.append(build.make_entry(identity, seq=seq, prev=prev, time=T + 100 + start + seq, payload=payload))
        prev = out[-1].id
    return out


def market() -> tuple[dict[str, list[LedgerEntry]], LedgerEntry]:
    """Alice: a two-party exchange, a ring, a rating, a receipt; Bob: both exchanges; Carol: the ring.
    Plus a fork of Alice's chain at seq 2."""
    x, r = complete_exchange(), ring()
    me = x.index_of(ALICE.public_key)
    to_alice = [i for i, leg in enumerate(x.legs) if leg.receiver == me]
    rating = build.make_rating(ALICE, x, subject=BOB.public_key, score=4, created=T + 50, comment='très "bien"')
    receipt = build.make_receipt(ALICE, x, legs=to_alice, created=T + 60)
    chains = {
        "alice": chain(ALICE, [x, r, rating, receipt]),
        "bob": chain(BOB, [x, r], start=10),
        "carol": chain(CAROL, [r], start=20),
    }
    fork = build.make_entry(ALICE, seq=2, prev=chains["alice"][0].id, time=T + 199, payload=x)
    return chains, fork


def record(cases: list[str], name: str, proc) -> None:
    cases.append(f"### {name} (exit {proc.returncode})\n{proc.stdout}")


def test_ledger_json_output_is_pinned(tmp_path: Path) -> None:
    chains, fork = market()
    home, empty, fresh, tampered = (tmp_path / n for n in ("home", "empty", "fresh", "tampered"))
    for h in (home, tampered):
        h.mkdir()
        with LedgerStore.open(h / "ledger.sqlite") as store:
            result = store.ingest([e.raw for c in chains.values() for e in c] + [fork.raw])
            assert result.ok and len(result.forks) == 1
    alice, bob = peer_id(ALICE.public_key), peer_id(BOB.public_key)
    gap = tmp_path / "gap.smx"  # Alice's chain without seq 2: seq 1 is new, seqs 3 and 4 are refused
    write_export(gap, [e.raw for e in chains["alice"] if e.seq != 2])

    def run(h: Path, *args: str):
        return run_cli("--home", str(h), "ledger", *args)

    cases: list[str] = []
    record(cases, "show", run(home, "show", "--json"))
    record(cases, "show (no ledger)", run(empty, "show", "--json"))
    record(cases, "show alice", run(home, "show", alice, "--json"))
    record(cases, "show bob (by prefix)", run(home, "show", bob[:20], "--json"))
    record(cases, "export", run(home, "export", str(tmp_path / "all.smx"), "--json"))
    record(cases, "export --author", run(home, "export", str(tmp_path / "bob.smx"), "--author", bob, "--json"))
    record(cases, "export (no ledger)", run(empty, "export", str(tmp_path / "none.smx"), "--json"))
    record(cases, "import", run(fresh, "import", str(tmp_path / "all.smx"), "--json"))
    record(cases, "import again", run(fresh, "import", str(tmp_path / "all.smx"), "--json"))
    record(cases, "import with refusals", run(empty, "import", str(gap), "--json"))
    record(cases, "verify", run(home, "verify", "--json"))
    record(cases, "verify (no ledger)", run(tmp_path / "nothing", "verify", "--json"))
    conn = sqlite3.connect(tampered / "ledger.sqlite", isolation_level=None)
    trigger = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'entries_no_update'").fetchone()[0]
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("UPDATE entries SET time = 5 WHERE seq = 1")
    conn.execute(trigger)
    conn.close()
    record(cases, "verify (tampered)", run(tampered, "verify", "--json"))

    text = "\n".join(cases).replace(str(tmp_path), "<tmp>")
    if UPDATE:
        GOLDEN.write_text(text, encoding="utf-8")
    got, want = text.split("\n### "), GOLDEN.read_text(encoding="utf-8").split("\n### ")
    assert [case.partition("\n")[0] for case in got] == [case.partition("\n")[0] for case in want]
    for case, pinned in zip(got, want, strict=True):
        assert case == pinned

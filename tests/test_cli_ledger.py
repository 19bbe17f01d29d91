"""``swapmeet ledger show|export|import|verify``, run as real processes with no stdin.

Homes are populated in-process through the store; the CLI only reads or
imports them. Bad export files must give one line on stderr, exit code 2, and
import nothing.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from swapmeet.ledger.store import LedgerStore
from swapmeet.protocol import build, cbor
from swapmeet.protocol.boundary import ZERO_ID, object_id
from swapmeet.protocol.identity import peer_id

from tests.cli_helpers import assert_one_line_error, run_cli
from tests.protocol_fixtures import ALICE, BOB, T, complete_exchange, listing

X = complete_exchange()


def chain(identity, n: int) -> list[bytes]:
    out, prev = [], ZERO_ID
    for seq in range(1, n + 1):
        entry = build.make_entry(identity, seq=seq, prev=prev, time=T + 30 + seq, payload=X)
        out.append(entry.raw)
        prev = entry.id
    return out


def snapshot(home: Path) -> list[bytes]:
    if not (home / "ledger.sqlite").exists():
        return []
    with LedgerStore.open(home / "ledger.sqlite", readonly=True) as store:
        return list(store.iter_raw())


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home holding Alice's chain of 4 (with a fork at seq 2) and Bob's chain of 2."""
    home = tmp_path / "home"
    home.mkdir()
    alice = chain(ALICE, 4)
    fork = build.make_entry(ALICE, seq=2, prev=object_id(alice[0]), time=T + 99, payload=X)
    with LedgerStore.open(home / "ledger.sqlite") as store:
        result = store.ingest([*alice, *chain(BOB, 2), fork.raw])
        assert result.ok and len(result.forks) == 1
    return home


# --------------------------------------------------------------------------- show


def test_show_summarizes_every_chain(home: Path) -> None:
    proc = run(home, "ledger", "show")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["AUTHOR", "LENGTH", "HEAD", "FORKED"]
    by_author = {line.split()[0]: line.split() for line in lines[1:3]}
    assert by_author[peer_id(ALICE.public_key)][1:2] == ["4"]
    assert by_author[peer_id(ALICE.public_key)][3] == "FORKED"
    assert by_author[peer_id(BOB.public_key)][3] == "-"
    assert "2 chains, 6 entries, 1 fork entry" in proc.stdout

    data = json.loads(run(home, "ledger", "show", "--json").stdout)
    assert data["totals"] == {"chains": 2, "entries": 6, "fork_entries": 1, "forked_authors": 1}
    alice = next(c for c in data["chains"] if c["author"] == peer_id(ALICE.public_key))
    assert alice["length"] == 4 and alice["forked"] is True and alice["public_key"] == ALICE.public_key.hex()


def test_show_one_chain_by_prefix(home: Path) -> None:
    prefix = peer_id(BOB.public_key)[:16]
    proc = run(home, "ledger", "show", prefix)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"chain of {peer_id(BOB.public_key)}: 2 entries")
    assert lines[1].split()[:3] == ["SEQ", "TIME", "(UTC)"]
    assert [line.split()[0] for line in lines[2:]] == ["1", "2"]
    assert "gives 3 kg x apples; gets 1 x bike" in lines[2]

    data = json.loads(run(home, "ledger", "show", peer_id(ALICE.public_key), "--json").stdout)
    assert [e["seq"] for e in data["entries"]] == [1, 2, 3, 4]
    assert [f["seq"] for f in data["forks"]] == [2]
    assert data["forked"] is True and data["head"]["seq"] == 4
    assert {e["kind"] for e in data["entries"]} == {"exchange"}


def test_show_human_marks_fork_entries(home: Path) -> None:
    proc = run(home, "ledger", "show", peer_id(ALICE.public_key))
    assert proc.returncode == 0, proc.stderr
    fork_lines = [line for line in proc.stdout.splitlines() if "(FORK)" in line]
    assert len(fork_lines) == 1 and fork_lines[0].split()[0] == "2"


@pytest.mark.parametrize(
    ("author", "needle"),
    [("12D3KooW", "matches 2 authors"), ("12D3KooWzzzzzz", "no chain held"), ("not-a-peer", "no chain held")],
)
def test_show_unknown_or_ambiguous_author(home: Path, author: str, needle: str) -> None:
    assert_one_line_error(run(home, "ledger", "show", author), 2, needle)


def test_show_and_verify_on_a_home_without_a_ledger(tmp_path: Path) -> None:
    home = tmp_path / "nothing-here"
    proc = run(home, "ledger", "show")
    assert (proc.returncode, proc.stdout.strip()) == (0, "no chains held yet")
    proc = run(home, "ledger", "verify")
    assert proc.returncode == 0 and "nothing to verify" in proc.stdout
    assert not home.exists()  # read-only commands create nothing


# --------------------------------------------------------------------------- export / import / verify


def test_export_import_verify_round_trip(home: Path, tmp_path: Path) -> None:
    export = tmp_path / "all.cbor"
    proc = run(home, "ledger", "export", str(export))
    assert proc.returncode == 0, proc.stderr
    assert "exported 7 entries" in proc.stdout

    other = tmp_path / "other"
    proc = run(other, "ledger", "import", str(export))
    assert proc.returncode == 0, proc.stderr
    assert "6 new entries, 0 already held, 1 fork entry, 0 refused" in proc.stdout
    assert snapshot(other) == snapshot(home)

    proc = run(other, "ledger", "import", str(export), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) | {"file": ""} == {
        "file": "",
        "entries": 7,
        "accepted": 0,
        "duplicates": 7,
        "forks": [],
        "refused": 0,
        "refusals": [],
    }

    proc = run(other, "ledger", "verify")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(": ok")
    assert "verified 6 entries in 2 chains, 1 fork entry" in proc.stdout
    assert json.loads(run(other, "ledger", "verify", "--json").stdout)["ok"] is True

    # One author's chain; an existing file is not overwritten without --force.
    bob_file = tmp_path / "bob.cbor"
    proc = run(home, "ledger", "export", str(bob_file), "--author", peer_id(BOB.public_key)[:20])
    assert proc.returncode == 0 and "exported 2 entries of the chain of" in proc.stdout
    assert_one_line_error(run(home, "ledger", "export", str(bob_file)), 1, "exists", "--force")
    assert run(home, "ledger", "export", str(bob_file), "--force").returncode == 0


def test_import_reports_refused_entries_and_exits_1(home: Path, tmp_path: Path) -> None:
    from swapmeet.ledger.export_file import write_export

    alice = chain(ALICE, 5)
    path = tmp_path / "gap.cbor"
    write_export(path, [alice[0], alice[1], alice[3], alice[4]])
    other = tmp_path / "other"
    proc = run(other, "ledger", "import", str(path))
    assert proc.returncode == 1, proc.stderr
    assert "2 new entries" in proc.stdout and "2 refused" in proc.stdout
    assert "seq 4: gap: missing seq 3" in proc.stdout
    assert len(snapshot(other)) == 2  # the valid prefix is kept


def test_verify_exits_1_on_tampered_rows(home: Path) -> None:
    db = home / "ledger.sqlite"
    conn = sqlite3.connect(db, isolation_level=None)
    trigger = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'entries_no_update'").fetchone()[0]
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("UPDATE entries SET time = 5 WHERE seq = 1")
    conn.execute(trigger)
    conn.close()
    proc = run(home, "ledger", "verify")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "FAILED, 2 problems found" in proc.stdout
    assert proc.stdout.count("problem: ") == 2


def test_damaged_database_is_a_one_line_error(home: Path) -> None:
    db = home / "ledger.sqlite"
    db.write_bytes(b"\x00" * 4096)
    for command in (["show"], ["verify"], ["export", str(home / "x.cbor")]):
        assert_one_line_error(run(home, "ledger", *command), 2, str(db))


# --------------------------------------------------------------------------- bad files


def _bad_files(good: bytes) -> dict[str, bytes]:
    header = cbor.encode(["swapmeet/1", "ledger-export", {}])
    return {
        "truncated": good[: len(good) * 2 // 3],
        "truncated-at-an-item-boundary": good[: len(header)],
        "garbage": os.urandom(3000),
        "wrong-kind": listing().raw,
        "wrong-kind-item": header + cbor.encode(listing().raw) + cbor.encode(["swapmeet/1", "ledger-export-end", {}]),
        "huge": header + b"\x5b" + (1 << 50).to_bytes(8, "big") + b"\x00" * 1000,
    }


@pytest.mark.parametrize("name", list(_bad_files(b"x" * 100)))
def test_bad_files_exit_2_and_import_nothing(home: Path, tmp_path: Path, name: str) -> None:
    good = tmp_path / "good.cbor"
    with LedgerStore.open(home / "ledger.sqlite", readonly=True) as store:
        store.export(good)
    path = tmp_path / f"{name}.cbor"
    data = _bad_files(good.read_bytes())[name]
    if name == "garbage":
        data = b"\x01" + data  # random bytes could start like a header by (unlikely) chance
    path.write_bytes(data)

    # Into a home that already holds a ledger: unchanged.
    target = tmp_path / "target"
    target.mkdir()
    with LedgerStore.open(target / "ledger.sqlite") as store:
        store.ingest(chain(BOB, 1))
    before = snapshot(target)
    assert_one_line_error(run(target, "ledger", "import", str(path)), 2, str(path))
    assert snapshot(target) == before

    # Into a fresh home: nothing is created at all.
    fresh = tmp_path / "fresh"
    assert_one_line_error(run(fresh, "ledger", "import", str(path)), 2)
    assert not fresh.exists()


def run(home: Path, *args: str):
    return run_cli("--home", str(home), *args)


# --------------------------------------------------------------------------- files that are not files


@pytest.mark.parametrize("kind", ["named pipe", "directory"])
def test_every_command_that_reads_a_file_refuses_what_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    """A named pipe with no writer made `ledger import` hang forever; now each reader says what the path is.

    Covers the export given to `ledger import` and `audit`, the key file and the config file in a home
    (`--photo` is covered in tests/test_photos.py); run_cli's timeout turns a hang into a failure.
    """

    def make(path: Path) -> Path:
        if kind == "named pipe":
            os.mkfifo(path)
        else:
            path.mkdir()
        return path

    home = tmp_path / "home"
    home.mkdir()
    export = make(tmp_path / "export.cbor")
    assert_one_line_error(run(home, "ledger", "import", str(export)), 2, f"not a regular file (a {kind})")
    assert_one_line_error(run(home, "audit", str(export)), 2, "not a file")
    assert snapshot(home) == []

    make(home / "config.toml")
    assert_one_line_error(run(home, "config", "show"), 2, "config.toml", f"not a regular file (a {kind})")
    (home / "config.toml").unlink() if kind == "named pipe" else (home / "config.toml").rmdir()

    make(home / "identity.key")
    assert_one_line_error(run(home, "id"), 2, "identity.key", f"not a regular file (a {kind})")

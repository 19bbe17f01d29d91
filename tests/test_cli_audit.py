"""``swapmeet audit``, run as a real process with no stdin: exit codes, the JSON shape, one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from swapmeet.ledger.audit_peek import peek
from swapmeet.ledger.export_file import write_export
from swapmeet.ledger.store import LedgerStore

from bench.support.synthetic import SyntheticLedger
from tests.cli_helpers import assert_one_line_error, run_cli


def chains(defects: list[str] = (), count: int = 200) -> list[bytes]:  # type: ignore[assignment]
    """A small synthetic ledger in (author, seq) order, as the store and export files hold it."""
    raws = list(SyntheticLedger(authors=6, seed=4, defects=defects).entries(count))
    return sorted(raws, key=lambda raw: (peek(raw).author, peek(raw).seq))  # type: ignore[union-attr]


@pytest.fixture
def clean_file(tmp_path: Path) -> Path:
    path = tmp_path / "clean.smx"
    write_export(path, chains())
    return path


def test_clean_file_exits_0(tmp_path: Path, clean_file: Path) -> None:
    proc = run(tmp_path / "home", str(clean_file))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [proc.stdout.splitlines()[0]]
    assert proc.stdout.startswith("audited 6 chains, ") and proc.stdout.rstrip().endswith(": clean")
    report = json.loads(run(tmp_path / "home", str(clean_file), "--json").stdout)
    assert report["chains"] == 6 and report["findings"] == []
    assert set(report) == {"chains", "entries", "exchanges", "parties", "findings"}


def test_findings_exit_1_with_evidence(tmp_path: Path) -> None:
    path = tmp_path / "bad.smx"
    write_export(path, chains(["fork", "overcommit", "missing-entry"]))
    proc = run(tmp_path / "home", str(path), "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert sorted(f["kind"] for f in report["findings"]) == ["fork", "missing-entry", "overcommit"]
    fork = next(f for f in report["findings"] if f["kind"] == "fork")
    assert fork["author"].startswith("12D3KooW") and isinstance(fork["seq"], int) and len(fork["entries"]) == 2
    assert all(f.get("proof") for f in report["findings"] if f["kind"] in ("fork", "overcommit"))
    human = run(tmp_path / "home", str(path))
    assert human.returncode == 1
    lines = human.stdout.splitlines()
    assert lines[0].endswith(": 3 findings") and len(lines) == 4
    assert any(line.startswith("fork ") and "seq=" in line for line in lines)


def test_several_files_are_audited_as_one_set_of_chains(tmp_path: Path) -> None:
    raws = chains()
    first, second = tmp_path / "a.smx", tmp_path / "b.smx"
    write_export(first, raws[: len(raws) // 2])
    write_export(second, raws[len(raws) // 2 :])
    proc = run(tmp_path / "home", str(first), str(second), "--json")
    assert proc.returncode == 0, proc.stdout
    assert json.loads(proc.stdout)["entries"] == len(raws)


def test_garbage_file_exits_2_with_one_line(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.smx"
    garbage.write_bytes(os.urandom(3000))
    assert_one_line_error(run(tmp_path / "home", str(garbage)), 2, "garbage.smx")


def test_truncated_file_exits_2(tmp_path: Path, clean_file: Path) -> None:
    cut = tmp_path / "cut.smx"
    cut.write_bytes(clean_file.read_bytes()[:-500])
    assert_one_line_error(run(tmp_path / "home", str(cut)), 2, "cut.smx")


def test_missing_file_exits_2(tmp_path: Path) -> None:
    assert_one_line_error(run(tmp_path / "home", str(tmp_path / "nope.smx")), 2, "nope.smx")


def test_local_store(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run(home, "--json").returncode == 0  # no ledger yet: nothing to find
    home.mkdir()
    with LedgerStore.open(home / "ledger.sqlite") as store:
        result = store.ingest(chains(["fork"]))
        assert result.ok and result.forks
    proc = run(home, "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert [f["kind"] for f in report["findings"]] == ["fork"]
    assert report["chains"] == 6


def run(home: Path, *args: str):
    return run_cli("--home", str(home), "audit", *args, timeout=120)

"""Crash-safe files: the durable write helper and the append-only store of fork proofs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from swapmeet.ledger.durable import durable_file, write_durably
from swapmeet.node import forkproofs
from swapmeet.node.forkproofs import ForkProofs
from swapmeet.protocol import cbor

from bench.support.attacks import fork_proof


def test_a_durable_write_replaces_whole_with_its_mode_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "state.cbor"
    write_durably(target, b"old")
    write_durably(target, b"new", mode=0o600)
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.cbor"]


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "state.cbor"
    write_durably(target, b"old")
    with pytest.raises(RuntimeError), durable_file(target) as f:
        f.write(b"half of the new")
        raise RuntimeError("crash in the middle")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["state.cbor"]


def test_no_clobber_refuses_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "identity.key"
    write_durably(target, b"first", replace=False)
    with pytest.raises(FileExistsError):
        write_durably(target, b"second", replace=False)
    assert target.read_bytes() == b"first" and len(os.listdir(tmp_path)) == 1


def test_fork_proofs_are_appended_once_per_author_and_survive_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "forked.cbor"
    store = ForkProofs(path)
    first, second = fork_proof(), fork_proof()
    assert store.add(first) and store.add(second)
    size = path.stat().st_size
    assert store.add(fork_proof())  # another author: appended
    again = ForkProofs(path)
    assert first.author in again and second.author in again
    grown = path.stat().st_size
    assert grown > size  # appended, never rewritten smaller
    assert not again.add(first)  # one proof per author
    assert path.stat().st_size == grown


def test_a_legacy_array_file_and_a_damaged_tail_are_read_as_far_as_they_go(tmp_path: Path) -> None:
    legacy = tmp_path / "legacy.cbor"
    a, b = fork_proof(), fork_proof()
    legacy.write_bytes(cbor.encode(sorted([a.raw, b.raw])))
    assert set(ForkProofs(legacy).proofs) == {a.author, b.author}
    damaged = tmp_path / "damaged.cbor"
    damaged.write_bytes(cbor.encode(a.raw) + cbor.encode(b.raw)[:-5])  # the second item cut short
    kept = ForkProofs(damaged)
    assert set(kept.proofs) == {a.author}
    assert kept.add(b)  # appended after the last good proof (the damaged tail was cut off)
    assert set(ForkProofs(damaged).proofs) == {a.author, b.author}


def test_fork_proofs_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forkproofs, "MAX_PROOFS", 2)
    store = ForkProofs(tmp_path / "forked.cbor")
    assert store.add(fork_proof()) and store.add(fork_proof())
    assert not store.add(fork_proof())
    assert len(ForkProofs(tmp_path / "forked.cbor").proofs) == 2

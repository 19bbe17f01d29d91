"""Fuzzed decoders: every decoder that takes remote bytes survives mutated valid encodings (issue 12).

Three layers, all bounded in time:

- hypothesis mutates the valid seed encodings of each target (bit flips, byte changes, cuts,
  insertions, duplications, splices of two seeds) and the decoder must accept or refuse with its
  documented exception, nothing else (``bench/support/fuzz_targets.py``);
- atheris, through the real harness ``bench/fuzz.py`` in subprocesses, runs every target for a
  bounded number of coverage-guided inputs: 0 crashes, 0 hangs, 0 out-of-memory, nothing flagged;
- the harness itself is shown to report a deliberately broken target as a crash and a hanging
  one as a hang, so a green run means something.

Then one regression test per defect the fuzzing found or the issue named, each failing on the
code before its fix. The long run (1,000,000 inputs per decoder) is ``python bench/fuzz.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from swapmeet.ledger.errors import ExportFileError
from swapmeet.ledger.export_file import ENTRY_PREFIX, ExportReader, write_export
from swapmeet.protocol import boundary, cbor, evidence
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.objects import DOMAIN
from swapmeet.protocol.settlement import Settlement

from bench.support import fuzz_targets as ft

ROOT = Path(__file__).resolve().parents[1]
FUZZ = ROOT / "bench" / "fuzz.py"
REMOTE_DECODERS = {
    "cbor",
    "boundary",
    "batch",
    "booksync_frame",
    "reconcile",
    "ledger_sync_frame",
    "ledger_gossip",
    "proof",
    "settle_direct",
    "settle_state",
    "export_file",
}


def run_harness(*args: str, timeout: float) -> tuple[int, dict]:
    """``bench/fuzz.py`` with ``args``: its exit code and the JSON object of its last line."""
    proc = subprocess.run(
        [sys.executable, str(FUZZ), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-2000:]
    return proc.returncode, json.loads(lines[-1])


# --------------------------------------------------------------------------- the targets


def test_every_decoder_of_remote_bytes_has_a_target() -> None:
    assert set(ft.TARGETS) == REMOTE_DECODERS


@pytest.mark.parametrize("name", sorted(REMOTE_DECODERS))
def test_every_seed_of_a_structured_target_gets_past_the_first_byte(name: str) -> None:
    target = ft.TARGETS[name]
    results = [target.run(seed) for seed in target.seeds()]
    if name in ("cbor", "boundary"):  # their seeds include the golden vectors' invalid cases
        assert sum(results) >= 10
    elif name == "reconcile":  # a session's messages: the last ones only make sense to its own two sides
        assert sum(results) >= len(results) * 3 // 4
    else:
        assert all(results), [i for i, ok in enumerate(results) if not ok]


def test_a_target_lets_through_only_the_documented_refusal() -> None:
    assert ft.fuzz_boundary(b"\x00") is False  # refused: InvalidObject, swallowed
    assert ft.fuzz_export_file(b"") is False  # refused: ExportFileError, swallowed
    with pytest.raises(KeyError):
        ft.broken_crash(b"abc")  # anything else escapes: a crash


# --------------------------------------------------------------------------- hypothesis: mutated seeds


def _mutate(data: bytes, ops: list[tuple[int, int, int, bytes]], other: bytes) -> bytes:
    out = bytearray(data)
    for op, at, value, chunk in ops:
        at = at % (len(out) + 1)
        if op == 0 and out:
            out[at % len(out)] ^= 1 << (value % 8)  # bit flip
        elif op == 1 and out:
            out[at % len(out)] = value % 256  # byte set
        elif op == 2:
            del out[at : at + 1 + value % 64]  # delete a run
        elif op == 3:
            out[at:at] = chunk  # insert
        elif op == 4:
            out[at:at] = out[at : at + 1 + value % 64]  # duplicate a run
        elif op == 5:
            out = out[:at]  # truncate
        else:
            out = out[:at] + other[value % (len(other) + 1) :]  # splice with another seed
    return bytes(out)


_OPS = st.lists(
    st.tuples(st.integers(0, 6), st.integers(0, 1 << 20), st.integers(0, 1 << 16), st.binary(max_size=40)),
    min_size=1,
    max_size=6,
)


@pytest.mark.parametrize("name", sorted(REMOTE_DECODERS))
def test_mutated_valid_encodings_are_accepted_or_refused_never_a_crash(name: str) -> None:
    target = ft.TARGETS[name]
    seeds = target.seeds()

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.integers(0, len(seeds) - 1), st.integers(0, len(seeds) - 1), _OPS)
    def check(i: int, j: int, ops: list[tuple[int, int, int, bytes]]) -> None:
        target.run(_mutate(seeds[i], ops, seeds[j]))

    check()


# --------------------------------------------------------------------------- hypothesis: mutated and re-signed

# Byte mutations rarely get past a signature: ft.restructure mutates the decoded structure and signs
# every object again with the fixture keys, so the mutation reaches the schema and the kind rules.


@pytest.mark.parametrize("name", sorted(n for n in REMOTE_DECODERS if ft.TARGETS[n].structured))
def test_restructured_and_re_signed_encodings_are_accepted_or_refused_never_a_crash(name: str) -> None:
    target = ft.TARGETS[name]
    seeds = target.seeds()

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.randoms(use_true_random=False), st.integers(0, len(seeds) - 1))
    def check(rnd, i: int) -> None:  # type: ignore[no-untyped-def]
        target.run(ft.restructure(rnd, seeds[i]))

    check()


def test_the_restructuring_mutator_reaches_past_the_signature() -> None:
    # A body field changed and signed again: refused by the schema, not by the signature check.
    listing = ft._objects()["listing"][0]
    value = cbor.decode(listing, max_size=1 << 20)
    value[3]["title"] = 7
    with pytest.raises(InvalidObject) as info:
        boundary.decode(ft.signed_again(value))
    assert info.value.path == "listing.body.title" and info.value.code == "type"


# --------------------------------------------------------------------------- atheris through the harness


@pytest.mark.slow
def test_atheris_runs_every_decoder_without_a_crash_a_hang_or_unbounded_memory() -> None:
    code, report = run_harness("--runs", "1000", "--seconds", "30", "--jobs", "2", "--timeout", "10", timeout=300)
    assert set(report["decoders"]) == REMOTE_DECODERS
    bad = {name: d for name, d in report["decoders"].items() if not d["ok"]}
    assert not bad, bad
    assert code == 0 and report["ok"]
    assert report["crashes"] == report["hangs"] == report["ooms"] == report["unbounded"] == 0
    for name, d in report["decoders"].items():
        assert d["runs"] >= 1000 or d["elapsed_s"] >= 30, (name, d)
        assert d["cov"] > 0 and d["peak_alloc_mb"] < 64, (name, d)


@pytest.mark.slow
def test_the_harness_reports_a_broken_target_as_a_crash_and_a_stuck_one_as_a_hang() -> None:
    code, report = run_harness(
        "--targets", "selftest_crash,selftest_hang", "--runs", "100000", "--seconds", "20", "--timeout", "1",
        "--jobs", "2", timeout=120,
    )  # fmt: skip
    assert code == 1 and not report["ok"]
    crash, hang = report["decoders"]["selftest_crash"], report["decoders"]["selftest_hang"]
    assert crash["crashes"] == 1 and "deliberate crash" in crash["exception"]
    assert hang["hangs"] == 1 and hang["crashes"] == 0
    assert report["crashes"] == 1 and report["hangs"] == 1


# --------------------------------------------------------------------------- regressions


def _state_with(mutate) -> bytes:  # type: ignore[no-untyped-def]
    value = cbor.decode(ft._seeds_settle_state()[-1], max_size=1 << 22)
    mutate(value)
    return cbor.encode(value)


GOOD_ID = b"\x01" * 32
ITEM = {"item": "bike", "qty": 1, "unit": "pc"}


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        # each of these was accepted (a record holding a value of the wrong type), or crashed with a TypeError
        (lambda v: v["settled"].append([GOOD_ID, "soon", []]), "settlement.settled[0][1]"),
        (lambda v: v["settled"].append([GOOD_ID, True, []]), "settlement.settled[0][1]"),
        (lambda v: v["settled"].append([5, 1, []]), "settlement.settled[0][0]"),
        (lambda v: v["settled"].extend([[5, 1, []], [b"a", 1, []]]), "settlement.settled[0][0]"),
        (lambda v: v["settled"].append([GOOD_ID, 1, [[GOOD_ID, [{**ITEM, "qty": "1"}]]]]), ".qty"),
        (lambda v: v["settled"].append([GOOD_ID, 1, [[GOOD_ID, [{**ITEM, "item": 7}]]]]), "settlement.settled"),
        (lambda v: v["offers"][0].__setitem__("exchange", 7), "settlement.offers[0].exchange"),
        (lambda v: v["offers"][0].__setitem__("answer", "x"), "settlement.offers[0].answer"),
        (lambda v: v["offers"][0].__setitem__("state", 3), "settlement.offers[0].state"),
        (lambda v: v["exchanges"][0].__setitem__("appended", 1), "settlement.exchanges[0].appended"),
        (lambda v: v.__setitem__("offers", {"a": 1}), "settlement.offers"),
    ],
)
def test_a_settlement_state_with_a_mistyped_field_is_refused_naming_the_field(mutate, path: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidObject) as info:
        Settlement.from_bytes(ft.ALICE, _state_with(mutate))
    assert info.value.code == "state" and path in info.value.path, info.value
    assert "damaged settlement state" in str(info.value)


def test_a_settlement_state_with_well_typed_settled_records_still_restores() -> None:
    data = _state_with(lambda v: v["settled"].append([GOOD_ID, 1, [[GOOD_ID, [ITEM]]]]))
    machine = Settlement.from_bytes(ft.ALICE, data)
    assert machine.to_bytes() == data and machine.next_wakeup() == 1


def _export(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "export.bin"
    write_export(path, ft._objects()["entry"])
    return path, path.read_bytes()


def test_an_export_file_with_a_non_shortest_item_head_is_refused(tmp_path: Path) -> None:
    path, data = _export(tmp_path)
    first = ft._objects()["entry"][0]
    at = data.index(first) - 3  # the entry's head: 0x59 + a 2-byte length
    assert data[at] == 0x59 and first.startswith(ENTRY_PREFIX)
    # The same length in a 4-byte head (0x5a): the same entries, a second encoding of the file.
    path.write_bytes(data[:at] + b"\x5a" + len(first).to_bytes(4, "big") + data[at + 3 :])
    with pytest.raises(ExportFileError, match="not deterministic CBOR") as info:
        list(ExportReader(path))
    assert f"at byte {at}" in str(info.value)
    path.write_bytes(data)
    assert list(ExportReader(path)) == ft._objects()["entry"]


def test_an_overcommit_proof_with_too_many_exchanges_is_refused_before_any_is_decoded() -> None:
    listing = ft._objects()["listing"][0]
    # 65 byte strings that are not exchanges: decoding any of them would fail at proof[3][0].
    data = cbor.encode([DOMAIN, evidence.OVERCOMMIT_PROOF, listing, [b"\x00" * 8] * 65])
    with pytest.raises(InvalidObject) as info:
        evidence.decode_proof(data)
    assert (info.value.path, info.value.code) == ("proof[3]", "length")
    at_limit = cbor.encode([DOMAIN, evidence.OVERCOMMIT_PROOF, listing, [b"\x00" * 8] * 64])
    with pytest.raises(InvalidObject) as info:
        evidence.decode_proof(at_limit)
    assert info.value.path == "exchange"  # 64 is allowed: the first exchange is decoded (and refused)


@pytest.mark.parametrize("value", [10**7, 2**64, "listing", None, [b"\x85"]])
def test_the_boundary_refuses_what_is_not_bytes_without_allocating(value: object) -> None:
    # bytes(10**7) would have allocated 10 MB (and 10**9 a GB), bytes(2**64) raised OverflowError: found by fuzzing the
    # settlement state, whose fields went to the boundary unchecked.
    with pytest.raises(InvalidObject) as info:
        boundary.decode(value)  # type: ignore[arg-type]
    assert info.value.code == "type"


def test_the_fuzz_seeds_are_what_the_node_builds() -> None:
    # The seeds go through the same boundary the node uses: a seed that stopped verifying would leave
    # the fuzzer mutating garbage.
    for kind, raws in ft._objects().items():
        for raw in raws:
            assert boundary.decode(raw, kind=kind).raw == raw

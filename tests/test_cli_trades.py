"""The trade commands (``offer``, ``offers``, ``accept``... ``rate``) against the local API of a fake node.

The fake (:class:`tests.test_api.FakeNode`) runs the real settlement machine behind a real
hypercorn socket; the tests play the other parties by feeding it their signed objects. The
commands run in-process through click's test runner (in a worker thread, as the client is
synchronous) to keep the suite fast; a few run as real processes to pin the one-line errors
and exit codes a user sees. Bad input must exit 2 before any node is contacted: those run
with no node at all, where contacting one would exit 3.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner, Result
from swapmeet.cli import trade_cmds
from swapmeet.cli.main import cli
from swapmeet.protocol.build import parse_item
from swapmeet.protocol.identity import peer_id
from swapmeet.protocol.objects import Leg

from tests.cli_helpers import assert_one_line_error, run_cli
from tests.test_api import (
    ALICE,
    BOB,
    CAROL,
    LIMIT_S,
    FakeNode,
    Running,
    countersign,
    listing_of,
    offer_from,
    proposal_from,
    running,
)

A, B, C = (peer_id(i.public_key) for i in (ALICE, BOB, CAROL))


def _invoke(home: Path, args: tuple[str, ...]) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args], catch_exceptions=False)


async def sm(r: Running, *args: str) -> Result:
    """``swapmeet ARGS`` in-process, against the running fake."""
    return await trio.to_thread.run_sync(partial(_invoke, r.client.home.root, args))


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    return result.stdout


def refused(result: Result, code: int, *needles: str) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("swapmeet: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


async def test_offer_cancel_decline_counter(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        node = FakeNode()
        bikes = listing_of(BOB)
        node.add(bikes)
        async with running(node, tmp_path) as r:
            made = json.loads(
                ok(await sm(r, "offer", bikes.id.hex()[:12], "--give", "3 kg x apples", "--take", "1 x bike",
                            "--expires", "2h", "--note", "tomorrow?", "--json"))
            )  # fmt: skip
            assert made["kind"] == "offer" and made["state"] == "open" and len(made["id"]) == 64
            assert made["from"] == A and made["to"] == B and made["note"] == "tomorrow?"
            assert made["give"] == [{"item": "apples", "qty": 3, "unit": "kg"}]
            assert made["take"] == [{"item": "bike", "qty": 1, "unit": "pc"}]
            assert made["expires"] - made["created"] == 7200

            text = ok(await sm(r, "offer", bikes.id.hex(), "--give", "1 x pear"))
            assert text.startswith("offer ") and f"sent to {B[:4]}..{B[-6:]}" in text and "(expires in " in text

            table = ok(await sm(r, "offers", "--outgoing")).splitlines()
            assert table[0].split() == ["ID", "LISTING", "FROM", "GIVE", "TAKE", "STATE", "EXPIRES"]
            assert len(table) == 3 and all(" me " in row and "open" in row for row in table[1:])
            assert any(row.startswith(made["id"][:12]) and "3 kg x apples" in row for row in table[1:])
            assert json.loads(ok(await sm(r, "offers", "--incoming", "--json"))) == []

            assert ok(await sm(r, "cancel", made["id"][:12])) == f"cancelled offer {made['id'][:12]}\n"
            refused(await sm(r, "cancel", made["id"][:12]), 1, "cancelled")  # a settlement refusal: exit 1
            rows = json.loads(ok(await sm(r, "offers", "--json")))
            assert {o["id"]: o["state"] for o in rows}[made["id"]] == "cancelled"

            mine = listing_of(ALICE, "Chairs", "4 x chair", "1 x table")
            node.add(mine)
            first = offer_from(node, BOB, mine, "1 x table", "4 x chair")
            node.forked_keys = [BOB.public_key]
            table = ok(await sm(r, "offers", "--incoming")).splitlines()
            assert len(table) == 2 and f"{B[:4]}..{B[-6:]} (forked)" in table[1] and "1 x table" in table[1]
            notice = json.loads(ok(await sm(r, "decline", first.id.hex()[:8], "--note", "sold", "--json")))
            assert notice["kind"] == "notice" and notice["action"] == "decline" and notice["about"] == first.id.hex()
            assert notice["note"] == "sold"

            second = offer_from(node, BOB, mine, "1 x table", "2 x chair")
            answer = json.loads(
                ok(await sm(r, "counter", second.id.hex()[:8], "--give", "1 x table", "--give", "1 x lamp",
                            "--take", "2 x chair", "--json"))
            )  # fmt: skip
            assert answer["counters"] == second.id.hex() and answer["state"] == "open" and answer["to"] == B
            third = offer_from(node, BOB, mine, "1 x table", "1 x chair")
            text = ok(await sm(r, "counter", third.id.hex(), "--give", "2 x table", "--take", "1 x chair"))
            assert text.startswith("counter-offer ") and text.rstrip().endswith(f"(answers {third.id.hex()[:12]})")
            refused(await sm(r, "accept", second.id.hex()), 1, "countered")


async def test_accept_confirm_rate_and_the_trade_tables(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        node = FakeNode()
        mine = listing_of(ALICE)
        node.add(mine)
        offer = offer_from(node, BOB, mine)
        async with running(node, tmp_path) as r:
            trade = json.loads(ok(await sm(r, "accept", offer.id.hex()[:12], "--deadline", "5m", "--json")))
            assert trade["kind"] == "exchange" and trade["state"] == "pending" and trade["detail"] == "signed"
            assert trade["deadline"] - trade["created"] == 300 and trade["offer"] == offer.id.hex()
            assert trade["signed_by"] == [A] and trade["parties"] == [A, B]

            table = ok(await sm(r, "trades")).splitlines()
            assert table[0].split() == ["ID", "STATE", "PARTIES", "LEGS", "DEADLINE"]
            assert table[1].startswith(trade["id"][:12]) and "pending (signed)" in table[1]
            assert f"me -> {B[:4]}..{B[-6:]}: 1 x bike" in table[1] and table[1].rstrip().endswith("in 5m")
            refused(await sm(r, "confirm", trade["id"][:12]), 1, "not complete")

            countersign(node, trade["id"], BOB)
            done = json.loads(ok(await sm(r, "trades", "--state", "complete", "--json")))
            assert [t["id"] for t in done] == [trade["id"]] and done[0]["appended"] is True
            assert json.loads(ok(await sm(r, "trades", "--state", "pending", "--json"))) == []
            assert ok(await sm(r, "trades", "--state", "lapsed")) == "no trades\n"

            receipt = json.loads(ok(await sm(r, "confirm", trade["id"][:12], "--json")))
            assert receipt["kind"] == "receipt" and receipt["legs"] == [1] and receipt["exchange"] == trade["id"]
            assert (
                ok(await sm(r, "confirm", trade["id"], "--leg", "1"))
                == f"confirmed leg 1 of trade {trade['id'][:12]}\n"
            )
            refused(await sm(r, "confirm", trade["id"], "--leg", "0"), 1, "nothing to confirm")

            rating = json.loads(
                ok(await sm(r, "rate", trade["id"][:12], "--score", "5", "--comment", "great", "--json"))
            )
            assert rating["kind"] == "rating" and rating["score"] == 5 and rating["subject"] == B
            assert rating["comment"] == "great" and rating["author"] == A
            text = ok(await sm(r, "rate", trade["id"], "--score", "4", "--subject", B))
            assert text == f"rated {B[:4]}..{B[-6:]} 4/5 for trade {trade['id'][:12]}\n"

            node.forked_keys = [BOB.public_key]
            shown = ok(await sm(r, "trade", trade["id"][:12]))
            assert f"{B[:4]}..{B[-6:]} (forked)  signed" in shown and "complete" in shown
            assert "0: me -> " in shown and "1: " in shown
            assert json.loads(ok(await sm(r, "trade", trade["id"], "--json")))["forked"] == [B]
            assert "(forked)" in ok(await sm(r, "trades"))


async def test_propose_sign_and_cancel(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        node = FakeNode()
        async with running(node, tmp_path) as r:
            ring = json.loads(
                ok(await sm(r, "propose", "--leg", f"me -> {B}: 1 x bike",
                            "--leg", f"{B}->{CAROL.public_key.hex()}: 2 h x lessons, 1 x pear",
                            "--leg", f"{C} -> me: 3 kg x apples", "--deadline", "30m", "--json"))
            )  # fmt: skip
            assert ring["parties"] == [A, B, C] and ring["signed_by"] == [A] and ring["detail"] == "signed"
            assert ring["legs"][1]["items"] == [
                {"item": "lessons", "qty": 2, "unit": "h"},
                {"item": "pear", "qty": 1, "unit": "pc"},
            ]
            assert ring["deadline"] - ring["created"] == 1800

            text = ok(await sm(r, "propose", "--leg", f"me -> {B}: 1 x lamp, shade", "--leg", f"{B} -> me: 1 x fig"))
            assert text.startswith("proposed trade ") and f"waiting for {B[:4]}..{B[-6:]} to sign" in text
            (lamp,) = [t for t in json.loads(ok(await sm(r, "trades", "--json"))) if t["id"] != ring["id"]]
            assert lamp["legs"][0]["items"] == [{"item": "lamp, shade", "qty": 1, "unit": "pc"}]

            legs = [
                Leg(0, 1, (parse_item("1 x pear"),)),
                Leg(1, 2, (parse_item("1 x fig"),)),
                Leg(2, 0, (parse_item("1 x kiwi"),)),
            ]
            theirs = proposal_from(node, BOB, [BOB, ALICE, CAROL], legs)
            table = ok(await sm(r, "trades", "--state", "pending"))
            assert "pending (awaiting you)" in table
            text = ok(await sm(r, "sign", theirs.id.hex()[:10]))
            assert text.startswith(f"signed trade {theirs.id.hex()[:12]}: waiting for {C[:4]}..{C[-6:]} to sign")
            refused(await sm(r, "cancel", theirs.id.hex()), 1, "signed")  # a signature cannot be taken back

            other = proposal_from(
                node, BOB, [BOB, ALICE], [Leg(0, 1, (parse_item("2 x fig"),)), Leg(1, 0, (parse_item("1 x fig"),))]
            )
            text = ok(await sm(r, "cancel", other.id.hex()[:12], "--note", "no figs"))
            assert text == f"left trade {other.id.hex()[:12]} (it will not complete)\n"
            (gone,) = json.loads(ok(await sm(r, "trades", "--state", "lapsed", "--json")))
            assert gone["id"] == other.id.hex() and gone["detail"] == "cancelled"
            assert "lapsed (cancelled)" in ok(await sm(r, "trades"))

            # not a party to its own proposal: the node says so (400 -> exit 2), in one line
            refused(
                await sm(r, "propose", "--leg", f"{B} -> {C}: 1 x fig", "--leg", f"{C} -> {B}: 1 x fig"), 2, "parties"
            )
            unknown = "cd" * 32
            refused(await sm(r, "sign", unknown), 2, unknown[:12])
            refused(await sm(r, "cancel", unknown), 2)
            refused(await sm(r, "trade", unknown[:8]), 2)


# --- bad input: exit 2 before any node is contacted (no node runs here: contacting one would exit 3) ---

ID = "0123456789ab"
BAD_INPUT = [
    (["offer", "abc", "--give", "1 x pear"], "LISTING"),
    (["offer", "xyz123", "--give", "1 x pear"], "LISTING"),
    (["offer", ID, "--give", "three pears"], "--give"),
    (["offer", ID, "--give", "0 x pear"], "--give"),
    (["offer", ID, "--give", "1 x pear", "--take", "bike"], "--take"),
    (["offer", ID, "--give", "1 x pear", "--expires", "soon"], "--expires"),
    (["offer", ID, "--give", "1 x pear", "--expires", "0s"], "--expires"),
    (["accept", "ab"], "OFFER"),
    (["accept", ID, "--deadline", "whenever"], "--deadline"),
    (["decline", "not-hex"], "OFFER"),
    (["counter", ID, "--give", "1 x pear", "--take", "lots"], "--take"),
    (["cancel", "zz"], "ID"),
    (["propose", "--leg", "me -> bob: 1 x pear"], "TO"),
    (["propose", "--leg", f"me to {B}: 1 x pear"], "FROM -> TO"),
    (["propose", "--leg", "me -> me: 1 x pear"], "two different peers"),
    (["propose", "--leg", f"me -> {B}: a pear"], "--leg"),
    (["propose", "--leg", f"me -> {B}: 1 x pear", "--listing", "q"], "--listing"),
    (["propose", "--leg", f"me -> {B}: 1 x pear", "--deadline", "-"], "--deadline"),
    (["sign", "12"], "TRADE"),
    (["confirm", "nothex!"], "TRADE"),
    (["rate", ID, "--score", "9"], "--score"),
    (["rate", ID, "--score", "0"], "from 1 to 5"),
    (["rate", ID, "--score", "3", "--subject", "bob"], "--subject"),
    (["trade", "g" * 12], "TRADE"),
]


@pytest.mark.parametrize(("args", "needle"), BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_exits_2_without_a_node(tmp_path: Path, args: list[str], needle: str) -> None:
    result = _invoke(tmp_path / "home", tuple(args))
    refused(result, 2, needle)
    assert not (tmp_path / "home").exists()  # nothing was asked of a node, nothing created


@pytest.mark.parametrize(
    "args",
    [
        ["counter", ID, "--give", "1 x pear"],  # --take is required
        ["trades", "--state", "bogus"],
        ["confirm", ID, "--leg", "-1"],
        ["rate", ID],
    ],
    ids=" ".join,
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    assert _invoke(tmp_path / "home", tuple(args)).exit_code == 2


def test_as_a_user_sees_it(tmp_path: Path) -> None:
    """Real processes: a bad score is one line with exit 2; good input with no node is exit 3."""
    home = str(tmp_path / "home")
    assert_one_line_error(run_cli("--home", home, "rate", ID, "--score", "9"), 2, "--score", "1 to 5")
    assert_one_line_error(run_cli("--home", home, "offers", "--json"), 3, "no node is running")
    assert_one_line_error(run_cli("--home", home, "propose", "--leg", f"me -> {B}: 1 x pear"), 3, "no node is running")


# --- the pure helpers ---


def test_parse_leg_and_peer_cells() -> None:
    assert trade_cmds.parse_leg(f" me->{B} : 2 kg x apples, 1 x pear ") == {
        "from": "me",
        "to": B,
        "items": [{"item": "apples", "qty": 2, "unit": "kg"}, {"item": "pear", "qty": 1, "unit": "pc"}],
    }
    assert trade_cmds.parse_leg(f"{B} -> ME: 1 x salt, pepper")["items"] == [
        {"item": "salt, pepper", "qty": 1, "unit": "pc"}
    ]
    assert trade_cmds.peer_cell(B) == f"{B[:4]}..{B[-6:]}"
    assert trade_cmds.peer_cell(B, {B}) == f"{B[:4]}..{B[-6:]} (forked)"
    assert trade_cmds.peer_cell(A, {B}, me=A) == "me"
    assert trade_cmds.state_text({"state": "pending", "detail": "awaiting"}) == "pending (awaiting you)"
    assert trade_cmds.state_text({"state": "complete", "detail": "complete"}) == "complete"
    assert 3590 <= trade_cmds.parse_in_s(str(int(time.time()) + 3600), "--expires") <= 3600

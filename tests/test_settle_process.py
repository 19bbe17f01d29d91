"""Settlement between real node processes on 127.0.0.1: barters, a ring, a counter-offer, and kill -9 at every step.

One swarm of three nodes is shared by the module (a node start costs seconds of CPU). The
nodes run ``tests/crashing_node.py``: the normal ``swapmeet node run`` with hooks that do
nothing until a test arms one (``tests.raw_peers.arm``); every CLI command is the real
``swapmeet`` command.

- The happy paths go through the CLI as a user types it (``offer``, ``accept``,
  ``counter``, ``propose``, ``sign``, ``trades``, ``offers``, ``ledger show``,
  ``audit``) and check every chain and an audit at every party.
- The crash matrix kills the maker, then separately the taker, with kill -9 (the node
  kills itself from the hook, so the step is exact) before or after each send and each
  append of the flow (and before the maker's first durable write), restarts it and waits
  for the outcome: complete on both sides (on both chains, exactly once) or complete on
  neither -- never one side complete and the other not. Each case has its expected outcome
  too. "Late" cases keep the victim down until the signing deadline has passed (a short
  ``deadline``), so the survivor lapses first: the exchange must still end the same on both
  sides (rule R6 repairs a lapsed side when the other completed).
- The last test audits every node after all of that: the chains hold no trace of a crash.

Every wait is bounded; a wait that runs out shows the nodes' log tails and both views.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from swapmeet.cli.localswarm import SwarmTimeout
from swapmeet.protocol.errors import SwapmeetError
from swapmeet.protocol.identity import public_key_from_peer_id

from tests.raw_peers import (
    HookedSwarm,
    arm,
    audit,
    chain_payloads,
    disarm,
    revive,
    wait_crashed,
)

pytestmark = pytest.mark.slow

NODES = 3
WAIT_S = 20.0  # one message's way, or a listing's gossip; generous for a loaded 2-core machine
CONVERGE_S = 45.0  # after a restart: reconnect, resume (at once, then every 15 s), repair
LONG_DEADLINE_S = 120  # crash cases that restart at once: they must complete well before it
SHORT_DEADLINE_S = 4  # "late" cases: the victim stays down until after it (a crash comes within ms of the accept)
MAKER, TAKER, THIRD = 0, 1, 2


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookedSwarm]:
    net = f"settle-{secrets.token_hex(4)}"
    with HookedSwarm(NODES, net=net, base_dir=tmp_path_factory.mktemp("settle"), seed=1) as local:
        yield local


def unique(label: str) -> str:
    return f"{label} {secrets.token_hex(3)}"


def key(swarm: HookedSwarm, i: int) -> bytes:
    return public_key_from_peer_id(swarm.peer_id(i))


def publish(
    swarm: HookedSwarm, maker: int, *, have: str = "1 x thing", title: str = "", seen_by: int
) -> dict[str, Any]:
    listing = swarm.client(maker).publish({"title": title or unique("Lot"), "have": [have]})
    swarm.wait_until(lambda: swarm.holds(seen_by, listing["id"]), WAIT_S, what="the listing to reach the taker")
    return listing


def offer_at(swarm: HookedSwarm, i: int, offer_id: str, direction: str = "incoming") -> dict[str, Any] | None:
    return next((o for o in swarm.client(i).offers(direction) if o["id"] == offer_id), None)


def wait_offer(swarm: HookedSwarm, i: int, offer_id: str) -> dict[str, Any]:
    return swarm.wait_until(lambda: offer_at(swarm, i, offer_id), WAIT_S, what=f"offer {offer_id[:12]} at node {i}")


def trade_at(swarm: HookedSwarm, i: int, exchange_id: str) -> dict[str, Any] | None:
    return next((t for t in swarm.client(i).trades() if t["id"] == exchange_id), None)


def wait_complete(swarm: HookedSwarm, nodes: list[int], exchange_id: str) -> None:
    def done() -> bool:
        return all((t := trade_at(swarm, i, exchange_id)) and t["state"] == "complete" and t["appended"] for i in nodes)

    swarm.wait_until(done, WAIT_S, what=f"exchange {exchange_id[:12]} complete and appended at nodes {nodes}")


def own_chain(swarm: HookedSwarm, i: int) -> list[str]:
    """Payload ids of node ``i``'s own chain, as ``ledger show`` prints them at node ``i``."""
    return chain_payloads(swarm, i, swarm.peer_id(i))


def check_on_every_chain(swarm: HookedSwarm, parties: list[int], exchange_id: str) -> None:
    """The exchange is on every party's own chain exactly once, and every party holds (by replication)
    the other parties' chains with it."""
    for owner in parties:
        assert own_chain(swarm, owner).count(exchange_id) == 1, f"node {owner}'s own chain"
    for holder in parties:
        for owner in parties:
            if owner != holder:
                swarm.wait_until(
                    lambda h=holder, o=owner: exchange_id in chain_payloads(swarm, h, swarm.peer_id(o)),
                    WAIT_S,
                    what=f"node {holder} to replicate node {owner}'s chain with the exchange",
                )


def check_audit_clean(swarm: HookedSwarm, i: int, *, min_exchanges: int = 1) -> dict[str, Any]:
    code, report = audit(swarm, i)
    assert report["findings"] == [] and code == 0, (i, report["findings"])
    assert report["exchanges"] >= min_exchanges
    return report


# ---------------------------------------------------------------------- happy paths, through the CLI


def test_two_party_barter_completes_on_both_chains(swarm: HookedSwarm) -> None:
    title = unique("Road bike")
    listing = swarm.cli_json(MAKER, "publish", "--title", title, "--have", "1 x road bike", "--want", "3 kg x apples")
    swarm.wait_until(lambda: swarm.holds(TAKER, listing["id"]), WAIT_S, what="the listing at the taker")
    offer = swarm.cli_json(TAKER, "offer", listing["id"], "--give", "3 kg x apples", "--take", "1 x road bike")
    assert offer["state"] == "open"
    assert offer["maker"] == swarm.peer_id(MAKER) and offer["taker"] == swarm.peer_id(TAKER)
    wait_offer(swarm, MAKER, offer["id"])
    (incoming,) = [o for o in swarm.cli_json(MAKER, "offers", "--incoming") if o["id"] == offer["id"]]
    assert incoming["state"] == "open" and incoming["from"] == swarm.peer_id(TAKER)
    assert swarm.cli_json(MAKER, "node", "status")["trades"]["offers_to_answer"] >= 1

    trade = swarm.cli_json(MAKER, "accept", offer["id"], "--deadline", "10m")
    assert trade["offer"] == offer["id"] and trade["state"] in ("pending", "complete")
    xid = trade["id"]
    wait_complete(swarm, [MAKER, TAKER], xid)

    for i in (MAKER, TAKER):
        (row,) = [t for t in swarm.cli_json(i, "trades") if t["id"] == xid]
        assert (row["state"], row["detail"], row["appended"]) == ("complete", "complete", True)
        assert set(row["signed_by"]) == set(row["parties"]) == {swarm.peer_id(MAKER), swarm.peer_id(TAKER)}
        assert row["listings"] == [listing["id"]] and row["offer"] == offer["id"]
        gives = {(leg["from"], leg["to"], leg["items"][0]["item"]) for leg in row["legs"]}
        assert gives == {
            (swarm.peer_id(MAKER), swarm.peer_id(TAKER), "road bike"),
            (swarm.peer_id(TAKER), swarm.peer_id(MAKER), "apples"),
        }
    for i in (MAKER, TAKER):
        assert swarm.cli_json(i, "node", "status")["trades"]["complete"] >= 1
    (mine,) = [o for o in swarm.cli_json(TAKER, "offers", "--outgoing") if o["id"] == offer["id"]]
    assert mine["state"] == "accepted" and mine["exchange"] == xid
    check_on_every_chain(swarm, [MAKER, TAKER], xid)
    for i in (MAKER, TAKER):
        check_audit_clean(swarm, i)


def test_three_party_ring_completes_on_all_three_chains(swarm: HookedSwarm) -> None:
    a, b, c = (swarm.peer_id(i) for i in (MAKER, TAKER, THIRD))
    trade = swarm.cli_json(
        MAKER,
        "propose",
        "--leg",
        f"me -> {b}: 1 x bike",
        "--leg",
        f"{b} -> {c}: 2 x cakes",
        "--leg",
        f"{c} -> me: 1 x lesson",
        "--deadline",
        "10m",
    )
    xid = trade["id"]
    assert trade["detail"] == "signed" and trade["signed_by"] == [a] and set(trade["parties"]) == {a, b, c}
    for i in (TAKER, THIRD):
        swarm.wait_until(
            lambda i=i: (t := trade_at(swarm, i, xid)) and t["detail"] == "awaiting",
            WAIT_S,
            what=f"the proposal to reach node {i}, waiting for its signature",
        )
    first = swarm.cli_json(TAKER, "sign", xid)
    assert first["detail"] in ("signed", "complete") and b in first["signed_by"]
    last = swarm.cli_json(THIRD, "sign", xid)
    assert c in last["signed_by"]
    wait_complete(swarm, [MAKER, TAKER, THIRD], xid)
    for i in (MAKER, TAKER, THIRD):
        (row,) = [t for t in swarm.cli_json(i, "trades") if t["id"] == xid]
        assert row["state"] == "complete" and set(row["signed_by"]) == {a, b, c}
        assert [(leg["from"], leg["to"]) for leg in row["legs"]] == [(a, b), (b, c), (c, a)]
    check_on_every_chain(swarm, [MAKER, TAKER, THIRD], xid)
    for i in (MAKER, TAKER, THIRD):
        check_audit_clean(swarm, i)


def test_counter_offer_round_completes(swarm: HookedSwarm) -> None:
    maker, taker = MAKER, THIRD
    listing = swarm.cli_json(maker, "publish", "--title", unique("Kayak"), "--have", "1 x kayak", "--want", "5 x jars")
    swarm.wait_until(lambda: swarm.holds(taker, listing["id"]), WAIT_S, what="the listing at the taker")
    offer = swarm.cli_json(taker, "offer", listing["id"], "--give", "2 x jars")
    wait_offer(swarm, maker, offer["id"])
    counter = swarm.cli_json(maker, "counter", offer["id"], "--give", "4 x jars", "--take", "1 x kayak")
    assert counter["counters"] == offer["id"] and counter["state"] == "open"
    assert counter["from"] == swarm.peer_id(maker) and counter["to"] == swarm.peer_id(taker)
    wait_offer(swarm, taker, counter["id"])
    swarm.wait_until(
        lambda: (o := offer_at(swarm, taker, offer["id"], "outgoing")) and o["state"] == "countered",
        WAIT_S,
        what="the taker to see its offer countered",
    )
    (original,) = [o for o in swarm.cli_json(taker, "offers", "--outgoing") if o["id"] == offer["id"]]
    assert original["answer"] == counter["id"]

    trade = swarm.cli_json(taker, "accept", counter["id"], "--deadline", "10m")
    xid = trade["id"]
    assert trade["offer"] == counter["id"]
    wait_complete(swarm, [maker, taker], xid)
    (row,) = [t for t in swarm.cli_json(maker, "trades") if t["id"] == xid]
    legs = {(leg["from"], leg["to"], leg["items"][0]["qty"], leg["items"][0]["item"]) for leg in row["legs"]}
    assert legs == {
        (swarm.peer_id(maker), swarm.peer_id(taker), 1, "kayak"),
        (swarm.peer_id(taker), swarm.peer_id(maker), 4, "jars"),
    }
    check_on_every_chain(swarm, [maker, taker], xid)
    for i in (maker, taker):
        check_audit_clean(swarm, i)


def fails(swarm: HookedSwarm, i: int, *args: str, code: int) -> str:
    """Run a command expected to fail: its exit code, and its one-line error (returned)."""
    done = swarm.cli(i, *args, check=False)
    assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
    message = done.stderr.strip()
    assert message.startswith("swapmeet: error: ") and "Traceback" not in message, message
    assert len(message.splitlines()) <= 2, message
    return message


def test_decline_cancel_confirm_rate_and_their_refusals(swarm: HookedSwarm) -> None:
    maker, taker = MAKER, TAKER
    listing = swarm.cli_json(maker, "publish", "--title", unique("Lamp"), "--have", "2 x lamp", "--want", "1 x jam")
    swarm.wait_until(lambda: swarm.holds(taker, listing["id"]), WAIT_S, what="the listing at the taker")

    # decline: the taker sees its offer declined, with the note
    declined = swarm.cli_json(taker, "offer", listing["id"], "--give", "1 x jam")
    wait_offer(swarm, maker, declined["id"])
    notice = swarm.cli_json(maker, "decline", declined["id"][:10], "--note", "sold out")
    assert notice["action"] == "decline" and notice["about"] == declined["id"]
    swarm.wait_until(
        lambda: (o := offer_at(swarm, taker, declined["id"], "outgoing")) and o["state"] == "declined",
        WAIT_S,
        what="the taker to see its offer declined",
    )
    assert "declined" in fails(swarm, maker, "accept", declined["id"], code=1)

    # cancel: the taker withdraws an offer; the maker sees it cancelled
    withdrawn = swarm.cli_json(taker, "offer", listing["id"], "--give", "2 x jam")
    wait_offer(swarm, maker, withdrawn["id"])
    assert swarm.cli_json(taker, "cancel", withdrawn["id"])["action"] == "cancel"
    swarm.wait_until(
        lambda: (o := offer_at(swarm, maker, withdrawn["id"])) and o["state"] == "cancelled",
        WAIT_S,
        what="the maker to see the offer cancelled",
    )

    # a settled trade: trade, confirm and rate, once each
    offer = swarm.cli_json(taker, "offer", listing["id"], "--give", "3 x jam")
    wait_offer(swarm, maker, offer["id"])
    xid = swarm.cli_json(maker, "accept", offer["id"])["id"]
    wait_complete(swarm, [maker, taker], xid)
    shown = swarm.cli(taker, "trade", xid[:8]).stdout
    assert xid in shown and "complete" in shown
    assert swarm.cli_json(taker, "confirm", xid)["legs"] == [0]  # leg 0: the lamp, to the taker
    assert "confirmed already" in fails(swarm, taker, "confirm", xid, code=1)
    rating = swarm.cli_json(taker, "rate", xid, "--score", "5", "--comment", "bright")
    assert (rating["subject"], rating["score"]) == (swarm.peer_id(maker), 5)
    assert "rated" in fails(swarm, taker, "rate", xid, "--score", "4", code=1)
    assert "--score" in fails(swarm, maker, "rate", xid, "--score", "9", code=2)
    (row,) = [t for t in swarm.cli_json(taker, "trades", "--state", "complete") if t["id"] == xid]
    assert row["confirmed_legs"] == [0] and row["rated"] == [swarm.peer_id(maker)]

    # ids that name nothing, or the wrong kind of thing
    assert "no object" in fails(swarm, taker, "trade", "deadbeef", code=2)
    assert fails(swarm, maker, "accept", "0123456789ab", code=2)
    assert fails(swarm, taker, "confirm", "xyz!", code=2)


# ---------------------------------------------------------------------- kill -9 at every step


@dataclass(frozen=True)
class Case:
    victim: str  # "maker" or "taker"
    when: str  # "before" or "after" the step
    decision: str  # the settlement decision carried out at that step
    kind: str | None = None  # the object a Send carries
    late: bool = False  # the victim stays down until the signing deadline has passed
    expect: str = "complete"  # "complete" on both sides, or "none": complete on neither

    def __str__(self) -> str:
        what = self.decision + (f"-{self.kind}" if self.kind else "")
        return f"{self.victim}-{self.when}-{what}{'-late' if self.late else ''}"

    @property
    def in_offer(self) -> bool:
        """The step is the taker's sending of its offer (armed before the offer is made)."""
        return self.kind == "offer"


CASES = [
    # the maker: its first durable write (the acceptance), the send of its signed copy, its append
    Case("maker", "before", "Persist", expect="none"),
    Case("maker", "before", "Send", "exchange"),
    Case("maker", "after", "Send", "exchange"),
    Case("maker", "before", "AppendToLedger"),
    Case("maker", "after", "AppendToLedger"),
    # the taker: the send of its offer, its countersignature's durable write, its append, its send
    Case("taker", "before", "Send", "offer"),
    Case("taker", "after", "Send", "offer"),
    Case("taker", "before", "Persist"),
    Case("taker", "before", "AppendToLedger"),
    Case("taker", "after", "AppendToLedger"),
    Case("taker", "before", "Send", "exchange"),
    Case("taker", "after", "Send", "exchange"),
    # down past the deadline: the survivor lapses first
    Case("maker", "before", "Send", "exchange", late=True, expect="none"),
    Case("maker", "after", "Send", "exchange", late=True),
    Case("taker", "before", "Persist", late=True, expect="none"),
    Case("taker", "after", "AppendToLedger", late=True),
]


def _views(swarm: HookedSwarm, offer_id: str) -> dict[int, dict[str, dict[str, Any]]]:
    """Each side's trades settling the offer: node -> exchange id -> trade row."""
    return {i: {t["id"]: t for t in swarm.client(i).trades() if t["offer"] == offer_id} for i in (MAKER, TAKER)}


def _consistent(views: dict[int, dict[str, dict[str, Any]]]) -> set[str] | None:
    """The exchanges complete (and appended) on both sides, if both sides have settled the same way."""
    rows = [t for v in views.values() for t in v.values()]
    if any(t["state"] == "pending" for t in rows):
        return None
    complete = [{x for x, t in v.items() if t["state"] == "complete"} for v in views.values()]
    if complete[0] != complete[1]:
        return None  # one side complete, the other not (yet): the repair has to come
    if any(not views[i][x]["appended"] for i in views for x in complete[0]):
        return None
    return complete[0]


def wait_outcome(swarm: HookedSwarm, offer_id: str, expect: str) -> tuple[set[str], dict[int, Any]]:
    """Wait until both sides agree (and, for "complete", until it completed); returns the complete set."""
    last: dict[int, Any] = {}

    def agreed() -> bool:
        nonlocal last
        last = _views(swarm, offer_id)
        done = _consistent(last)
        return done is not None and (bool(done) if expect == "complete" else True)

    try:
        swarm.wait_until(agreed, CONVERGE_S, what=f"both sides to agree on offer {offer_id[:12]} ({expect})")
    except SwarmTimeout as exc:
        brief = {i: {x[:12]: (t["state"], t["detail"], t["appended"]) for x, t in v.items()} for i, v in last.items()}
        raise AssertionError(f"the two sides did not settle alike: {brief}\n{exc}") from None
    if expect == "none":  # nothing may complete later either: look again after a while
        time.sleep(2.0)
        assert _consistent(_views(swarm, offer_id)) == _consistent(last), "the outcome changed"
    return _consistent(last) or set(), last


def _all_up(swarm: HookedSwarm) -> None:
    for i in range(NODES):
        disarm(swarm.home(i))
        if not swarm.nodes[i].running:
            revive(swarm, i)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_crash_at_each_step_ends_alike_on_both_sides(swarm: HookedSwarm, case: Case) -> None:
    _all_up(swarm)
    victim = MAKER if case.victim == "maker" else TAKER
    hook = {"decision": case.decision, "kind": case.kind, "when": case.when, "nth": 1}
    deadline_s = SHORT_DEADLINE_S if case.late else LONG_DEADLINE_S
    listing = publish(swarm, MAKER, seen_by=TAKER)
    accepted_at = None
    offer_id: str | None = None
    if case.in_offer:
        arm(swarm.home(TAKER), crash=hook)
        with contextlib.suppress(SwapmeetError):  # the node may die while answering
            offer_id = swarm.client(TAKER).make_offer({"listing": listing["id"], "give": ["1 x favour"]})["id"]
    else:
        offer_id = swarm.client(TAKER).make_offer({"listing": listing["id"], "give": ["1 x favour"]})["id"]
        wait_offer(swarm, MAKER, offer_id)
        arm(swarm.home(victim), crash=hook)
        accepted_at = time.time()
        with contextlib.suppress(SwapmeetError):  # the maker may die while answering
            swarm.client(MAKER).accept(offer_id, deadline_in_s=deadline_s)
    mark = wait_crashed(swarm, victim, WAIT_S)
    disarm(swarm.home(victim))
    assert (mark["decision"], mark["kind"], mark["when"]) == (case.decision, case.kind, case.when), mark
    if case.in_offer:
        offer_id = offer_id or mark["id"]
        assert mark["id"] == offer_id
    assert offer_id is not None

    if case.late:
        assert accepted_at is not None
        survivor = TAKER if victim == MAKER else MAKER
        time.sleep(max(0.0, accepted_at + deadline_s + 1.5 - time.time()))
        seen = [t["state"] for t in swarm.client(survivor).trades() if t["offer"] == offer_id]
        if survivor == MAKER:  # it signed and cannot complete alone: it has lapsed (R2); R6 must repair it
            assert seen == ["lapsed"], seen
    revive(swarm, victim)
    if case.in_offer:  # the offer is re-sent after the restart; the maker accepts it then
        wait_offer(swarm, MAKER, offer_id)
        swarm.client(MAKER).accept(offer_id, deadline_in_s=deadline_s)

    complete, views = wait_outcome(swarm, offer_id, case.expect)
    assert len(complete) <= 1, "two exchanges settled one offer"  # R3
    if case.expect == "complete":
        assert len(complete) == 1, views
    else:
        assert not complete, views
    # Durable and exactly once: each side's own chain holds exactly the complete exchanges.
    every = {x for v in views.values() for x in v}
    for i in (MAKER, TAKER):
        chain = own_chain(swarm, i)
        for x in every:
            assert chain.count(x) == (1 if x in complete else 0), (i, x[:12], views)
    if not complete:
        # The offer was not settled; if the maker never accepted it for good, it still can.
        row = offer_at(swarm, MAKER, offer_id)
        if row is not None and row["state"] == "open":
            xid = swarm.client(MAKER).accept(offer_id, deadline_in_s=LONG_DEADLINE_S)["id"]
            wait_complete(swarm, [MAKER, TAKER], xid)


def test_every_chain_audits_clean_after_the_crashes(swarm: HookedSwarm) -> None:
    _all_up(swarm)
    for i in range(NODES):
        check_audit_clean(swarm, i, min_exchanges=0)

"""Dishonest peers against honest node processes on 127.0.0.1: what they try, and what the honest nodes do.

- A maker that over-commits: the same node with rule R4 switched off (a hook of
  ``tests/crashing_node.py``) accepts two offers for a one-piece listing; both takers
  countersign (they cannot know); ``swapmeet audit`` at an archive node and at a victim
  reports an ``overcommit`` finding citing both exchanges. The same node with R4 on
  refuses the second acceptance first (the control).
- A forged countersignature: a raw peer (a bare libp2p host holding the taker's key, so
  the maker sends it the exchange to countersign) answers with copies whose taker slot
  holds garbage: random bytes, zeros, a valid signature by another key, a short one;
  directly on the settle stream and by gossip on the settle topic. The maker refuses
  every one at the trust boundary, nothing completes, the maker stays healthy, and the
  real taker completes the same exchange afterwards.
- A withheld countersignature: the taker dies the moment the maker's signed copy
  arrives and never comes back; the maker's trade lapses at its deadline, holds the
  reservation until deadline + grace (a second taker's offer is refused meanwhile), then
  releases it: the listing is accepted again and that exchange completes.
- A forked chain: one key in two homes, each with a different entry at seq 1 (written
  offline with ``LedgerStore.append_own``); the first home runs as a node and trades, its
  chain replicates, then the second home runs under the same PeerID. Every honest node --
  the archives, the counterparty, and a node that is neither (through the fork alert) --
  lists the author in ``GET /v1/forked``; ``trades`` marks the counterparty's trade,
  ``ledger show`` marks the chain, and ``audit`` reports the fork with both entries.

One swarm of four honest nodes (node 0 with ``--archive``) is shared by the module; the
dishonest ones are added or armed by each test. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from swapmeet.node import host as p2p
from swapmeet.node.contract import Conflict
from swapmeet.node.home import Home
from swapmeet.protocol import batch, boundary
from swapmeet.protocol.identity import Identity, public_key_from_peer_id
from swapmeet.protocol.objects import KIND_EXCHANGE

from tests.raw_peers import (
    HookedSwarm,
    append_offline,
    arm,
    audit,
    clone_identity,
    db_payloads,
    disarm,
    forge_signature,
    identity_of,
    revive,
    signed_exchange,
    wait_crashed,
)

pytestmark = pytest.mark.slow

NODES = 4
ARCHIVE = 0
WAIT_S = 20.0
REPLICATE_S = 40.0  # a pull session on connect, or the next one (every 30 s)
SETTLE = "settle"  # the node's settle stream protocol and topic name (node/settle.py)


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookedSwarm]:
    net = f"dishonest-{secrets.token_hex(4)}"
    with HookedSwarm(
        NODES,
        net=net,
        base_dir=tmp_path_factory.mktemp("dishonest"),
        seed=2,
        per_node_args={ARCHIVE: ["--archive"]},
    ) as local:
        yield local


def unique(label: str) -> str:
    return f"{label} {secrets.token_hex(3)}"


def key(swarm: HookedSwarm, i: int) -> bytes:
    return public_key_from_peer_id(swarm.peer_id(i))


def publish(swarm: HookedSwarm, maker: int, have: str, *, seen_by: list[int]) -> dict[str, Any]:
    listing = swarm.client(maker).publish({"title": unique("Lot"), "have": [have]})
    swarm.wait_until(
        lambda: all(swarm.holds(i, listing["id"]) for i in seen_by), WAIT_S, what=f"the listing at nodes {seen_by}"
    )
    return listing


def make_offer(swarm: HookedSwarm, taker: int, maker: int, listing: dict[str, Any], give: str) -> str:
    offer_id = swarm.client(taker).make_offer({"listing": listing["id"], "give": [give]})["id"]
    swarm.wait_until(
        lambda: any(o["id"] == offer_id for o in swarm.client(maker).offers("incoming")),
        WAIT_S,
        what=f"offer {offer_id[:12]} at the maker",
    )
    return offer_id


def trade_at(swarm: HookedSwarm, i: int, exchange_id: str) -> dict[str, Any] | None:
    return next((t for t in swarm.client(i).trades() if t["id"] == exchange_id), None)


def wait_trade(swarm: HookedSwarm, nodes: list[int], exchange_id: str, state: str, timeout: float = WAIT_S) -> None:
    def reached() -> bool:
        return all((t := trade_at(swarm, i, exchange_id)) is not None and t["state"] == state for i in nodes)

    swarm.wait_until(reached, timeout, what=f"exchange {exchange_id[:12]} {state} at nodes {nodes}")


def wait_replicated(swarm: HookedSwarm, holder: int, author: int, payloads: set[str]) -> None:
    wanted = {bytes.fromhex(p) for p in payloads}
    swarm.wait_until(
        lambda: wanted <= db_payloads(swarm.home(holder), key(swarm, author)),
        REPLICATE_S,
        what=f"node {holder} to replicate node {author}'s chain",
    )


def findings(report: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["kind"] == kind]


def findings_about(report: dict[str, Any], *ids: str) -> list[dict[str, Any]]:
    """Findings whose evidence names any of ``ids`` (the shared swarm keeps other tests' cheats)."""
    return [f for f in report["findings"] if any(i in json.dumps(f) for i in ids)]


@pytest.fixture(autouse=True)
def honest_again(swarm: HookedSwarm) -> Iterator[None]:
    """Every test starts and ends with every base node running and no hook armed."""
    for i in range(NODES):
        disarm(swarm.home(i))
        if not swarm.nodes[i].running:
            revive(swarm, i)
    yield
    for i in range(NODES):
        disarm(swarm.home(i))


# ---------------------------------------------------------------------- over-commitment


def test_a_maker_that_overcommits_is_flagged_by_audit_with_both_exchanges(swarm: HookedSwarm) -> None:
    cheat, t1, t2 = 2, 1, 3
    listing = publish(swarm, cheat, "1 x violin", seen_by=[t1, t2])
    o1 = make_offer(swarm, t1, cheat, listing, "2 x lessons")
    o2 = make_offer(swarm, t2, cheat, listing, "3 x lessons")
    x1 = swarm.client(cheat).accept(o1, deadline_in_s=120)["id"]
    wait_trade(swarm, [cheat, t1], x1, "complete")
    # The control: an honest node (R4 on) refuses to commit the one violin twice.
    with pytest.raises(Conflict, match="committed"):
        swarm.client(cheat).accept(o2, deadline_in_s=120)
    # The cheat: the same node with R4 off signs the second exchange, and the taker countersigns.
    arm(swarm.home(cheat), overcommit=True)
    x2 = swarm.client(cheat).accept(o2, deadline_in_s=120)["id"]
    wait_trade(swarm, [cheat, t2], x2, "complete")
    disarm(swarm.home(cheat))

    # The archive holds every chain; the first victim holds the cheater's (a counterparty's) chain.
    for holder in (ARCHIVE, t1):
        wait_replicated(swarm, holder, cheat, {x1, x2})
        code, report = audit(swarm, holder)
        assert code == 1, report
        (over,) = findings(report, "overcommit")
        assert over["listing"] == listing["id"] and over["author"] == swarm.peer_id(cheat)
        assert (over["item"], over["listed"], over["given"]) == ("violin", 1, 2)
        assert sorted(over["exchanges"]) == sorted([x1, x2])
        assert over["proof"], "the finding carries a transferable proof"


# ---------------------------------------------------------------------- forged countersignature


async def test_a_forged_countersignature_is_refused(swarm: HookedSwarm) -> None:
    maker, taker = 1, 3
    run = trio.to_thread.run_sync
    listing = await run(lambda: publish(swarm, maker, "1 x canoe", seen_by=[taker]))
    offer_id = await run(lambda: make_offer(swarm, taker, maker, listing, "1 x paddle"))
    # The real taker goes away before the maker accepts: it never sees the exchange.
    await run(lambda: swarm.stop_node(taker))
    xid = (await run(lambda: swarm.client(maker).accept(offer_id, deadline_in_s=180)))["id"]
    protocol = p2p.protocol_id(swarm.net, SETTLE)
    topic = p2p.topic(swarm.net, SETTLE)
    maker_peer = swarm.peer_id(maker)
    log_mark = len(swarm.log_text(maker))
    received: list[bytes] = []
    arrived = trio.Event()

    async def serve(from_peer: str, request: bytes) -> bytes:
        received.append(request)
        arrived.set()
        return b""

    # The raw peer holds the taker's key: the maker takes it for the taker and sends it its signed copy.
    seed = identity_of(swarm.home(taker)).seed
    async with p2p.open_host(seed, ["/ip4/127.0.0.1/tcp/0"], net=swarm.net, gossip_topics=[SETTLE]) as raw:
        raw.set_request_handler(protocol, serve)
        await raw.subscribe(topic, lambda from_peer, data: True)
        await raw.connect(swarm.addr(maker))
        with trio.fail_after(WAIT_S):  # the maker re-sends its state to a peer that (re)connects
            await arrived.wait()
        signed = boundary.decode(received[0], kind=KIND_EXCHANGE)
        assert signed.id.hex() == xid and signed.signed_by == (key(swarm, maker),)
        slot = signed.index_of(key(swarm, taker))
        message = boundary.signing_bytes_of_exchange(signed.raw, signed.signatures)
        forgeries = {
            "random": forge_signature(signed, slot),
            "zeros": forge_signature(signed, slot, bytes(64)),
            "another key": forge_signature(signed, slot, Identity.generate().sign(message)),
            "short": forge_signature(signed, slot, b"\x01" * 10),
        }

        def refused() -> int:
            return swarm.client(maker).status()["activity"]["refused"]

        refused_before = await run(refused)
        for name, forged in forgeries.items():
            try:
                await raw.request(maker_peer, protocol, forged, timeout=WAIT_S)
            except p2p.P2PError:
                continue  # refused at the trust boundary: the stream is reset
            pytest.fail(f"the maker acknowledged a forged countersignature ({name})")
        assert await run(refused) - refused_before >= len(forgeries)  # each one refused (logged once a minute)
        # And by gossip, where a relay is as good as the author (R9): the validator rejects it.
        await raw.wait_for_mesh(topic, [maker_peer], timeout=WAIT_S)
        refused_before = await run(refused)
        await raw.publish(topic, batch.encode_batch([forgeries["another key"]]))
        await run(
            lambda: swarm.wait_until(
                lambda: refused() > refused_before, WAIT_S, what="the maker to reject the forged gossip", nodes=[maker]
            )
        )
        trade = await run(lambda: trade_at(swarm, maker, xid))
        assert trade is not None and (trade["state"], trade["detail"]) == ("pending", "signed"), trade
        assert bytes.fromhex(xid) not in await run(lambda: db_payloads(swarm.home(maker), key(swarm, maker)))
        assert (await run(lambda: swarm.client(maker).status()))["peer_id"] == maker_peer

    log = swarm.log_text(maker)[log_mark:]
    # Five refusals (four forgeries on the stream, one by gossip), logged as at most one line for the peer
    # in the minute (plus, if its minute ran out meanwhile, the count of the rest); never a traceback.
    # Which refusal the line names is whichever came first in the peer's minute.
    assert "Traceback" not in log and log.count(" rejected ") <= 2, log
    # The real taker returns and countersigns: the same exchange completes with a true signature.
    await run(lambda: revive(swarm, taker))
    await run(lambda: wait_trade(swarm, [maker, taker], xid, "complete", timeout=REPLICATE_S))
    _, report = await run(lambda: audit(swarm, maker))
    assert report["exchanges"] >= 1 and findings_about(report, xid, listing["id"]) == [], report["findings"]
    # A peer's invalid message is a refusal, not a crash of the node: no ERROR with a traceback for it.
    assert "handler crashed" not in log, log[log.find("handler crashed") - 200 :][:2500]


# ---------------------------------------------------------------------- withheld countersignature


def test_a_withheld_countersignature_lapses_and_the_listing_is_released(swarm: HookedSwarm) -> None:
    maker, taker, other = 2, 3, 1
    deadline_s, grace_s = 8, 3
    listing = publish(swarm, maker, "1 x tent", seen_by=[taker, other])
    withheld = make_offer(swarm, taker, maker, listing, "1 x stove")
    second = make_offer(swarm, other, maker, listing, "2 x stoves")
    # The taker dies the moment the maker's signed copy reaches it, before it countersigns.
    arm(swarm.home(taker), crash={"decision": "Persist", "when": "before", "nth": 1})
    arm(swarm.home(maker), grace=grace_s)  # the protocol's grace is 300 s
    accepted = time.time()
    trade = swarm.client(maker).accept(withheld, deadline_in_s=deadline_s)
    xid = trade["id"]
    assert (trade["state"], trade["detail"]) == ("pending", "signed")
    wait_crashed(swarm, taker, WAIT_S)
    # Held: the one tent is reserved by the maker's signature.
    with pytest.raises(Conflict, match="committed"):
        swarm.client(maker).accept(second, deadline_in_s=120)
    wait_trade(swarm, [maker], xid, "lapsed", timeout=deadline_s + WAIT_S)
    assert trade_at(swarm, maker, xid)["detail"] == "lapsed"  # type: ignore[index]
    assert bytes.fromhex(xid) not in db_payloads(swarm.home(maker), key(swarm, maker))

    # Released at deadline + grace: the listing can be accepted again, and that exchange completes.
    time.sleep(max(0.0, accepted + deadline_s + grace_s - time.time()))

    def accept_second() -> str | None:
        with contextlib.suppress(Conflict):
            return swarm.client(maker).accept(second, deadline_in_s=120)["id"]
        return None

    x2 = swarm.wait_until(accept_second, WAIT_S, what="the released listing to be accepted again", nodes=[maker])
    wait_trade(swarm, [maker, other], x2, "complete")
    gone = trade_at(swarm, maker, xid)  # forgotten once released, or still shown lapsed
    assert gone is None or gone["state"] == "lapsed", gone
    assert bytes.fromhex(xid) not in db_payloads(swarm.home(maker), key(swarm, maker))
    _, report = audit(swarm, maker)
    assert findings_about(report, xid, x2, listing["id"]) == [], report["findings"]


# ---------------------------------------------------------------------- a forked chain


def test_a_forked_chain_is_flagged_by_every_node(swarm: HookedSwarm) -> None:
    counterparty, bystander = 2, 3  # bystander: neither an archive nor a counterparty of the forker
    honest = list(range(NODES))
    first = swarm.add_node(bootstrap=honest)
    forker = identity_of(swarm.home(first))
    forker_id = swarm.peer_id(first)
    # The second home: the same key, and a different entry at seq 1, written offline.
    second_home = Home(swarm.base_dir / f"node{first + 1}")
    clone_identity(swarm.home(first), second_home)
    (other_entry,) = append_offline(
        second_home, forker, [signed_exchange(forker, Identity.generate(), now=int(time.time()))], now=int(time.time())
    )

    # The first home trades honestly: its seq 1 is a real exchange with the counterparty.
    listing = publish(swarm, first, "1 x lamp", seen_by=[counterparty])
    offer_id = make_offer(swarm, counterparty, first, listing, "1 x bulb")
    xid = swarm.client(first).accept(offer_id, deadline_in_s=120)["id"]
    wait_trade(swarm, [first, counterparty], xid, "complete")
    wait_replicated(swarm, ARCHIVE, first, {xid})
    real_entry = swarm.cli_json(ARCHIVE, "ledger", "show", forker_id)["entries"][0]["id"]
    swarm.stop_node(first)

    # The same PeerID comes back with the other history.
    second = swarm.add_node(bootstrap=honest)
    assert swarm.peer_id(second) == forker_id
    try:
        swarm.wait_until(
            lambda: all(forker_id in swarm.client(i).forked() for i in honest),
            REPLICATE_S,
            what="every honest node to flag the forked author",
        )
        # trades: the counterparty's trade with the forker is marked
        (row,) = [t for t in swarm.client(counterparty).trades() if t["id"] == xid]
        assert row["forked"] == [forker_id]
        # ledger show: the archive's copy of the chain is marked
        chains = {c["author"]: c for c in swarm.cli_json(ARCHIVE, "ledger", "show")["chains"]}
        assert chains[forker_id]["forked"] is True
        # audit: the fork, with both entries as evidence
        code, report = audit(swarm, ARCHIVE)
        assert code == 1
        (fork,) = [f for f in findings(report, "fork") if f["author"] == forker_id]
        assert fork["seq"] == 1 and sorted(fork["entries"]) == sorted([real_entry, other_entry.hex()])
        assert fork["proof"]
        assert forker_id in swarm.client(bystander).forked()  # through the fork alert alone
    finally:
        swarm.stop_node(second)

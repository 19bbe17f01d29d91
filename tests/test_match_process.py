"""``swapmeet match`` between four real node processes on 127.0.0.1: a ring found, proposed once, settled.

Four nodes publish listings whose only trade is a four-party ring (no two or three of them
can trade among themselves): two acceptances are implicit (a ``want`` covers a ``have``, one
of them written with another case, spacing and unit spelling) and two explicit (``--accept``
with a short id, which the CLI turns into the listing's author and series). Every node finds
the same ring; the
coordinator (the smallest PeerID) proposes it with ``swapmeet match --propose``, the other
three see it waiting and sign it (a ring is never signed for anyone, PROTOCOL.md 10.10), and
the exchange completes on all four chains, with a clean audit at every node. ``match
--propose`` at a node that does not coordinate proposes nothing, and run again at the
coordinator it proposes nothing twice. Every wait is bounded.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from swapmeet.cli.localswarm import LocalSwarm
from swapmeet.protocol.identity import public_key_from_peer_id

from tests.raw_peers import audit, chain_payloads

pytestmark = pytest.mark.slow

NODES = 4
WAIT_S = 30.0  # a listing's gossip or one message's way, on a loaded 2-core machine
MATCH_TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSwarm]:
    net = f"match-{secrets.token_hex(4)}"
    with LocalSwarm(NODES, net=net, base_dir=tmp_path_factory.mktemp("match"), seed=3) as local:
        yield local


def wait_held(swarm: LocalSwarm, listing_id: str, nodes: range | list[int]) -> None:
    for i in nodes:
        swarm.wait_until(lambda i=i: swarm.holds(i, listing_id), WAIT_S, what=f"listing {listing_id[:12]} at node {i}")


def trade_at(swarm: LocalSwarm, i: int, exchange_id: str) -> dict[str, Any] | None:
    return next((t for t in swarm.client(i).trades() if t["id"] == exchange_id), None)


def match(swarm: LocalSwarm, i: int, *args: str) -> dict[str, Any]:
    result = swarm.cli_json(i, "match", "--budget", "10", *args, timeout=MATCH_TIMEOUT_S)
    assert result["kind"] == "match"
    return result


def test_a_four_party_ring_is_found_proposed_once_and_settled_on_every_chain(swarm: LocalSwarm) -> None:
    tag = secrets.token_hex(3)
    peers = [swarm.peer_id(i) for i in range(NODES)]
    # node 0 gives a tent and wants a kayak; 1 gives a ladder for 0's tent and 2 lessons for 1's ladder (both
    # explicitly, --accept with a short id); 3 gives the kayak and wants the lessons (spelt differently)
    tent = swarm.cli_json(0, "publish", "--title", f"Tent {tag}", "--have", "1 x tent", "--want", "1 x Kayak")
    wait_held(swarm, tent["id"], [1])
    ladder = swarm.cli_json(
        1, "publish", "--title", f"Ladder {tag}", "--have", "1 x ladder", "--accept", tent["id"][:12]
    )
    assert ladder["accepts"] == [{"author": peers[0], "series": tent["series"]}]
    wait_held(swarm, ladder["id"], [2])
    lessons = swarm.cli_json(
        2, "publish", "--title", f"Lessons {tag}", "--have", "2 hour x guitar lessons", "--accept", ladder["id"][:12]
    )
    kayak = swarm.cli_json(
        3, "publish", "--title", f"Kayak {tag}", "--have", "1 x kayak", "--want", "2 hours x Guitar  Lessons"
    )
    ring_ids = {tent["id"], ladder["id"], lessons["id"], kayak["id"]}
    for listing_id in ring_ids:
        wait_held(swarm, listing_id, range(NODES))

    coordinator = min(range(NODES), key=lambda i: public_key_from_peer_id(peers[i]))
    other = (coordinator + 1) % NODES
    # a node that does not coordinate finds the ring and proposes nothing
    seen = match(swarm, other, "--propose")
    (ring,) = seen["rings"]
    assert ring["coordinator"] == peers[coordinator] and not ring["mine"] and ring["proposed"] is None
    gives = {(leg["from"], leg["to"], leg["listing"]) for leg in ring["legs"]}
    assert {x for _, _, x in gives} >= {ladder["id"], lessons["id"], kayak["id"]}
    assert {(f, t) for f, t, _ in gives} == {
        (peers[0], peers[1]),
        (peers[1], peers[2]),
        (peers[2], peers[3]),
        (peers[3], peers[0]),
    }

    proposed = match(swarm, coordinator, "--propose")
    (ring,) = proposed["rings"]
    assert ring["mine"] and ring["proposed"] and ring["refused"] is None
    xid = ring["proposed"]
    # run again: the ring's listings are in a trade of the coordinator's now, nothing is proposed twice
    again = match(swarm, coordinator, "--propose")
    assert again["rings"] == [] and again["left_out"] >= 4

    for i in range(NODES):
        if i != coordinator:
            swarm.wait_until(
                lambda i=i: (t := trade_at(swarm, i, xid)) and t["detail"] == "awaiting",
                WAIT_S,
                what=f"the ring's proposal waiting at node {i}",
            )
            swarm.cli_json(i, "sign", xid)

    def complete_everywhere() -> bool:
        return all((t := trade_at(swarm, i, xid)) and t["state"] == "complete" and t["appended"] for i in range(NODES))

    swarm.wait_until(complete_everywhere, WAIT_S, what=f"exchange {xid[:12]} complete on all four nodes")
    for i in range(NODES):
        (row,) = [t for t in swarm.cli_json(i, "trades") if t["id"] == xid]
        assert set(row["signed_by"]) == set(peers) and len(row["legs"]) == 4
        assert chain_payloads(swarm, i, peers[i]).count(xid) == 1, f"node {i}'s own chain"
    for holder in range(NODES):
        for owner in range(NODES):
            swarm.wait_until(
                lambda h=holder, o=owner: xid in chain_payloads(swarm, h, peers[o]),
                WAIT_S,
                what=f"node {holder} to hold node {owner}'s chain with the ring",
            )
        code, report = audit(swarm, holder)
        assert code == 0 and report["findings"] == [], report["findings"]

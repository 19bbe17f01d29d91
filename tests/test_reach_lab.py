"""Trading across home NATs, in the namespace lab of :mod:`tests.netlab` (real node processes).

- Two homes behind separate masquerading routers and one public node whose address is all they
  are given: AutoNAT finds the public node public and the homes private; the homes reserve
  slots on the public node's relay; A publishes, B finds the listing and offers, A accepts; the
  settle stream runs directly between the homes over a relayed connection (``peers --json``
  says which connection is relayed), the exchange is complete on both chains and ``swapmeet
  audit`` is clean at both.
- The same, where every node is given only a plain DHT server (a peer of no market): they find
  each other through provider records under the network name's key, then trade.
- Two relays, both homes holding a reservation on each; one relay is killed: the homes drop it
  within a bounded time and the next trade goes through the other.
- Two markets (``--net``) in one lab: a node of the other network is dropped and never listed.

Every test builds its own lab (unique namespace names) and tears it down, on failure too; the
module skips with one reason where namespaces cannot be made (not root, no nftables).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.netlab import Lab, LabNode, lab_unavailable

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(lab_unavailable() is not None, reason=str(lab_unavailable())),
]

WAIT_S = 30.0  # one listing's or offer's way through the lab, on a busy 2-core machine


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    failed_before = request.session.testsfailed
    with Lab(net=f"lab-{secrets.token_hex(3)}") as made:
        yield made
        # The test's failure is counted before teardown: keep its homes and logs (path on stderr).
        made.close(failed=request.session.testsfailed > failed_before)


def trade_row(lab: Lab, node: LabNode, xid: str) -> dict[str, Any] | None:
    return next((t for t in lab.cli_json(node, "trades") if t["id"] == xid), None)


def barter(lab: Lab, maker: LabNode, taker: LabNode) -> str:
    """Maker publishes, taker finds it and offers, maker accepts; waits until complete at both. The exchange id."""
    title = f"Bike {secrets.token_hex(3)}"
    listing = lab.cli_json(maker, "publish", "--title", title, "--have", "1 x bike", "--want", "2 x jam")
    lab.wait_until(
        lambda: any(x["id"] == listing["id"] for x in lab.cli_json(taker, "listings", title)),
        WAIT_S,
        what="the listing at the taker",
    )
    offer = lab.cli_json(taker, "offer", listing["id"], "--give", "2 x jam", "--take", "1 x bike")
    lab.wait_until(
        lambda: any(o["id"] == offer["id"] for o in lab.cli_json(maker, "offers", "--incoming")),
        WAIT_S,
        what="the offer at the maker",
    )
    xid: str = lab.cli_json(maker, "accept", offer["id"], "--deadline", "10m")["id"]

    def complete() -> bool:
        rows = [trade_row(lab, n, xid) for n in (maker, taker)]
        return all(r is not None and r["state"] == "complete" and r["appended"] for r in rows)

    lab.wait_until(complete, WAIT_S, what=f"exchange {xid[:12]} complete at both")
    return xid


def chain_payloads(lab: Lab, at: LabNode, author: LabNode) -> list[str]:
    """Payload ids of ``author``'s chain as ``at`` holds it (``ledger show --json``); [] if none yet."""
    shown = lab.cli(at, "ledger", "show", author.peer_id, "--json", check=False)
    return [e["payload_id"] for e in json.loads(shown.stdout)["entries"]] if shown.returncode == 0 else []


def on_both_chains(lab: Lab, xid: str, a: LabNode, b: LabNode) -> None:
    """The exchange is once on each party's own chain, and each holds the other's chain with it."""
    for owner in (a, b):
        assert chain_payloads(lab, owner, owner).count(xid) == 1, owner.name
    for holder, owner in ((a, b), (b, a)):
        lab.wait_until(
            lambda h=holder, o=owner: xid in chain_payloads(lab, h, o),  # type: ignore[misc]
            WAIT_S,
            what=f"{holder.name} to replicate {owner.name}'s chain",
        )


def audit_clean(lab: Lab, node: LabNode) -> dict[str, Any]:
    done = lab.cli(node, "audit", "--json", "--workers", "1", check=False)
    report: dict[str, Any] = json.loads(done.stdout)
    assert done.returncode == 0 and report["findings"] == [], (node.name, report["findings"])
    return report


def test_homes_behind_nat_trade_through_a_relay_among_the_peers(lab: Lab) -> None:
    pub = lab.node("pub")
    a = lab.node("a", lab.add_home(), bootstrap=[pub.addr], wait=False)  # type: ignore[list-item]
    b = lab.node("b", lab.add_home(), bootstrap=[pub.addr], wait=False)  # type: ignore[list-item]
    lab.wait_up(a)
    lab.wait_up(b)
    # Both homes reserve a slot on the public node's relay and advertise their circuit address.
    for home in (a, b):
        status = lab.wait_until(
            lambda h=home: (st := lab.cli_json(h, "node", "status"))["relay"]["reservations"] == [pub.peer_id] and st,
            WAIT_S,
            what=f"{home.name} to reserve a slot on the public relay",
        )
        assert f"/p2p/{pub.peer_id}/p2p-circuit/p2p/{home.peer_id}" in " ".join(status["addrs"])
    # AutoNAT, with the peers as dialers-back: the public node is public and offers the relay;
    # the homes are private, offer none, and show their circuit addresses.
    for node, verdict, service in ((pub, "public", True), (a, "private", False), (b, "private", False)):
        # The relay service follows the verdict within a second.
        lab.wait_until(
            lambda n=node, v=verdict, on=service: (
                (st := lab.cli_json(n, "node", "status"))["reachability"] == v and st["relay"]["service"] is on
            ),
            WAIT_S,
            what=f"{node.name}'s reachability to be {verdict}, its relay service {'on' if service else 'off'}",
        )
    # A public node holds no reservations (any made while it did not know yet are dropped).
    lab.wait_until(
        lambda: lab.cli_json(pub, "node", "status")["relay"]["reservations"] == [], WAIT_S, what="pub to hold none"
    )
    shown = lab.cli(a, "node", "status").stdout
    assert "reachability" in shown and "private" in shown and "p2p-circuit" in shown

    xid = barter(lab, a, b)
    on_both_chains(lab, xid, a, b)
    for node in (a, b):
        assert audit_clean(lab, node)["exchanges"] >= 1
    # The settle stream went straight to the other home, over a connection through the relay:
    # nothing fell back to gossip.
    for node in (a, b):
        assert f"could not send exchange {xid[:12]}" not in lab.log_text(node)
    (to_b,) = [p for p in lab.peers(a) if p["peer_id"] == b.peer_id]
    assert [c["relayed"] for c in to_b["connections"]] == [True]
    assert f"/p2p/{pub.peer_id}/p2p-circuit" in to_b["connections"][0]["addr"]
    (to_pub,) = [p for p in lab.peers(a) if p["peer_id"] == pub.peer_id]
    assert [c["relayed"] for c in to_pub["connections"]] == [False]
    assert lab.cli_json(pub, "node", "status")["relay"]["bytes_relayed"] > 0


def test_a_relay_that_goes_away_and_the_homes_keep_trading_through_another(lab: Lab) -> None:
    one = lab.node("relay-1")
    two = lab.node("relay-2", bootstrap=[one.addr])  # type: ignore[list-item]
    boot: list[str] = [one.addr, two.addr]  # type: ignore[list-item]
    a = lab.node("a", lab.add_home(), bootstrap=boot, wait=False)
    b = lab.node("b", lab.add_home(), bootstrap=boot, wait=False)
    lab.wait_up(a)
    lab.wait_up(b)
    both = {one.peer_id, two.peer_id}
    for home in (a, b):
        lab.wait_until(
            lambda h=home: set(lab.cli_json(h, "node", "status")["relay"]["reservations"]) == both,
            WAIT_S,
            what=f"{home.name} to hold reservations on both relays",
        )
    barter(lab, a, b)
    lab.kill(one)  # gone without a goodbye (SIGKILL)
    gone = time.monotonic()
    for home in (a, b):
        lab.wait_until(
            lambda h=home: lab.cli_json(h, "node", "status")["relay"]["reservations"] == [two.peer_id],
            WAIT_S,
            what=f"{home.name} to drop the dead relay",
        )
    dropped_s = time.monotonic() - gone
    # The old relayed connection died with relay-1; the next trade goes through relay-2.
    xid = barter(lab, a, b)
    on_both_chains(lab, xid, a, b)
    for home in (a, b):
        assert f"could not send exchange {xid[:12]}" not in lab.log_text(home)
    (to_b,) = [p for p in lab.peers(a) if p["peer_id"] == b.peer_id]
    assert [c["addr"].startswith(f"/p2p/{two.peer_id}/p2p-circuit") for c in to_b["connections"]] == [True]
    assert dropped_s < WAIT_S


def test_homes_given_only_a_plain_dht_server_find_their_market_by_name(lab: Lab) -> None:
    dht = lab.dht_server()
    boot = [dht.addr]
    pub = lab.node("pub", bootstrap=boot, wait=False)  # type: ignore[list-item]
    a = lab.node("a", lab.add_home(), bootstrap=boot, wait=False)  # type: ignore[list-item]
    b = lab.node("b", lab.add_home(), bootstrap=boot, wait=False)  # type: ignore[list-item]
    for node in (pub, a, b):
        lab.wait_up(node)
    # Nobody was told of anyone but the DHT server: every node finds the others by the
    # network name's provider records (the homes reach each other through pub's relay).
    for node, others in ((pub, [a, b]), (a, [pub, b]), (b, [pub, a])):
        lab.wait_until(
            lambda n=node, o=others: {x.peer_id for x in o} <= lab.peer_ids(n),  # type: ignore[misc]
            2 * WAIT_S,
            what=f"{node.name} to find its market by name",
        )
        assert dht.peer_id not in lab.peer_ids(node)  # a peer of no market is not listed
    xid = barter(lab, a, b)
    on_both_chains(lab, xid, a, b)
    for node in (a, b):
        assert audit_clean(lab, node)["exchanges"] >= 1


def test_two_markets_in_one_lab_never_list_each_other(lab: Lab) -> None:
    first = lab.node("first", net="market-a")
    other = lab.node("other", bootstrap=[first.addr], net="market-b")  # type: ignore[list-item]
    same = lab.node("same", lab.add_home(), bootstrap=[first.addr], net="market-a")  # type: ignore[list-item]
    lab.wait_until(lambda: same.peer_id in lab.peer_ids(first), WAIT_S, what="the same-market peer listed")
    # The other market's node dialled us (bootstrap): the connection is dropped once identify
    # shows it speaks only market-b's protocols, and neither side ever lists the other.
    lab.wait_until(
        lambda: (
            "speaks network ['market-b']" in lab.log_text(first) or "speaks network ['market-a']" in lab.log_text(other)
        ),
        WAIT_S,
        what="the cross-market connection to be closed",
    )
    for _ in range(3):
        assert other.peer_id not in lab.peer_ids(first)
        assert first.peer_id not in lab.peer_ids(other) and same.peer_id not in lab.peer_ids(other)
        assert lab.cli_json(other, "node", "status")["peers"] == 0

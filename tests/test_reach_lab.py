"""Trading across home NATs, in the namespace lab of :mod:`tests.netlab` (real node processes).

- Two homes behind separate routers whose NAT gives each destination a new port ("symmetric":
  hole punching cannot cross it) and one public node whose address is all they are given:
  AutoNAT finds the public node public and the homes private; the homes reserve slots on the
  public node's relay; A publishes, B finds the listing and offers, A accepts; the settle stream
  runs directly between the homes over a relayed connection, the exchange is complete on both
  chains and ``swapmeet audit`` is clean at both. Hole punching is tried and fails, and the
  homes say so: ``peers --json`` shows the connection relayed with ``hole_punch: failed: ...``.
- In the same lab, a peer asks the public node's relay for reservation after reservation and
  pushes bytes through a circuit without end: it hits the per-peer caps (counted in ``node
  status``, a few rate-limited lines in the log), while the relay itself completes a trade.
- Every node given only a plain DHT server (a peer of no market): they find each other through
  provider records under the network name's key; the homes, behind NATs that keep a socket's
  port (endpoint-independent mapping), punch a hole (DCUtR): their relayed connection becomes
  a direct one, and the trade runs over it (the relay carries none of its bytes).
- Three relays, the homes (symmetric NATs, so their connection stays relayed) holding a
  reservation on two: one relay stalls (SIGSTOP) while another drops everything it gets
  (nftables); the homes drop both within a bounded time (liveness finds the silent
  connections) and trade through the third; then the third is killed as the stalled one comes
  back, and the homes move to it and trade again.
- Two markets (``--net``) in one lab: a node of the other network is dropped and never listed.

The tests build their own labs (unique namespace names; the first two share one) and tear
them down, on failure too; the module skips with one reason where namespaces cannot be made
(not root, no nftables).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netlab import Lab, LabError, LabNode, lab_unavailable

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


@pytest.fixture(scope="module")
def relay_lab(request: pytest.FixtureRequest) -> Iterator[tuple[Lab, LabNode, LabNode, LabNode]]:
    """One public node (the relay) and two homes behind symmetric NATs, shared by the tests that use it."""
    failed_before = request.session.testsfailed
    with Lab(net=f"lab-{secrets.token_hex(3)}") as made:
        pub = made.node("pub")
        a = made.node("a", made.add_home(nat="symmetric"), bootstrap=[pub.addr], wait=False)  # type: ignore[list-item]
        b = made.node("b", made.add_home(nat="symmetric"), bootstrap=[pub.addr], wait=False)  # type: ignore[list-item]
        made.wait_up(a)
        made.wait_up(b)
        yield made, pub, a, b
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


def connection_to(lab: Lab, node: LabNode, other: LabNode) -> dict[str, Any]:
    """``node``'s ``peers --json`` entry for ``other`` (LabError while it is not listed)."""
    for peer in lab.peers(node):
        if peer["peer_id"] == other.peer_id:
            return peer
    raise LabError(f"{other.name} is not among {node.name}'s peers")


def test_homes_behind_nat_trade_through_a_relay_among_the_peers(
    relay_lab: tuple[Lab, LabNode, LabNode, LabNode],
) -> None:
    lab, pub, a, b = relay_lab
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

    # Hole punching was tried (B accepted the relayed connection and drives it) and cannot cross
    # these NATs: both homes stay relayed and say so.
    def gave_up(home: LabNode, other: LabNode) -> dict[str, Any] | None:
        peer = connection_to(lab, home, other)
        return peer if str(peer["hole_punch"]).startswith("failed") else None

    for home, other in ((a, b), (b, a)):
        peer = lab.wait_until(
            lambda h=home, o=other: gave_up(h, o),  # type: ignore[misc]
            WAIT_S,
            what=f"{home.name} to give up hole punching to {other.name}",
        )
        assert [c["relayed"] for c in peer["connections"]] == [True]
        assert f"/p2p/{pub.peer_id}/p2p-circuit" in peer["connections"][0]["addr"]
        assert lab.cli_json(home, "node", "status")["relay"]["hole_punches"]["failed"] >= 1
        assert "relayed (hole punch failed)" in lab.cli(home, "peers").stdout
    (to_pub,) = [p for p in lab.peers(a) if p["peer_id"] == pub.peer_id]
    assert [c["relayed"] for c in to_pub["connections"]] == [False]
    assert to_pub["hole_punch"] is None  # reached directly: nothing to punch
    assert lab.cli_json(pub, "node", "status")["relay"]["bytes_relayed"] > 0


def test_a_peer_abusing_the_relay_hits_its_caps_while_the_relay_trades(
    relay_lab: tuple[Lab, LabNode, LabNode, LabNode],
) -> None:
    lab, pub, a, _ = relay_lab
    before = lab.cli_json(pub, "node", "status")["relay"]
    # Twelve reservations in a row (the relay grants six a minute to one peer), then bytes
    # without end through a circuit (the relay carries 16 MiB per circuit): all at once with a trade.
    script = str(Path(__file__).parent / "relay_abuser.py")
    abuser = subprocess.Popen(
        ["ip", "netns", "exec", lab.public, sys.executable, script, str(pub.addr), lab.net, "12", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        xid = barter(lab, pub, a)
        out, _ = abuser.communicate(timeout=90)
    finally:
        if abuser.poll() is None:
            abuser.kill()
            abuser.wait(5)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["reservations_granted"] <= 6 and result["reservations_refused"] >= 6, result
    assert result["cut"] is True and result["bytes_pushed"] >= 16 * 1024 * 1024, result
    after = lab.cli_json(pub, "node", "status")["relay"]
    assert after["reservations_refused"] - before["reservations_refused"] >= 6
    assert after["circuits_cut"] - before["circuits_cut"] == 1
    # The refusals went through the refusal log: one line for the peer's first, the rest counted.
    log_text = lab.log_text(pub)
    assert log_text.count("rejected a relay reservation from") == 1
    assert "circuit cut at its cap of 16777216 bytes" in log_text
    # Meanwhile the relay traded, and its trade is on both chains.
    on_both_chains(lab, xid, pub, a)
    assert audit_clean(lab, pub)["exchanges"] >= 1


def test_relays_that_stall_drop_or_go_away_and_the_homes_keep_trading_through_another(lab: Lab) -> None:
    one = lab.node("relay-1")
    two = lab.node("relay-2", bootstrap=[one.addr], wait=False)  # type: ignore[list-item]
    three = lab.node("relay-3", bootstrap=[one.addr], wait=False)  # type: ignore[list-item]
    lab.wait_up(two)
    lab.wait_up(three)
    relays = [one, two, three]
    boot: list[str] = [r.addr for r in relays]  # type: ignore[misc]
    # Symmetric NATs: no hole punch, so everything between the homes goes through a relay.
    a = lab.node("a", lab.add_home(nat="symmetric"), bootstrap=boot, wait=False)
    b = lab.node("b", lab.add_home(nat="symmetric"), bootstrap=boot, wait=False)
    lab.wait_up(a)
    lab.wait_up(b)

    def hold(want: list[LabNode] | None, what: str) -> float:
        """Wait until both homes hold reservations on exactly ``want`` (None: on two relays); the seconds it took."""
        began = time.monotonic()

        def holds(home: LabNode) -> bool:
            held = set(lab.cli_json(home, "node", "status")["relay"]["reservations"])
            return len(held) == 2 if want is None else held == {r.peer_id for r in want}

        for home in (a, b):
            lab.wait_until(
                lambda h=home: holds(h),  # type: ignore[misc]
                WAIT_S,
                what=f"{home.name} to {what}",
            )
        return time.monotonic() - began

    def trade_through(relay: LabNode) -> str:
        xid = barter(lab, a, b)
        for home in (a, b):
            assert f"could not send exchange {xid[:12]}" not in lab.log_text(home)
        (to_b,) = [p for p in lab.peers(a) if p["peer_id"] == b.peer_id]
        assert [c["addr"].startswith(f"/p2p/{relay.peer_id}/p2p-circuit") for c in to_b["connections"]] == [True]
        return xid

    hold(None, "hold reservations on two of the three relays")
    # 1. At once: relay-1 stalls (its process stops: its connections stay open and answer
    #    nothing), relay-2 drops every packet that reaches its port. Only relay-3 is left.
    lab.pause(one)
    lab.blackhole(two)
    faulted = time.monotonic()
    silent_s = hold([three], "drop the stalled and the dropping relay")
    # Each connection found silent by liveness, not by chance. A home that held no reservation on
    # one of them may hold the right ones before its idle connection to it misses its ping's deadline.
    for home in (a, b):
        for relay in (one, two):
            lab.wait_until(
                lambda h=home, r=relay: f"connection to {r.peer_id} is silent" in lab.log_text(h),  # type: ignore[misc]
                WAIT_S,
                what=f"{home.name} to find its connection to {relay.name} silent",
            )
    found_s = time.monotonic() - faulted
    trade_through(three)
    # 2. relay-1 comes back (the homes' redials find it) as relay-3 goes away without a goodbye.
    lab.pause(one, paused=False)
    lab.kill(three)
    gone_s = hold([one], "move to the relay that came back")
    on_both_chains(lab, trade_through(one), a, b)
    # Each was found within liveness's bound (a ping every 4 s, 5 s for its pong) and a look at
    # the reservations (every second), on a busy machine.
    assert max(silent_s, found_s, gone_s) < WAIT_S, (silent_s, found_s, gone_s)


def test_homes_given_only_a_plain_dht_server_find_their_market_by_name(lab: Lab) -> None:
    dht = lab.dht_server()
    boot = [dht.addr]
    pub = lab.node("pub", bootstrap=boot, wait=False)  # type: ignore[list-item]
    home_a, home_b = lab.add_home(), lab.add_home()  # NATs that keep a socket's port: hole punching works
    a = lab.node("a", home_a, bootstrap=boot, wait=False)  # type: ignore[list-item]
    b = lab.node("b", home_b, bootstrap=boot, wait=False)  # type: ignore[list-item]
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

    # The homes met through pub's relay and punched a hole (DCUtR): each now holds one direct
    # connection to the other's router, at the other's listen port, and the relayed one is closed.
    def direct_only(home: LabNode, other: LabNode) -> dict[str, Any] | None:
        peer = connection_to(lab, home, other)
        return peer if [c["relayed"] for c in peer["connections"]] == [False] else None

    for home, other, router in ((a, b, home_b), (b, a, home_a)):
        peer = lab.wait_until(
            lambda h=home, o=other: direct_only(h, o),  # type: ignore[misc]
            WAIT_S,
            what=f"{home.name}'s connection to {other.name} to become direct",
        )
        assert peer["hole_punch"] == "direct"
        assert peer["connections"][0]["addr"].startswith(f"/ip4/{router.wan_ip}/tcp/")
        lab.wait_until(  # and told the other its gossip subscriptions again (docs/LIBP2P.md §46)
            lambda h=home, o=other: f"closed the relayed connection to {o.peer_id}" in lab.log_text(h),  # type: ignore[misc]
            WAIT_S,
            what=f"{home.name} to move everything to the direct connection",
        )
    relayed_before = lab.cli_json(pub, "node", "status")["relay"]
    assert relayed_before["circuits_relayed"] >= 1
    assert lab.cli_json(b, "node", "status")["relay"]["hole_punches"]["direct"] >= 1
    xid = barter(lab, a, b)
    on_both_chains(lab, xid, a, b)
    for node in (a, b):
        assert audit_clean(lab, node)["exchanges"] >= 1
        assert f"could not send exchange {xid[:12]}" not in lab.log_text(node)
    # Gossip, sync and settlement between the homes took the direct connection: not one byte through pub.
    assert lab.cli_json(pub, "node", "status")["relay"]["bytes_relayed"] == relayed_before["bytes_relayed"]


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

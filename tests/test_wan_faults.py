"""Trades over a bad WAN end alike on both sides, and both chains audit clean (issue 16's fault tests).

Three real ``swapmeet node run`` processes, each in a network namespace of its own, joined by the
userspace WAN of ``tests/wanlink.py`` (this kernel has no ``tc netem``): links of 20-80 ms one
way, no loss unless a test sets it. Node 0 makes the listings; node 1 and node 2 take them.

- A taker loses its network in the middle of a settlement for ``OFFLINE_S`` seconds: the WAN takes
  it off right after the maker accepted (the maker's proposal on its way is lost with everything
  else), or right after the taker signed (the exchange is complete on its side, and the completed
  exchange on its way to the maker is lost: the sides disagree until they hear from each other).
  20 s is enough for the point: it outlives TCP's first six retransmissions (0.2 + 0.4 + ... +
  6.4 s = 12.6 s; the seventh comes about 25 s after the cut) and the liveness deadline (a ping
  every 4 s answered within 5 s: at most 9 s, then the connection is closed and redialled,
  docs/LIBP2P.md §65), so the trade resumes over a new connection, not over the old one's
  retransmissions. A minute only adds waiting.
- A link of 300 ms one way that loses 5 % of its packets, both ways, between the maker and the
  other taker: a whole trade from offer to both chains.

Either way the exchange must end complete on both sides (on both chains, once) or lapsed on
both -- never complete on one side only -- and both parties' chains must audit clean. Every wait
is bounded; every process and namespace is removed in a ``finally``. Skipped, with the reason,
where namespaces cannot be made.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from swapmeet.cli.client import ApiClient
from swapmeet.node.home import Home

from tests.netlab import LabNode, lab_unavailable
from tests.wanlink import InNs, WanLab, offer_and_accept, outcome, trade_row, wait

pytestmark = pytest.mark.slow

MAKER, TAKER, SLOW_TAKER = 0, 1, 2
OFFLINE_S = 20.0
WAIT_S = 30.0  # a listing's gossip, an offer's way, over the WAN on a busy 2-core machine
SETTLE_S = 60.0  # after the network returns: liveness redial, resume (at once, then every 15 s), repair
DEADLINE_S = 600  # the signing deadline: long, so the outcome is decided by the network, not the clock
BAD_DELAY_MS = 300.0
BAD_LOSS = 0.05


class Nodes:
    """The three nodes of the module's lab, their API clients reached inside their namespaces."""

    def __init__(self, lab: WanLab, nodes: list[LabNode]) -> None:
        self.lab = lab
        self.nodes = nodes

    def api(self, i: int) -> ApiClient:
        client: Any = InNs(ApiClient.for_home(self.home(i), timeout=30.0), self.nodes[i].ns)
        return client  # type: ignore[no-any-return]

    def home(self, i: int) -> Home:
        return Home(self.nodes[i].home)

    def peer_id(self, i: int) -> str:
        return self.nodes[i].peer_id

    def cli_json(self, i: int, *args: str) -> Any:
        return json.loads(self.lab.cli(self.nodes[i], *args, "--json").stdout)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    reason = lab_unavailable()
    if reason is not None:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("wanfaults")
    net = f"wanfaults-{secrets.token_hex(3)}"
    with WanLab(net=net, sites=3, base_dir=base, delay_ms=(20, 80), seed=3) as lab:
        first = lab.node("n0", lab.sites[0], args=["--no-dht"])
        with ThreadPoolExecutor(2) as pool:
            rest = list(
                pool.map(
                    lambda i: lab.node(f"n{i}", lab.sites[i], bootstrap=[first.addr or ""], args=["--no-dht"]),
                    (1, 2),
                )
            )
        ns = Nodes(lab, [first, *rest])
        wait(lambda: all(ns.api(i).status()["peers"] >= 1 for i in range(3)), 60, "every node connected")
        yield ns


def ended_alike(nodes: Nodes, parties: list[int], exchange_id: str) -> str:
    """Wait until every party's trade is final and the same; its state ("complete" or "lapsed")."""

    def final() -> str | None:
        return outcome([trade_row(nodes.api(i), exchange_id) for i in parties])

    return wait(final, SETTLE_S, f"exchange {exchange_id[:12]} final and alike at {parties}")


def check_chains_and_audits(nodes: Nodes, parties: list[int], exchange_id: str, ended: str) -> None:
    for i in parties:
        own = [e["payload_id"] for e in nodes.cli_json(i, "ledger", "show", nodes.peer_id(i))["entries"]]
        assert own.count(exchange_id) == (1 if ended == "complete" else 0), (i, ended)
        done = nodes.lab.cli(nodes.nodes[i], "audit", "--json", "--workers", "1", check=False)
        report = json.loads(done.stdout)
        assert done.returncode == 0 and report["findings"] == [], (i, report["findings"])


@pytest.mark.parametrize("in_flight", ["proposal", "signature"])
def test_a_taker_offline_mid_settlement_ends_alike_on_both_sides(nodes: Nodes, in_flight: str) -> None:
    """``proposal``: the taker goes off right after the maker accepted, the maker's proposal on its way.
    ``signature``: right after the taker signed, which completes the exchange on its side (a 300 ms link for
    this one, so the completed exchange is surely still on its way to the maker): the taker holds it
    complete and on its chain, the maker pending, and neither hears of the other for the whole cut."""
    wan = nodes.lab.wan
    assert wan is not None
    was = wan.delays_ms()[MAKER][TAKER]
    if in_flight == "signature":
        wan.set_link(MAKER, TAKER, delay_ms=BAD_DELAY_MS)
    try:
        _, trade = offer_and_accept(nodes.api(MAKER), nodes.api(TAKER), timeout=WAIT_S, deadline_s=DEADLINE_S)
        xid = trade["id"]
        if in_flight == "signature":
            wait(lambda: (row := trade_row(nodes.api(TAKER), xid)) and row["detail"] != "awaiting", WAIT_S, "signed")
        wan.isolate(TAKER)  # what is on its way is lost with the rest
        cut_at = time.monotonic()
        assert trade["state"] == "pending", trade  # it cannot complete without the taker's signature
        time.sleep(OFFLINE_S / 2)
        row = trade_row(nodes.api(MAKER), xid)
        assert row is not None and row["state"] == "pending", row
        seen = trade_row(nodes.api(TAKER), xid)  # its local API still answers: only its WAN is gone
        at_taker = "nothing" if seen is None else seen["detail"]
        time.sleep(max(0.0, OFFLINE_S - (time.monotonic() - cut_at)))
    finally:
        wan.isolate(TAKER, off=False)
        wan.set_link(MAKER, TAKER, delay_ms=was)
    back = time.monotonic()
    ended = ended_alike(nodes, [MAKER, TAKER], xid)
    took = time.monotonic() - back
    print(
        f"\n{OFFLINE_S:g} s offline, the {in_flight} on its way (the taker held {at_taker}):"
        f" {ended} on both {took:.1f} s after"
    )
    check_chains_and_audits(nodes, [MAKER, TAKER], xid, ended)


def test_a_trade_over_a_slow_lossy_link_ends_alike_on_both_sides(nodes: Nodes) -> None:
    wan = nodes.lab.wan
    assert wan is not None
    was = wan.delays_ms()[MAKER][SLOW_TAKER]
    wan.set_link(MAKER, SLOW_TAKER, delay_ms=BAD_DELAY_MS, loss=BAD_LOSS)
    try:
        t0 = time.monotonic()
        _, trade = offer_and_accept(nodes.api(MAKER), nodes.api(SLOW_TAKER), timeout=WAIT_S, deadline_s=DEADLINE_S)
        ended = ended_alike(nodes, [MAKER, SLOW_TAKER], trade["id"])
        print(
            f"\n{BAD_DELAY_MS:g} ms one way, {BAD_LOSS:.0%} loss: {ended}, {time.monotonic() - t0:.1f} s from listing"
        )
        lost = wan.stats()[MAKER]["lost"] + wan.stats()[SLOW_TAKER]["lost"]
        assert lost > 0  # the link did lose packets
        check_chains_and_audits(nodes, [MAKER, SLOW_TAKER], trade["id"], ended)
    finally:
        wan.set_link(MAKER, SLOW_TAKER, delay_ms=was, loss=0.0)

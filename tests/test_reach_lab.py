"""Trading across home NATs, in the namespace lab of :mod:`tests.netlab` (real node processes).

- Two homes behind separate masquerading routers and one public node whose address is all they
  are given: A publishes, B finds the listing and offers, A accepts; the exchange is complete on
  both chains and ``swapmeet audit`` is clean at both.
- Two markets (``--net``) in one lab: a node of the other network is dropped and never listed.

Every test builds its own lab (unique namespace names) and tears it down, on failure too; the
module skips with one reason where namespaces cannot be made (not root, no nftables).
"""

from __future__ import annotations

import json
import secrets
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
def lab() -> Iterator[Lab]:
    with Lab(net=f"lab-{secrets.token_hex(3)}") as made:
        yield made


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


def test_homes_behind_nat_trade_through_one_public_node(lab: Lab) -> None:
    pub = lab.node("pub")
    a = lab.node("a", lab.add_home(), bootstrap=[pub.addr], wait=False)  # type: ignore[list-item]
    b = lab.node("b", lab.add_home(), bootstrap=[pub.addr], wait=False)  # type: ignore[list-item]
    lab.wait_up(a)
    lab.wait_up(b)
    xid = barter(lab, a, b)
    on_both_chains(lab, xid, a, b)
    for node in (a, b):
        report = audit_clean(lab, node)
        assert report["exchanges"] >= 1
    # Today: the homes never hold a connection to each other, so the direct settle stream fails
    # and settlement goes by gossip through the public node.
    assert b.peer_id not in lab.peer_ids(a) and a.peer_id not in lab.peer_ids(b)
    assert f"could not send exchange {xid[:12]}" in lab.log_text(a)

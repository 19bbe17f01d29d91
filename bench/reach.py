"""Benchmark of reach: two homes behind NATs with WAN delay, against the same trade between two public nodes.

Builds the namespace lab of ``tests/netlab.py`` (needs root and nftables, like the lab tests):
one public node ``pub`` (relay service on), and two homes, each behind its own masquerading
router. The homes are given only ``pub``'s address. ``pub`` publishes ``--book`` listings before
the homes start.

WAN delay (``--wan-delay-ms D``, default 40; this kernel has no tc netem): the lab's internet is
the userspace WAN of ``tests/wanlink.py`` (:class:`~tests.wanlink.NatWanLab`): the public
namespace and every router are sites of its forwarder, so each packet between ``pub`` and a
router, or between two routers (a hole-punched connection), waits D ms one way (an RTT of 2 D).
``wan_rtt_ms`` checks it: TCP connect times (one round trip) from home B's namespace to ``pub``,
median of 5. ``--wan-delay-ms 0`` builds the bridge lab instead (routers on the public bridge, no
forwarder, no delay).

Measured, from the moment both home processes are spawned (a cold start):

- ``first_peer_s``: until home B lists its first market peer;
- ``whole_book_s``: until B holds every listing ``pub`` published;
- ``relay_ready_s``: until both homes hold a reservation on ``pub``'s relay.

Then trades between the homes (A publishes, B offers, A accepts), one after another:
``trade_s`` (ms) from the accept command until both homes' chains hold the exchange (read
straight from each home's ledger.sqlite, read-only, polled every 20 ms), p50 over
``--trades``; ``first_trade_s`` is the first one, which also opens the relayed connection.
``relay_bytes_per_trade``: bytes ``pub``'s relay carried over the trades, divided by their
number (about zero once the homes' connection is direct).

Hole punching: the two trading homes sit behind NATs that keep a socket's port (nftables
masquerade: an endpoint-independent mapping); ``--symmetric`` more homes (default 1) sit behind
NATs that give each destination a new port (``masquerade random,fully-random``), which no hole
punch crosses. All homes find each other (the DHT under the market's name) and connect through
``pub``'s relay; once every home pair's hole punching is settled (``direct`` or ``failed``,
bounded), ``direct_share`` is the share of connected home pairs whose connection is direct,
with ``home_pairs``, ``direct_pairs`` and ``punch_failed_pairs``. ``homes_met_s``: from both
trading homes holding a reservation until they are connected at all (they meet through the DHT
lookup of the market's name); ``punch_s``: from then until their connection is direct (polled
through ``peers --json``, whose own run takes a few tenths of a second; 0 if the first look
already found it direct). ``relay_bytes_per_trade`` includes what the symmetric homes' relayed
connections carried meanwhile (gossip to them); ``--symmetric 0`` measures the trades alone.

Baseline in the same run: two nodes with public addresses and no NAT, one dialling the other
directly, the same trades: with a WAN, on two open hosts one WAN link apart (the path two homes
have once hole-punched; before this the pair sat in the public namespace with no WAN between
them, which made the ratio about 2.1-2.4 at 40 ms); without one, in the public namespace:
``direct_trade_s`` p50. ``ratio`` = ``trade_s`` p50 /
``direct_trade_s`` p50 (the goal: at most 2 once the relay is known).

Run: ``python bench/reach.py --quick [--wan-delay-ms D] [--trades N] [--book N] [--keep]``.
``--quick`` (2 trades each, a book of 5) is required and takes under 120 s on a 2-core
machine. The last line printed is a JSON object of all figures. Every address is in
198.18.0.0/15; every wait is bounded; the lab (processes and namespaces) is torn down on
exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.netlab

from support.benchkit import loadavg, run_bench, summary
from swapmeet.ledger.store import LedgerStore
from swapmeet.node.home import Home
from swapmeet.protocol.identity import public_key_from_peer_id

from tests.netlab import Lab, LabNode, lab_unavailable
from tests.wanlink import NatWanLab, netns

T0 = time.monotonic()
WAIT_S = 60.0


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {text}", flush=True)


def holds(node: LabNode, author: LabNode, payload: bytes) -> bool:
    """Whether ``node``'s ledger holds ``payload`` on ``author``'s chain (read-only SQLite)."""
    db = Home(node.home).ledger_db
    if not db.exists():
        return False
    with contextlib.closing(LedgerStore.open(db, readonly=True)) as store:
        rows = store._rows(
            "SELECT 1 FROM entries WHERE author = ? AND payload_id = ?",
            (public_key_from_peer_id(author.peer_id), payload),
        )
        return bool(rows)


def poll(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} did not happen within {timeout:g} s")


def trade(lab: Lab, maker: LabNode, taker: LabNode, n: int) -> float:
    """One barter; seconds from the accept command until both chains hold the exchange."""
    title = f"Lamp {n} {os.urandom(3).hex()}"
    listing = lab.cli_json(maker, "publish", "--title", title, "--have", "1 x lamp", "--want", "1 x jam")
    lab.wait_until(
        lambda: any(x["id"] == listing["id"] for x in lab.cli_json(taker, "listings", title)), WAIT_S, what="listing"
    )
    offer = lab.cli_json(taker, "offer", listing["id"], "--give", "1 x jam", "--take", "1 x lamp")
    lab.wait_until(
        lambda: any(o["id"] == offer["id"] for o in lab.cli_json(maker, "offers", "--incoming")), WAIT_S, what="offer"
    )
    start = time.monotonic()
    xid = bytes.fromhex(lab.cli_json(maker, "accept", offer["id"], "--deadline", "10m")["id"])
    poll(lambda: holds(maker, maker, xid) and holds(taker, taker, xid), WAIT_S, "the exchange on both chains")
    return time.monotonic() - start


def pair_state(lab: Lab, x: LabNode, y: LabNode) -> str | None:
    """``direct``, ``failed`` (relayed, hole punching gave up), ``relayed`` (still trying), None (not connected)."""
    for peer in lab.peers(x):
        if peer["peer_id"] == y.peer_id and peer["connections"]:
            if any(not c["relayed"] for c in peer["connections"]):
                return "direct"
            return "failed" if str(peer.get("hole_punch")).startswith("failed") else "relayed"
    return None


def connect_rtt_ms(node: LabNode, target: LabNode, tries: int = 5) -> float:
    """Median TCP connect time (one round trip) from ``node``'s namespace to ``target``'s listening port."""
    assert target.addr is not None
    port = int(target.addr.split("/tcp/", 1)[1].split("/", 1)[0])
    times = []
    with netns(node.ns):
        for _ in range(tries):
            start = time.monotonic()
            with socket.create_connection((target.ip, port), timeout=10.0):
                times.append((time.monotonic() - start) * 1000)
    return round(statistics.median(times), 1)


def run(args: argparse.Namespace, tmp: Path, cleanup: list[Callable[[], Any]]) -> dict[str, Any]:
    reason = lab_unavailable()
    if reason is not None:
        raise SystemExit(f"bench/reach.py: {reason}")
    wan = "userspace (tests/wanlink.py)" if args.delay else "none (bridge)"
    figures: dict[str, Any] = {"delay_ms": args.delay, "wan": wan, "book": args.book, "trades": args.trades}
    figures["loadavg_start"] = loadavg()
    net, lab_dir = f"reach-{os.urandom(3).hex()}", tmp / "lab"
    lab: Lab
    if args.delay:
        lab = NatWanLab(
            net=net, homes=2 + args.symmetric, open_hosts=2, base_dir=lab_dir, delay_ms=(args.delay, args.delay)
        )
    else:
        lab = Lab(net=net, base_dir=lab_dir)
    cleanup.append(lab.close)
    lab.__enter__()

    # With a WAN, the direct pair sits on two open hosts one WAN link apart, as two homes are once
    # punched through; without one, on the public namespace.
    spots = [lab.open_site(0), lab.open_site(1)] if isinstance(lab, NatWanLab) else [None, None]
    say("baseline: two nodes with public addresses, direct dials (pub starts meanwhile)")
    c = lab.node("direct-c", spots[0])
    d = lab.node("direct-d", spots[1], bootstrap=[c.addr], wait=False)  # type: ignore[list-item]
    pub = lab.node("pub", wait=False)
    lab.wait_up(d)
    lab.wait_until(lambda: c.peer_id in lab.peer_ids(d), WAIT_S, what="the direct pair to connect")
    direct = [trade(lab, c, d, i) for i in range(args.trades)]
    figures["direct_trade_s"] = summary(direct, 3)
    lab.stop(c)
    lab.stop(d)

    say(f"NAT: pub with {args.book} listings, two homes behind NATs with {args.delay} ms each way")
    lab.wait_up(pub)
    for i in range(args.book):
        lab.cli_json(pub, "publish", "--title", f"Book item {i}", "--have", f"{i + 1} x thing")
    book = {x["id"] for x in lab.cli_json(pub, "listings")}
    home_a, home_b = lab.add_home(), lab.add_home()
    spawned = time.monotonic()
    a = lab.node("a", home_a, bootstrap=[pub.addr], wait=False)  # type: ignore[list-item]
    b = lab.node("b", home_b, bootstrap=[pub.addr], wait=False)  # type: ignore[list-item]
    others = [
        lab.node(f"sym-{i}", lab.add_home(nat="symmetric"), bootstrap=[pub.addr], wait=False)  # type: ignore[list-item]
        for i in range(args.symmetric)
    ]
    lab.wait_up(b)
    figures["wan_rtt_ms"] = connect_rtt_ms(b, pub)
    lab.wait_until(lambda: lab.peers(b), WAIT_S, what="B's first peer", interval=0.1)
    figures["first_peer_s"] = round(time.monotonic() - spawned, 2)
    lab.wait_until(
        lambda: book <= {x["id"] for x in lab.cli_json(b, "listings")}, WAIT_S, what="the whole book", interval=0.1
    )
    figures["whole_book_s"] = round(time.monotonic() - spawned, 2)
    lab.wait_up(a)
    lab.wait_until(
        lambda: all(lab.cli_json(n, "node", "status")["relay"]["reservations"] for n in (a, b)),
        WAIT_S,
        what="both reservations",
        interval=0.1,
    )
    figures["relay_ready_s"] = round(time.monotonic() - spawned, 2)
    ready = time.monotonic()
    # The homes meet through the DHT lookup of the market's name, which dials the providers it
    # finds one after another (each bounded, a symmetric-NAT home's dial can take its whole bound)
    # and looks again every 10 s: measured 23 to 60+ s here with or without the WAN delay.
    met_s = 2 * WAIT_S
    first = lab.wait_until(lambda: pair_state(lab, a, b), met_s, what="A and B connected", interval=0.05)
    met = time.monotonic()
    figures["homes_met_s"] = round(met - ready, 2)
    lab.wait_until(lambda: pair_state(lab, a, b) == "direct", WAIT_S, what="A and B directly connected", interval=0.05)
    figures["punch_s"] = round(time.monotonic() - met, 2) if first != "direct" else 0.0
    before = lab.cli_json(pub, "node", "status")["relay"]["bytes_relayed"]
    nat = [trade(lab, a, b, i) for i in range(args.trades)]
    after = lab.cli_json(pub, "node", "status")["relay"]["bytes_relayed"]
    figures["first_trade_s"] = round(nat[0], 3)
    figures["trade_s"] = summary(nat[1:] or nat, 3)
    figures["relay_bytes_per_trade"] = round((after - before) / len(nat))
    homes = [a, b, *others]
    for node in others:
        lab.wait_up(node)
    pairs = [(x, y) for i, x in enumerate(homes) for y in homes[i + 1 :]]
    with contextlib.suppress(Exception):  # bounded: pairs still unsettled then are counted as they are
        lab.wait_until(
            lambda: all(pair_state(lab, x, y) in ("direct", "failed") for x, y in pairs), WAIT_S, what="punches settled"
        )
    states = [pair_state(lab, x, y) for x, y in pairs]
    connected = [s for s in states if s is not None]
    figures["home_pairs"] = len(connected)
    figures["direct_pairs"] = states.count("direct")
    figures["punch_failed_pairs"] = states.count("failed")
    figures["direct_share"] = round(states.count("direct") / len(connected), 2) if connected else 0.0
    figures["ratio"] = round(figures["trade_s"]["p50_ms"] / max(figures["direct_trade_s"]["p50_ms"], 1e-6), 2)
    figures["loadavg_end"] = loadavg()
    figures["cores"] = os.cpu_count()
    return figures


def report(f: dict[str, Any]) -> None:
    say(
        f"cold start of two homes behind NATs ({f['delay_ms']} ms each way, connect RTT to pub"
        f" {f['wan_rtt_ms']} ms): first peer {f['first_peer_s']} s,"
        f" whole book ({f['book']} listings) {f['whole_book_s']} s, relay ready {f['relay_ready_s']} s"
    )
    say(
        f"trade across two NATs: first {f['first_trade_s']} s, then p50 {f['trade_s']['p50_ms']} ms;"
        f" direct between public hosts p50 {f['direct_trade_s']['p50_ms']} ms; ratio {f['ratio']}"
    )
    say(
        f"home pairs connected: {f['home_pairs']}, direct {f['direct_pairs']}, hole punch failed"
        f" {f['punch_failed_pairs']} (symmetric NATs): direct share {f['direct_share']}; A and B met"
        f" {f['homes_met_s']} s after both were up, direct {f['punch_s']} s later;"
        f" relay bytes per trade {f['relay_bytes_per_trade']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", required=True, help="2 trades each, a book of 5: under 120 s")
    parser.add_argument(
        "--wan-delay-ms",
        "--delay",
        dest="delay",
        type=int,
        default=40,
        help="one-way delay of each WAN link, through tests/wanlink.py (0: the bridge lab, no delay)",
    )
    parser.add_argument("--trades", type=int, default=0, help="trades per setting (default 2)")
    parser.add_argument("--book", type=int, default=0, help="listings pub publishes first (default 5)")
    parser.add_argument("--symmetric", type=int, default=1, help="extra homes behind symmetric NATs (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the homes and logs (their path is printed)")
    args = parser.parse_args()
    args.trades = args.trades or 2
    args.book = args.book or 5
    return run_bench(args, run, report, prefix="swapmeet-reach-bench-", started=T0, say=say)


if __name__ == "__main__":
    sys.exit(main())

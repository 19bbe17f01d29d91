"""Benchmark of a node under attack: what one hostile peer costs the honest ones.

A swarm of three real nodes on 127.0.0.1 (LocalSwarm): node 0 is the target, node 1
an honest trader that publishes and trades, node 2 an honest bystander. Phase one
measures the honest work with nobody attacking; phase two repeats it while one
raw attacker (``bench/support/attacks.py``) does its worst to node 0 at the same
time: a gossip flood of valid listings by throwaway keys and of garbage, book-sync
pushes of fresh listings, settle-stream requests, stalled streams, bytes past the
Yamux window, and fork alerts about strangers.

Figures (both phases, same swarm, same run):

- honest time-to-all: from node 1's publish call returning to every node holding
  the listing (polled through the API), p50/p95; and the ratio under attack;
- the honest trade (node 2 offers on node 1's listing, node 1 accepts): completes
  on both chains, and how long it took;
- the target's RSS growth and log growth over the attack; honest listings lost;
- what the attacker managed to send (its own rates), and what node 0 refused.

Goals: time-to-all p95 under attack within 2x of the quiet one, the trade
completes, the target's RSS grows by under 50 MB and its log by under 100 KB,
nothing honest is lost.

Run: ``python bench/hostile.py [--quick] [--listings N] [--keep]``; ``--quick``
(8 honest listings per phase, a smaller attack) takes under 90 s. The last line is
a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from support import attacks
from support.benchkit import loadavg, run_bench, summary
from swapmeet.cli.localswarm import LocalSwarm
from swapmeet.protocol import batch
from swapmeet.protocol.identity import Identity

WAIT_S = 30.0
PUBLISH_GAP_S = 0.5  # between honest publications: well within one author's budget


def say(text: str) -> None:
    print(text, flush=True)


def honest_round(swarm: LocalSwarm, n: int, label: str) -> dict[str, Any]:
    """Node 1 publishes ``n`` listings; time to reach every node, and one trade node 2 -> node 1."""
    times, lost = [], 0
    for k in range(n):
        listing = swarm.client(1).publish({"title": f"{label} {k}", "have": ["1 x ladder"], "want": ["1 x tent"]})
        t = time.monotonic()
        try:
            swarm.wait_until(lambda lid=listing["id"]: all(swarm.holds(i, lid) for i in (0, 1, 2)), WAIT_S)
            times.append(time.monotonic() - t)
        except Exception:
            lost += 1
        time.sleep(PUBLISH_GAP_S)
    traded, trade_s = trade(swarm, label)
    return {"time_to_all": summary(times), "lost": lost, "trade_complete": traded, "trade_s": trade_s}


def trade(swarm: LocalSwarm, label: str) -> tuple[bool, float]:
    listing = swarm.client(1).publish({"title": f"{label} trade", "have": ["1 x drill"]})
    swarm.wait_until(lambda: swarm.holds(2, listing["id"]), WAIT_S)
    t = time.monotonic()
    offer = swarm.client(2).make_offer({"listing": listing["id"], "give": ["1 x cake"]})
    swarm.wait_until(lambda: any(o["id"] == offer["id"] for o in swarm.client(1).offers("incoming")), WAIT_S)
    xid = swarm.client(1).accept(offer["id"])["id"]

    def complete() -> bool:
        return all(
            any(x["id"] == xid and x["state"] == "complete" and x["appended"] for x in swarm.client(i).trades())
            for i in (1, 2)
        )

    try:
        swarm.wait_until(complete, WAIT_S)
    except Exception:
        return False, time.monotonic() - t
    return True, round(time.monotonic() - t, 2)


async def attack(swarm: LocalSwarm, quick: bool, stop: trio.Event) -> dict[str, Any]:
    """One attacker against node 0, every path at once, until ``stop``; what it managed."""
    scale = 1 if quick else 4
    victim = swarm.peer_id(0)
    sent: dict[str, Any] = {}
    junk = [batch.encode_batch(attacks.fresh_listings(Identity.generate(), 1)) for _ in range(200 * scale)]
    garbage = [b"GARBAGE" + secrets.token_bytes(64) for _ in range(200 * scale)]
    pushes = attacks.fresh_listings(Identity.generate(), 500 * scale)
    alerts = [attacks.fork_alert_about_a_stranger() for _ in range(50 * scale)]

    async def run(name: str, job: Callable[[], Any]) -> None:
        t = time.monotonic()
        try:
            sent[name] = await job()
        except Exception as exc:  # the victim cut this one off: that is the defence working
            sent[name] = f"cut off: {type(exc).__name__}"
        sent[f"{name}_s"] = round(time.monotonic() - t, 2)

    async with attacks.attacker(swarm.net, swarm.addr(0)) as host:
        for name in ("listings", "ledger"):
            await host.subscribe(f"/swapmeet/{swarm.net}/{name}/1", lambda peer, data: True)
        with trio.move_on_after(5):
            await host.wait_for_mesh(f"/swapmeet/{swarm.net}/listings/1", [victim])
        async with trio.open_nursery() as nursery:
            jobs: dict[str, Callable[[], Any]] = {
                "gossip_valid": lambda: attacks.flood_gossip(host, "listings", junk),
                "gossip_garbage": lambda: attacks.flood_gossip(host, "listings", garbage),
                "fork_alerts": lambda: attacks.flood_gossip(host, "ledger", alerts),
                "sync_put": lambda: attacks.push_by_book_sync(host, victim, pushes),
                "settle_requests": lambda: attacks.flood_settle_requests(host, victim, 100 * scale),
                "stalled_streams": lambda: attacks.hold_stalled_streams(host, victim, "book-sync", 64),
                "past_window_mib": lambda: attacks.push_past_the_window(host, victim, 64 * scale),
            }
            for name, job in jobs.items():
                nursery.start_soon(run, name, job)
            await stop.wait()
            nursery.cancel_scope.cancel()
    return sent


def measure(args: argparse.Namespace, tmp: Path, cleanup: list[Callable[[], Any]]) -> dict[str, Any]:
    n = 8 if args.quick else args.listings
    swarm = LocalSwarm(3, net=f"hostile-bench-{secrets.token_hex(3)}", base_dir=tmp / "swarm")
    cleanup.append(swarm.close)
    swarm.start()
    say(f"swarm of 3 up; quiet round: {n} honest listings and a trade")
    quiet = honest_round(swarm, n, "quiet")
    pid = swarm.pid(0)
    assert pid is not None
    rss_before, log_before = attacks.rss_mb(pid), len(swarm.log_text(0))
    refused_before = swarm.client(0).status()["activity"]["refused"]
    say("attack round: the same, while one peer attacks node 0 on every path")

    async def attacked() -> tuple[dict[str, Any], dict[str, Any]]:
        stop = trio.Event()
        result: dict[str, Any] = {}
        async with trio.open_nursery() as nursery:

            async def attacker_task() -> None:
                result["attack"] = await attack(swarm, args.quick, stop)

            nursery.start_soon(attacker_task)
            await trio.sleep(1.0)  # the attack is under way
            honest = await trio.to_thread.run_sync(lambda: honest_round(swarm, n, "attacked"))
            stop.set()
        return honest, result["attack"]

    under_attack, sent = trio.run(attacked)
    rss_growth = attacks.rss_mb(pid) - rss_before
    log_growth = len(swarm.log_text(0)) - log_before
    refused = swarm.client(0).status()["activity"]["refused"] - refused_before
    p95_quiet = quiet["time_to_all"]["p95_ms"]
    p95_attacked = under_attack["time_to_all"]["p95_ms"]
    figures = {
        "quick": args.quick,
        "listings_per_round": n,
        "quiet": quiet,
        "attacked": under_attack,
        "attack_sent": sent,
        "target": {"rss_growth_mb": round(rss_growth, 1), "log_growth_bytes": log_growth, "refused": refused},
        "ratios": {"time_to_all_p95_attacked_vs_quiet": round(p95_attacked / p95_quiet, 2) if p95_quiet else None},
        "goals": {"time_to_all_p95_ratio": 2.0, "rss_growth_mb": 50, "log_growth_bytes": 100_000},
        "loadavg_end": loadavg(),
    }
    figures["ok"] = bool(
        under_attack["trade_complete"]
        and under_attack["lost"] == 0
        and rss_growth < 50
        and log_growth < 100_000
        and (figures["ratios"]["time_to_all_p95_attacked_vs_quiet"] or 0) <= 2.0
    )
    return figures


def report(f: dict[str, Any]) -> None:
    q, a, t = f["quiet"], f["attacked"], f["target"]
    say(
        f"time-to-all p50/p95: quiet {q['time_to_all']['p50_ms']}/{q['time_to_all']['p95_ms']} ms, under attack"
        f" {a['time_to_all']['p50_ms']}/{a['time_to_all']['p95_ms']} ms"
        f" (x{f['ratios']['time_to_all_p95_attacked_vs_quiet']}, goal <= 2)"
    )
    say(
        f"trade: quiet {q['trade_complete']} in {q['trade_s']} s,"
        f" under attack {a['trade_complete']} in {a['trade_s']} s"
    )
    say(
        f"target: RSS +{t['rss_growth_mb']} MB (goal < 50), log +{t['log_growth_bytes']} B (goal < 100000),"
        f" refused {t['refused']}; honest lost: {q['lost']} / {a['lost']}"
    )
    say(f"attacker sent: {json.dumps(f['attack_sent'])}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (under 90 s)")
    parser.add_argument("--listings", type=int, default=30, help="honest listings per round")
    parser.add_argument("--keep", action="store_true", help="keep the homes and logs")
    args = parser.parse_args()
    return run_bench(args, measure, report, prefix="hostile-", started=time.monotonic(), say=say)


if __name__ == "__main__":
    sys.exit(main())

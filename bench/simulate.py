"""A model of what one personal node pays as the market grows from 1k to 1M traders, flat topics against shards.

The measured swarm is ten processes on one machine (``bench/swarm.py``); a
million traders cannot be run, so this script models them, fed with the
per-message costs measured on real nodes. Two parts:

1. **Dissemination** (a discrete-event simulation): one object published into a
   GossipSub mesh of M members. Each member keeps D = 6 mesh links (a random
   graph, as GossipSub's mesh is); each link has a one-way delay drawn from
   20-80 ms and loses a copy with probability 0.5 % (a lost copy is recovered
   through IHAVE/IWANT at the next heartbeat: up to 1 s plus a round trip).
   Each node handles its copies one at a time: every copy received costs the
   library's per-copy CPU (Noise, Yamux, protobuf, seen cache); the first also
   costs our own per-object CPU and is then forwarded to every mesh peer but
   the one it came from, each copy sent costing the per-copy CPU again and
   leaving a 10 Mbit/s uplink in turn. A node already busy with background
   traffic at utilization rho waits rho*c/(2(1-rho)) first (M/D/1). Out: time
   until every member holds it (p50 / p95 / max over members) and the copies
   each member receives.
2. **Load** (steady state): a synthetic population of N traders with the
   structure of a real market: people live in few dense regions and many
   sparse ones (geohash cells of 2 characters, about 1250 x 625 km, Zipf
   over the populated cells; 3 characters, about 156 x 156 km, Zipf within),
   interests fall into 12 categories of unequal popularity, and publishing
   rates have a long tail (a shop publishes far more than a person). For
   each topic design, every trader's node subscribes to what the design
   says and pays, per second, for every object published into its topics:
   CPU = rate x (our share + copies in and out x per-copy CPU), bytes =
   rate x (copies in + copies out) x wire size + IHAVE ids, memory = a base RSS + the live
   listings of its topics x the memory one held listing costs.

Designs: ``flat`` (today: one book topic per network, every node sees
every object), ``region2`` (one topic per 2-character geohash cell),
``region2_cat`` (per cell and category; a node joins its home cell for the
categories it follows), ``region3_cat`` (the same with 3-character cells).
A node's budget is 5 % of a core, 50 kB/s and 200 MB (docs/SCALING.md).

Inputs, measured: the CPU figures of ``bench/swarm.py`` (CPU per object over
ten bare gossipsub processes and over ten nodes, in one run), split into the
library's CPU per copy and our own per object (:func:`costs_from_swarm`); a
node's base RSS, RSS and disk per held listing, and a listing's wire size
(docs/SCALING.md says how each was measured). ``--from-swarm FILE`` takes the
CPU figures from a saved ``bench/swarm.py`` output; ``--copy-ms``, ``--app-ms``,
``--base-rss-mb``, ``--rss-kb-per-listing``, ``--disk-kb-per-listing`` and
``--wire-bytes`` replace single inputs.

Run: ``python bench/simulate.py [--quick]``; the last line printed is a JSON
object of every figure. No network, no processes: it runs anywhere.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import heapq
import itertools
import json
import math
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.benchkit import finite, pct

MESH_DEGREE = 6  # GossipSub's D
LAZY_DEGREE = 6  # GossipSub's D_lazy: peers told of each message id by IHAVE at a heartbeat
HEARTBEAT_S = 1.0
LINK_DELAY_S = (0.020, 0.080)  # one way, drawn per link
LOSS = 0.005
UPLINK_BYTES_S = 10e6 / 8  # a 10 Mbit/s home uplink
IHAVE_ID_BYTES = 46  # from || seqno message ids (PROTOCOL.md section 13)

BUDGET_CPU = 0.05  # share of one core
BUDGET_BYTES_S = 50_000
BUDGET_MB = 200.0

CATEGORIES = 12
POPULATED_CELLS = 400  # of the 1024 two-character geohash cells, those where people live
SUBCELLS = 32  # three-character cells in a two-character one
FOLLOWED_CATEGORIES = 3
OBJECTS_PER_TRADER_DAY = 5.0  # book objects: listings, replacements, withdrawals, offers (mean; long-tailed)
LIVE_LISTINGS_PER_TRADER = 3.0
DAY_S = 86_400.0

DESIGNS = ("flat", "region2", "region2_cat", "region3_cat")


@dataclass(frozen=True)
class Costs:
    """What one node pays per message and per held listing, as measured on real nodes."""

    copy_ms: float  # the library's CPU per copy received or sent: Noise, Yamux, protobuf, seen cache
    app_ms: float  # our own CPU per object on its first copy: boundary, validator, book, batching
    base_rss_mb: float
    rss_kb_per_listing: float
    disk_kb_per_listing: float  # the offer book's SQLite file (with its indexes) per held listing
    wire_bytes: int  # one listing in one gossip message, with protobuf, Yamux and Noise framing


# Measured on this code (docs/SCALING.md, "Inputs", says how each was measured).
# CPU: bench/swarm.py --quick on a quiet machine gave 47 ms per object over ten bare gossipsub
# processes and 64 ms over ten nodes (issue 16); see costs_from_swarm().
BARE_SWARM_CPU_MS = 47.0
NODE_SWARM_CPU_MS = 64.0
SWARM_NODES = 10
MEASURED_RSS = {"base_rss_mb": 118.0, "rss_kb_per_listing": 0.1, "disk_kb_per_listing": 1.42, "wire_bytes": 600}


# --------------------------------------------------------------------------- dissemination


def swarm_bench_copies(rng: random.Random, rounds: int = 50) -> float:
    """Copies of each object a node receives in bench/swarm.py's dial graph (the CPU figure includes them).

    Ten nodes; node i dials node 0 and up to two random earlier nodes (bench/swarm.py).
    """
    nodes = 10
    links: list[dict[int, float]] = [{} for _ in range(nodes)]
    for i in range(1, nodes):
        for j in {0, *rng.sample(range(i), min(i, 2))}:
            links[i][j] = links[j][i] = 0.0002
    total = 0.0
    for _ in range(rounds):
        origin = rng.randrange(nodes)
        copies = [0] * nodes
        held = {origin}
        frontier = [(0.0, origin, -1)]
        while frontier:
            t, node, came = heapq.heappop(frontier)
            for peer, delay in links[node].items():
                if peer != came:
                    copies[peer] += 1
                    if peer not in held:
                        held.add(peer)
                        heapq.heappush(frontier, (t + delay * rng.uniform(0.5, 1.5), peer, node))
        total += sum(c for i, c in enumerate(copies) if i != origin) / (nodes - 1)
    return total / rounds


def costs_from_swarm(bare_ms: float, node_ms: float, swarm_copies: float, **rest: Any) -> Costs:
    """Per-copy and per-object CPU from bench/swarm.py's two figures (CPU per object over all processes).

    In the bare swarm a node's CPU per object is all copies: each node receives
    ``swarm_copies`` of them and, since every copy sent is a copy received, sends as many;
    so one copy costs bare / nodes / (2 x copies). The node's figure less the bare one is
    our own share per object.
    """
    bare_per_node = bare_ms / SWARM_NODES
    return Costs(
        copy_ms=bare_per_node / (2 * swarm_copies),
        app_ms=max(0.0, (node_ms - bare_ms) / SWARM_NODES),
        **rest,
    )


@dataclass
class Spread:
    members: int
    simulated: int  # members actually simulated (larger meshes are extrapolated by hops)
    p50_s: float
    p95_s: float
    max_s: float
    copies_per_member: float
    delivered: float


def mesh(members: int, rng: random.Random) -> list[list[tuple[int, float]]]:
    """A random graph where every member dials D/2 others: degree about D, like a GossipSub mesh."""
    links: list[dict[int, float]] = [{} for _ in range(members)]
    if members < 2:
        return [[] for _ in range(members)]
    for a in range(members):
        for _ in range(MESH_DEGREE // 2):
            b = rng.randrange(members - 1)
            b += b >= a
            delay = rng.uniform(*LINK_DELAY_S)
            links[a].setdefault(b, delay)
            links[b].setdefault(a, links[a][b])
    return [list(x.items()) for x in links]


def disseminate(members: int, costs: Costs, rho: float, rng: random.Random) -> tuple[list[float], float]:
    """First-arrival times of one object published at member 0, and the mean copies received."""
    graph = mesh(members, rng)
    first = (costs.copy_ms + costs.app_ms) / 1000
    dup = costs.copy_ms / 1000
    queue_wait = rho * first / (2 * (1 - rho)) if rho < 1 else math.inf
    send_s = costs.wire_bytes / UPLINK_BYTES_S
    held = [math.inf] * members
    busy_until = [0.0] * members
    copies = [0] * members
    held[0] = 0.0
    events: list[tuple[float, int, int]] = []

    def forward(node: int, ready: float, came_from: int) -> float:
        """Send to every mesh peer but the source; returns when the node's CPU is free again."""
        out = ready
        for peer, delay in graph[node]:
            if peer == came_from:
                continue
            out += max(send_s, dup)  # each copy is encoded and encrypted, then leaves the uplink in turn
            arrive = out + delay
            if rng.random() < LOSS:  # recovered by IHAVE/IWANT: next heartbeat, then a round trip
                arrive += rng.uniform(0, HEARTBEAT_S) + 2 * delay
            heapq.heappush(events, (arrive, peer, node))
        return out

    forward(0, first, -1)
    while events:
        t, node, came_from = heapq.heappop(events)
        copies[node] += 1
        start = max(t, busy_until[node]) + queue_wait
        if held[node] is math.inf:
            held[node] = start + first
            busy_until[node] = forward(node, held[node], came_from)
        else:
            busy_until[node] = start + dup
    return held[1:], statistics.fmean(copies[1:]) if members > 1 else 0.0


def spread(members: int, costs: Costs, rho: float, cap: int, rng: random.Random) -> Spread:
    """Dissemination over ``members``; above ``cap`` the mesh is simulated at ``cap`` and extrapolated.

    A random mesh of degree D reaches (D-1) times more members per hop, so a mesh k times
    larger needs log_{D-1}(k) more hops, each costing about a median link delay plus a
    node's processing and queueing.
    """
    simulated = max(2, min(members, cap))
    times, copies = disseminate(simulated, costs, rho, rng)
    reached = [t for t in times if t < math.inf]
    extra = 0.0
    if members > simulated:
        hop = statistics.fmean(LINK_DELAY_S) + (costs.copy_ms + costs.app_ms) / 1000 / max(1e-9, 1 - min(rho, 0.99))
        extra = math.log(members / simulated, MESH_DEGREE - 1) * hop
    return Spread(
        members=members,
        simulated=simulated,
        p50_s=pct(reached, 50) + extra,
        p95_s=pct(reached, 95) + extra,
        max_s=max(reached, default=math.nan) + extra,
        copies_per_member=copies,
        delivered=len(reached) / max(1, len(times)),
    )


# --------------------------------------------------------------------------- population and load


def zipf_weights(n: int, s: float) -> list[float]:
    w = [1 / (k**s) for k in range(1, n + 1)]
    total = sum(w)
    return [x / total for x in w]


@dataclass
class Market:
    """N traders: where they live, what they follow, how much they publish; and the rate into each topic."""

    traders: int
    cell: list[int]  # two-character geohash cell
    subcell: list[int]  # three-character cell: cell * SUBCELLS + index
    follows: list[tuple[int, ...]]
    rate: dict[str, Counter[Any]]  # design -> topic -> objects per second
    live: dict[str, Counter[Any]]  # design -> topic -> live listings


def make_market(traders: int, rng: random.Random) -> Market:
    cell_w = zipf_weights(POPULATED_CELLS, 0.8)
    sub_w = zipf_weights(SUBCELLS, 1.0)
    cat_w = zipf_weights(CATEGORIES, 1.0)
    cells = rng.choices(range(POPULATED_CELLS), cell_w, k=traders)
    subs = [c * SUBCELLS + s for c, s in zip(cells, rng.choices(range(SUBCELLS), sub_w, k=traders), strict=True)]
    cat_cum = list(itertools.accumulate(cat_w))

    def followed() -> tuple[int, ...]:
        chosen: set[int] = set()
        while len(chosen) < FOLLOWED_CATEGORIES:
            chosen.add(min(CATEGORIES - 1, bisect.bisect(cat_cum, rng.random())))
        return tuple(sorted(chosen))

    follows = [followed() for _ in range(traders)]
    # Publishing rates: lognormal with a long tail (sigma 1.2), scaled to the mean.
    sigma = 1.2
    per_day = [rng.lognormvariate(-sigma * sigma / 2, sigma) * OBJECTS_PER_TRADER_DAY for _ in range(traders)]
    rate: dict[str, Counter[Any]] = {d: Counter() for d in DESIGNS}
    live: dict[str, Counter[Any]] = {d: Counter() for d in DESIGNS}
    for i in range(traders):
        per_s = per_day[i] / DAY_S
        listings = LIVE_LISTINGS_PER_TRADER * per_day[i] / OBJECTS_PER_TRADER_DAY
        # A trader publishes in the categories it follows, evenly.
        for cat in follows[i]:
            share = 1 / len(follows[i])
            for design, topic in (
                ("flat", 0),
                ("region2", cells[i]),
                ("region2_cat", (cells[i], cat)),
                ("region3_cat", (subs[i], cat)),
            ):
                rate[design][topic] += per_s * share
                live[design][topic] += listings * share
    return Market(traders, cells, subs, follows, rate, live)


def topics_of(design: str, market: Market, i: int) -> list[Any]:
    """The book topics trader ``i``'s node joins under ``design``."""
    if design == "flat":
        return [0]
    if design == "region2":
        return [market.cell[i]]
    if design == "region2_cat":
        return [(market.cell[i], c) for c in market.follows[i]]
    return [(market.subcell[i], c) for c in market.follows[i]]


def members_of(design: str, market: Market) -> Counter[Any]:
    count: Counter[Any] = Counter()
    for i in range(market.traders):
        count.update(topics_of(design, market, i))
    return count


def node_load(design: str, market: Market, costs: Costs, copies: float, sample: Sequence[int]) -> dict[str, Any]:
    """CPU share, bytes per second and memory of the nodes in ``sample`` under ``design``."""
    cpu, net, mem, disk = [], [], [], []
    per_msg_cpu, per_msg_bytes = per_message(costs, copies)
    for i in sample:
        topics = topics_of(design, market, i)
        msgs = sum(market.rate[design][t] for t in topics)
        held = sum(market.live[design][t] for t in topics)
        cpu.append(msgs * per_msg_cpu)
        net.append(msgs * per_msg_bytes)
        mem.append(costs.base_rss_mb + held * costs.rss_kb_per_listing / 1024)
        disk.append(held * costs.disk_kb_per_listing / 1024)
    over = sum(
        1 for c, b, m in zip(cpu, net, mem, strict=True) if c > BUDGET_CPU or b > BUDGET_BYTES_S or m > BUDGET_MB
    )
    return {
        "cpu_share": {"p50": round(pct(cpu, 50), 4), "p99": round(pct(cpu, 99), 4), "max": round(max(cpu), 4)},
        "bytes_s": {"p50": round(pct(net, 50)), "p99": round(pct(net, 99)), "max": round(max(net))},
        "rss_mb": {"p50": round(pct(mem, 50), 1), "p99": round(pct(mem, 99), 1), "max": round(max(mem), 1)},
        "book_disk_mb": {"p50": round(pct(disk, 50), 1), "max": round(max(disk), 1)},
        "over_budget": round(over / len(sample), 4),
    }


def per_message(costs: Costs, copies: float) -> tuple[float, float]:
    """CPU seconds and bytes one node spends per object published into one of its topics.

    Every copy sent is a copy received, so on average a node sends as many copies as it
    receives: bytes = 2 x copies x wire size, plus the IHAVE ids of its heartbeats.
    """
    cpu = (costs.app_ms + 2 * copies * costs.copy_ms) / 1000
    return cpu, 2 * copies * costs.wire_bytes + LAZY_DEGREE * IHAVE_ID_BYTES


def flat_limit(costs: Costs, copies: float) -> dict[str, float]:
    """Traders at which a flat-topic node reaches each budget (the load grows linearly with N)."""
    per_trader_s = OBJECTS_PER_TRADER_DAY / DAY_S
    per_msg_cpu, per_msg_bytes = per_message(costs, copies)
    return {
        "cpu": round(BUDGET_CPU / (per_trader_s * per_msg_cpu)),
        "bytes": round(BUDGET_BYTES_S / (per_trader_s * per_msg_bytes)),
        "memory": round((BUDGET_MB - costs.base_rss_mb) * 1024 / costs.rss_kb_per_listing / LIVE_LISTINGS_PER_TRADER),
    }


# --------------------------------------------------------------------------- the run


def costs_from(args: argparse.Namespace) -> Costs:
    bare_ms, node_ms = BARE_SWARM_CPU_MS, NODE_SWARM_CPU_MS
    if args.from_swarm:
        figures = json.loads(Path(args.from_swarm).read_text().strip().splitlines()[-1])
        per_object = figures.get("cpu_ms_per_object") or {}
        bare_ms, node_ms = per_object.get("bare") or bare_ms, per_object.get("node") or node_ms
    rest = dict(MEASURED_RSS)
    for name in ("base_rss_mb", "rss_kb_per_listing", "disk_kb_per_listing", "wire_bytes"):
        if getattr(args, name) is not None:
            rest[name] = getattr(args, name)
    costs = costs_from_swarm(bare_ms, node_ms, swarm_bench_copies(random.Random(args.seed)), **rest)
    if args.copy_ms is not None or args.app_ms is not None:
        costs = dataclasses.replace(
            costs,
            copy_ms=args.copy_ms if args.copy_ms is not None else costs.copy_ms,
            app_ms=args.app_ms if args.app_ms is not None else costs.app_ms,
        )
    return costs


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    costs = costs_from(args)
    sizes = [1_000, 10_000, 100_000] if args.quick else [1_000, 10_000, 100_000, 1_000_000]
    cap = 5_000 if args.quick else 100_000
    sample_size = 2_000 if args.quick else 20_000
    out: dict[str, Any] = {
        "inputs": {k: round(v, 3) for k, v in costs.__dict__.items()},
        "budget": {"cpu": BUDGET_CPU, "bytes_s": BUDGET_BYTES_S, "mb": BUDGET_MB},
    }
    probe = spread(min(cap, 2_000), costs, 0.0, cap, rng)
    out["flat_limit_traders"] = flat_limit(costs, probe.copies_per_member)
    out["copies_per_member"] = round(probe.copies_per_member, 2)
    say(f"inputs: {costs}; copies of each object per member {probe.copies_per_member:.2f}")
    say(f"a flat topic reaches a node's budget at: {out['flat_limit_traders']} traders")
    results: dict[str, Any] = {}
    for n in sizes:
        t0 = time.perf_counter()
        market = make_market(n, rng)
        sample = rng.sample(range(n), min(n, sample_size))
        row: dict[str, Any] = {}
        for design in DESIGNS:
            members = members_of(design, market)
            typical = int(statistics.median(members[t] for i in sample[:200] for t in topics_of(design, market, i)))
            largest = max(members.values())
            load_probe = node_load(design, market, costs, probe.copies_per_member, sample)
            rho = min(0.95, load_probe["cpu_share"]["p50"])
            s_typ = spread(typical, costs, rho, cap, rng)
            s_big = spread(largest, costs, rho, cap, rng)
            row[design] = {
                "topics": len(members),
                "members_typical": typical,
                "members_largest": largest,
                **node_load(design, market, costs, s_typ.copies_per_member, sample),
                "time_to_all_typical": {
                    "p50_ms": round(s_typ.p50_s * 1000),
                    "p95_ms": round(s_typ.p95_s * 1000),
                    "simulated_members": s_typ.simulated,
                    "delivered": round(s_typ.delivered, 4),
                },
                "time_to_all_largest_p95_ms": round(s_big.p95_s * 1000),
                "copies_per_member": round(s_typ.copies_per_member, 2),
            }
            r = row[design]
            say(
                f"{n:>9,} traders  {design:<12} {len(members):>6} topics, typical {typical:>7,} members;"
                f" CPU p50 {r['cpu_share']['p50'] * 100:6.2f}% max {r['cpu_share']['max'] * 100:6.2f}%;"
                f" net p50 {r['bytes_s']['p50'] / 1000:7.1f} kB/s max {r['bytes_s']['max'] / 1000:7.1f};"
                f" RSS max {r['rss_mb']['max']:7.1f} MB; over budget {r['over_budget'] * 100:5.1f}%;"
                f" time-to-all p95 {r['time_to_all_typical']['p95_ms']} ms"
            )
        row["model_s"] = round(time.perf_counter() - t0, 1)
        results[str(n)] = row
    out["markets"] = results
    return out


def say(text: str) -> None:
    print(text, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="markets up to 100k, meshes simulated up to 5k")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--from-swarm", metavar="FILE", help="take the CPU figures from a bench/swarm.py output")
    parser.add_argument("--copy-ms", type=float, help="the library's CPU per copy received or sent (ms)")
    parser.add_argument("--app-ms", type=float, help="our own CPU per object, first copy (ms)")
    parser.add_argument("--base-rss-mb", type=float, help="a node's RSS with an empty book (MB)")
    parser.add_argument("--rss-kb-per-listing", type=float, help="RSS per held listing (kB)")
    parser.add_argument("--disk-kb-per-listing", type=float, help="offer-book disk per held listing (kB)")
    parser.add_argument("--wire-bytes", type=int, help="one listing's gossip message on the wire (bytes)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    figures = run(args)
    figures["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(finite(figures), separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

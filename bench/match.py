"""Benchmark of the ring solver (``swapmeet match``) on synthetic markets, with its baselines.

The market (:func:`market`): listings by users (three listings a user on average), users in
clusters of interest (a few hundred listings each); each listing accepts a few others
(geometric, mean ``--wants``, at most 64): mostly from its own cluster (``--home``), chosen
by a Zipf popularity within the cluster, so a few listings are wanted by many and a long
tail by few or nobody. No self-wants, no dummies.

Per size, in a child process of its own (so that peak memory is that size's): the graph's
build; the uncapped solve; the uncapped optimum by an independent method (scipy's
``min_weight_full_bipartite_matching``, LAPJVsp, on the same assignment costs) as the upper
bound of every capped result; the capped solves at K = 3, 5, 8 with their proven bound and
gap; the shortest-ring-first greedy packing (on the same rings of at most K) as the floor;
elapsed time and peak RSS. And once: a 2,000-item TradeMaximizer want list (written from a
market of that size) parsed and solved uncapped.

Goals, reported as ratios in the JSON: uncapped = optimum exactly; capped within 2% of its
proven bound; the 2,000-item want list under 1 s; a 100k-listing book under 60 s (uncapped)
and under 1 GB. Run: ``python bench/match.py [--quick]`` (quick: 1k and 10k listings, a 10 s
budget, under 60 s); the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from swapmeet.protocol.matching import graph as wg
from swapmeet.protocol.matching import wantlist
from swapmeet.protocol.matching.solve import MAX_CYCLES, enumerate_cycles, greedy_packing, solve

CAPS = (3, 5, 8)
CHILD_TIMEOUT_S = 900


def market(n: int, *, seed: int, wants: float, home: float, cluster: int = 400, zipf: float = 1.1) -> wg.WantGraph:
    """The want graph of a synthetic market of ``n`` listings (module docstring)."""
    rng = np.random.default_rng(seed)
    users = max(2, n // 3)
    clusters = max(1, n // cluster)
    owner = rng.integers(0, users, n)
    cl = rng.integers(0, clusters, users)[owner]
    order = np.argsort(cl, kind="stable")
    starts = np.searchsorted(cl[order], np.arange(clusters + 1))
    weight = np.empty(n)
    for c in range(clusters):
        members = order[starts[c] : starts[c + 1]]
        weight[members] = 1.0 / (rng.permutation(len(members)) + 1) ** zipf
    degree = np.minimum(rng.geometric(1.0 / wants, n), 64)
    src = np.repeat(np.arange(n), degree)
    target = np.where(rng.random(len(src)) < home, cl[src], rng.integers(0, clusters, len(src)))
    cum = np.concatenate([[0.0], np.cumsum(weight[order])])
    lo, hi = cum[starts[target]], cum[starts[target + 1]]
    pos = np.searchsorted(cum, lo + rng.random(len(src)) * (hi - lo), side="right") - 1
    pos = np.clip(pos, starts[target], np.maximum(starts[target], starts[target + 1] - 1))
    accepts: list[list[int]] = [[] for _ in range(n)]
    for s, t in zip(src.tolist(), order[pos].tolist(), strict=True):
        accepts[s].append(t)
    return wg.build(owner.tolist(), accepts)


def scipy_optimum(g: wg.WantGraph) -> int:
    """Real items traded by the uncapped optimum, by scipy's sparse min-weight full bipartite matching."""
    n = g.n
    rows = list(range(n)) + [a for a in range(n) for _ in g.accepts[a]]
    cols = list(range(n)) + [b for a in range(n) for b in g.accepts[a]]
    costs = [n + 1.0] * n + [1.0] * (len(rows) - n)
    matrix = csr_matrix((costs, (rows, cols)), shape=(n, n))
    _, mate = min_weight_full_bipartite_matching(matrix)
    return int(sum(1 for a in range(n) if mate[a] != a))


def peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def timed(f: Any, *args: Any, **kw: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    value = f(*args, **kw)
    return value, round(time.perf_counter() - started, 3)


def one_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    g, build_s = timed(market, n, seed=args.seed, wants=args.wants, home=args.home)
    out: dict[str, Any] = {"listings": n, "acceptances": g.edge_count, "build_s": build_s}
    uncapped, out["uncapped_s"] = timed(solve, g, 0, budget_s=args.budget)
    optimum, out["scipy_s"] = timed(scipy_optimum, g)
    lengths = sorted(len(r) for r in uncapped.rings)
    out.update(
        uncapped_items=uncapped.items_traded,
        uncapped_users=uncapped.users_trading,
        uncapped_rings=len(lengths),
        uncapped_longest_ring=lengths[-1] if lengths else 0,
        optimum_items=optimum,
        uncapped_equals_optimum=uncapped.items_traded == optimum,
        capped={},
    )
    comps = wg.strongly_connected(g)
    for k in CAPS:
        s, elapsed = timed(solve, g, k, budget_s=args.budget)
        cycles, complete = enumerate_cycles(g, comps, k, MAX_CYCLES)
        greedy = sum(len(cycles[i]) for i in greedy_packing(cycles, [len(c) for c in cycles]))
        out["capped"][str(k)] = {
            "items": s.items_traded,
            "users": s.users_trading,
            "bound": s.bound,
            "gap": round(s.gap, 4),
            "optimal": s.optimal,
            "within_2pct_of_bound": s.gap <= 0.02,
            "vs_uncapped_optimum": round(s.items_traded / optimum, 4) if optimum else 1.0,
            "greedy_items": greedy,
            "vs_greedy": round(s.items_traded / greedy, 4) if greedy else None,
            "rings_enumerated": len(cycles),
            "enumeration_complete": complete,
            "tiebreak": s.tiebreak,
            "elapsed_s": elapsed,
        }
    out["peak_rss_mb"] = peak_mb()
    return out


def want_list_text(g: wg.WantGraph) -> str:
    """The graph as a TradeMaximizer want list (items ``I<n>``, users ``U<n>``)."""
    lines = ["#! REQUIRE-COLONS REQUIRE-USERNAMES", "!BEGIN-OFFICIAL-NAMES"]
    lines += [f"I{a} item {a}" for a in range(g.n)]
    lines.append("!END-OFFICIAL-NAMES")
    lines += [f"(U{g.owner[a]}) I{a} : " + " ".join(f"I{b}" for b in g.accepts[a]) for a in range(g.n)]
    return "\n".join(lines) + "\n"


def want_list(args: argparse.Namespace) -> dict[str, Any]:
    text = want_list_text(market(2000, seed=args.seed, wants=args.wants, home=args.home))
    started = time.perf_counter()
    wl = wantlist.parse(text)
    s = solve(wl.graph(), 0, budget_s=args.budget)
    elapsed = time.perf_counter() - started
    return {"items": 2000, "items_traded": s.items_traded, "problems": len(wl.problems), "elapsed_s": round(elapsed, 3)}


def child(args: argparse.Namespace, *extra: str) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--budget", str(args.budget), "--seed", str(args.seed)]
    argv += ["--wants", str(args.wants), "--home", str(args.home), *extra]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"took more than {CHILD_TIMEOUT_S} s"}
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.splitlines()[-1])


def goals(sizes: list[dict[str, Any]], wl: dict[str, Any]) -> dict[str, Any]:
    ok = [s for s in sizes if "error" not in s]
    capped = [c for s in ok for c in s["capped"].values()]
    biggest = max(ok, key=lambda s: s["listings"], default=None)
    return {
        "uncapped_equals_optimum": all(s["uncapped_equals_optimum"] for s in ok),
        "capped_within_2pct_of_bound": sum(c["within_2pct_of_bound"] for c in capped),
        "capped_runs": len(capped),
        "worst_capped_gap": max((c["gap"] for c in capped), default=None),
        "want_list_2000_s": wl.get("elapsed_s"),
        "want_list_2000_under_1s": wl.get("elapsed_s", 99) < 1.0,
        "largest_book": biggest["listings"] if biggest else None,
        "largest_book_uncapped_s": biggest["uncapped_s"] if biggest else None,
        "largest_book_peak_rss_mb": biggest["peak_rss_mb"] if biggest else None,
        "book_100k_uncapped_under_60s": bool(biggest and biggest["listings"] >= 100_000 and biggest["uncapped_s"] < 60),
        "book_100k_under_1gb": bool(biggest and biggest["listings"] >= 100_000 and biggest["peak_rss_mb"] < 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k and 10k listings, a 10 s budget: under 60 s")
    parser.add_argument("--sizes", default="1000,10000,100000", help="listings per market, comma-separated")
    parser.add_argument("--budget", type=float, default=None, help="the capped solver's seconds (default 20; quick 10)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--wants", type=float, default=4.0, help="mean acceptances a listing")
    parser.add_argument("--home", type=float, default=0.9, help="share of acceptances inside the own cluster")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--want-list", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.budget is None:
        args.budget = 10.0 if args.quick else 20.0
    if args.one is not None:
        print(json.dumps(one_size(args.one, args)))
        return
    if args.want_list:
        print(json.dumps(want_list(args)))
        return
    started = time.perf_counter()
    sizes = [1000, 10_000] if args.quick else [int(x) for x in args.sizes.split(",")]
    wl = child(args, "--want-list")
    print(f"want list of 2000 items: {wl}", flush=True)
    results = []
    for n in sizes:
        r = child(args, "--one", str(n))
        results.append(r)
        if "error" in r:
            print(f"{n} listings: {r['error']}", flush=True)
            continue
        print(
            f"{n} listings, {r['acceptances']} acceptances: uncapped {r['uncapped_items']} in {r['uncapped_s']} s"
            f" (optimum by scipy {r['optimum_items']}), peak {r['peak_rss_mb']} MB",
            flush=True,
        )
        for k, c in r["capped"].items():
            print(
                f"  K={k}: {c['items']} (bound {c['bound']}, gap {c['gap']:.1%}, greedy {c['greedy_items']})"
                f" in {c['elapsed_s']} s, {c['rings_enumerated']} rings",
                flush=True,
            )
    report = {
        "bench": "match",
        "quick": args.quick,
        "budget_s": args.budget,
        "market": {"wants": args.wants, "home": args.home, "seed": args.seed},
        "want_list": wl,
        "sizes": results,
        "goals": goals(results, wl),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()

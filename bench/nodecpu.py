"""Where a node's CPU per gossip object goes: real nodes against bare py-libp2p gossipsub, in the same run.

Three swarms of N processes (default 10) on 127.0.0.1, one after the other, over
the same connections: the nodes' swarm first (LocalSwarm: each node dials node 0
and up to two earlier nodes, then they find each other), then the two gossip
swarms dial exactly the connections the nodes reported after settling
(``swarm.connection_graph``):

- ``bare``: ``bench/support/gossip_peer.py``, py-libp2p's gossipsub as another
  developer would use it (the node's Noise/Yamux/GossipSub settings, an
  accept-all validator, nothing else);
- ``fast``: the same process with our host fast path (docs/LIBP2P.md §60-§67)
  and liveness pings (``--fastpath``);
- ``node``: real swapmeet nodes (``swapmeet node run`` through LocalSwarm): the
  fast path plus everything a node does with a listing (the HTTP publish,
  signing, the validator's decode and signature checks, the book, logs, sync).

Each swarm gets the same steady stream: ``--count`` publishes at ``--rate`` per
second, each at a random member, one object per message (listings at the nodes;
at the gossip peers payloads of the size of a bench listing's gossip message).
The figure is the CPU of all N processes from the first publish until every
member holds every object (read from their output: the peers print a line per
message, the nodes log ``gossip from <author>: 1 new object(s)`` once stored),
less their idle CPU over that time (measured for IDLE_S just before, with the
swarm settled), per object and per process: **CPU per object per node**. The
ratios say what our host saves over the library (fast / bare) and what a node
costs on top of its host (node / fast). ``--rounds`` repeats the three in turn
(medians reported), so that all three see the same machine.

``--profile``: one more stream through the nodes under cProfile
(``bench/support/profile_hook``: CPU time of each node's trio thread, switched on
and off by signals around the stream), aggregated over the N nodes by package.
cProfile slows call-heavy code the most (several times over): read the shares,
not the milliseconds.

Run: ``python bench/nodecpu.py [--quick] [--nodes N] [--rate R] [--count C]
[--rounds K] [--profile] [--keep]`` (``--quick``: 150 objects at 15/s per swarm,
one round, about 90 s). The last line printed is a JSON object of all figures.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import pstats
import random
import signal
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from support.benchkit import loadavg, run_bench
from swapmeet.cli.localswarm import LocalSwarm
from swarm import (
    BarePeer,
    NodePeer,
    Tailer,
    Watched,
    bench_listing_sizes,
    connect_bare,
    connection_graph,
    cpu_s,
    say,
    stamp,
    stop_bare,
    wait_for,
)

HERE = Path(__file__).resolve().parent
PROFILE_HOOK = HERE / "support" / "profile_hook"
T0 = time.monotonic()
SETTLE_S = 3.0  # after the swarm is up: meshes formed, first syncs done
IDLE_S = 3.0  # idle CPU measured over this long, just before the stream
HOLD_TIMEOUT_S = 60.0  # after the last publish, every member must hold everything within this
TOP_PACKAGES = 15


def received(member: Watched) -> int:
    return sum(a.n for a in member.arrivals)


def measure(
    name: str,
    members: Sequence[Watched],
    pids: Sequence[int | None],
    publish: Callable[[int, int], None],
    args: argparse.Namespace,
    rng: random.Random,
) -> dict[str, Any]:
    """Idle CPU, then the stream; CPU per object per member, less idle."""
    n = len(members)
    c0, t0 = sum(cpu_s(p) for p in pids), time.monotonic()
    time.sleep(IDLE_S)
    c1, t1 = sum(cpu_s(p) for p in pids), time.monotonic()
    idle_cores = (c1 - c0) / (t1 - t0)
    start = [received(m) for m in members]
    expected = [args.count] * n
    for k in range(args.count):
        delay = t1 + k / args.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        at = rng.randrange(n)
        expected[at] -= 1  # a member does not receive its own publication
        publish(at, k)
    held = wait_for(
        lambda: all(received(m) - s >= e for m, s, e in zip(members, start, expected, strict=True)), HOLD_TIMEOUT_S
    )
    c2, t2 = sum(cpu_s(p) for p in pids), time.monotonic()
    busy = (c2 - c1) - idle_cores * (t2 - t1)
    figures = {
        "cpu_ms_per_object_per_node": round(1000 * busy / args.count / n, 2),
        "idle_cpu_pct_per_node": round(100 * idle_cores / n, 2),
        "stream_s": round(t2 - t1, 1),
        "all_held": held,
    }
    say(
        f"{stamp()} {name:5} {figures['cpu_ms_per_object_per_node']:6.2f} ms CPU per object per process"
        f" (idle {figures['idle_cpu_pct_per_node']} % of a core each), {args.count} objects in"
        f" {figures['stream_s']} s{'' if held else ', NOT ALL HELD'}"
    )
    return figures


def gossip_peers(
    tmp: Path, tag: str, n: int, edges: set[tuple[int, int]], fastpath: bool, tailer: Tailer
) -> list[BarePeer]:
    peers = [BarePeer(i, tmp / f"{tag}{i}.log", f"nodecpu-{os.getpid()}-{tag}", fastpath=fastpath) for i in range(n)]
    for p in peers:
        tailer.watch(p.log, p)
    try:
        connect_bare(peers, edges)
    except RuntimeError:
        stop_bare(peers)
        raise
    return peers


def run_gossip(
    tmp: Path, tag: str, fastpath: bool, edges: set[tuple[int, int]], args: argparse.Namespace, rng: random.Random
) -> dict[str, Any]:
    tailer = Tailer()
    tailer.start()
    peers: list[BarePeer] = []
    try:
        peers = gossip_peers(tmp, tag, args.nodes, edges, fastpath, tailer)
        time.sleep(SETTLE_S)
        _, size = bench_listing_sizes()
        return measure(tag, peers, [p.pid for p in peers], lambda at, k: peers[at].publish(k, size), args, rng)
    finally:
        stop_bare(peers)
        tailer.stop()


def run_nodes(
    tmp: Path, round_no: int, args: argparse.Namespace, rng: random.Random, profile: Path | None
) -> tuple[dict[str, Any], set[tuple[int, int]]]:
    """The nodes' figures, and their connections once settled (for the gossip swarms to dial)."""
    env = {}
    if profile is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(PROFILE_HOOK), *filter(None, [os.environ.get("PYTHONPATH")])])
        env["SWAPMEET_BENCH_PROFILE_DIR"] = str(profile)
    tailer = Tailer()
    tailer.start()
    swarm = LocalSwarm(
        args.nodes,
        net=f"nodecpu-{os.getpid()}-{round_no}",
        base_dir=tmp / f"nodes{round_no}",
        seed=rng.randrange(1 << 30),
        env=env,
    )
    try:
        swarm.start()
        nodes = [NodePeer(swarm, i) for i in range(args.nodes)]
        for x in nodes:
            tailer.watch(swarm.log_path(x.idx), x)
        time.sleep(SETTLE_S)
        edges = connection_graph(swarm)
        pids = [x.pid for x in nodes]
        figures = measure("node", nodes, pids, lambda at, k: nodes[at].publish(k), args, rng)
        if profile is not None:
            for pid in pids:
                if pid is not None:
                    os.kill(pid, signal.SIGUSR1)
            measure("node, profiled", nodes, pids, lambda at, k: nodes[at].publish(args.count + k), args, rng)
            for pid in pids:
                if pid is not None:
                    os.kill(pid, signal.SIGUSR2)
            wait_for(lambda: len(glob.glob(str(profile / "*.prof"))) >= len(pids), 20)
        figures["connections"] = len(edges)
        return figures, edges
    finally:
        swarm.close()
        tailer.stop()


def package_of(path: str) -> str:
    """A profile entry's file, as the package it belongs to (libp2p by sub-package)."""
    if "site-packages/" in path:
        parts = path.split("site-packages/", 1)[1].split("/")
        return "/".join(parts[:2]) if parts[0] == "libp2p" and len(parts) > 2 else parts[0].removesuffix(".py")
    for room in ("node", "protocol", "ledger", "cli"):
        if f"/{room}/" in path and "/python3" not in path:
            return f"swapmeet.{room}"
    if path == "~":
        return "builtins (C functions)"
    return "stdlib " + Path(path).stem


def profile_shares(directory: Path) -> dict[str, float]:
    files = glob.glob(str(directory / "*.prof"))
    if not files:
        return {}
    stats = pstats.Stats(*files)
    by_package: collections.Counter[str] = collections.Counter()
    for (path, _line, _fn), (_cc, _nc, own, _cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        by_package[package_of(path)] += own
    total = sum(by_package.values())
    return {k: round(100 * v / total, 1) for k, v in by_package.most_common(TOP_PACKAGES)}


def run(args: argparse.Namespace, tmp: Path, cleanup: list[Callable[[], Any]]) -> dict[str, Any]:
    rng = random.Random(args.seed)
    f: dict[str, Any] = {
        "nodes": args.nodes,
        "rate": args.rate,
        "count": args.count,
        "rounds": args.rounds,
        "quick": args.quick,
        "cores": len(os.sched_getaffinity(0)),
        "loadavg_start": loadavg(),
    }
    say(
        f"{stamp()} nodecpu: {args.nodes} processes per swarm, {args.count} objects at {args.rate}/s,"
        f" {args.rounds} round(s), {f['cores']} cores, load average {f['loadavg_start']}"
    )
    runs: dict[str, list[dict[str, Any]]] = {"bare": [], "fast": [], "node": []}
    profile_dir = tmp / "profile" if args.profile else None
    if profile_dir is not None:
        profile_dir.mkdir()
    for r in range(args.rounds):
        last = r == args.rounds - 1
        node_figures, edges = run_nodes(tmp, r, args, rng, profile_dir if last else None)
        runs["node"].append(node_figures)
        runs["bare"].append(run_gossip(tmp, f"bare{r}-", False, edges, args, rng))
        runs["fast"].append(run_gossip(tmp, f"fast{r}-", True, edges, args, rng))
    for name, results in runs.items():
        f[name] = {
            "cpu_ms_per_object_per_node": round(statistics.median(x["cpu_ms_per_object_per_node"] for x in results), 2),
            "idle_cpu_pct_per_node": round(statistics.median(x["idle_cpu_pct_per_node"] for x in results), 2),
            "all_held": all(x["all_held"] for x in results),
            "runs": results,
        }
    bare, fast, node = (f[k]["cpu_ms_per_object_per_node"] for k in ("bare", "fast", "node"))
    f["ratios"] = {
        "fast_vs_bare": round(fast / bare, 2) if bare > 0 else None,
        "node_vs_bare": round(node / bare, 2) if bare > 0 else None,
        "node_vs_fast": round(node / fast, 2) if fast > 0 else None,
    }
    if profile_dir is not None:
        f["node_profile_pct"] = profile_shares(profile_dir)
    f["loadavg_end"] = loadavg()
    return f


def report(f: dict[str, Any]) -> None:
    say()
    for name in ("bare", "fast", "node"):
        x = f[name]
        say(
            f"{name:5} CPU per object per process {x['cpu_ms_per_object_per_node']:6.2f} ms (median of"
            f" {len(x['runs'])}), idle {x['idle_cpu_pct_per_node']} % of a core each"
            f"{'' if x['all_held'] else '; NOT EVERY OBJECT REACHED EVERY PROCESS'}"
        )
    r = f["ratios"]
    say(
        f"ratios       fast / bare {r['fast_vs_bare']}x, node / bare {r['node_vs_bare']}x,"
        f" node / fast {r['node_vs_fast']}x"
    )
    if f.get("node_profile_pct"):
        say("node CPU under cProfile, by package (% of all own time, all nodes):")
        for package, share in f["node_profile_pct"].items():
            say(f"  {share:5.1f} %  {package}")
    say(f"load average {f['loadavg_start']} at start, {f['loadavg_end']} at end, on {f['cores']} cores")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="150 objects per swarm, one round (about 90 s)")
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--rate", type=float, default=15.0, help="publishes per second (default 15)")
    parser.add_argument("--count", type=int, default=0, help="objects per swarm and round (default 600, 150 quick)")
    parser.add_argument("--rounds", type=int, default=0, help="rounds of the three swarms (default 3, 1 quick)")
    parser.add_argument("--profile", action="store_true", help="and one profiled stream through the nodes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the logs, homes and profiles (their path is printed)")
    args = parser.parse_args()
    if args.nodes < 2:
        parser.error("--nodes must be at least 2")
    args.count = args.count or (150 if args.quick else 600)
    args.rounds = args.rounds or (1 if args.quick else 3)
    return run_bench(args, run, report, prefix="swapmeet-nodecpu-", started=T0, say=say)


if __name__ == "__main__":
    sys.exit(main())

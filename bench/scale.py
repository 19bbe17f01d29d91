"""Benchmark of 10, 20 and 40 real swapmeet nodes on an emulated WAN: latency, cost and catch-up against size.

Every node is a ``swapmeet node run`` process in a network namespace of its own, joined to the
others by the userspace WAN of ``tests/wanlink.py`` (this kernel has no ``tc netem``): every link
has a one-way delay drawn once in 20-80 ms and loses 0.5 % of the packets, addresses from
198.19.0.0/24 (the benchmarking range). Each node holds the same pre-built book (1k listings, 500
with ``--quick``) and dials node 0 and up to two random earlier nodes, as in ``bench/swarm.py``,
whose measurement helpers this script uses (its log tailer, time-to-all sampling, CPU and RSS
readers). For each size:

- ``time-to-all`` p50/p95: a listing published at a random node until every other node logged it
  stored (read from the logs as they grow, nothing polled meanwhile), and the ``fraction delivered``
  within ARRIVAL_TIMEOUT_S;
- ``duplicates per node``: verified objects a node received by gossip that it already held
  (``gossip_in - gossip_new`` of its ``/v1/activity`` over the publishing phase), per published object;
- ``CPU`` and ``bytes per node per published object``: the nodes' CPU (``/proc``) and the bytes each
  node's WAN interface sent and received (counted by the forwarder) over the publishing phase,
  less the idle rate measured just before, per node and per object;
- ``idle CPU`` (share of a core) and ``bytes/s`` per node, and ``RSS`` per node, with nothing published;
- ``catch-up``: a newcomer with an empty book dials one random node after the book exists; seconds
  from its launch (and from its host being up) until it holds the whole book.

``--partition``: the issue's 20-node partition instead (two halves of 10 cut for 60 s, 20 s with
``--quick``, while both halves publish, withdraw and trade; every node with ``--archive`` so that
every node must end with every chain): after the heal, seconds until every node holds exactly the
live book (everything acknowledged, nothing withdrawn) and the same copy of every trading party's
chain (read-only from each node's ledger file), whether anything acknowledged was lost, and the
parties' audits; ``heal_over_goal`` is the heal time over the issue's 30 s. Without ``--partition``,
``ratios_to_smallest`` compares each size with the smallest one of the same run. ``--plot`` draws
the size figures into ``docs/scale-latency.png`` and ``docs/scale-cost.png`` (matplotlib:
``pip install -e '.[bench]' -c constraints.txt``).

Run as root (network namespaces): ``python bench/scale.py [--quick] [--sizes 10,20,40] [--plot]``.
Every process and namespace the bench made is removed on exit (also on Ctrl-C and SIGTERM). The
last line printed is a JSON object of all figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.wanlink

from support.benchkit import loadavg, run_bench
from support.books import build_book, prepare_homes
from swapmeet.cli.client import ApiClient
from swapmeet.cli.localswarm import SwarmError
from swapmeet.node.cookie import read_cookie
from swapmeet.node.home import Home
from swapmeet.node.identity_store import create_identity, load_identity
from swapmeet.protocol.identity import public_key_from_peer_id
from swarm import EVENTS, NodePeer, Tailer, cpu_s, measure_latency, poll, rss_mb, say, stamp

from tests.netlab import LabNode, lab_unavailable
from tests.raw_peers import db_payloads
from tests.wanlink import InNs, WanLab, offer_and_accept, outcome, trade_row, wait

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs"
PORT = 4001
DELAY_MS = (20.0, 80.0)
LOSS = 0.005
UP_TIMEOUT = 180.0
T0 = time.monotonic()


class Sites:
    """What ``swarm.NodePeer`` asks of its swarm (peer id, pid, home), for the nodes of a WanLab."""

    def __init__(self, lab: WanLab) -> None:
        self.lab = lab
        self.by_idx: dict[int, LabNode] = {}

    def peer_id(self, i: int) -> str:
        return self.by_idx[i].peer_id

    def pid(self, i: int) -> int | None:
        proc = self.by_idx[i].process
        return proc.pid if proc is not None and proc.poll() is None else None

    def home(self, i: int) -> Home:
        return Home(self.by_idx[i].home)


class WanPeer(NodePeer):
    """A node of the WAN lab: its local API is reached from inside its namespace."""

    def __init__(self, sites: Sites, idx: int) -> None:
        super().__init__(sites, idx)  # type: ignore[arg-type]
        self.ns = sites.by_idx[idx].ns

    def client(self) -> ApiClient:
        if self._client is None:
            home = self.swarm.home(self.idx)
            cookie = read_cookie(home)
            if cookie is None:
                raise SwarmError(f"{self.name} has no API cookie")
            self._client = InNs(ApiClient(home, cookie, timeout=30.0), self.ns)  # type: ignore[assignment]
        return self._client  # type: ignore[return-value]

    def activity(self) -> tuple[int, int]:
        """(gossip_in, gossip_new) over the last hour."""
        rows = self.client().activity()
        return sum(r["gossip_in"] for r in rows), sum(r["gossip_new"] for r in rows)


def addr(lab: WanLab, node: LabNode) -> str:
    return f"/ip4/{node.ip}/tcp/{PORT}/p2p/{node.peer_id}"


def launch(
    lab: WanLab, sites: Sites, i: int, home: Path, bootstrap: Sequence[LabNode], extra: Sequence[str] = ()
) -> LabNode:
    """Start node ``i`` on site ``i`` with an existing ``home``; not waited for."""
    site = lab.sites[i]
    node = LabNode(
        name=f"node{i}",
        ns=site.ns,
        ip=site.ip,
        home=home,
        log_path=lab.base_dir / f"node{i}.log",
        peer_id=load_identity(Home(home)).peer_id,
    )
    node.args = ["--listen", f"/ip4/{site.ip}/tcp/{PORT}", "--net", lab.net, "--no-mdns", "--no-dht"]
    node.args += [a for b in bootstrap for a in ("--bootstrap", addr(lab, b))]
    node.args += list(extra)
    lab.nodes[node.name] = node
    sites.by_idx[i] = node
    lab.start(node, wait=False)
    return node


def wait_api(peers: Sequence[WanPeer], timeout: float = UP_TIMEOUT) -> None:
    def up() -> bool:
        return all(p.client().status() is not None for p in peers)

    if not poll(up, timeout, interval=0.3):
        raise RuntimeError(f"nodes did not answer within {timeout:g}s: {[p.name for p in peers]}")


def dial_earlier(rng: random.Random) -> Callable[[int], list[int]]:
    """As bench/swarm.py: node i dials node 0 and up to two random earlier nodes."""

    def pick(i: int) -> list[int]:
        earlier = list(range(1, i))
        return [0, *rng.sample(earlier, min(2, len(earlier)))] if i else []

    return pick


def start_swarm(
    lab: WanLab,
    sites: Sites,
    base: Path,
    n: int,
    tailer: Tailer,
    dials: Callable[[int], list[int]],
    extra: Sequence[str] = (),
) -> list[WanPeer]:
    """Nodes 0..n-1 in doubling waves, node i dialling ``dials(i)`` (earlier nodes only)."""
    graph = {i: dials(i) for i in range(n)}
    peers: list[WanPeer] = []
    started: list[LabNode] = []
    wave = 1
    while len(started) < n:
        batch = []
        for i in range(len(started), min(n, len(started) + wave)):
            if any(j >= len(started) for j in graph[i]):
                break  # it dials a node of this wave: it goes with the next one
            node = launch(lab, sites, i, base / f"node{i}", [started[j] for j in graph[i]], extra)
            peer = WanPeer(sites, i)
            tailer.watch(node.log_path, peer)
            batch.append(peer)
        wait_api(batch)
        started.extend(sites.by_idx[p.idx] for p in batch)
        peers.extend(batch)
        wave *= 2
    if not poll(lambda: all(p.client().status()["peers"] >= 1 for p in peers), 60, interval=0.5):
        raise RuntimeError("some nodes have no peer")
    return peers


def _wan_bytes(lab: WanLab, idxs: Sequence[int], kinds: Sequence[str] = ("tx_bytes", "rx_bytes")) -> list[int]:
    """IP bytes each site's interface sent and/or received, as the forwarder counted them."""
    stats = lab.wan.stats()  # type: ignore[union-attr]
    return [sum(stats[i][k] for k in kinds) for i in idxs]


def measure_size(n: int, args: argparse.Namespace, tmp: Path, book: Path, tailer: Tailer) -> dict[str, Any]:
    rng = random.Random(args.seed + n)
    quick = args.quick
    base = tmp / f"n{n}"
    base.mkdir()
    prepare_homes(base, n, book)
    create_identity(Home(base / f"node{n}"), None)  # the newcomer: an identity, no book
    out: dict[str, Any] = {"nodes": n}
    with WanLab(
        net=f"scale-{os.getpid()}-{n}", sites=n + 1, base_dir=base, delay_ms=DELAY_MS, loss=LOSS, seed=args.seed
    ) as lab:
        sites = Sites(lab)
        t = time.monotonic()
        peers = start_swarm(lab, sites, base, n, tailer, dial_earlier(rng))
        out["start_s"] = round(time.monotonic() - t, 1)
        say(f"{stamp()} {n} nodes up on the WAN in {out['start_s']} s")
        time.sleep(3.0)  # a few heartbeats: meshes form, first syncs end
        idxs = [p.idx for p in peers]

        # ------------------------------------------------------------ idle
        idle_s = 4.0 if quick else 10.0
        cpu0, b0, t0 = [cpu_s(p.pid) for p in peers], _wan_bytes(lab, idxs), time.monotonic()
        time.sleep(idle_s)
        wall = time.monotonic() - t0
        idle_cpu = [(cpu_s(p.pid) - c) / wall for p, c in zip(peers, cpu0, strict=True)]
        idle_bps = [(b - a) / wall for a, b in zip(b0, _wan_bytes(lab, idxs), strict=True)]
        rss = [rss_mb(p.pid) for p in peers]
        out["idle_cpu_share_per_node"] = round(statistics.mean(idle_cpu), 4)
        out["idle_bytes_per_s_per_node"] = round(statistics.mean(idle_bps), 1)
        out["rss_mb_per_node"] = {"median": round(statistics.median(rss), 1), "max": round(max(rss), 1)}

        # ------------------------------------------------------------ publishing
        count = args.samples or (10 if quick else 30)
        act0 = [p.activity() for p in peers]
        cpu0, b0, t0 = [cpu_s(p.pid) for p in peers], _wan_bytes(lab, idxs), time.monotonic()
        rx0 = _wan_bytes(lab, idxs, ("rx_bytes",))
        lat = measure_latency([(peers, lambda p, k: p.publish(k))], count, rng)[0]
        time.sleep(2.0)  # the last one's stragglers
        wall = time.monotonic() - t0
        cpu = [cpu_s(p.pid) - c - i * wall for p, c, i in zip(peers, cpu0, idle_cpu, strict=True)]
        sent = [b - a - i * wall for a, b, i in zip(b0, _wan_bytes(lab, idxs), idle_bps, strict=True)]
        rx = [b - a - i * wall / 2 for a, b, i in zip(rx0, _wan_bytes(lab, idxs, ("rx_bytes",)), idle_bps, strict=True)]
        act1 = [p.activity() for p in peers]
        dups = [(b[0] - a[0]) - (b[1] - a[1]) for a, b in zip(act0, act1, strict=True)]
        s = lat.summary()
        pairs = count * (n - 1)
        out["time_to_all"] = {k: s[k] for k in ("n", "missing", "p50_ms", "p95_ms", "max_ms", "first_peer_p50_ms")}
        out["fraction_delivered"] = round(1 - lat.missing / pairs, 4)
        out["duplicates_per_node_per_object"] = round(statistics.mean(dups) / count, 3)
        out["cpu_ms_per_node_per_object"] = round(statistics.mean(cpu) / count * 1000, 2)
        out["bytes_per_node_per_object"] = round(statistics.mean(sent) / count, 1)
        out["received_bytes_per_node_per_object"] = round(statistics.mean(rx) / count, 1)
        say(
            f"{stamp()} n={n}: time-to-all p50 {s['p50_ms']} ms, p95 {s['p95_ms']} ms over {s['n']}"
            f" (missing {lat.missing} of {pairs}); dup/node/object {out['duplicates_per_node_per_object']};"
            f" CPU {out['cpu_ms_per_node_per_object']} ms and {out['bytes_per_node_per_object']:.0f} B per node"
            f" per object; idle {out['idle_cpu_share_per_node'] * 100:.1f} % of a core, "
            f"{out['idle_bytes_per_s_per_node']:.0f} B/s, RSS {out['rss_mb_per_node']['median']} MB per node"
        )

        # ------------------------------------------------------------ newcomer
        target = peers[0].book_size()
        t_launch = time.monotonic()
        node = launch(lab, sites, n, base / f"node{n}", [sites.by_idx[rng.randrange(n)]])
        new = WanPeer(sites, n)
        tailer.watch(node.log_path, new)
        wait_api([new])
        done = poll(lambda: new.book_size() >= target, 120, interval=0.2)
        t_done = time.monotonic()
        up = new.grep(r"listening on /")
        out["newcomer"] = {
            "book": target,
            "complete": done,
            "time_from_launch_s": round(t_done - t_launch, 2),
            "time_from_host_up_s": round(t_done - up[0][0], 2) if up else None,
        }
        say(
            f"{stamp()} n={n}: newcomer holds the book of {target} {out['newcomer']['time_from_launch_s']} s"
            f" after launch ({out['newcomer']['time_from_host_up_s']} s after its host was up)"
        )
        with EVENTS:
            out["trouble"] = [line for p in peers for line in p.trouble][:5]
    return out


# --------------------------------------------------------------------------- --partition

HALF = 10
TRADE_DEADLINE_S = 600
PARTITION_WAIT_S = 60.0
HEAL_TIMEOUT_S = 180.0
HEAL_GOAL_S = 30.0  # the goal: the same book and chains everywhere within 30 s of the heal


def dial_within_halves(rng: random.Random) -> Callable[[int], list[int]]:
    """Each half a connected swarm of its own (its first node and up to two random earlier nodes of the
    half), and a few links across: node HALF dials node 0, every third node of the second half one
    random node of the first."""

    def pick(i: int) -> list[int]:
        first = 0 if i < HALF else HALF
        earlier = list(range(first + 1, i))
        inside = [first, *rng.sample(earlier, min(2, len(earlier)))] if i != first else []
        across = [0] if i == HALF else ([rng.randrange(HALF)] if i > HALF and i % 3 == 0 else [])
        return inside + across

    return pick


def _live(p: WanPeer) -> set[str]:
    return {x["id"] for x in p.client().listings(limit=1000)}


def _chains(peers: Sequence[WanPeer], authors: Sequence[WanPeer]) -> list[dict[str, frozenset[bytes]]]:
    """Per node: each trading author's chain as the node holds it (payload ids, read-only from its ledger file)."""
    keys = {a.short: public_key_from_peer_id(a.swarm.peer_id(a.idx)) for a in authors}
    return [{a: frozenset(db_payloads(p.swarm.home(p.idx), k)) for a, k in keys.items()} for p in peers]


def partition_run(args: argparse.Namespace, tmp: Path, tailer: Tailer) -> dict[str, Any]:
    """Two halves of HALF nodes cut apart while both publish, withdraw and trade; the heal, measured."""
    n = 2 * HALF
    cut_s = args.cut_s or (20.0 if args.quick else 60.0)
    rng = random.Random(args.seed)
    base = tmp / "partition"
    base.mkdir()
    for i in range(n):
        create_identity(Home(base / f"node{i}"), None)
    out: dict[str, Any] = {"nodes": n, "cut_s": cut_s}
    with WanLab(
        net=f"scale-part-{os.getpid()}", sites=n, base_dir=base, delay_ms=DELAY_MS, loss=LOSS, seed=args.seed
    ) as lab:
        sites = Sites(lab)
        # --archive: every node keeps every chain it hears of, so "the same chains everywhere" is checkable.
        peers = start_swarm(lab, sites, base, n, tailer, dial_within_halves(rng), extra=["--archive"])
        wan = lab.wan
        assert wan is not None
        halves = [peers[:HALF], peers[HALF:]]
        say(f"{stamp()} partition: {n} nodes up; halves of {HALF}")
        time.sleep(3.0)
        first = {p.idx: p.publish(p.idx)["id"] for p in peers}
        expected = set(first.values())
        if not poll(lambda: all(_live(p) == expected for p in peers), PARTITION_WAIT_S, interval=0.5):
            raise RuntimeError("the first listings did not reach every node")

        wan.partition(range(HALF), range(HALF, n))
        cut_at = time.monotonic()
        say(f"{stamp()} cut for {cut_s:g} s; both halves publish, withdraw and trade")
        trades: list[tuple[str, WanPeer, WanPeer]] = []
        for h, half in enumerate(halves):
            gone = half[1]
            gone.client().withdraw(first[gone.idx])
            expected.discard(first[gone.idx])
            for k in range(5):
                expected.add(rng.choice(half).publish(1000 * (h + 1) + k)["id"])
            maker, taker = half[2], half[3]
            listing, trade = offer_and_accept(
                maker.client(), taker.client(), timeout=PARTITION_WAIT_S, deadline_s=TRADE_DEADLINE_S
            )
            expected.add(listing)
            trades.append((trade["id"], maker, taker))
        for xid, maker, taker in trades:
            ended = wait(
                lambda x=xid, m=maker, t=taker: outcome([trade_row(m.client(), x), trade_row(t.client(), x)]),
                PARTITION_WAIT_S,
                f"trade {xid[:12]} to end inside its half",
            )
            if ended != "complete":
                raise RuntimeError(f"a trade inside a half ended {ended}")
        traders = [p for _, m, t in trades for p in (m, t)]
        out["work_during_cut_s"] = round(time.monotonic() - cut_at, 1)
        time.sleep(max(0.0, cut_s - (time.monotonic() - cut_at)))

        wan.heal()
        healed = time.monotonic()
        books_at: float | None = None
        chains_at: float | None = None
        deadline = healed + HEAL_TIMEOUT_S
        while time.monotonic() < deadline and (books_at is None or chains_at is None):
            with contextlib.suppress(Exception):
                if books_at is None and all(_live(p) == expected for p in peers):
                    books_at = time.monotonic()
            with contextlib.suppress(Exception):
                held = _chains(peers, traders)
                if chains_at is None and all(h == held[0] for h in held) and all(held[0].values()):
                    chains_at = time.monotonic()
            time.sleep(0.3)
        books = [_live(p) for p in peers]
        held = _chains(peers, traders)
        own = {a.short: held[a.idx][a.short] for a in traders}
        out["books_agree_s"] = round(books_at - healed, 1) if books_at else None
        out["chains_agree_s"] = round(chains_at - healed, 1) if chains_at else None
        out["heal_s"] = round(max(books_at, chains_at) - healed, 1) if books_at and chains_at else None
        out["heal_over_goal"] = round(out["heal_s"] / HEAL_GOAL_S, 2) if out["heal_s"] is not None else None
        out["acknowledged_missing"] = sum(len(expected - b) for b in books)
        out["withdrawn_still_live"] = sum(len(b - expected) for b in books)
        out["trades_on_every_chain_copy"] = all(
            bytes.fromhex(xid) in h[m.short] and bytes.fromhex(xid) in h[t.short] for h in held for xid, m, t in trades
        )
        out["own_chain_lengths"] = {k: len(v) for k, v in own.items()}
        out["audits_clean"] = all(_audit_clean(lab, sites.by_idx[p.idx]) for p in traders)
        say(
            f"{stamp()} healed: books agree {out['books_agree_s']} s and chains {out['chains_agree_s']} s after the"
            f" link returned (cut {cut_s:g} s); acknowledged missing {out['acknowledged_missing']},"
            f" withdrawn still live {out['withdrawn_still_live']}, audits clean {out['audits_clean']}"
        )
    return out


def _audit_clean(lab: WanLab, node: LabNode) -> bool:
    done = lab.cli(node, "audit", "--json", "--workers", "1", check=False)
    return done.returncode == 0 and json.loads(done.stdout)["findings"] == []


def plot(results: list[dict[str, Any]], where: Path) -> list[str]:
    """Two PNGs: latency and delivery, and per-node cost, against the number of nodes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["nodes"] for r in results]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(ns, [r["time_to_all"]["p50_ms"] for r in results], "o-", label="p50")
    ax1.plot(ns, [r["time_to_all"]["p95_ms"] for r in results], "s-", label="p95")
    ax1.set(xlabel="nodes", ylabel="time-to-all (ms)", title="A listing reaches every node", ylim=(0, None))
    ax1.legend()
    ax2.plot(ns, [r["newcomer"]["time_from_launch_s"] for r in results], "o-", label="from its launch")
    ax2.plot(ns, [r["newcomer"]["time_from_host_up_s"] for r in results], "s-", label="from its host up")
    ax2.set(xlabel="nodes", ylabel="s", title=f"A newcomer holds the book ({results[0]['newcomer']['book']})")
    ax2.set_ylim(bottom=0)
    ax2.legend()
    delivered = min(r["fraction_delivered"] for r in results)
    dups = max(r["duplicates_per_node_per_object"] for r in results)
    ax1.text(
        0.02,
        0.02,
        f"delivered: {delivered:.1%} at every size; duplicates/node/object <= {dups:g}",
        transform=ax1.transAxes,
        fontsize=8,
    )
    fig.suptitle("swapmeet on an emulated WAN (20-80 ms one-way, 0.5 % loss), bench/scale.py")
    fig.tight_layout()
    paths = [where / "scale-latency.png", where / "scale-cost.png"]
    fig.savefig(paths[0], dpi=90)
    plt.close(fig)
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
    series = [
        ("CPU ms / node / object", [r["cpu_ms_per_node_per_object"] for r in results]),
        ("kB / node / object (sent + received)", [r["bytes_per_node_per_object"] / 1000 for r in results]),
        ("idle CPU % of a core / node", [100 * r["idle_cpu_share_per_node"] for r in results]),
        ("RSS MB / node (median)", [r["rss_mb_per_node"]["median"] for r in results]),
    ]
    for ax, (label, ys) in zip(axes, series, strict=True):
        ax.plot(ns, ys, "o-")
        ax.set(xlabel="nodes", title=label, ylim=(0, None))
    fig.suptitle("Per-node cost against swarm size (bench/scale.py)")
    fig.tight_layout()
    fig.savefig(paths[1], dpi=90)
    plt.close(fig)
    return [str(p) for p in paths]


def ratios(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Each size's figures over the smallest size's, measured in the same run (the baseline)."""

    def over(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a is not None and b else None

    base = rows[0]
    out = {}
    for r in rows[1:]:
        out[str(r["nodes"])] = {
            "time_to_all_p95": over(r["time_to_all"]["p95_ms"], base["time_to_all"]["p95_ms"]),
            "cpu_per_node_per_object": over(r["cpu_ms_per_node_per_object"], base["cpu_ms_per_node_per_object"]),
            "bytes_per_node_per_object": over(r["bytes_per_node_per_object"], base["bytes_per_node_per_object"]),
            "idle_cpu_per_node": over(r["idle_cpu_share_per_node"], base["idle_cpu_share_per_node"]),
            "newcomer_catch_up": over(r["newcomer"]["time_from_launch_s"], base["newcomer"]["time_from_launch_s"]),
        }
    return out


def run(args: argparse.Namespace, tmp: Path, cleanup: list[Callable[[], Any]]) -> dict[str, Any]:
    reason = lab_unavailable()
    if reason is not None:
        raise SystemExit(f"bench/scale.py needs network namespaces: {reason}")
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else ([10, 20] if args.quick else [10, 20, 40])
    book_n = args.book or (500 if args.quick else 1000)
    f: dict[str, Any] = {
        "quick": args.quick,
        "sizes": sizes,
        "book": book_n,
        "wan": {"delay_ms": list(DELAY_MS), "loss": LOSS},
        "cores": len(os.sched_getaffinity(0)),
        "loadavg_start": loadavg(),
    }
    say(
        f"{stamp()} scale bench: sizes {sizes}, book {book_n}, WAN 20-80 ms one-way, 0.5 % loss,"
        f" load {f['loadavg_start']}"
    )
    tailer = Tailer()
    tailer.start()
    cleanup.append(tailer.stop)
    if args.partition:
        f["book"] = 0  # the partition's nodes start with empty books
        f["partition"] = partition_run(args, tmp, tailer)
    else:
        build_book(tmp / "book.sqlite", book_n)
        f["sizes_measured"] = rows = [measure_size(n, args, tmp, tmp / "book.sqlite", tailer) for n in sizes]
        f["ratios_to_smallest"] = ratios(rows)
        say(f"{stamp()} against {rows[0]['nodes']} nodes in the same run: {f['ratios_to_smallest']}")
        if args.plot:
            f["plots"] = plot(f["sizes_measured"], DOCS)
            say(f"{stamp()} plots: {f['plots']}")
    f["loadavg_end"] = loadavg()
    return f


def report(f: dict[str, Any]) -> None:
    say(
        f"wall {f['wall_s']} s, CPU {f['cpu_s']} s; load {f['loadavg_start']} -> {f['loadavg_end']}"
        f" on {f['cores']} cores"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes 10 and 20, fewer samples (under 180 s)")
    parser.add_argument("--sizes", default="", help="comma-separated node counts (default 10,20,40; quick 10,20)")
    parser.add_argument("--samples", type=int, default=0, help="listings timed per size (default 30, quick 10)")
    parser.add_argument("--book", type=int, default=0, help="listings in the pre-built book (default 1000, quick 500)")
    parser.add_argument("--partition", action="store_true", help="the 20-node partition scenario instead")
    parser.add_argument("--cut-s", type=float, default=0.0, help="--partition: seconds cut (default 60, quick 20)")
    parser.add_argument("--plot", action="store_true", help="draw docs/scale-latency.png and docs/scale-cost.png")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the homes and logs (their path is printed)")
    args = parser.parse_args()
    return run_bench(args, run, report, prefix="swapmeet-scale-bench-", started=T0, say=say)


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of settlement between real swapmeet nodes on loopback, against a bare py-libp2p round trip.

Starts three node processes (``swapmeet node run`` through
``swapmeet.cli.localswarm.LocalSwarm``) on 127.0.0.1 and measures:

- ``two_party``: a barter between two nodes, from the maker's accept request
  (``POST /v1/offers/<id>/accept``) until *both* chains hold the complete
  exchange, p50 / p95 over barters settled one after another (the offer is made
  and has reached the maker before the clock starts); and settled barters/s:
  ``--batch`` offers made first, then all accepted at once (4 client threads),
  until every exchange is on both chains.
- ``ring``: a 3-party ring (A gives to B, B to C, C to A), from A's propose
  request until all three chains hold it. B and C consent as soon as the
  proposal reaches them: a thread per signer retries ``sign`` every 5 ms until
  its node knows the exchange (what a user's script would do), so the figure
  includes the proposal's trip. Also rings/s with ``--batch`` proposals.
- ``accept_request``: the part of ``two_party`` spent in the accept request
  itself (the maker signs, persists its state durably, answers). The length of
  the maker's chain during the measurement is reported with it: the request's
  cost used to grow with it (every trade view re-read the whole chain), and the
  figure shows that it no longer does.

"Holds" is read straight from each node's ``ledger.sqlite`` (a read-only
SQLite connection polled every 2 ms: the nodes' APIs are not polled while the
clock runs, and a WAL reader costs a writer nothing).

Baseline, measured in the same run while the nodes are up and idle
(``bench/settle_baseline.py``): two bare hosts in two processes (the node's
TCP + Noise + Yamux configuration, nothing else), a stream protocol echoing a
1 KiB message: p50 round trip on a fresh stream per request (what a node pays
per message: ``P2PHost.request``) and on a kept stream. And one durable append
(``LedgerStore.append_own`` of a complete exchange in a temporary directory,
``synchronous=FULL``: one fsync), p50.

Ratios: ``settle_p50 / rtt_p50`` and ``settle_p50 / (3 * rtt_p50 + 2 * append_p50)``:
"settlement should cost no more than a few round trips plus two durable
appends" (the maker's signed copy out, the complete copy back, the append on
each side; the third round trip stands for the HTTP request and the waits).
And ``settle_p50 / (3 * rtt_p50 + 2 * append_p50 + 3 * persist_p50)``: the same
with the settlement-state writes the crash rule requires on the way (the maker
before sending its signed copy, the taker before sending the complete one, the
maker before appending); ``persist`` is one such write of a 5 KiB state
(``swapmeet.ledger.durable.write_durably``: temporary file, fsync, rename, fsync of
the directory), p50.

Run: ``python bench/settle.py [--quick] [--samples N] [--batch N] [--keep]``;
``--quick`` (15 samples, batches of 20, 100 baseline round trips) takes under 60 s
on an idle 2-core machine. The last line printed is a JSON object of all figures.
Everything listens on 127.0.0.1 only, every wait is bounded, and every process
the bench starts is stopped on exit (also on Ctrl-C, SIGTERM and errors).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from support.benchkit import loadavg, run_bench, summary
from swapmeet.cli.localswarm import LocalSwarm
from swapmeet.protocol.errors import SwapmeetError
from swapmeet.protocol.identity import public_key_from_peer_id

HERE = Path(__file__).resolve().parent
T0 = time.monotonic()
POLL_S = 0.002
SETTLE_TIMEOUT_S = 30.0
OFFER_TIMEOUT_S = 20.0
SIGN_RETRY_S = 0.005
ACCEPT_THREADS = 4


def say(text: str = "") -> None:
    print(text, flush=True)


def stamp() -> str:
    return f"[{time.monotonic() - T0:5.1f}s]"


# --------------------------------------------------------------------------- reading the chains


class Chains:
    """Read-only SQLite connections to every node's ledger: who holds which exchange on its own chain."""

    def __init__(self, swarm: LocalSwarm, nodes: Sequence[int]) -> None:
        self._db: dict[int, sqlite3.Connection] = {}
        self._key = {i: public_key_from_peer_id(swarm.peer_id(i)) for i in nodes}
        for i in nodes:
            path = swarm.home(i).ledger_db
            swarm.wait_until(path.exists, OFFER_TIMEOUT_S, what=f"node {i}'s ledger database", interval=0.05)
            self._db[i] = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)

    def holds(self, i: int, exchange_id: bytes) -> bool:
        sql = "SELECT 1 FROM entries WHERE author = ? AND payload_id = ? LIMIT 1"
        return self._db[i].execute(sql, (self._key[i], exchange_id)).fetchone() is not None

    def length(self, i: int) -> int:
        """Entries on node ``i``'s own chain (the node's per-request costs may depend on it)."""
        return self._db[i].execute("SELECT count(*) FROM entries WHERE author = ?", (self._key[i],)).fetchone()[0]

    def all_hold(self, nodes: Sequence[int], exchange_id: bytes) -> bool:
        return all(self.holds(i, exchange_id) for i in nodes)

    def close(self) -> None:
        for db in self._db.values():
            db.close()


# --------------------------------------------------------------------------- the measurements


def incoming(swarm: LocalSwarm, maker: int, offer_ids: set[str]) -> bool:
    return offer_ids <= {o["id"] for o in swarm.client(maker).offers("incoming")}


def make_offers(swarm: LocalSwarm, maker: int, taker: int, listing_id: str, n: int) -> list[str]:
    client = swarm.client(taker)
    ids = [
        client.make_offer(
            {"listing": listing_id, "give": [f"{k + 1} x pears"], "take": ["1 x apples"], "note": secrets.token_hex(4)}
        )["id"]
        for k in range(n)
    ]
    swarm.wait_until(
        lambda: incoming(swarm, maker, set(ids)), OFFER_TIMEOUT_S, what=f"{n} offers at the maker", interval=0.02
    )
    return ids


def two_party_latency(
    swarm: LocalSwarm, chains: Chains, listing_id: str, samples: int
) -> tuple[list[float], list[float]]:
    """Accept -> both chains, and (a part of it) the accept request alone, per barter."""
    maker, taker = 0, 1
    out, calls = [], []
    for _ in range(samples):
        (offer_id,) = make_offers(swarm, maker, taker, listing_id, 1)
        client = swarm.client(maker)
        t = time.perf_counter()
        xid = bytes.fromhex(client.accept(offer_id, deadline_in_s=120)["id"])
        calls.append(time.perf_counter() - t)
        swarm.wait_until(
            lambda x=xid: chains.all_hold([maker, taker], x),
            SETTLE_TIMEOUT_S,
            what="both chains to hold it",
            interval=POLL_S,
        )
        out.append(time.perf_counter() - t)
    return out, calls


def two_party_rate(swarm: LocalSwarm, chains: Chains, listing_id: str, batch: int) -> dict[str, Any]:
    maker, taker = 0, 1
    offer_ids = make_offers(swarm, maker, taker, listing_id, batch)
    client = swarm.client(maker)
    t = time.perf_counter()
    with ThreadPoolExecutor(ACCEPT_THREADS) as pool:
        xids = list(pool.map(lambda o: bytes.fromhex(client.accept(o, deadline_in_s=300)["id"]), offer_ids))
    accepted = time.perf_counter() - t
    swarm.wait_until(
        lambda: all(chains.all_hold([maker, taker], x) for x in xids),
        SETTLE_TIMEOUT_S + batch,
        what=f"{batch} exchanges on both chains",
        interval=POLL_S,
    )
    elapsed = time.perf_counter() - t
    per_s = round(batch / elapsed, 1)
    return {"n": batch, "seconds": round(elapsed, 2), "accepts_s": round(accepted, 2), "per_s": per_s}


def ring_legs(swarm: LocalSwarm, k: int) -> dict[str, Any]:
    a, b, c = swarm.peer_id(0), swarm.peer_id(1), swarm.peer_id(2)
    return {
        "legs": [
            {"from": a, "to": b, "items": [f"{k + 1} x bikes"]},
            {"from": b, "to": c, "items": ["1 x cake"]},
            {"from": c, "to": a, "items": [f"1 x lesson {secrets.token_hex(3)}"]},
        ],
        "deadline_in_s": 300,
    }


class Signers:
    """One thread per consenting party: signs every listed exchange as soon as its node knows it."""

    def __init__(self, swarm: LocalSwarm, nodes: Sequence[int]) -> None:
        self.swarm = swarm
        self.todo: dict[int, list[str]] = {i: [] for i in nodes}
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in nodes]
        for thread in self._threads:
            thread.start()

    def add(self, exchange_id: str) -> None:
        with self._lock:
            for todo in self.todo.values():
                todo.append(exchange_id)

    def _run(self, i: int) -> None:
        from swapmeet.node.contract import UnknownObject

        client = self.swarm.client(i)
        while not self._stop.is_set():
            with self._lock:
                pending = list(self.todo[i])
            if not pending:
                time.sleep(SIGN_RETRY_S)
                continue
            for xid in pending:
                try:
                    client.sign(xid)
                except UnknownObject:
                    continue  # not arrived yet
                except SwapmeetError as exc:
                    self.errors.append(f"node {i} sign {xid[:12]}: {exc}")
                with self._lock:
                    self.todo[i].remove(xid)
            time.sleep(SIGN_RETRY_S)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)


def ring_latency(swarm: LocalSwarm, chains: Chains, signers: Signers, samples: int) -> list[float]:
    out = []
    client = swarm.client(0)
    for k in range(samples):
        t = time.perf_counter()
        xid = client.propose(ring_legs(swarm, k))["id"]
        signers.add(xid)
        raw = bytes.fromhex(xid)
        swarm.wait_until(
            lambda x=raw: chains.all_hold([0, 1, 2], x),
            SETTLE_TIMEOUT_S,
            what="all three chains to hold the ring",
            interval=POLL_S,
        )
        out.append(time.perf_counter() - t)
    return out


def ring_rate(swarm: LocalSwarm, chains: Chains, signers: Signers, batch: int) -> dict[str, Any]:
    client = swarm.client(0)
    t = time.perf_counter()
    xids = []
    for k in range(batch):
        xid = client.propose(ring_legs(swarm, k))["id"]
        signers.add(xid)
        xids.append(bytes.fromhex(xid))
    swarm.wait_until(
        lambda: all(chains.all_hold([0, 1, 2], x) for x in xids),
        SETTLE_TIMEOUT_S + batch,
        what=f"{batch} rings on all three chains",
        interval=POLL_S,
    )
    elapsed = time.perf_counter() - t
    return {"n": batch, "seconds": round(elapsed, 2), "per_s": round(batch / elapsed, 1)}


def append_p50(tmp: Path, samples: int) -> dict[str, Any]:
    """One durable append of a complete exchange (``append_own``, fsync at commit), in a temporary ledger."""
    from swapmeet.ledger.store import LedgerStore
    from swapmeet.protocol import build
    from swapmeet.protocol.identity import Identity

    a, b = Identity.generate(), Identity.generate()
    now = int(time.time())
    listing = build.make_listing(
        a, title="bench", have=[build.parse_item("1000000 x apples")], created=now, expires=now + 86_400
    )
    payloads = []
    for k in range(samples):
        offer = build.make_offer(
            b,
            listing,
            take=[build.parse_item("1 x apples")],
            give=[build.parse_item(f"{k + 1} x pears")],
            created=now,
            expires=now + 3600,
        )
        x = build.exchange_for_offer(offer, created=now, deadline=now + 600)
        payloads.append(build.sign_exchange(build.sign_exchange(x, a), b))
    path = tmp / "append-bench"
    path.mkdir()
    times = []
    with contextlib.closing(LedgerStore.open(path / "ledger.sqlite")) as store:
        for x in payloads:
            t = time.perf_counter()
            store.append_own(a, x, now, once=True)
            times.append(time.perf_counter() - t)
    return summary(times)


def persist_p50(tmp: Path, samples: int) -> dict[str, Any]:
    """One durable write of a settlement state, as the node does before each send."""
    from swapmeet.ledger.durable import write_durably

    path = tmp / "persist-bench"
    path.mkdir()
    state = os.urandom(5 * 1024)
    times = []
    for _ in range(samples):
        t = time.perf_counter()
        write_durably(path / "settlement.cbor", state)
        times.append(time.perf_counter() - t)
    return summary(times)


def baseline(samples: int) -> dict[str, Any]:
    """bench/settle_baseline.py in its own processes; its last line is its figures."""
    argv = [sys.executable, str(HERE / "settle_baseline.py"), "--samples", str(samples), "--net", "settle-bench"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"the baseline failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- the run


def run(args: argparse.Namespace, tmp: Path, cleanup: list[Callable[[], Any]]) -> dict[str, Any]:
    quick = args.quick
    samples = args.samples or (15 if quick else 60)
    batch = args.batch or (20 if quick else 60)
    f: dict[str, Any] = {"quick": quick, "samples": samples, "batch": batch, "cores": os.cpu_count()}
    f["loadavg_start"] = loadavg()
    phases: dict[str, float] = {}

    t = time.monotonic()
    swarm = LocalSwarm(3, net=f"settle-bench-{secrets.token_hex(3)}", base_dir=tmp / "swarm", seed=1)
    cleanup.append(swarm.close)
    swarm.start()
    phases["start_s"] = round(time.monotonic() - t, 1)
    say(f"{stamp()} 3 nodes up in {phases['start_s']} s")

    t = time.monotonic()
    f["baseline"] = baseline(100 if quick else 500)
    f["append"] = append_p50(tmp, 30 if quick else 200)
    f["persist"] = persist_p50(tmp, 30 if quick else 200)
    phases["baseline_s"] = round(time.monotonic() - t, 1)
    rtt, kept, app = f["baseline"]["fresh"], f["baseline"]["kept"], f["append"]
    say(
        f"{stamp()} bare round trip p50 {rtt['p50_ms']} ms (fresh stream), {kept['p50_ms']} ms (kept);"
        f" durable append p50 {app['p50_ms']} ms; state persist p50 {f['persist']['p50_ms']} ms"
    )

    maker = swarm.client(0)
    listing = maker.publish({"title": "bench apples", "have": ["1000000 x apples"]})
    swarm.wait_until(
        lambda: swarm.holds(1, listing["id"]), OFFER_TIMEOUT_S, what="the listing at the taker", interval=0.02
    )
    chains = Chains(swarm, [0, 1, 2])
    cleanup.append(chains.close)

    t = time.monotonic()
    two_party_latency(swarm, chains, listing["id"], 3)  # warm-up: connections, streams, caches
    before = chains.length(0)
    lat, calls = two_party_latency(swarm, chains, listing["id"], samples)
    f["two_party"] = {
        "accept_to_both_chains": summary(lat),
        "accept_request": summary(calls),
        "maker_chain_entries": [before, chains.length(0)],
    }
    say(f"{stamp()} two-party accept -> both chains: p50 {f['two_party']['accept_to_both_chains']['p50_ms']} ms")
    f["two_party"]["rate"] = two_party_rate(swarm, chains, listing["id"], batch)
    say(f"{stamp()} two-party: {f['two_party']['rate']['per_s']} barters/s ({batch} at once)")
    phases["two_party_s"] = round(time.monotonic() - t, 1)

    t = time.monotonic()
    signers = Signers(swarm, [1, 2])
    cleanup.append(signers.close)
    ring_latency(swarm, chains, signers, 2)  # warm-up
    before = chains.length(0)
    rl = ring_latency(swarm, chains, signers, samples)
    f["ring"] = {"propose_to_all_chains": summary(rl), "proposer_chain_entries": [before, chains.length(0)]}
    say(f"{stamp()} ring propose -> all three chains: p50 {f['ring']['propose_to_all_chains']['p50_ms']} ms")
    f["ring"]["rate"] = ring_rate(swarm, chains, signers, batch)
    say(f"{stamp()} ring: {f['ring']['rate']['per_s']} rings/s ({batch} at once)")
    f["ring"]["sign_errors"] = signers.errors[:5]
    phases["ring_s"] = round(time.monotonic() - t, 1)

    f["loadavg_end"] = loadavg()
    t = time.monotonic()
    signers.close()
    chains.close()
    swarm.close()
    phases["stop_s"] = round(time.monotonic() - t, 1)
    f["phases_s"] = phases
    f["unclean_exits"] = {
        f"node{x.index}": x.process.returncode
        for x in swarm.nodes
        if x.process is not None and x.process.returncode != 0
    }

    settle = f["two_party"]["accept_to_both_chains"]["p50_ms"]
    ring = f["ring"]["propose_to_all_chains"]["p50_ms"]
    budget = 3 * rtt["p50_ms"] + 2 * app["p50_ms"]
    mandated = budget + 3 * f["persist"]["p50_ms"]
    f["ratios"] = {
        "settle_p50_vs_rtt_p50": round(settle / rtt["p50_ms"], 2),
        "settle_p50_vs_3rtt_2append": round(settle / budget, 2),
        "ring_p50_vs_rtt_p50": round(ring / rtt["p50_ms"], 2),
        "ring_p50_vs_3rtt_2append": round(ring / budget, 2),
        "settle_p50_vs_3rtt_2append_3persist": round(settle / mandated, 2),
    }
    f["budget_3rtt_2append_ms"] = round(budget, 1)
    f["budget_3rtt_2append_3persist_ms"] = round(mandated, 1)
    return f


def report(f: dict[str, Any]) -> None:
    r = f["ratios"]
    two, ring = f["two_party"], f["ring"]
    a, b = two["accept_to_both_chains"], ring["propose_to_all_chains"]
    say()
    say(
        f"two-party    accept -> both chains p50 {a['p50_ms']} / p95 {a['p95_ms']} ms;"
        f" {two['rate']['per_s']} barters/s ({two['rate']['n']} at once);"
        f" of which the accept request itself p50 {two['accept_request']['p50_ms']} ms"
        f" (maker's chain {two['maker_chain_entries'][0]}..{two['maker_chain_entries'][1]} entries)"
    )
    say(
        f"ring (3)     propose -> all chains p50 {b['p50_ms']} / p95 {b['p95_ms']} ms;"
        f" {ring['rate']['per_s']} rings/s ({ring['rate']['n']} at once)"
    )
    say(
        f"baseline     bare round trip p50 {f['baseline']['fresh']['p50_ms']} ms (fresh stream),"
        f" {f['baseline']['kept']['p50_ms']} ms (kept stream); durable append p50 {f['append']['p50_ms']} ms;"
        f" state persist p50 {f['persist']['p50_ms']} ms"
    )
    say(
        f"ratios       settle p50 / rtt p50 = {r['settle_p50_vs_rtt_p50']}x;"
        f" settle p50 / (3 rtt + 2 appends = {f['budget_3rtt_2append_ms']} ms) = {r['settle_p50_vs_3rtt_2append']}x;"
        f" ring {r['ring_p50_vs_rtt_p50']}x / {r['ring_p50_vs_3rtt_2append']}x;"
        f" settle p50 / (+ 3 state persists = {f['budget_3rtt_2append_3persist_ms']} ms)"
        f" = {r['settle_p50_vs_3rtt_2append_3persist']}x"
    )
    say(
        f"load average {f['loadavg_start']} at start, {f['loadavg_end']} at end, on {f['cores']} cores;"
        f" wall {f['wall_s']} s, CPU {f['cpu_s']} s (bench and every process it started)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under 60 s on 2 cores: fewer samples")
    parser.add_argument("--samples", type=int, default=0, help="latency samples per flow (default 60, 15 quick)")
    parser.add_argument("--batch", type=int, default=0, help="exchanges per throughput batch (default 60, 20 quick)")
    parser.add_argument("--keep", action="store_true", help="keep the homes and logs (their path is printed)")
    args = parser.parse_args()

    return run_bench(args, run, report, prefix="swapmeet-settle-bench-", started=T0, say=say)


if __name__ == "__main__":
    sys.exit(main())

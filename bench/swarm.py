"""Benchmark of a swarm of real swapmeet nodes on loopback, against bare py-libp2p gossipsub.

Starts N node processes (``swapmeet node run`` through
``swapmeet.cli.localswarm.LocalSwarm``; default N=10) on 127.0.0.1, each
dialling node 0 and up to two random earlier nodes, and measures:

- ``time-to-all``: from the publish request (``POST /v1/listings`` at a random
  node) until every other node *holds* the listing, p50 / p95 over listings
  published one after another (node and bare samples alternate). The clock
  starts when the request's bytes are written on a connection the bench
  opened beforehand (``NodePeer.publish_timed``), as a bare peer's starts
  when its command is written to its open stdin: the bench's own HTTP client
  work is not charged to the node; the node's server, signing and storing
  are. "Holds" is read from the nodes' logs: a node logs
  ``gossip from <author>: N new object(s)`` right after it stored the
  objects, and the bench timestamps each log line as it appears (a thread
  tails every log file every 2 ms). Nothing polls the nodes' APIs while the
  clock runs, so the measurement costs the nodes no CPU.
- ``throughput``: listings published at random nodes at rising rates for a
  few seconds each; a rate is *sustained* when every listing reached every
  node with a bounded lag (publish -> held, matched first-in-first-out per
  author and receiver): p95 <= 1 s, max <= 2 s, and not building up over
  the step (see LAG_GROWTH_S). Two traffic shapes: *uniform*
  (one listing per publish, each at a random node: many independent users)
  and *bursts* (16 listings by one author at once at one node in one
  request; this ladder starts at the uniform result), which the node stores
  in one transaction and packs into one gossip message. The bursts' authors
  are ``--authors`` (default 50) identities that are not nodes, 5 per node,
  signing here (before each step, off its clock) and publishing through
  their node with ``POST /v1/objects``, as programs that keep their own keys
  would: every author may publish 5 objects/s (PROTOCOL.md §13), so with the
  N nodes' own identities (``--authors 0``: each burst an import,
  ``POST /v1/listings/import``, which the node signs, as a shop's catalogue)
  the ladder measures N authors' budgets, not the swarm (N x 4/s sustained
  at the nodes' pace; so the bursts were until 2026-12-05's relay). The
  two systems' ladders take turns step by step, so both see the same
  background load. Also: objects per gossip message, rate-limit rejections
  in the node logs, and the CPU time all N processes spend per object, a
  figure the machine's other load hardly moves; and the same less the
  processes' idle CPU (measured for 2 s, 5 s without --quick, before the
  throughput test), which is the cost of a message itself (at low rates
  heartbeats and pings would dominate). That gives a CPU-bound ceiling: the
  cores less the processes' idle CPU, over the CPU per object less idle (the
  rate at which the processes would fill the cores).
- ``catch-up``: every node starts with the same pre-built book of 10k signed
  listings (2k with ``--quick``), written into its offer-book file before it
  starts (valid objects by a few random authors, built in this process).
  Measured after time-to-all, before the throughput test (whose overload
  steps may leave books differing by more than 10 until the next resync).
  (a) books that differ by 10: a node is stopped, 10 listings are published
  while it is down, and once they are older than GossipSub's message cache
  (which would otherwise replay them to the returning node) it is restarted;
  time until it holds them and the bytes of its sync sessions (one per peer
  it reconnects to). (b) a newcomer with an empty book dials one node (run
  while (a) waits for the cache to forget): time until it holds the whole
  book, and the bytes. Bytes are what the initiator
  of each session logs (``synced with X: N rounds, A B out / B B in, ...``:
  the sync frames, without Yamux/Noise framing); "reconcile bytes" are those
  minus the signed bytes of the listings carried. The reference is the full id
  list: 32 bytes per id of the larger book.
- ``idle RSS`` (VmRSS) of every node while idle with the book, after start
  (the goal's figure: the pre-built book) and again at the end, with the book
  the throughput test left (in a full run some 8k more listings, and the
  queues of its overloaded steps behind it: Python keeps the memory of a
  peak; before 2026-12-05 the bursts ladder stopped early and the end book
  was close to the start's, so both readings counted for the goal).

Baseline, measured in the same run with the same number of processes, the
same connections and the same payload size (one bench listing in a batch).
The nodes dial node 0 and up to two earlier nodes, then find each other (DHT,
identify): in a 10-node swarm each ends up connected to 7-9 others, so its
GossipSub mesh, and the copies of each message it receives, grow with it. The
bare peers dial exactly the connections the nodes report two seconds after
start (``connection_graph``), so both systems carry each message over the same
graph (before 2026-12-05 they dialled only the nodes' dial graph, about half
the connections, and each bare peer received fewer copies of a message).
The bare peers are
``bench/support/gossip_peer.py``, N plain processes each running
``swapmeet.node.host.open_host`` -- exactly the node's Noise/Yamux/GossipSub
configuration -- with an accept-all validator and no DHT, book, API, sync or
publish coalescing. Its clock starts when the bench writes the publish
command to the process's stdin; arrivals are the lines it prints, written to
a log file and timestamped by the same tailing thread. While one system is
measured, the other one's processes are up and idle.

Ratios: time-to-all p95 node/bare (goal <= 1.3), object throughput / bare
message rate (goal >= 10), reconcile bytes for books differing by 10 / full id
list (goal < 5 %), idle RSS (goal < 150 MB with 10k listings). Where the
goals stand, run by run (the throughput goal is met in bursts by many
authors, not for one object per message): docs/SCALING.md, "bench/swarm.py's
goals: where they stand".

Everything listens on 127.0.0.1 only, every wait is bounded, and every process
the bench starts is stopped on exit (also on Ctrl-C, SIGTERM and errors). The
machine's load average is reported: other work on the machine skews every
figure. The last line printed is a JSON object of all figures.

Run: ``python bench/swarm.py [--quick] [--nodes N]`` (``--quick``: a 2k book,
40 instead of 100 time-to-all samples, 1.5 s instead of 4 s throughput steps;
it costs about 80 s of CPU in all, so under 60 s on an otherwise idle 2-core
machine). ``--keep`` keeps the homes and the node logs.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.benchkit import loadavg, pct, run_bench
from support.books import build_book, prepare_homes
from swapmeet.cli.client import ApiClient
from swapmeet.cli.localswarm import LocalSwarm, SwarmError
from swapmeet.node.contract import API_HOST
from swapmeet.node.cookie import read_cookie

HERE = Path(__file__).resolve().parent
PY = sys.executable

GOAL_P95_RATIO = 1.3
GOAL_THROUGHPUT_RATIO = 10.0
GOAL_RECONCILE_PCT = 5.0
GOAL_RSS_MB = 150.0

# A rate is sustained when nothing is lost and the publish->held lag stays bounded: p95 under LAG_P95_S,
# the worst under LAG_MAX_S, and not building up: the median lag of the objects published in the last
# third of the step exceeds that of the first third by at most LAG_GROWTH_S.
LAG_P95_S = 1.0
LAG_MAX_S = 2.0
LAG_GROWTH_S = 0.3
DRAIN_S = 4.0  # after a step's last publish, how long stragglers may take before they count as lost
ARRIVAL_TIMEOUT_S = 5.0
TAIL_INTERVAL_S = 0.002
BURST = 16  # listings per publish event in the burst-shaped throughput test
ID_BYTES = 32
SETTLE_S = 1.0  # quiet time between phases (0.5 s with --quick)
# How long GossipSub's message cache re-offers a message to a peer that connects: (gossip_history + 1)
# heartbeats of swapmeet.node.host.GossipSettings (5 + 1) x 1 s, plus a margin. Not imported from there:
# that would load libp2p (~1 s, ~80 MB) into the bench process.
GOSSIP_MEMORY_S = 6.5

T0 = time.monotonic()


def say(text: str = "") -> None:
    print(text, flush=True)


def stamp() -> str:
    return f"[{time.monotonic() - T0:5.1f}s]"


def ms(x: float) -> float:
    return round(x * 1000, 1)


def rss_mb(pid: int | None) -> float:
    with contextlib.suppress(OSError, TypeError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process so far (0 if it is gone)."""
    with contextlib.suppress(OSError, TypeError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    return 0.0


# --------------------------------------------------------------------------- output tailing

EVENTS = threading.Condition()  # notified whenever the tailer dispatched lines


@dataclass
class Arrival:
    t: float
    origin: str  # last 8 characters of the originator's PeerID
    n: int  # objects (node) or messages (bare) it brought


class Watched:
    """What the bench learns from one process's output; ``on_line`` runs with EVENTS held."""

    short = ""

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self.lines: list[tuple[float, str]] = []
        self.published: list[float] = []  # node: when it logged "published listing" (stored, queued for gossip)

    def on_line(self, t: float, line: str) -> None:
        self.lines.append((t, line))

    def grep(self, pattern: str, since: float = 0.0) -> list[tuple[float, re.Match[str]]]:
        rx = re.compile(pattern)
        with EVENTS:
            lines = [(t, line) for t, line in self.lines if t >= since]
        return [(t, m) for t, line in lines if (m := rx.search(line))]


class Tailer(threading.Thread):
    """Follows log files (which may not exist yet) and hands every complete line to its owner."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="tailer")
        self._files: list[list[Any]] = []  # [path, owner, fd or None, offset, partial bytes]
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def watch(self, path: Path, owner: Watched, from_end: bool = False) -> None:
        offset = path.stat().st_size if from_end and path.exists() else 0
        with self._lock:
            self._files.append([path, owner, None, offset, b""])

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.is_set():
            got = []
            with self._lock:
                files = list(self._files)
            for entry in files:
                path, owner, fd, offset, partial = entry
                if fd is None:
                    try:
                        fd = entry[2] = os.open(path, os.O_RDONLY)
                    except OSError:
                        continue
                try:
                    if os.fstat(fd).st_size <= offset:
                        continue
                    data = os.pread(fd, 1 << 20, offset)
                except OSError:
                    continue
                entry[3] = offset + len(data)
                *complete, entry[4] = (partial + data).split(b"\n")
                if complete:
                    got.append((owner, complete))
            if got:
                t = time.monotonic()
                with EVENTS:
                    for owner, lines in got:
                        for raw in lines:
                            owner.on_line(t, raw.decode(errors="replace"))
                    EVENTS.notify_all()
            else:
                time.sleep(TAIL_INTERVAL_S)
        with self._lock:
            for entry in self._files:
                if entry[2] is not None:
                    os.close(entry[2])


def wait_for(pred: Callable[[], bool], timeout: float) -> bool:
    """Wait (woken by the tailer) until ``pred()`` holds, EVENTS held while it runs; False on timeout."""
    deadline = time.monotonic() + timeout
    with EVENTS:
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            EVENTS.wait(min(left, 0.05))
    return True


def poll(pred: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``pred()`` (which may call a node's API) until it holds; False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if pred():
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# ------------------------------------------------------------------------ bare peers


class BarePeer(Watched):
    """A bare gossipsub process (``bench/support/gossip_peer.py``), stdout to a log file, commands on stdin."""

    def __init__(self, idx: int, log: Path, net: str, fastpath: bool = False):
        super().__init__()
        self.idx = idx
        self.name = f"bare{idx}"
        self.log = log
        self.addr = ""
        self.replies: list[str] = []
        self._lock = threading.Lock()
        self._out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            [PY, str(HERE / "support" / "gossip_peer.py"), "--net", net, *(["--fastpath"] if fastpath else [])],
            stdin=subprocess.PIPE,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def on_line(self, t: float, line: str) -> None:
        kind, _, rest = line.partition(" ")
        if kind == "R":
            self.arrivals.append(Arrival(t, rest.split()[0], 1))
            return
        super().on_line(t, line)
        if kind == "READY":
            self.addr = rest.strip()
            self.short = self.addr[-8:]
        elif kind in ("C", "S", "E"):
            self.replies.append(line)

    def send(self, line: str) -> None:
        assert self.popen.stdin is not None
        with self._lock:
            self.popen.stdin.write(line.encode() + b"\n")
            self.popen.stdin.flush()

    def publish(self, k: int, size: int) -> None:
        self.send(f"P {os.urandom(8).hex()} {size}")


def connect_bare(peers: Sequence[BarePeer], edges: set[tuple[int, int]]) -> None:
    """Wait for the peers to start, then connect them along ``edges`` (index pairs, each peer dialling its
    lower-numbered neighbours); raises RuntimeError if a peer does not start or a dial fails."""
    if not wait_for(lambda: all(p.addr for p in peers), 60):
        raise RuntimeError(f"bare peers did not start: {[p.name for p in peers if not p.addr]}")
    lower = [[i for i, j in edges if j == k] for k in range(len(peers))]
    for k, targets in enumerate(lower):
        if targets:
            peers[k].send("D " + " ".join(peers[i].addr for i in targets))
    dialled = [k for k, targets in enumerate(lower) if targets]
    if not wait_for(lambda: all(any(r.startswith("C ") for r in peers[k].replies) for k in dialled), 30):
        raise RuntimeError("bare peers did not connect")
    dial_errors = [r for p in peers for r in p.replies if r.startswith("E ")]
    if dial_errors:
        raise RuntimeError(f"bare dials failed: {dial_errors[:3]}")


def stop_bare(peers: Sequence[BarePeer], timeout: float = 10.0) -> list[str]:
    """SIGTERM (the peer leaves cleanly), bounded wait, then SIGKILL; returns the peers that did not exit 0."""
    for p in peers:
        if p.popen.poll() is None:
            with contextlib.suppress(OSError):
                p.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    bad = []
    for p in peers:
        try:
            code = p.popen.wait(max(0.01, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.popen.kill()
            code = p.popen.wait(5)
        if code != 0:
            bad.append(f"{p.name}:{code}")
        for f in (p.popen.stdin, p._out):
            with contextlib.suppress(OSError):
                f.close()  # type: ignore[union-attr]
    return bad


# ------------------------------------------------------------------------ swapmeet nodes

SYNC_RX = re.compile(
    r"synced with (\w+): (\d+) rounds, (\d+) B out / (\d+) B in, fetched (\d+) \((\d+) new\), pushed (\d+)"
)
GOSSIP_RX = re.compile(r"gossip from (\w{8}): (\d+) new object")
LIMIT_RX = re.compile(r"rate limit|could not publish")
TROUBLE_RX = re.compile(r"behind; dropping|sync with \S+ failed|Traceback|ERROR|CRITICAL")


@dataclass
class SyncLine:
    t: float
    at: str  # the node that logged it (the initiator)
    peer: str  # last 8 characters of the other side
    rounds: int
    out: int
    inb: int
    fetched: int
    new: int
    pushed: int

    @property
    def total(self) -> int:
        return self.out + self.inb


class NodePeer(Watched):
    """Node ``idx`` of the LocalSwarm, seen through its log and its API."""

    def __init__(self, swarm: LocalSwarm, idx: int):
        super().__init__()
        self.swarm = swarm
        self.idx = idx
        self.name = f"node{idx}"
        self.short = swarm.peer_id(idx)[-8:]
        self.syncs: list[SyncLine] = []
        self.limited: list[float] = []  # times of rate-limit rejections / failed publishes
        self.trouble: list[str] = []
        self.started_at = time.monotonic()
        self._client: ApiClient | None = None

    def on_line(self, t: float, line: str) -> None:
        if m := GOSSIP_RX.search(line):
            self.arrivals.append(Arrival(t, m[1], int(m[2])))
            return
        if "published listing" in line:
            self.published.append(t)
            return
        super().on_line(t, line)
        if m := SYNC_RX.search(line):
            self.syncs.append(SyncLine(t, self.short, m[1][-8:], *(int(m[i]) for i in range(2, 8))))
        elif LIMIT_RX.search(line):
            self.limited.append(t)
        elif TROUBLE_RX.search(line) and len(self.trouble) < 20:
            self.trouble.append(line[:300])

    @property
    def pid(self) -> int | None:
        return self.swarm.pid(self.idx)

    def client(self) -> ApiClient:
        if self._client is None:
            home = self.swarm.home(self.idx)
            cookie = read_cookie(home)
            if cookie is None:
                raise SwarmError(f"{self.name} has no API cookie")
            self._client = ApiClient(home, cookie, timeout=30.0)
        return self._client

    def restarted(self) -> None:
        self._client = None
        self.started_at = time.monotonic()

    def publish(self, k: int) -> dict[str, Any]:
        return self.client().publish(listing_spec(k))

    def publish_many(self, ks: list[int]) -> list[dict[str, Any]]:
        return self.client().publish_many([listing_spec(k) for k in ks])

    def publish_timed(self, k: int) -> float:
        """Publish listing ``k`` over a connection opened and a request built beforehand; returns when the
        request was written, the clock start (as a bare peer's is when its command is written to its
        open stdin): the bench's own HTTP client work is not charged to the node, its server work is."""
        cookie = self.client().cookie
        body = json.dumps(listing_spec(k)).encode()
        head = (
            f"POST /v1/listings HTTP/1.1\r\nHost: {API_HOST}:{cookie.port}\r\n"
            f"Authorization: Bearer {cookie.token}\r\nAccept: application/json\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        with socket.create_connection((API_HOST, cookie.port), timeout=30.0) as sock:
            t0 = time.monotonic()
            sock.sendall(head.encode() + body)
            response = http.client.HTTPResponse(sock)
            response.begin()
            answer = response.read()
        if response.status != 201:
            raise SwarmError(f"{self.name}: publish answered HTTP {response.status}: {answer[:200]!r}")
        return t0

    def book_size(self) -> int:
        book = self.client().status()["book"]
        return int(book["listings"]) + int(book["offers"]) + int(book["withdrawals"])


def connection_graph(swarm: LocalSwarm) -> set[tuple[int, int]]:
    """The swarm's connections as (i, j) index pairs, i < j, as the nodes report them (their API)."""
    index = {swarm.peer_id(i): i for i in range(len(swarm))}
    edges = set()
    for i in swarm.running():
        for peer in swarm.client(i).peers():
            j = index.get(peer["peer_id"])
            if j is not None and j != i:
                edges.add((min(i, j), max(i, j)))
    return edges


def listing_spec(k: int) -> dict[str, Any]:
    """What the bench publishes: a typical small listing."""
    return {
        "title": f"Road bike #{k:09d}, 54 cm frame",
        "desc": "Well kept, new tyres last spring. Pick up in the evening.",
        "have": ["1 x road bike"],
        "want": ["10 kg x apples", "3 h x garden work"],
        "tags": ["bikes", "sports"],
        "category": "sports/bikes",
    }


def sign_bench_listing(identity: Any, k: int, now: int) -> Any:
    """Listing ``k`` of :func:`listing_spec`, signed by ``identity`` (a swapmeet Identity) here in the bench."""
    from swapmeet.protocol import build

    spec = listing_spec(k)
    return build.make_listing(
        identity,
        title=spec["title"],
        desc=spec["desc"],
        have=[build.parse_item(x) for x in spec["have"]],
        want=[build.parse_item(x) for x in spec["want"]],
        tags=spec["tags"],
        category=spec["category"],
        created=now,
        expires=now + 7 * 86_400,
    )


def bench_listing_sizes() -> tuple[int, int]:
    """(signed bytes of one bench listing, bytes of the gossip message carrying it alone)."""
    from swapmeet.protocol import batch
    from swapmeet.protocol.identity import Identity

    listing = sign_bench_listing(Identity.generate(), 0, int(time.time()))
    return len(listing.raw), len(batch.encode_batch([listing.raw]))


class RelayedAuthors:
    """Authors that are not nodes (programs that keep their own keys), each publishing its bursts through one
    node with ``POST /v1/objects``: the market's many authors, where the nodes' own identities are only N.

    Each of the N nodes serves ``count / N`` authors in turn; a burst is one author's. Listings are signed
    here before each step (:meth:`prepare`), so signing is not charged to the step's clock or the nodes' CPU.
    """

    def __init__(self, nodes: Sequence[NodePeer], count: int) -> None:
        from swapmeet.protocol.identity import Identity

        per_node = max(1, count // len(nodes))
        self.count = per_node * len(nodes)
        self._authors = {id(node): [Identity.generate() for _ in range(per_node)] for node in nodes}
        self._turn: dict[int, int] = defaultdict(int)
        self._signed: dict[bytes, list[bytes]] = defaultdict(list)
        self._k = 0
        self._lock = threading.Lock()

    def prepare(self, rate: float, duration: float, burst: int) -> None:
        """Sign enough for a step of ``rate`` objects/s for ``duration`` s (half again over the mean per author,
        as the step picks its nodes at random; a shortfall is signed when it is needed)."""
        per_author = burst * (int(rate * duration * 1.5 / burst / self.count) + 1)
        for authors in self._authors.values():
            for who in authors:
                while len(self._signed[who.public_key]) < per_author:
                    self._signed[who.public_key].append(self._sign(who))

    def _sign(self, who: Any) -> bytes:
        self._k += 1
        return bytes(sign_bench_listing(who, 10**8 + self._k, int(time.time())).raw)

    def publish(self, node: NodePeer, ks: list[int]) -> None:
        """One burst of ``len(ks)`` listings by the next author ``node`` serves, relayed through it."""
        with self._lock:
            authors = self._authors[id(node)]
            who = authors[self._turn[id(node)] % len(authors)]
            self._turn[id(node)] += 1
            pool = self._signed[who.public_key]
            while len(pool) < len(ks):
                pool.append(self._sign(who))
            raws, self._signed[who.public_key] = pool[: len(ks)], pool[len(ks) :]
        node.client().relay(raws)


# ------------------------------------------------------------------------ measurements


@dataclass
class Latency:
    samples: list[float] = field(default_factory=list)  # publish -> held by every other peer, s
    first: list[float] = field(default_factory=list)  # publish -> held by the first other peer, s
    call: list[float] = field(default_factory=list)  # duration of the publish call itself, s
    stored: list[float] = field(default_factory=list)  # node: publish -> the origin logged it stored, s
    missing: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "n": len(self.samples),
            "missing": self.missing,
            "p50_ms": ms(pct(self.samples, 50)),
            "p95_ms": ms(pct(self.samples, 95)),
            "max_ms": ms(max(self.samples, default=float("nan"))),
            "first_peer_p50_ms": ms(pct(self.first, 50)),
            "publish_call_p50_ms": ms(pct(self.call, 50)),
            "stored_at_origin_p50_ms": ms(pct(self.stored, 50)) if self.stored else None,
        }


def _marks(peers: Sequence[Watched]) -> dict[int, int]:
    with EVENTS:
        return {id(p): len(p.arrivals) for p in peers}


def _arrived(q: Watched, origin: str, since: int, need: int) -> float | None:
    """When ``q`` had received ``need`` objects from ``origin`` after arrival index ``since`` (EVENTS held)."""
    got = 0
    for a in q.arrivals[since:]:
        if a.origin == origin:
            got += a.n
            if got >= need:
                return a.t
    return None


def latency_sample(
    res: Latency, peers: Sequence[Any], k: int, rng: random.Random, publish: Callable[[Any, int], float]
) -> None:
    """Publish one object at a random peer; record the time until every other peer holds it.
    ``publish`` returns the clock start: when its request was written to the publishing process."""
    src = rng.choice(peers)
    others = [q for q in peers if q is not src]
    marks = _marks(others)
    t0 = publish(src, k)
    res.call.append(time.monotonic() - t0)
    wait_for(lambda: all(_arrived(q, src.short, marks[id(q)], 1) is not None for q in others), ARRIVAL_TIMEOUT_S)
    with EVENTS:
        got = [t for q in others if (t := _arrived(q, src.short, marks[id(q)], 1)) is not None]
    if len(got) == len(others):
        res.samples.append(max(got) - t0)
    else:
        res.missing += len(others) - len(got)
    if got:
        res.first.append(min(got) - t0)
    with EVENTS:
        stored = [t for t in src.published if t >= t0]
    if stored:
        res.stored.append(stored[0] - t0)


def measure_latency(
    systems: Sequence[tuple[Sequence[Any], Callable[[Any, int], float]]], count: int, rng: random.Random
) -> list[Latency]:
    """``count`` samples per system, one object at a time, the systems taking turns (same background load)."""
    results = [Latency() for _ in systems]
    for k in range(count):
        for res, (peers, publish) in zip(results, systems, strict=True):
            latency_sample(res, peers, k, rng, publish)
            time.sleep(rng.uniform(0.02, 0.06))  # independent samples: let the previous one settle
    return results


@dataclass
class Step:
    rate: float
    burst: int
    published: int = 0
    actual_rate: float = 0.0
    lags: list[float] = field(default_factory=list)
    timed_lags: list[tuple[float, float]] = field(default_factory=list)  # (publish time, lag)
    lost: int = 0  # (object, receiver) pairs not delivered within DRAIN_S of the step's last publish
    publish_errors: int = 0
    messages: int = 0  # gossip messages that brought the step's objects to their receivers
    objects: int = 0
    rate_limited: int = 0  # node log lines: author over its rate limit / could not publish
    cpu_s: float = 0.0  # CPU seconds of all N processes during the step and its drain
    wall_s: float = 0.0  # how long the step and its drain took

    @property
    def ok(self) -> bool:
        return (
            self.published > 0
            and self.lost == 0
            and self.publish_errors == 0
            and pct(self.lags, 95) <= LAG_P95_S
            and max(self.lags, default=0.0) <= LAG_MAX_S
            and not self.growth() > LAG_GROWTH_S
        )

    def growth(self) -> float:
        """Median lag of the last third of the step's publishes minus that of the first third (s)."""
        if not self.timed_lags:
            return float("nan")
        lo = min(t for t, _ in self.timed_lags)
        hi = max(t for t, _ in self.timed_lags)
        third = (hi - lo) / 3
        first = [lag for t, lag in self.timed_lags if t <= lo + third]
        last = [lag for t, lag in self.timed_lags if t >= hi - third]
        return pct(last, 50) - pct(first, 50) if first and last and third > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "burst": self.burst,
            "actual_rate": round(self.actual_rate, 1),
            "published": self.published,
            "ok": self.ok,
            "lag_p50_ms": ms(pct(self.lags, 50)),
            "lag_p95_ms": ms(pct(self.lags, 95)),
            "lag_max_ms": ms(max(self.lags, default=float("nan"))),
            "lag_growth_ms": ms(self.growth()),
            "lost": self.lost,
            "publish_errors": self.publish_errors,
            "rate_limited": self.rate_limited,
            "objects_per_message": round(self.objects / self.messages, 2) if self.messages else None,
            "cpu_ms_per_object": round(self.cpu_s * 1000 / self.published, 1) if self.published else None,
        }


def run_step(
    peers: Sequence[Any],
    rate: float,
    duration: float,
    rng: random.Random,
    publish: Callable[[Any, list[int]], Any],
    pool: ThreadPoolExecutor | None,
    counter: list[int],
    burst: int = 1,
) -> Step:
    """Publish ``rate`` objects/s for ``duration`` s, in events of ``burst`` objects at one random peer
    (``publish(peer, ks)`` publishes objects ``ks`` in one event)."""
    step = Step(rate, burst)
    events = max(1, round(rate * duration / burst))
    marks = _marks(peers)
    cpu0 = sum(cpu_s(p.pid) for p in peers)
    wall0 = time.monotonic()
    sent: list[tuple[float, Any]] = []  # (send time, source)
    lock = threading.Lock()
    errors = [0]

    def do(src: Any, ks: list[int], t: float) -> None:
        # t: when the publish was due (a node API that cannot keep up makes the lag longer, as it should)
        try:
            publish(src, ks)
        except Exception:
            with lock:
                errors[0] += len(ks)
            return
        with lock:
            sent.extend((t, src) for _ in ks)

    start = time.monotonic() + 0.05
    futures = []
    for i in range(events):
        delay = start + i * burst / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        src = rng.choice(peers)
        due = max(time.monotonic(), start + i * burst / rate)
        ks = list(range(counter[0] + 1, counter[0] + burst + 1))
        counter[0] += burst
        if pool is None:
            do(src, ks, due)
        else:
            futures.append(pool.submit(do, src, ks, due))
    for f in futures:
        f.result(timeout=120)
    end = max((t for t, _ in sent), default=start)
    step.published = len(sent)
    step.publish_errors = errors[0]
    first = min((t for t, _ in sent), default=start)
    step.actual_rate = len(sent) / (end - first + burst / rate) if sent else 0.0
    per_src: dict[int, list[float]] = defaultdict(list)
    for t, src in sent:
        per_src[id(src)].append(t)

    def complete() -> bool:
        return all(
            _arrived(q, p.short, marks[id(q)], len(per_src[id(p)])) is not None
            for q in peers
            for p in peers
            if p is not q and per_src[id(p)]
        )

    wait_for(complete, DRAIN_S + (end - time.monotonic()))
    step.cpu_s = sum(cpu_s(p.pid) for p in peers) - cpu0
    step.wall_s = time.monotonic() - wall0
    with EVENTS:
        for q in peers:
            arrivals = q.arrivals[marks[id(q)] :]
            for p in peers:
                if p is q or not per_src[id(p)]:
                    continue
                got = [a for a in arrivals if a.origin == p.short]
                step.messages += len(got)
                step.objects += sum(a.n for a in got)
                flat = sorted(a.t for a in got for _ in range(a.n))
                for i, t_pub in enumerate(sorted(per_src[id(p)])):
                    if i < len(flat):
                        step.lags.append(max(0.0, flat[i] - t_pub))
                        step.timed_lags.append((t_pub, step.lags[-1]))
                    else:
                        step.lost += 1
        step.rate_limited = sum(1 for q in peers for t in getattr(q, "limited", ()) if t >= start)
    return step


class Ladder:
    """Rising rates until one is not sustained, then (``refine``) one step halfway back."""

    def __init__(
        self,
        label: str,
        peers: Sequence[Any],
        rates: Sequence[float],
        publish: Callable[[Any, list[int]], Any],
        pool: ThreadPoolExecutor | None,
        burst: int = 1,
        refine: bool = True,
        prepare: Callable[[float, float, int], None] | None = None,
    ):
        self.label, self.peers, self.publish, self.pool, self.burst = label, peers, publish, pool, burst
        self.prepare = prepare  # (rate, duration, burst): work before a step that its clock must not see
        self.todo = list(rates)
        self.refine = refine
        self.went_lower = False
        self.best = 0.0
        self.failed_at: float | None = None
        self.steps: list[Step] = []

    def next_rate(self) -> float | None:
        if self.failed_at is None:
            return self.todo.pop(0) if self.todo else None
        if self.best == 0 and not self.went_lower:
            # Even the first rate failed (a busy machine): try half of it once, rather than report 0.
            self.went_lower = True
            return self.failed_at / 2
        if self.refine and self.best > 0:
            self.refine = False
            mid = round((self.best + self.failed_at) / 2)
            if self.best < mid < self.failed_at:
                return mid
        return None

    def cpu_ms_per_object(self) -> float:
        """CPU of all N processes per object over every step: a figure the machine's other load barely moves."""
        n = sum(s.published for s in self.steps)
        return sum(s.cpu_s for s in self.steps) * 1000 / n if n else float("nan")

    def cpu_ms_per_object_net(self, idle_cores: float) -> float:
        """:meth:`cpu_ms_per_object` less what the N processes burn idle (``idle_cores``: their idle CPU
        seconds per second), so the per-message cost is not swamped by heartbeats at low rates."""
        n = sum(s.published for s in self.steps)
        busy = sum(s.cpu_s - idle_cores * s.wall_s for s in self.steps)
        return max(0.0, busy) * 1000 / n if n else float("nan")

    def record(self, step: Step) -> None:
        self.steps.append(step)
        _print_step(self.label, step)
        if step.ok:
            self.best = max(self.best, step.rate)
        elif self.failed_at is None or step.rate < self.failed_at:
            self.failed_at = step.rate


def idle_cores(systems: Sequence[Sequence[Any]], seconds: float) -> list[float]:
    """CPU seconds per second that each system's processes spend with nothing published (all at once)."""
    before = [sum(cpu_s(p.pid) for p in peers) for peers in systems]
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    return [(sum(cpu_s(p.pid) for p in peers) - b) / wall for peers, b in zip(systems, before, strict=True)]


def climb(ladders: Sequence[Ladder], duration: float, rng: random.Random, counter: list[int], deadline: float) -> None:
    """Run the ladders' steps taking turns (each system's step next to the other's), until all are done."""
    active = list(ladders)
    while active:
        for ladder in list(active):
            rate = ladder.next_rate()
            if rate is None or time.monotonic() > deadline:
                if rate is not None:
                    say(f"  {ladder.label}: out of time for higher rates")
                active.remove(ladder)
                continue
            if ladder.failed_at is not None:
                time.sleep(1.0)  # the overload of the failed step clears before the refinement
            if ladder.prepare is not None:
                ladder.prepare(rate, duration, ladder.burst)
            ladder.record(
                run_step(ladder.peers, rate, duration, rng, ladder.publish, ladder.pool, counter, ladder.burst)
            )
            time.sleep(0.3)


def _print_step(label: str, step: Step) -> None:
    s = step.summary()
    extra = f", {s['objects_per_message']} obj/msg" if s["objects_per_message"] else ""
    extra += f", {s['cpu_ms_per_object']} CPU ms/obj" if s["cpu_ms_per_object"] else ""
    extra += f", {step.rate_limited} rate-limit rejections" if step.rate_limited else ""
    say(
        f"  {label} {step.rate:5g}/s (actual {s['actual_rate']:5.1f}/s, {step.published} sent): "
        f"lag p50 {s['lag_p50_ms']} ms, p95 {s['lag_p95_ms']} ms, max {s['lag_max_ms']} ms,"
        f" growth {s['lag_growth_ms']} ms, lost {step.lost}, "
        f"errors {step.publish_errors}{extra} -> {'ok' if step.ok else 'FALLS BEHIND'}"
    )


# ------------------------------------------------------------------------ catch-up


def _book_rows(path: Path) -> int:
    """Objects in a stopped node's offer-book file."""
    import sqlite3

    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM objects").fetchone()[0])
    finally:
        db.close()


def _sessions_of(node: NodePeer, nodes: Sequence[NodePeer], since: float) -> list[SyncLine]:
    """Sync sessions since ``since`` that involve ``node``, logged by it or by its peers (the initiator logs)."""
    with EVENTS:
        mine = [s for s in node.syncs if s.t >= since]
        theirs = [s for x in nodes if x is not node for s in x.syncs if s.peer == node.short and s.t >= since]
    return mine + theirs


def _host_up(node: NodePeer, since: float) -> float | None:
    """When the node logged its listen address (its host runs; the bootstrap dials start right then)."""
    hits = node.grep(r"listening on /", since)
    return hits[0][0] if hits else None


def differ_by_10(swarm: LocalSwarm, nodes: list[NodePeer], meanwhile: Callable[[], None]) -> dict[str, Any]:
    """Stop a node, publish 10 listings while it is down, restart it: time and bytes to reconcile.

    GossipSub re-offers messages from its cache (IHAVE/IWANT) to a peer that just connected, so the
    node is restarted only once the 10 are older than the cache's memory: then only sync can bring
    them. ``meanwhile`` (the newcomer test) runs during that wait.
    """
    victim = nodes[-1]
    others = nodes[:-1]
    agreed = poll(lambda: len({x.book_size() for x in nodes}) == 1, 10, interval=0.2)
    try:
        code: int | str = swarm.stop_node(victim.idx)
    except SwarmError as exc:  # killed after the bounded wait
        code = str(exc).splitlines()[0]
    before = _book_rows(swarm.home(victim.idx).book_db)
    marks = _marks(others)
    ids, per_src = [], defaultdict(int)
    for k in range(10):
        src = others[k % len(others)]
        ids.append(src.publish(10**8 + k)["id"])
        per_src[src.short] += 1
    delivered = wait_for(
        lambda: all(
            _arrived(q, p.short, marks[id(q)], per_src[p.short]) is not None
            for q in others
            for p in others
            if p is not q and per_src[p.short]
        ),
        15,
    )
    t_last = time.monotonic()
    sizes = [x.book_size() for x in others]
    target = max(sizes)
    raw_size = statistics.mean(len(others[0].client().get(i, raw=True)["raw"]) // 2 for i in ids)
    meanwhile()
    time.sleep(max(0.0, t_last + GOSSIP_MEMORY_S - time.monotonic()))
    t_launch = time.monotonic()
    swarm.start_node(victim.idx, wait=False)
    victim.restarted()
    swarm.wait_up(victim.idx)
    done = poll(lambda: victim.book_size() >= target, 30)
    t_done = time.monotonic()
    time.sleep(SETTLE_S)  # its sessions with its other peers end too
    sessions = _sessions_of(victim, nodes, t_launch)
    host_up = _host_up(victim, t_launch)
    recon = [max(0, s.total - round((s.fetched + s.pushed) * raw_size)) for s in sessions]
    return {
        "stop_exit_code": code,
        "books_agreed_before": agreed,
        "book_before": before,
        "delivered_to_others": delivered,
        "peers_agree": len(set(sizes)) == 1,
        "book": target,
        "complete": done,
        "time_from_launch_s": round(t_done - t_launch, 2),
        "time_from_host_up_s": round(t_done - host_up, 2) if host_up else None,
        "sessions": len(sessions),
        "bytes_per_session": [s.total for s in sessions],
        "reconcile_bytes_per_session": recon,
        "reconcile_bytes_max": max(recon, default=0),
        "rounds": [s.rounds for s in sessions],
        "objects_moved": [s.fetched + s.pushed for s in sessions],
        "by_sync": sum(s.new for s in sessions) >= 10 or sum(s.fetched + s.pushed for s in sessions) >= 10,
        "full_id_list_bytes": target * ID_BYTES,
    }


def newcomer(swarm: LocalSwarm, nodes: list[NodePeer], tailer: Tailer) -> tuple[dict[str, Any], int]:
    """A node with an empty book dials node 0: time until it holds the whole book, and the bytes."""
    target = nodes[0].book_size()
    t_launch = time.monotonic()
    idx = swarm.add_node(bootstrap=[0], wait=False)
    t_launch = time.monotonic()  # add_node ran `init` first; the process starts now
    new = NodePeer(swarm, idx)
    new.started_at = t_launch
    tailer.watch(swarm.log_path(idx), new)
    swarm.wait_up(idx)
    done = poll(lambda: new.book_size() >= target, 120, interval=0.1)
    t_done = time.monotonic()
    held = new.book_size()
    time.sleep(SETTLE_S)
    sessions = _sessions_of(new, [*nodes, new], t_launch)
    host_up = _host_up(new, t_launch)
    total = sum(s.total for s in sessions)
    return {
        "book": target,
        "held": held,
        "complete": done,
        "time_from_launch_s": round(t_done - t_launch, 2),
        "time_from_host_up_s": round(t_done - host_up, 2) if host_up else None,
        "sessions": len(sessions),
        "bytes_per_session": [s.total for s in sessions],
        "bytes_total": total,
        "bytes_per_listing": round(total / max(1, target), 1),
        "initiated_by": sorted({"newcomer" if s.at == new.short else "old node" for s in sessions}),
        "rss_mb": round(rss_mb(new.pid), 1),
    }, idx


# ------------------------------------------------------------------------ the run


def run(args: argparse.Namespace, tmp: Path, cleanup: list[Callable[[], Any]]) -> dict[str, Any]:
    rng = random.Random(args.seed)
    n = args.nodes
    quick = args.quick
    global SETTLE_S
    SETTLE_S = 0.5 if quick else 1.0
    book_n = args.book or (2_000 if quick else 10_000)
    lat_count = 40 if quick else 100  # p95 of 15 samples would be their maximum: one stall decides it
    step_s = 1.5 if quick else 4.0
    rates = [5, 10, 20, 40, 80, 160, 320, 640, 1280]
    burst_rates = [10, 20, 40, 80, 160, 320, 640, 1280, 2560]
    phases: dict[str, float] = {}
    net = f"bench-{os.getpid()}"  # our own network name: no other swarm on this machine mixes in
    raw_size, msg_size = bench_listing_sizes()
    f: dict[str, Any] = {
        "nodes": n,
        "quick": quick,
        "book": book_n,
        "cores": len(os.sched_getaffinity(0)),
        "loadavg_start": loadavg(),
        "listing_bytes": raw_size,
        "payload_bytes": msg_size,
    }
    note = " (--quick: a 2k book instead of 10k)" if quick and not args.book else ""
    say(
        f"{stamp()} swarm bench: {n} nodes on 127.0.0.1, {f['cores']} cores, load average {f['loadavg_start']},"
        f" book of {book_n} listings{note}"
    )
    if f["loadavg_start"] > f["cores"]:
        say(
            f"  WARNING: the machine is already busy (load {f['loadavg_start']} on {f['cores']} cores):"
            " every figure will suffer"
        )

    base = tmp / "swarm"
    base.mkdir()
    t = time.monotonic()
    build_book(tmp / "book.sqlite", book_n)
    prepare_homes(base, n, tmp / "book.sqlite")
    f["book_build_s"] = round(time.monotonic() - t, 1)
    say(
        f"{stamp()} built the book and {n} homes ({f['book_build_s']} s); a listing is {raw_size} B,"
        f" its gossip message {msg_size} B"
    )

    tailer = Tailer()
    tailer.start()
    cleanup.append(tailer.stop)

    # The bare peers start alongside the first (small) waves of nodes, which leave a core idle.
    bare = [BarePeer(i, tmp / f"bare{i}.log", net + "-bare") for i in range(n)]
    cleanup.append(lambda: stop_bare(bare))
    for b in bare:
        tailer.watch(b.log, b)
    swarm = LocalSwarm(n, net=net, base_dir=base, seed=args.seed)
    cleanup.append(swarm.close)
    t = time.monotonic()
    swarm.start()
    f["node_start_s"] = phases["start_s"] = round(time.monotonic() - t, 1)
    nodes = [NodePeer(swarm, i) for i in range(n)]
    for x in nodes:
        tailer.watch(swarm.log_path(x.idx), x)
    dial_edges = {(min(i, j), max(i, j)) for i in range(n) for j in swarm.nodes[i].bootstrap_from}
    time.sleep(2.0)  # the nodes find each other beyond the peers they dialled (DHT, identify)
    edges = connection_graph(swarm)
    f["dial_edges"], f["edges"] = len(dial_edges), len(edges)
    connect_bare(bare, edges)
    say(
        f"{stamp()} {n} nodes up in {f['node_start_s']} s (LocalSwarm waves), {len(dial_edges)} dial edges,"
        f" {len(edges)} connections after discovery; {n} bare gossipsub peers up with the same connections"
    )
    time.sleep(2.0)  # a couple of heartbeats for the meshes (docs/LIBP2P.md §24) and the nodes' first syncs
    rss_start = [rss_mb(x.pid) for x in nodes]
    f["bare_rss_mb"] = round(statistics.median(rss_mb(b.pid) for b in bare), 1)

    def node_publish(p: NodePeer, ks: list[int]) -> None:
        if len(ks) == 1:
            p.publish(ks[0])
        else:  # a burst is one import (POST /v1/listings/import), as a shop's catalogue would be
            p.publish_many(ks)

    def bare_publish(p: BarePeer, ks: list[int]) -> None:
        for k in ks:  # bare gossipsub has no batching: a message per object, as another developer would
            p.publish(k, msg_size)

    def bare_publish_timed(p: BarePeer, k: int) -> float:
        t0 = time.monotonic()
        p.publish(k, msg_size)
        return t0

    # ---------------------------------------------------------------- time-to-all
    t = time.monotonic()
    bare_lat, node_lat = measure_latency([(bare, bare_publish_timed), (nodes, NodePeer.publish_timed)], lat_count, rng)
    for label, lat in (("bare", bare_lat), ("node", node_lat)):
        s = lat.summary()
        say(
            f"{stamp()} {label} time-to-all over {s['n']}: p50 {s['p50_ms']} ms, p95 {s['p95_ms']} ms,"
            f" max {s['max_ms']} ms, missing {s['missing']}"
        )
        say(
            f"    first other peer p50 {s['first_peer_p50_ms']} ms; publish call p50 {s['publish_call_p50_ms']} ms"
            + (f"; stored at the origin p50 {s['stored_at_origin_p50_ms']} ms" if s["stored_at_origin_p50_ms"] else "")
        )
    phases["latency_s"] = round(time.monotonic() - t, 1)

    # ---------------------------------------------------------------- catch-up
    t = time.monotonic()
    newc: dict[str, Any] = {}

    def run_newcomer() -> None:
        result, idx = newcomer(swarm, nodes, tailer)
        newc.update(result)
        say(
            f"{stamp()} newcomer: the book of {newc['book']} in {newc['time_from_launch_s']} s from launch"
            f" ({newc['time_from_host_up_s']} s after its host was up), {newc['sessions']} session(s),"
            f" {newc['bytes_total']} B ({newc['bytes_per_listing']} B/listing), initiated by {newc['initiated_by']}"
        )
        try:
            newc["stop_exit_code"] = swarm.stop_node(idx)  # the rest runs on the N nodes again
        except SwarmError as exc:  # killed after the bounded wait: a finding, not a reason to stop the bench
            newc["stop_exit_code"] = str(exc).splitlines()[0]

    d10 = differ_by_10(swarm, nodes, run_newcomer)
    say(
        f"{stamp()} books of {d10['book_before']} and {d10['book']}: in sync {d10['time_from_launch_s']} s"
        f" after the restart ({d10['time_from_host_up_s']} s after its host was up); {d10['sessions']} session(s):"
        f" {d10['bytes_per_session']} B, of which reconciliation {d10['reconcile_bytes_per_session']} B;"
        f" full id list {d10['full_id_list_bytes']} B" + ("" if d10["by_sync"] else " (NOT moved by sync?)")
    )
    phases["catch_up_s"] = round(time.monotonic() - t, 1)
    time.sleep(SETTLE_S)

    # ---------------------------------------------------------------- throughput
    # Bursts by many authors (relayed), or by the N nodes themselves (imports): each author may publish
    # 5 objects/s (PROTOCOL.md §13), so N authors cap the swarm at N x 4/s whatever its capacity.
    relayed = RelayedAuthors(nodes, args.authors) if args.authors else None
    burst_authors = f"{relayed.count} authors, relayed" if relayed else f"the {n} nodes' own, imported"
    f["burst_authors"] = relayed.count if relayed else n
    idle = idle_cores([nodes, bare], 2.0 if quick else 5.0)
    f["idle_cpu_share_per_process"] = {"node": round(idle[0] / n, 4), "bare": round(idle[1] / n, 4)}
    t = time.monotonic()
    counter = [0]
    with ThreadPoolExecutor(max_workers=4 * BURST) as pool:
        bare_ladder = Ladder("bare ", bare, rates, bare_publish, None, refine=not quick)
        node_ladder = Ladder("node ", nodes, rates, node_publish, pool, refine=not quick)
        climb([bare_ladder, node_ladder], step_s, rng, counter, time.monotonic() + (20 if quick else 300))
        bare_rate, node_rate = bare_ladder.best, node_ladder.best
        say(
            f"{stamp()} bare gossipsub sustains {bare_rate:g} messages/s; the node swarm {node_rate:g} objects/s"
            f" (uniform publishing)"
        )
        time.sleep(SETTLE_S)
        # Bursts start at the uniform rate the swarm sustained: the question is how far batching lifts it.
        start_at = [r for r in burst_rates if r >= node_rate] or burst_rates[-1:]
        burst_ladder = Ladder(
            f"burst{BURST}",
            nodes,
            start_at,
            relayed.publish if relayed else node_publish,
            pool,
            burst=BURST,
            refine=not quick,
            prepare=relayed.prepare if relayed else None,
        )
        climb([burst_ladder], step_s, rng, counter, time.monotonic() + (15 if quick else 120))
        burst_rate = burst_ladder.best
        say(f"{stamp()} the node swarm sustains {burst_rate:g} objects/s in bursts of {BURST} ({burst_authors})")
    bare_steps, node_steps, burst_steps = bare_ladder.steps, node_ladder.steps, burst_ladder.steps
    ladders = {"bare": bare_ladder, "node": node_ladder, "burst": burst_ladder}
    idle_of = {"bare": idle[1], "node": idle[0], "burst": idle[0]}
    cpu_cost = {k: x.cpu_ms_per_object() for k, x in ladders.items()}
    cpu_net = {k: x.cpu_ms_per_object_net(idle_of[k]) for k, x in ladders.items()}
    # The rate at which the N processes would fill the cores (no queueing): what their idle work (heartbeats,
    # pings) leaves, over the CPU each object adds. Before 2026-12-05 this was cores / (all CPU per object at
    # the steps' own rates), which charged the idle work per object at whatever rate a step ran: the slower
    # system's steps (bare's) had less idle work per object, and a saturated swarm still runs its heartbeats.
    ceiling = {k: (f["cores"] - idle_of[k]) * 1000 / v if v > 0 else float("nan") for k, v in cpu_net.items()}
    say(
        f"    less idle CPU (node {idle[0]:.2f}, bare {idle[1]:.2f} cores for {n} processes): bare"
        f" {cpu_net['bare']:.1f} ms, node {cpu_net['node']:.1f} ms, bursts {cpu_net['burst']:.1f} ms per object"
    )
    say(
        f"    CPU per object, all processes: bare {cpu_cost['bare']:.0f} ms, node {cpu_cost['node']:.0f} ms,"
        f" node in bursts {cpu_cost['burst']:.0f} ms; CPU-bound ceilings on {f['cores']} cores (what idle work"
        f" leaves / CPU per object less idle): {ceiling['bare']:.0f} / {ceiling['node']:.0f} /"
        f" {ceiling['burst']:.0f} per s"
    )
    phases["throughput_s"] = round(time.monotonic() - t, 1)
    bad_bare = stop_bare(bare)
    time.sleep(SETTLE_S)

    time.sleep(SETTLE_S)  # idle before the last RSS reading
    rss_end = [rss_mb(x.pid) for x in nodes]
    f["book_end"] = nodes[0].book_size()
    f["loadavg_end"] = loadavg()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    f["bench_process_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)
    t = time.monotonic()
    swarm.close()  # SIGTERM to all at once, bounded wait, SIGKILL stragglers
    phases["stop_s"] = round(time.monotonic() - t, 1)
    f["phases_s"] = phases
    stop_codes = {f"node{x.index}": x.process.returncode for x in swarm.nodes if x.process is not None}

    f["bare"] = {
        "time_to_all": bare_lat.summary(),
        "msgs_per_s": bare_rate,
        "steps": [s.summary() for s in bare_steps],
        "unclean_exits": bad_bare,
    }
    f["node"] = {
        "time_to_all": node_lat.summary(),
        "objects_per_s": node_rate,
        "steps": [s.summary() for s in node_steps],
        "burst_objects_per_s": burst_rate,
        "burst_steps": [s.summary() for s in burst_steps],
        "rss_mb_start": {"median": round(statistics.median(rss_start), 1), "max": round(max(rss_start), 1)},
        "rss_mb_end": {"median": round(statistics.median(rss_end), 1), "max": round(max(rss_end), 1)},
        "unclean_exits": {k: v for k, v in stop_codes.items() if v != 0},
        "log_trouble": {x.name: x.trouble[:3] for x in nodes if x.trouble},
    }
    f["catch_up"] = {"differ_by_10": d10, "newcomer": newc}
    f["cpu_ms_per_object"] = {k: round(v, 1) for k, v in cpu_cost.items()}
    f["cpu_ms_per_object_net_of_idle"] = {k: round(v, 1) for k, v in cpu_net.items()}
    f["cpu_ms_per_object_per_node_net_of_idle"] = {k: round(v / n, 2) for k, v in cpu_net.items()}
    f["cpu_bound_ceiling_per_s"] = {k: round(v, 1) for k, v in ceiling.items()}

    p95_ratio = node_lat.summary()["p95_ms"] / bare_lat.summary()["p95_ms"]
    thr = node_rate / bare_rate if bare_rate else float("nan")  # nan: bare kept up with no rate at all
    burst_thr = burst_rate / bare_rate if bare_rate else float("nan")
    rec_pct = d10["reconcile_bytes_max"] / d10["full_id_list_bytes"] * 100 if d10["sessions"] else float("nan")
    rss_max = f["node"]["rss_mb_start"]["max"]
    f["ratios"] = {
        "time_to_all_p95_vs_bare": round(p95_ratio, 2),
        "throughput_vs_bare_msgs": round(thr, 2),
        "burst_throughput_vs_bare_msgs": round(burst_thr, 2),
        "cpu_ceiling_vs_bare": round(ceiling["node"] / ceiling["bare"], 2),
        "burst_cpu_ceiling_vs_bare": round(ceiling["burst"] / ceiling["bare"], 2),
        "reconcile_pct_of_id_list": round(rec_pct, 2),
        "idle_rss_mb_max": round(rss_max, 1),
    }
    f["goals"] = {
        "time_to_all_p95_within_1.3x": p95_ratio <= GOAL_P95_RATIO,
        "throughput_10x_uniform": thr >= GOAL_THROUGHPUT_RATIO,
        "throughput_10x_bursts": burst_thr >= GOAL_THROUGHPUT_RATIO,
        "reconcile_under_5pct": rec_pct < GOAL_RECONCILE_PCT,
        "idle_rss_under_150mb": rss_max < GOAL_RSS_MB,
    }
    return f


def report(f: dict[str, Any]) -> None:
    r, g = f["ratios"], f["goals"]
    bare, node = f["bare"]["time_to_all"], f["node"]["time_to_all"]
    d, c = f["catch_up"]["differ_by_10"], f["catch_up"]["newcomer"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    def x(ratio: float) -> str:
        return "n/a" if ratio != ratio else f"{ratio}x"

    say()
    say(
        f"time-to-all  node p50 {node['p50_ms']} / p95 {node['p95_ms']} ms;"
        f" bare {bare['p50_ms']} / {bare['p95_ms']} ms -> p95 {x(r['time_to_all_p95_vs_bare'])}"
        f" (goal <= {GOAL_P95_RATIO}x: {verdict(g['time_to_all_p95_within_1.3x'])})"
    )
    say(
        f"throughput   node {f['node']['objects_per_s']:g} objects/s uniform,"
        f" {f['node']['burst_objects_per_s']:g} in bursts of {BURST} by {f['burst_authors']} authors;"
        f" bare {f['bare']['msgs_per_s']:g} messages/s"
        f" -> {x(r['throughput_vs_bare_msgs'])} / {x(r['burst_throughput_vs_bare_msgs'])}"
        f" (goal >= {GOAL_THROUGHPUT_RATIO:g}x: {verdict(g['throughput_10x_uniform'])}"
        f" / {verdict(g['throughput_10x_bursts'])})"
    )
    ce = f["cpu_bound_ceiling_per_s"]
    say(
        f"  CPU-bound ceilings ((cores - idle) / CPU per object less idle): node {ce['node']:g} uniform,"
        f" {ce['burst']:g} in bursts;"
        f" bare {ce['bare']:g} -> {x(r['cpu_ceiling_vs_bare'])} / {x(r['burst_cpu_ceiling_vs_bare'])}"
    )
    say(
        f"reconcile    books of {d['book']} differing by 10: {d['reconcile_bytes_max']} B per session"
        f" vs {d['full_id_list_bytes']} B id list -> {r['reconcile_pct_of_id_list']} %"
        f" (goal < {GOAL_RECONCILE_PCT:g} %: {verdict(g['reconcile_under_5pct'])});"
        f" in sync {d['time_from_launch_s']} s after restart"
    )
    say(
        f"newcomer     {c['held']}/{c['book']} listings in {c['time_from_launch_s']} s from launch,"
        f" {c['bytes_total']} B in {c['sessions']} session(s)"
    )
    say(
        f"idle RSS     max {r['idle_rss_mb_max']} MB per node with {f['book']} listings"
        f" (bare peer {f['bare_rss_mb']} MB) (goal < {GOAL_RSS_MB:g} MB: {verdict(g['idle_rss_under_150mb'])});"
        f" after the throughput test, with {f['book_end']}: {f['node']['rss_mb_end']['max']} MB"
    )
    say(
        f"load average {f['loadavg_start']} at start, {f['loadavg_end']} at end, on {f['cores']} cores;"
        f" wall {f['wall_s']} s, CPU {f['cpu_s']} s (bench and every process it started)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under 60 s on 2 cores: a 2k book, fewer samples")
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--book", type=int, default=0, help="listings in the pre-built book (default 10k, 2k quick)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--authors",
        type=int,
        default=50,
        help="authors of the bursts, relayed through the nodes (POST /v1/objects); 0: the nodes' own (imports)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the homes and logs (their path is printed)")
    args = parser.parse_args()
    if args.nodes < 2:
        parser.error("--nodes must be at least 2")

    return run_bench(args, run, report, prefix="swapmeet-swarm-bench-", started=T0, say=say)


if __name__ == "__main__":
    sys.exit(main())

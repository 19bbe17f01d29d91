"""A swarm cut in two for 60 s heals within seconds of the link's return (issue 16; docs/LIBP2P.md §65).

Six real ``swapmeet node run`` processes, each in a network namespace of its own
(addresses from 198.18.0.0/15), three on bridge A and three on bridge B of a
hub namespace, each half a line; the two bridges are joined by one veth pair,
the *link*. One connection crosses it. The cut takes both ends of the link down inside the hub:
the nodes' own interfaces stay up and their packets vanish silently at the
bridge, as on a cut cable, so the crossing TCP connections stay open in
retransmission backoff (the kernel closes nothing). (``tc netem`` is not
available in this kernel.)

While cut, both halves publish and one node of A withdraws a listing both halves
held. After ``CUT_S`` (60 s) the link returns, and every node must hold the same
live book, the union of both halves' work, within ``HEAL_BOUND_S`` (20 s).
Without liveness that took 50-53 s in the issue's lab and 25-29 s in this one
(whatever was left of the retransmission timer); the heal time is printed.

The CLI for a node runs in the node's namespace (its API listens on that
namespace's 127.0.0.1). Every wait is bounded; every process is stopped and
every namespace deleted in a ``finally``. Skipped, with the reason, where
namespaces cannot be made (not root, no ``ip``, or refused).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import pytest

pytestmark = pytest.mark.slow

CUT_S = float(os.environ.get("SWAPMEET_PARTITION_CUT_S", "60"))
# Without liveness: 50-53 s in the lab, 25.0 and 29.1 s in this one (the nodes of the commit
# before node/host/liveness.py); with it: 4.9-11.1 s, the CLI polls included.
HEAL_BOUND_S = 20.0
NODES = 6
HALF = 3
PORT = 4001
CMD_TIMEOUT = 20.0
CLI_TIMEOUT = 60.0
START_TIMEOUT = 90.0
SUBNET = "198.18.70"


def ip_of(i: int) -> str:
    return f"{SUBNET}.{10 + i}"


def lab_unavailable() -> str | None:
    """Why no namespace lab can be built here, in one sentence; None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip",):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    probe = f"smprobe{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=CMD_TIMEOUT)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=CMD_TIMEOUT)
    return None


def run(*argv: str) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=CMD_TIMEOUT)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {out.stderr.strip()}")
    return out.stdout


class Lab:
    """The namespaces, links and node processes of one run; :meth:`close` removes everything."""

    def __init__(self, base: Path) -> None:
        tag = secrets.token_hex(3)
        self.tag = tag
        self.hub = f"smp{tag}hub"
        self.ns = [f"smp{tag}n{i}" for i in range(NODES)]
        self.base = base
        self.net = f"part{tag}"
        self.homes = [base / f"node{i}" for i in range(NODES)]
        self.peer_ids: list[str] = []
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * NODES
        self.logs: list[IO[bytes] | None] = [None] * NODES
        self.made: list[str] = []

    # -------------------------------------------------------------- network

    def build(self) -> None:
        run("ip", "netns", "add", self.hub)
        self.made.append(self.hub)
        run("ip", "-n", self.hub, "link", "set", "lo", "up")
        for br in ("brA", "brB"):
            run("ip", "-n", self.hub, "link", "add", br, "type", "bridge")
            run("ip", "-n", self.hub, "link", "set", br, "up")
        run("ip", "-n", self.hub, "link", "add", "linkA", "type", "veth", "peer", "name", "linkB")
        for end, br in (("linkA", "brA"), ("linkB", "brB")):
            run("ip", "-n", self.hub, "link", "set", end, "master", br)
            run("ip", "-n", self.hub, "link", "set", end, "up")
        for i, ns in enumerate(self.ns):
            run("ip", "netns", "add", ns)
            self.made.append(ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
            inner, outer = f"v{self.tag}{i}", f"w{self.tag}{i}"
            run("ip", "-n", ns, "link", "add", inner, "type", "veth", "peer", "name", outer, "netns", self.hub)
            run("ip", "-n", ns, "addr", "add", f"{ip_of(i)}/24", "dev", inner)
            run("ip", "-n", ns, "link", "set", inner, "up")
            run("ip", "-n", self.hub, "link", "set", outer, "master", "brA" if i < HALF else "brB")
            run("ip", "-n", self.hub, "link", "set", outer, "up")

    def cut(self) -> None:
        for end in ("linkA", "linkB"):
            run("ip", "-n", self.hub, "link", "set", end, "down")

    def restore(self) -> None:
        for end in ("linkA", "linkB"):
            run("ip", "-n", self.hub, "link", "set", end, "up")

    # -------------------------------------------------------------- nodes

    def cli(self, i: int, *args: str, timeout: float = CLI_TIMEOUT) -> str:
        argv = ["ip", "netns", "exec", self.ns[i], sys.executable, "-m", "swapmeet.cli.main"]
        out = subprocess.run([*argv, "--home", str(self.homes[i]), *args], capture_output=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"node {i}: {' '.join(args)}: {out.stdout.decode()} {out.stderr.decode()}")
        return out.stdout.decode()

    def init(self) -> None:
        with ThreadPoolExecutor(NODES) as pool:
            list(pool.map(lambda i: self.cli(i, "init", "--no-passphrase"), range(NODES)))
            self.peer_ids = list(pool.map(lambda i: json.loads(self.cli(i, "id", "--json"))["peer_id"], range(NODES)))

    def addr(self, j: int) -> str:
        return f"/ip4/{ip_of(j)}/tcp/{PORT}/p2p/{self.peer_ids[j]}"

    def start(self, i: int, dials: list[int]) -> None:
        argv = ["ip", "netns", "exec", self.ns[i], sys.executable, "-m", "swapmeet.cli.main"]
        argv += ["--home", str(self.homes[i]), "node", "run", "--listen", f"/ip4/{ip_of(i)}/tcp/{PORT}"]
        argv += ["--net", self.net, "--no-mdns", "--no-dht"]
        for j in dials:
            argv += ["--bootstrap", self.addr(j)]
        self.logs[i] = open(self.base / f"node{i}.log", "ab")  # noqa: SIM115 - closed in close()
        self.procs[i] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.logs[i], stderr=subprocess.STDOUT)

    def status(self, i: int) -> dict[str, Any]:
        return json.loads(self.cli(i, "node", "status", "--json"))

    def book(self, i: int) -> set[str]:
        return {x["id"] for x in json.loads(self.cli(i, "listings", "--json", "--limit", "1000"))}

    def books(self) -> list[set[str]]:
        with ThreadPoolExecutor(NODES) as pool:
            return list(pool.map(self.book, range(NODES)))

    def publish(self, i: int, title: str) -> str:
        return json.loads(self.cli(i, "publish", "--json", "--title", title, "--have", "1 x thing"))["id"]

    def log_tail(self, i: int) -> str:
        path = self.base / f"node{i}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-40:]) if path.exists() else ""

    def close(self) -> None:
        for p in self.procs:
            if p is not None and p.poll() is None:
                with contextlib.suppress(OSError):
                    p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in self.procs:
            if p is None:
                continue
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        for f in self.logs:
            if f is not None:
                f.close()
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=CMD_TIMEOUT)


def wait(pred: Any, timeout: float, what: str, interval: float = 0.5) -> float:
    """Poll ``pred()`` until true; the seconds it took. Raises AssertionError after ``timeout``."""
    started = time.monotonic()
    while True:
        with contextlib.suppress(RuntimeError, ValueError, subprocess.TimeoutExpired):
            if pred():
                return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(interval)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    reason = lab_unavailable()
    if reason is not None:
        pytest.skip(reason)
    lab = Lab(tmp_path)
    try:
        lab.build()
        lab.init()
        yield lab
    finally:
        lab.close()


# Who dials whom: a line inside each half, and one connection across the link (3 - 0). What one
# node of a half learns over it reaches the others of its half by book sync's cascade (node/booksync.py),
# not by gossip: objects that book sync brings are not gossiped on.
DIALS = {0: [], 1: [0], 2: [1], 3: [0], 4: [3], 5: [4]}


def test_books_agree_within_seconds_after_a_60_s_cut(lab: Lab) -> None:
    for i in range(NODES):
        lab.start(i, DIALS[i])
    try:
        wait(lambda: all(lab.status(i)["peers"] >= 1 for i in range(NODES)), START_TIMEOUT, "nodes up")
        first = [lab.publish(i, f"before cut {i}") for i in range(NODES)]
        before = set(first)
        wait(lambda: all(b == before for b in lab.books()), 60, "the first listings everywhere")

        lab.cut()
        cut_at = time.monotonic()
        withdrawn = first[0]  # node 0's own, withdrawn on side A while side B still shows it
        lab.cli(0, "withdraw", withdrawn)
        during = {lab.publish(i, f"during cut {i}.{k}") for i in range(NODES) for k in range(2)}
        expected = (before - {withdrawn}) | during
        time.sleep(max(0.0, CUT_S - (time.monotonic() - cut_at)))

        lab.restore()
        heal = wait(lambda: all(b == expected for b in lab.books()), 120, "the same book everywhere", interval=0.2)
        print(f"\nbooks agree {heal:.1f} s after the link returned (cut {CUT_S:g} s)")
        assert heal <= HEAL_BOUND_S, f"books agreed only {heal:.1f} s after the link returned"
    except AssertionError:
        for i in range(NODES):
            print(f"--- node {i}\n{lab.log_tail(i)}")
        raise

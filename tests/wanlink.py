"""A userspace WAN between network namespaces: per-link delay, jitter, loss and cuts (not a test module).

This kernel has no ``sch_netem`` (``tc qdisc add ... netem``: "Specified qdisc kind is unknown"), so the WAN is a
process of its own: :class:`Wan` starts ``python tests/wanlink.py`` (this file run as a script),
which opens one TUN device per *site* (``/dev/net/tun``, ``TUNSETIFF`` with ``IFF_TUN|IFF_NO_PI``),
moves it into the site's namespace as ``wan0`` with the address ``198.19.0.<10+i>/24`` (the
benchmarking range 198.18.0.0/15 only) and forwards the IPv4 packets the namespaces send between
them. A packet from site *i* to site *j* is dropped when the pair is cut (a partition, or a site
taken off the network; also when the cut comes while the packet is on its way) or with the link's
loss probability, else written to *j*'s TUN after the
link's one-way delay (plus jitter; a link never reorders). Delays are drawn once per unordered
pair, uniformly in ``delay_ms`` (so both directions of a link are equally slow). The forwarder is
one thread: non-blocking reads in batches, a heap of due packets, ``epoll`` waits until the next
one is due (timer resolution 1 ms).

Commands go to the forwarder's stdin as JSON lines, answers come back on its stdout
(:meth:`Wan.partition`, :meth:`Wan.heal`, :meth:`Wan.isolate`, :meth:`Wan.set_link`,
:meth:`Wan.stats`). :class:`WanLab` is a :class:`tests.netlab.Lab` whose nodes sit on such sites
(``lab.node(name, lab.sites[i])``) and whose ``close`` also stops the forwarder; its namespaces go
with the lab. :func:`netns` runs a block of the calling thread inside a namespace (sockets made
there stay there): the bench and the tests reach each node's local API (127.0.0.1 of its
namespace) that way, without a CLI process per call. :func:`offer_and_accept`, :func:`trade_row`,
:func:`outcome` and :func:`wait` are the trading steps ``tests/test_wan_faults.py`` and
``bench/scale.py --partition`` share.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import heapq
import json
import os
import random
import secrets
import selectors
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

if __package__ in (None, ""):  # run as a script: the forwarder process
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from swapmeet.protocol.errors import SwapmeetError

from tests.netlab import CMD_TIMEOUT, Lab, LabError, LabHome, run_command

T = TypeVar("T")

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
SUBNET = "198.19.0"
MAX_SITES = 240
READ_BATCH = 64  # packets read from one TUN before looking at the others
CLONE_NEWNET = 0x40000000
READY_TIMEOUT = 60.0


def site_ip(i: int) -> str:
    return f"{SUBNET}.{10 + i}"


# --------------------------------------------------------------------------- namespaces, per thread

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def netns(name: str) -> Iterator[None]:
    """Run the block in network namespace ``name`` (this thread only); sockets opened here stay in it."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


class InNs:
    """Every method call of ``obj`` made inside namespace ``ns`` (e.g. an ApiClient of a node there)."""

    def __init__(self, obj: Any, ns: str) -> None:
        self._obj = obj
        self._ns = ns

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._obj, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with netns(self._ns):
                return attr(*args, **kwargs)

        return call


# --------------------------------------------------------------------------- the forwarder process


class Forwarder:
    """The packet loop of the forwarder process; see the module docstring."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.n = int(config["sites"])
        self.rng = random.Random(config.get("seed", 1))
        lo, hi = config.get("delay_ms", (0, 0))
        self.delay = {}  # (i, j) -> seconds, both directions
        for i in range(self.n):
            for j in range(i + 1, self.n):
                self.delay[i, j] = self.delay[j, i] = self.rng.uniform(lo, hi) / 1000
        self.jitter = float(config.get("jitter_ms", 0)) / 1000
        self.loss = {k: float(config.get("loss", 0.0)) for k in self.delay}
        self.side = [0] * self.n  # sites on different sides cannot talk (0 everywhere: no partition)
        self.off: set[int] = set()  # sites off the network
        self.by_ip = {bytes(map(int, site_ip(i).split("."))): i for i in range(self.n)}
        self.fds: list[int] = []
        self.last_due: dict[tuple[int, int], float] = {}
        self.due: list[tuple[float, int, int, int, bytes]] = []  # (when, seq, from, to, packet)
        self.seq = 0
        keys = ("tx_pkts", "tx_bytes", "rx_pkts", "rx_bytes", "lost", "cut")
        self.counts = [dict.fromkeys(keys, 0) for _ in range(self.n)]
        self.lock = threading.Lock()

    def open_tuns(self, namespaces: Sequence[str], tag: str) -> None:
        for i, ns in enumerate(namespaces):
            name = f"smw{tag}{i}"[:15]
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
            self.fds.append(fd)
            run_command(["ip", "link", "set", name, "netns", ns])
            run_command(["ip", "-n", ns, "link", "set", name, "name", "wan0"])
            run_command(["ip", "-n", ns, "addr", "add", f"{site_ip(i)}/24", "dev", "wan0"])
            run_command(["ip", "-n", ns, "link", "set", "wan0", "txqueuelen", "10000", "up"])

    def command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd.get("op")
        with self.lock:
            if op == "partition":
                self.side = [0] * self.n
                for k, group in enumerate(cmd["groups"]):
                    for i in group:
                        self.side[i] = k + 1
            elif op == "heal":
                self.side = [0] * self.n
            elif op == "isolate":
                (self.off.add if cmd.get("off", True) else self.off.discard)(int(cmd["site"]))
            elif op == "link":
                i, j = int(cmd["a"]), int(cmd["b"])
                for key in ((i, j), (j, i)):
                    if "delay_ms" in cmd:
                        self.delay[key] = float(cmd["delay_ms"]) / 1000
                    if "loss" in cmd:
                        self.loss[key] = float(cmd["loss"])
            elif op == "stats":
                return {"ok": True, "sites": [dict(c) for c in self.counts]}
            elif op == "delays":
                rows = [[round(self.delay.get((i, j), 0) * 1000, 2) for j in range(self.n)] for i in range(self.n)]
                return {"ok": True, "delay_ms": rows}
            else:
                return {"ok": False, "error": f"unknown op {op!r}"}
        return {"ok": True}

    def _cut(self, i: int, j: int) -> bool:
        return i in self.off or j in self.off or bool(self.side[i] and self.side[j] and self.side[i] != self.side[j])

    def _take(self, i: int, now: float) -> None:
        fd = self.fds[i]
        for _ in range(READ_BATCH):
            try:
                pkt = os.read(fd, 65535)
            except BlockingIOError:
                return
            if len(pkt) < 20 or pkt[0] >> 4 != 4:
                continue  # not IPv4 (e.g. an IPv6 router solicitation): this WAN carries IPv4 only
            j = self.by_ip.get(pkt[16:20])
            if j is None or j == i:
                continue
            c = self.counts[i]
            c["tx_pkts"] += 1
            c["tx_bytes"] += len(pkt)
            if self._cut(i, j):
                c["cut"] += 1
                continue
            if self.loss[i, j] and self.rng.random() < self.loss[i, j]:
                c["lost"] += 1
                continue
            delay = self.delay[i, j] + (self.rng.uniform(-self.jitter, self.jitter) if self.jitter else 0.0)
            at = max(now + max(0.0, delay), self.last_due.get((i, j), 0.0))  # FIFO per link
            self.last_due[i, j] = at
            self.seq += 1
            heapq.heappush(self.due, (at, self.seq, i, j, pkt))

    def _deliver(self, now: float) -> None:
        while self.due and self.due[0][0] <= now:
            _, _, i, j, pkt = heapq.heappop(self.due)
            if self._cut(i, j):  # cut while on its way: lost as on a cut cable
                self.counts[i]["cut"] += 1
                continue
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self.fds[j], pkt)
                c = self.counts[j]
                c["rx_pkts"] += 1
                c["rx_bytes"] += len(pkt)

    def loop(self, stop: threading.Event) -> None:
        sel = selectors.EpollSelector()
        for i, fd in enumerate(self.fds):
            sel.register(fd, selectors.EVENT_READ, i)
        while not stop.is_set():
            now = time.monotonic()
            timeout = 0.2 if not self.due else max(0.0, self.due[0][0] - now)
            events = sel.select(timeout)
            now = time.monotonic()
            with self.lock:
                for key, _ in events:
                    self._take(key.data, now)
                self._deliver(time.monotonic())


def forwarder_main() -> int:
    config = json.loads(sys.argv[1])
    fwd = Forwarder(config)
    fwd.open_tuns(config["namespaces"], config["tag"])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker = threading.Thread(target=fwd.loop, args=(stop,), daemon=True)
    worker.start()
    print(json.dumps({"ok": True, "ready": True}), flush=True)
    for line in sys.stdin:
        if stop.is_set():
            break
        try:
            reply = fwd.command(json.loads(line))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            reply = {"ok": False, "error": repr(exc)}
        print(json.dumps(reply), flush=True)
    stop.set()
    worker.join(2.0)
    return 0


# --------------------------------------------------------------------------- the handle


class Wan:
    """The forwarder process for ``namespaces`` (site i = namespaces[i]); commands are synchronous."""

    def __init__(
        self,
        namespaces: Sequence[str],
        tag: str,
        *,
        delay_ms: tuple[float, float] = (0, 0),
        jitter_ms: float = 0.0,
        loss: float = 0.0,
        seed: int = 1,
        log: IO[bytes] | None = None,
    ) -> None:
        if len(namespaces) > MAX_SITES:
            raise ValueError(f"at most {MAX_SITES} sites")
        config = {
            "sites": len(namespaces),
            "namespaces": list(namespaces),
            "tag": tag,
            "delay_ms": list(delay_ms),
            "jitter_ms": jitter_ms,
            "loss": loss,
            "seed": seed,
        }
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log if log is not None else subprocess.DEVNULL,
        )
        ready = self._reply(READY_TIMEOUT)
        if not ready.get("ready"):
            self.close()
            raise LabError(f"the WAN forwarder did not start: {ready}")

    def _reply(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        box: list[bytes] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not box or not box[0]:
            code = self.proc.poll()
            raise LabError(f"the WAN forwarder did not answer within {timeout:g}s (exit code {code})")
        answer: dict[str, Any] = json.loads(box[0])
        return answer

    def command(self, **cmd: Any) -> dict[str, Any]:
        with self._lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
            self.proc.stdin.flush()
            answer = self._reply(CMD_TIMEOUT)
        if not answer.get("ok"):
            raise LabError(f"WAN command {cmd} failed: {answer.get('error')}")
        return answer

    def partition(self, *groups: Sequence[int]) -> None:
        """Cut every link between sites of different groups (sites in no group keep every link)."""
        self.command(op="partition", groups=[list(g) for g in groups])

    def heal(self) -> None:
        self.command(op="heal")

    def isolate(self, site: int, off: bool = True) -> None:
        """Take a site off the network (``off=False``: back on). Its interface stays up: packets vanish."""
        self.command(op="isolate", site=site, off=off)

    def set_link(self, a: int, b: int, *, delay_ms: float | None = None, loss: float | None = None) -> None:
        extra = {k: v for k, v in (("delay_ms", delay_ms), ("loss", loss)) if v is not None}
        self.command(op="link", a=a, b=b, **extra)

    def stats(self) -> list[dict[str, int]]:
        """Per site: packets and bytes it sent (tx) and was delivered (rx), and its packets lost or cut."""
        sites: list[dict[str, int]] = self.command(op="stats")["sites"]
        return sites

    def delays_ms(self) -> list[list[float]]:
        matrix: list[list[float]] = self.command(op="delays")["delay_ms"]
        return matrix

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # type: ignore[union-attr]
            try:
                self.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5.0)
        with contextlib.suppress(OSError):
            self.proc.stdout.close()  # type: ignore[union-attr]


# --------------------------------------------------------------------------- trading over the WAN (tests and bench)


def wait(pred: Callable[[], T | None], timeout: float, what: str, interval: float = 0.3) -> T:
    """Poll ``pred`` until truthy; an error answer from a node ("unknown object", "not running") is "not yet"."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = pred()
        except (SwapmeetError, OSError) as exc:
            value, last = None, exc
        if value:
            return value
        if time.monotonic() >= deadline:
            raise LabError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r:.300})")
        time.sleep(interval)


def trade_row(api: Any, exchange_id: str) -> dict[str, Any] | None:
    """The exchange as ``api``'s node lists it, or None."""
    return next((t for t in api.trades() if t["id"] == exchange_id), None)


def offer_and_accept(maker: Any, taker: Any, *, timeout: float, deadline_s: int) -> tuple[str, dict[str, Any]]:
    """``maker`` lists, ``taker`` offers for it, ``maker`` accepts (API clients): (listing id, the accept's trade)."""
    listing = maker.publish({"title": f"Lot {secrets.token_hex(3)}", "have": ["1 x bike"]})
    wait(lambda: taker.get(listing["id"]), timeout, "the listing at the taker")
    offer_id = taker.make_offer({"listing": listing["id"], "give": ["2 kg x apples"]})["id"]
    wait(lambda: any(o["id"] == offer_id for o in maker.offers("incoming")), timeout, "the offer at the maker")
    return listing["id"], maker.accept(offer_id, deadline_in_s=deadline_s)


def outcome(rows: Sequence[dict[str, Any] | None]) -> str | None:
    """ "complete" when every party's row is complete and on its chain, "lapsed" when every one lapsed, else None.

    Complete on one side and lapsed on another is the failure these labs look for: AssertionError.
    """
    states = {(r["state"], r["appended"]) if r else None for r in rows}
    if states == {("complete", True)}:
        return "complete"
    if states == {("lapsed", False)}:
        return "lapsed"
    if any(r and r["state"] == "complete" for r in rows) and any(r and r["state"] == "lapsed" for r in rows):
        raise AssertionError(f"an exchange is complete on one side only: {rows}")
    return None


class WanLab(Lab):
    """A netlab :class:`~tests.netlab.Lab` with ``sites`` namespaces joined by a :class:`Wan`.

    ``lab.sites[i]`` is site i (a :class:`~tests.netlab.LabHome` whose ``ip`` is its WAN address), for
    ``lab.node(name, lab.sites[i])``; ``lab.wan`` the forwarder. Keyword arguments go to :class:`Wan`.
    """

    def __init__(self, *, net: str, sites: int, base_dir: str | os.PathLike[str] | None = None, **wan: Any) -> None:
        super().__init__(net=net, base_dir=base_dir)
        self._site_count = sites
        self._wan_args = wan
        self.sites: list[LabHome] = []
        self.wan: Wan | None = None

    def __enter__(self) -> WanLab:
        super().__enter__()
        try:
            for i in range(self._site_count):
                ns = self._site_ns(i)
                self.sites.append(LabHome(index=i, ns=ns, router="", ip=site_ip(i), wan_ip=site_ip(i)))
            self.base_dir.mkdir(parents=True, exist_ok=True)  # a base_dir given may not exist yet
            log = open(self.base_dir / "wan.log", "ab")  # the forwarder's stderr; closed with the lab
            self._wan_log = log
            self.wan = Wan([s.ns for s in self.sites], self.tag, log=log, **self._wan_args)
        except BaseException:
            self.close(failed=True)
            raise
        return self

    def _site_ns(self, i: int) -> str:
        """The namespace of site i (made here)."""
        return self._netns(f"sm{self.tag}-w{i}")

    def close(self, *, failed: bool = False) -> None:
        try:
            if self.wan is not None:
                self.wan.close()
            if getattr(self, "_wan_log", None) is not None:
                self._wan_log.close()
        finally:
            super().close(failed=failed)


class NatWanLab(WanLab):
    """The NAT lab of :class:`~tests.netlab.Lab` with a :class:`Wan` as its internet (``bench/reach.py``).

    Site 0 is the lab's public namespace (public nodes and the DHT server listen on its ``wan0``
    address, :attr:`public_ip`); site k is home k's router, whose public interface is its ``wan0``
    (masquerade and the drop of unasked packets on it, as on the bridge lab's ``wan``). So every
    packet between the public nodes and a router, or between two routers (a hole-punched
    connection), crosses one WAN link with its delay and loss; traffic inside the public namespace
    does not. The forwarder makes its TUNs at the start: ``homes`` is how many :meth:`add_home`
    calls the lab takes. Keyword arguments go to :class:`Wan` (``delay_ms=(40, 40)``: 40 ms one way
    on every link). ``open_hosts``
    more sites are hosts with a public address and no NAT (:meth:`open_site`): two of them are one
    WAN link apart, as two homes are once a hole punch made them direct (a fair direct baseline).
    """

    def __init__(
        self,
        *,
        net: str,
        homes: int,
        open_hosts: int = 0,
        base_dir: str | os.PathLike[str] | None = None,
        **wan: Any,
    ) -> None:
        super().__init__(net=net, sites=homes + 1 + open_hosts, base_dir=base_dir, **wan)
        self.public_ip = site_ip(0)
        self._home_count = homes

    def _site_ns(self, i: int) -> str:
        if i == 0:
            return self.public
        return self._netns(f"sm{self.tag}-r{i}" if i <= self._home_count else f"sm{self.tag}-o{i}")

    def open_site(self, j: int) -> LabHome:
        """Open host j (from 0): a namespace on the WAN with a public address and no NAT, for :meth:`node`."""
        return self.sites[self._home_count + 1 + j]

    def _make_router(self, k: int) -> tuple[str, str, str]:
        if k > self._home_count:
            raise LabError(f"this lab was made for {self._home_count} homes (NatWanLab(homes=...))")
        return self.sites[k].ns, site_ip(k), "wan0"


if __name__ == "__main__":
    sys.exit(forwarder_main())

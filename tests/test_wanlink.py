"""The userspace WAN (tests/wanlink.py) delays, loses and cuts what it should, and nothing else.

Three namespaces on the emulated WAN, no swapmeet node: a TCP echo across a link of a known
one-way delay answers no sooner than twice the delay (and not much later); UDP datagrams over a
lossy link arrive in the configured proportion; a cut link carries nothing until healed, while the
other links go on. Skipped, with the reason, where namespaces cannot be made.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Iterator

import pytest

from tests.netlab import lab_unavailable
from tests.wanlink import WanLab, netns, site_ip

DELAY_MS = 30.0
LOSS = 0.2
DATAGRAMS = 1500
PORT = 7000
SO_RCVBUFFORCE = 33  # socket.SO_RCVBUFFORCE, which Python does not name


@pytest.fixture
def lab() -> Iterator[WanLab]:
    reason = lab_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with WanLab(net="wantest", sites=3, delay_ms=(DELAY_MS, DELAY_MS)) as lab:
        yield lab


def _echo_server(ns: str, ready: threading.Event, stop: threading.Event) -> None:
    with netns(ns):
        srv = socket.create_server((site_ip(1), PORT))
    srv.settimeout(10)
    ready.set()
    conn, _ = srv.accept()
    conn.settimeout(10)
    with conn, srv:
        while not stop.is_set() and (data := conn.recv(64)):
            conn.sendall(data)


def _connect(ns: str, ip: str, timeout: float = 5.0) -> socket.socket:
    with netns(ns):
        return socket.create_connection((ip, PORT), timeout=timeout)


def test_a_round_trip_takes_twice_the_one_way_delay(lab: WanLab) -> None:
    ready, stop = threading.Event(), threading.Event()
    server = threading.Thread(target=_echo_server, args=(lab.sites[1].ns, ready, stop), daemon=True)
    server.start()
    assert ready.wait(10)
    rtts = []
    with _connect(lab.sites[0].ns, site_ip(1)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for k in range(20):
            t0 = time.monotonic()
            sock.sendall(b"ping %02d" % k)
            assert sock.recv(64) == b"ping %02d" % k
            rtts.append(time.monotonic() - t0)
    stop.set()
    server.join(10)
    median_ms = statistics.median(rtts) * 1000
    print(f"\nRTT over a {DELAY_MS:g} ms link: median {median_ms:.1f} ms, min {min(rtts) * 1000:.1f} ms")
    assert min(rtts) * 1000 >= 2 * DELAY_MS  # the delay is a floor: no packet skips it
    assert median_ms < 2 * DELAY_MS + 30  # and it is the delay, not a stall (generous: 2 busy cores)
    stats = lab.wan.stats()  # type: ignore[union-attr]
    assert stats[0]["tx_pkts"] >= 20 and stats[1]["tx_pkts"] >= 20 and stats[2]["tx_pkts"] == 0


def _udp_count(lab: WanLab, src: int, dst: int, count: int) -> int:
    with netns(lab.sites[dst].ns):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 23)  # room for them all: the loss is the WAN's
        rx.bind((site_ip(dst), PORT))
    with netns(lab.sites[src].ns):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.settimeout(2 * DELAY_MS / 1000 + 0.5)
    got = 0
    with rx, tx:
        for k in range(count):
            tx.sendto(b"%d" % k, (site_ip(dst), PORT))
            if k % 50 == 49:
                time.sleep(0.005)  # the kernel's input backlog (1000 packets) must not overflow either
        try:
            while True:
                rx.recv(64)
                got += 1
        except TimeoutError:
            pass
    return got


def test_loss_is_as_configured_and_a_cut_carries_nothing(lab: WanLab) -> None:
    assert lab.wan is not None
    lab.wan.set_link(0, 1, loss=LOSS)
    got = _udp_count(lab, 0, 1, DATAGRAMS)
    rate = 1 - got / DATAGRAMS
    print(f"\nloss {rate:.3f} of {DATAGRAMS} datagrams (configured {LOSS})")
    assert abs(rate - LOSS) < 0.05  # > 4.5 standard deviations of a binomial(1500, 0.2)
    assert lab.wan.stats()[0]["lost"] == DATAGRAMS - got

    lab.wan.partition([0], [1, 2])
    assert _udp_count(lab, 0, 2, 50) == 0  # across the cut: nothing
    assert _udp_count(lab, 1, 2, 50) == 50  # on one side: everything (that link has no loss)
    lab.wan.heal()
    lab.wan.isolate(2)
    assert _udp_count(lab, 1, 2, 50) == 0
    lab.wan.isolate(2, off=False)
    assert _udp_count(lab, 0, 2, 50) == 50

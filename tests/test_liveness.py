"""Liveness (node/host/liveness.py, docs/LIBP2P.md §65): silent connections are closed and redialled.

In-process tests on 127.0.0.1 with short intervals; every wait is bounded. The
partition of real node processes across a cut link is tests/test_partition.py.
"""

from __future__ import annotations

import trio
from libp2p.host.ping import ID as PING_PROTOCOL
from swapmeet.node.host import LivenessSettings, P2PHost, open_host, topic

from tests.p2p_helpers import LOOPBACK, accept_all, line, seed

NET = "liveness"
FAST = LivenessSettings(interval=0.3, deadline=1.0, redial_max_backoff=0.5, dial_timeout=2.0)


def silence_pings(host: P2PHost) -> None:
    """Make ``host`` read pings and never answer (a peer behind a dead link, as its pinger sees it).
    Reads the private ``_host``."""

    async def swallow(stream: object) -> None:
        await trio.sleep_forever()

    host._host.set_stream_handler(PING_PROTOCOL, swallow)  # type: ignore[arg-type]


async def test_s65_a_healthy_connection_is_pinged_and_left_open() -> None:
    async with line(2, NET, "healthy", liveness=FAST) as (a, b):
        await trio.sleep(3.0)  # ten pings each way
        assert a.is_connected(b.peer_id) and b.is_connected(a.peer_id)
        assert a.liveness is not None and b.liveness is not None
        assert a.liveness.closed_silent == 0 and b.liveness.closed_silent == 0


async def test_s65_a_silent_connection_is_closed_and_redialled() -> None:
    """b stops answering pings: a closes the connection after the deadline and dials b again."""
    async with line(2, NET, "silent", liveness=FAST) as (a, b):
        silence_pings(b)
        assert a.liveness is not None
        with trio.fail_after(10):
            while a.liveness.closed_silent == 0:
                await trio.sleep(0.05)
        with trio.fail_after(10):
            while not a.is_connected(b.peer_id):
                await trio.sleep(0.05)


async def test_s65_library_fact_without_liveness_a_silent_peer_stays_connected() -> None:
    async with line(2, NET, "unwatched", liveness=None) as (a, b):
        silence_pings(b)
        await trio.sleep(3.0)
        assert a.liveness is None
        assert a.is_connected(b.peer_id)


async def test_s65_a_peer_back_on_a_new_connection_keeps_it() -> None:
    """b goes away and comes back (same key, new port) before a's next ping: the ping on the dead
    connection fails, and a must not take that for silence of the new, healthy connection.

    Before the fix a closed every connection of the peer, the new one included, and the pubsub
    mesh with the returning peer was torn down (first suspected in the test_dishonest flake, whose
    cause turned out to be docs/LIBP2P.md §53)."""
    # Pings 2.4-3 s apart: b leaves right after the first one and is back long before the second.
    slow = LivenessSettings(interval=3.0, deadline=1.0, redial_max_backoff=0.5, dial_timeout=2.0)
    settle = topic(NET, "settle")
    async with open_host(seed("back-a"), LOOPBACK, net=NET, gossip_topics=["settle"], liveness=slow) as a:
        await a.subscribe(settle, accept_all)
        async with open_host(seed("back-b"), LOOPBACK, net=NET, gossip_topics=["settle"], liveness=None) as b:
            await b.connect(a.listen_addrs()[0])
            with trio.fail_after(10):
                while a.liveness is None or b.peer_id not in a.liveness._watched:  # a pings b from now on
                    await trio.sleep(0.05)
                await trio.sleep(slow.interval + 0.1)  # one ping on the first connection
        async with open_host(seed("back-b"), LOOPBACK, net=NET, gossip_topics=["settle"], liveness=None) as again:
            await again.subscribe(settle, accept_all)
            await again.connect(a.listen_addrs()[0])
            await again.wait_for_mesh(settle, [a.peer_id], timeout=10)
            await trio.sleep(slow.interval + slow.deadline)  # past a's next ping
            assert a.liveness is not None and a.liveness.closed_silent == 0
            assert a.is_connected(again.peer_id)
            assert again.mesh_peers(settle) == [a.peer_id]


async def test_s48_a_peer_back_before_its_old_connection_closed_gets_our_subscriptions() -> None:
    """b's second self connects while its first connection is still open, then the first closes:
    a must send its hello on the new connection (docs/LIBP2P.md §48). Before the fix a kept its
    pubsub stream on the closed connection, never told the new b its subscriptions, and b's mesh
    stayed empty (the second suspect in the test_dishonest flake; its cause was §53)."""
    settle = topic(NET, "settle")
    async with open_host(seed("s48-a"), LOOPBACK, net=NET, gossip_topics=["settle"], liveness=None) as a:
        await a.subscribe(settle, accept_all)
        async with open_host(seed("s48-b"), LOOPBACK, net=NET, gossip_topics=["settle"], liveness=None) as again:
            await again.subscribe(settle, accept_all)
            async with open_host(seed("s48-b"), LOOPBACK, net=NET, gossip_topics=["settle"], liveness=None) as b:
                await b.subscribe(settle, accept_all)
                await b.connect(a.listen_addrs()[0])
                await b.wait_for_mesh(settle, [a.peer_id], timeout=10)
                await again.connect(a.listen_addrs()[0])  # while the first connection is open
                await trio.sleep(0.5)
            await again.wait_for_mesh(settle, [a.peer_id], timeout=10)
            assert again.mesh_peers(settle) == [a.peer_id]


async def test_s46_a_peer_keeps_its_subscriptions_when_one_of_its_streams_ends() -> None:
    """One of b's pubsub streams ends while b stays connected (an overlapping reconnect, a retired
    relayed connection): the library forgets b's subscriptions, which b sends only in the hello of a
    stream it opens, so a would never send b a topic message again. We keep them while b is
    connected, and a's mesh with b forms again (docs/LIBP2P.md §46). Calls pubsub's dead-stream
    handling directly (private ``_pubsub``): no public API ends one stream of a peer."""
    settle = topic(NET, "settle")
    for label, ours in (("s46-library", False), ("s46-ours", True)):
        async with line(2, NET, label, gossip_topics=["settle"], liveness=None) as (a, b):
            for host in (a, b):
                await host.subscribe(settle, accept_all)
            await a.wait_for_mesh(settle, [b.peer_id], timeout=10)
            (b_id,) = a._pubsub.peers
            if not ours:  # the library fact, on the class's own method: every subscription forgotten
                type(a._pubsub)._handle_dead_peer(a._pubsub, b_id)
                assert b.peer_id not in a.topic_peers(settle)
                continue
            a._pubsub._handle_dead_peer(b_id)  # ours: the subscriptions stay, and the mesh forms again
            assert b.peer_id in a.topic_peers(settle)
            await a.wait_for_mesh(settle, [b.peer_id], timeout=10)
            assert a.mesh_peers(settle) == [b.peer_id]

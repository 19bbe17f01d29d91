"""Tests of swapmeet.node.host against real py-libp2p hosts on 127.0.0.1.

Every host listens on tcp port 0 on loopback; every wait is bounded. Waits for
something *not* to happen use a short move_on_after window after a positive
control shows that the same path delivers within milliseconds.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
import trio
from libp2p.pubsub.pb import rpc_pb2
from swapmeet.node.config import validate_net
from swapmeet.node.host import (
    EndOfStream,
    FramedStream,
    FrameTooLargeError,
    GossipSettings,
    P2PError,
    P2PTimeoutError,
    ProtocolNotSupportedError,
    PublishRejectedError,
    StreamClosedError,
    Subscription,
    identity_key_pair,
    open_host,
    protocol_id,
    topic,
)
from swapmeet.node.host.gossip import content_msg_id
from swapmeet.node.settlement import SETTLE_TOPIC
from swapmeet.protocol import gossip
from swapmeet.protocol.identity import peer_id as swapmeet_peer_id

from tests.p2p_helpers import LOOPBACK, accept_all, seed, wait_line_mesh
from tests.p2p_helpers import line as _line

VECTORS = Path(__file__).resolve().parent / "vectors"
NET = "test"
T = topic(NET, "listings")


def line(n: int, net: str = NET, **kwargs: Any) -> Any:
    """n hosts in a line (tests.p2p_helpers.line), of this file's network unless told."""
    return _line(n, net, **kwargs)


async def nothing_within(sub: Subscription, seconds: float) -> list[tuple[str, bytes]]:
    """What arrives on ``sub`` within ``seconds`` (at most one message)."""
    got: list[tuple[str, bytes]] = []
    with trio.move_on_after(seconds):
        got.append(await sub.receive())
    return got


# ------------------------------------------------------------------ naming


def test_names_carry_the_network() -> None:
    assert topic("main", "listings") == "/swapmeet/main/listings/1"
    assert protocol_id("co-op-7", "offer-sync") == "/swapmeet/co-op-7/offer-sync/1.0.0"
    for bad in ["", "Main", "a/b", "a b", "x" * 33, "ü"]:
        with pytest.raises(ValueError, match="network name"):
            validate_net(bad)
        with pytest.raises(ValueError, match="network name"):
            topic(bad, "listings")
    with pytest.raises(ValueError, match="topic name"):
        topic("main", "List/ings")


def test_identity_key_pair_rejects_short_seed() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        identity_key_pair(b"short")


# ---------------------------------------------------------------- identity


async def test_host_peer_id_is_the_trading_identity() -> None:
    s = seed("identity")
    public = bytes(nacl.signing.SigningKey(s).verify_key)
    assert identity_key_pair(s).public_key.to_bytes() == public
    async with open_host(s, LOOPBACK, net=NET) as host:
        assert host.peer_id == swapmeet_peer_id(public)
        addrs = host.listen_addrs()
        assert addrs and all(a.startswith("/ip4/127.0.0.1/tcp/") for a in addrs)
        assert all(a.endswith(f"/p2p/{host.peer_id}") for a in addrs)
        assert not addrs[0].startswith("/ip4/127.0.0.1/tcp/0/")  # the real port


# ------------------------------------------------------------------ gossip


async def test_gossip_crosses_a_line_and_validators_stop_bad_messages() -> None:
    async with line(3) as (a, b, c):
        b_seen: list[bytes] = []

        def b_validator(from_peer: str, data: bytes) -> bool:
            b_seen.append(data)
            return not data.startswith(b"bad")

        sub_a = await a.subscribe(T, accept_all)
        sub_b = await b.subscribe(T, b_validator)
        sub_c = await c.subscribe(T, accept_all)
        await wait_line_mesh([a, b, c], T)
        assert a.peer_id not in c.connected_peers()  # C can only hear A through B

        await a.publish(T, b"hello")
        with trio.fail_after(5):
            assert await sub_c.receive() == (a.peer_id, b"hello")
            assert await sub_b.receive() == (a.peer_id, b"hello")
            assert await sub_a.receive() == (a.peer_id, b"hello")  # own publishes come back

        # A accepts "bad", B rejects it: not delivered at B, not forwarded to C.
        await a.publish(T, b"bad offer")
        await a.publish(T, b"good offer")
        with trio.fail_after(5):
            # Same link, same order: if "bad" had got through it would come first.
            assert await sub_c.receive() == (a.peer_id, b"good offer")
            assert await sub_b.receive() == (a.peer_id, b"good offer")
        assert b"bad offer" in b_seen  # B's validator saw and refused it
        assert await nothing_within(sub_c, 0.3) == []
        assert await nothing_within(sub_b, 0.1) == []
        # ...and counted it against A (P4: -10, decaying), still above every threshold.
        assert GossipSettings().gossip_threshold < b.peer_score(a.peer_id, T) < -5


async def test_repeat_offender_is_graylisted() -> None:
    settings = GossipSettings()
    async with line(2) as (a, b):
        calls: list[bytes] = []

        def b_validator(from_peer: str, data: bytes) -> bool:
            calls.append(data)
            return not data.startswith(b"bad")

        await a.subscribe(T, accept_all)
        sub_b = await b.subscribe(T, b_validator)
        await wait_line_mesh([a, b], T)

        n_bad = int(-settings.publish_threshold // settings.invalid_message_weight) + 1
        for i in range(n_bad):
            await a.publish(T, b"bad %d" % i)
        with trio.fail_after(5):
            while len(calls) < n_bad:
                await trio.sleep(0.01)
        assert b.peer_score(a.peer_id, T) < settings.publish_threshold

        # Now even a valid message from A is dropped before B's validator runs
        # (the publish-threshold gate, docs/LIBP2P.md §15).
        await a.publish(T, b"good, but from a graylisted peer")
        assert await nothing_within(sub_b, 0.5) == []
        assert len(calls) == n_bad


async def test_a_mesh_that_does_not_form_is_explained() -> None:
    """wait_for_mesh's timeout says, for each missing peer, what pubsub and the router hold for it."""
    async with line(2) as (a, b):
        await a.subscribe(T, accept_all)  # b never subscribes: a knows it, and b stays out of a's mesh
        with pytest.raises(P2PTimeoutError) as caught:
            await a.wait_for_mesh(T, [b.peer_id], timeout=1.5)
    why = str(caught.value)
    assert f"missing {b.peer_id}: connections 1 open of 1" in why, why
    assert "stream on an open connection" in why and "subscribed False" in why and "back-off none" in why, why


async def test_own_validator_rejection_is_an_error_not_silence() -> None:
    async with open_host(seed("own"), LOOPBACK, net=NET) as a:
        await a.subscribe(T, lambda p, d: d != b"nope")
        with pytest.raises(PublishRejectedError):
            await a.publish(T, b"nope")
        with pytest.raises(FrameTooLargeError, match="limit"):
            await a.publish(T, b"x" * (GossipSettings().max_message_size + 1))


async def test_a_burst_is_neither_rate_limited_nor_dropped() -> None:
    # docs/LIBP2P.md §13 (10 msg/s spam cap), §21 (32-slot subscription queue) and
    # §22 (32-slot outbound queues, at the publisher and at the relay).
    n = 200
    async with line(3) as (a, b, c):
        await a.subscribe(T, accept_all)
        await b.subscribe(T, accept_all)
        sub_c = await c.subscribe(T, accept_all)
        await wait_line_mesh([a, b, c], T)
        for i in range(n):
            await a.publish(T, b"msg %d" % i)
        got = set()
        with trio.fail_after(15):
            while len(got) < n:
                got.add((await sub_c.receive())[1])
        assert got == {b"msg %d" % i for i in range(n)}


async def test_identical_payloads_are_one_message() -> None:
    # Message ids hash the payload: the same object announced twice is one message.
    async with line(3) as (a, b, c):
        _, sub_b, sub_c = [await h.subscribe(T, accept_all) for h in (a, b, c)]
        await wait_line_mesh([a, b, c], T)
        await a.publish(T, b"same object")
        with trio.fail_after(5):
            assert await sub_c.receive() == (a.peer_id, b"same object")
        # C re-announces the same bytes: a duplicate, so neither C itself nor
        # anyone else gets it again; the marker behind it is what arrives next.
        await c.publish(T, b"same object")
        await c.publish(T, b"marker")
        with trio.fail_after(5):
            assert await sub_c.receive() == (c.peer_id, b"marker")
            assert await sub_b.receive() == (a.peer_id, b"same object")
            assert await sub_b.receive() == (c.peer_id, b"marker")


async def test_on_a_resend_topic_the_same_bytes_again_are_a_retry() -> None:
    # Settlement re-sends a message that may have been lost: it must go out again,
    # and still reach each peer once per publication (relays dedupe it).
    resend = topic(NET, "settle")
    async with line(3, resend_topics=["settle"], gossip_topics=["listings", "settle"]) as (a, b, c):
        _, sub_b, sub_c = [await h.subscribe(resend, accept_all) for h in (a, b, c)]
        await wait_line_mesh([a, b, c], resend)
        await a.publish(resend, b"signed exchange")
        await a.publish(resend, b"signed exchange")  # the retry
        await a.publish(resend, b"marker")
        with trio.fail_after(5):
            for sub in (sub_b, sub_c):
                assert [await sub.receive() for _ in range(3)] == [
                    (a.peer_id, b"signed exchange"),
                    (a.peer_id, b"signed exchange"),
                    (a.peer_id, b"marker"),
                ]


def test_message_ids_are_the_vectors() -> None:
    """The id py-libp2p gets from the node (the adapter over protocol.gossip) is the §13.1 rule of the vectors.

    The per-publication topics are the ones the node configures (``resend_topics=[SETTLE_TOPIC]``).
    """
    assert gossip.PER_PUBLICATION_TOPICS == (SETTLE_TOPIC,)
    cases = json.loads((VECTORS / "gossip.json").read_text(encoding="utf-8"))["message_ids"]
    assert cases
    for case in cases:
        msg = rpc_pb2.Message(
            from_id=bytes.fromhex(case["publisher"]),
            data=bytes.fromhex(case["data"]),
            seqno=bytes.fromhex(case["seqno"]),
            topicIDs=case["topics"],
        )
        nets = {t.split("/")[2] for t in case["topics"]}
        per_publication = frozenset(topic(net, SETTLE_TOPIC) for net in nets)
        assert content_msg_id(msg, per_publication).hex() == case["id"], case["name"]


async def test_a_newcomer_gets_recent_gossip_from_before_it_connected() -> None:
    """PROTOCOL.md 13.2: earlier messages can arrive by gossip right after connecting, before any sync.

    py-libp2p sends a peer that subscribes (or connects already subscribed) every message of that
    topic still in its message-cache window (``gossip_window`` heartbeats, 1 s each). Older messages
    are not sent: a newcomer gets those only from the book sync (§14), which this layer does not run.
    """
    async with line(1) as (a,):
        await a.subscribe(T, accept_all)
        await a.publish(T, b"published before C connected")
        async with open_host(seed("newcomer-c"), LOOPBACK, net=NET) as c:
            sub_c = await c.subscribe(T, accept_all)
            with trio.fail_after(5):
                await c.connect(a.listen_addrs()[0])
                assert await sub_c.receive() == (a.peer_id, b"published before C connected")

        # Once the message has left A's cache window (3 heartbeats), a newcomer no longer gets it.
        # (The window is polled rather than slept through: a late heartbeat must not make this flaky.)
        with trio.fail_after(10):
            while a._router.mcache.window(T):  # internal, for a deterministic wait
                await trio.sleep(0.05)
        async with open_host(seed("newcomer-d"), LOOPBACK, net=NET) as d:
            sub_d = await d.subscribe(T, accept_all)
            with trio.fail_after(5):
                await d.connect(a.listen_addrs()[0])
                await wait_line_mesh([a, d], T)
            await a.publish(T, b"marker")
            with trio.fail_after(5):
                assert await sub_d.receive() == (a.peer_id, b"marker")
            assert await nothing_within(sub_d, 0.3) == []


async def test_networks_do_not_mix() -> None:
    tx, ty = topic("x", "listings"), topic("y", "listings")
    async with open_host(seed("x"), LOOPBACK, net="x") as x, open_host(seed("y"), LOOPBACK, net="y") as y:
        with trio.fail_after(5):
            await x.connect(y.listen_addrs()[0])
        sub_x = await x.subscribe(tx, accept_all)
        sub_y = await y.subscribe(ty, accept_all)
        with pytest.raises(ValueError, match="not on network"):
            await x.publish(ty, b"cross-market")
        with pytest.raises(ValueError, match="not on network"):
            await y.subscribe(tx, accept_all)

        await x.publish(tx, b"from x")
        await y.publish(ty, b"from y")
        with trio.fail_after(5):  # positive control: each hears itself at once
            assert (await sub_x.receive())[1] == b"from x"
            assert (await sub_y.receive())[1] == b"from y"
        assert await nothing_within(sub_y, 0.3) == []
        assert await nothing_within(sub_x, 0.1) == []
        assert x.topic_peers(tx) == [] and y.topic_peers(ty) == []
        assert x.mesh_peers(tx) == [] and y.mesh_peers(ty) == []


# ----------------------------------------------------------------- streams

ECHO = protocol_id(NET, "echo")
SYNC = protocol_id(NET, "sync")


async def test_request_response_round_trip_and_frame_limits() -> None:
    async with line(2) as (a, b):
        called: list[bytes] = []

        async def upper(from_peer: str, request: bytes) -> bytes:
            assert from_peer == a.peer_id
            called.append(request)
            return request.upper() * (80 if request == b"big answer" else 1)  # 800 bytes

        b.set_request_handler(ECHO, upper, max_frame_size=1024)

        assert await a.request(b.peer_id, ECHO, b"ping", timeout=5) == b"PING"
        assert await a.request(b.peer_id, ECHO, b"", timeout=5) == b""

        # Refused locally, before anything is sent.
        with pytest.raises(FrameTooLargeError, match="limit is 100 bytes"):
            await a.request(b.peer_id, ECHO, b"x" * 101, timeout=5, max_frame_size=100)
        # Refused by B (its limit is 1024): B resets the stream, A hears of it.
        with pytest.raises(StreamClosedError, match="without answering"):
            await a.request(b.peer_id, ECHO, b"y" * 2000, timeout=5)
        assert all(len(r) <= 1024 for r in called)
        # A response over A's limit is refused on arrival.
        with pytest.raises(FrameTooLargeError, match="limit is 500 bytes"):
            await a.request(b.peer_id, ECHO, b"big answer", timeout=5, max_frame_size=500)
        # B survives all of it.
        assert await a.request(b.peer_id, ECHO, b"still there", timeout=5) == b"STILL THERE"

        with pytest.raises(ProtocolNotSupportedError):
            await a.request(b.peer_id, protocol_id(NET, "nobody-home"), b"?", timeout=5)


async def test_long_lived_framed_stream() -> None:
    async with line(2) as (a, b):

        async def reverse_each(stream: FramedStream) -> None:
            assert stream.peer_id == a.peer_id and stream.protocol == SYNC
            async for frame in stream:
                await stream.send(frame[::-1])

        b.set_stream_handler(SYNC, reverse_each)
        with trio.fail_after(5):
            async with await a.open_stream(b.peer_id, SYNC) as s:
                for word in (b"abc", b"", b"x" * 70_000):
                    await s.send(word)
                    assert await s.receive() == word[::-1]
                await s.close_write()
                with pytest.raises(EndOfStream):
                    await s.receive()


# --------------------------------------------------------------- discovery


async def test_bootstrap_dials_and_survives_bad_entries(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="swapmeet.node.host")
    ghost = swapmeet_peer_id(bytes(nacl.signing.SigningKey(seed("ghost")).verify_key))
    unreachable = f"/ip4/127.0.0.1/tcp/1/p2p/{ghost}"
    async with open_host(seed("seed-node"), LOOPBACK, net=NET) as b:
        boot = [unreachable, "not-a-multiaddr", b.listen_addrs()[0]]
        async with open_host(seed("newcomer"), LOOPBACK, net=NET, bootstrap=boot) as a:
            with trio.fail_after(5):
                while b.peer_id not in a.connected_peers():
                    await trio.sleep(0.01)
                while not any(unreachable in r.getMessage() for r in caplog.records):
                    await trio.sleep(0.01)
    ours = [r.getMessage() for r in caplog.records if r.name == "swapmeet.node.host"]
    assert not any(r.exc_info for r in caplog.records)
    assert len([m for m in ours if unreachable in m]) == 1  # one line, no traceback
    assert len([m for m in ours if "not-a-multiaddr" in m]) == 1


async def test_a_peer_is_reached_at_its_new_address_right_after_its_old_one_failed() -> None:
    """A peer that restarted on a new port: its old address fails, the new one works at once.

    py-libp2p alone dials one address from everything it holds for a peer and then refuses
    the peer for 60 s; P2PHost.connect works around both (see its comment)."""
    async with open_host(seed("mover"), LOOPBACK, net=NET) as b, open_host(seed("caller"), LOOPBACK, net=NET) as a:
        new = b.listen_addrs()[0]
        old = new.replace(f"/tcp/{new.split('/tcp/')[1].split('/')[0]}/", "/tcp/1/")
        with pytest.raises(P2PError):
            await a.connect(old, timeout=5)
        with trio.fail_after(5):
            assert await a.connect(new, timeout=5) == b.peer_id
        assert b.peer_id in a.connected_peers()


async def test_dht_finds_a_peer_two_hops_away() -> None:
    async with line(3, enable_dht=True) as (a, b, c):
        assert c.peer_id not in a.connected_peers()
        with trio.fail_after(5):  # routing tables are filled from connections
            while b.peer_id not in a.dht_peers() or c.peer_id not in b.dht_peers():
                await trio.sleep(0.01)
        with trio.fail_after(10):
            addrs = await a.find_peer(c.peer_id, timeout=10)
        assert any(addr.startswith("/ip4/127.0.0.1/tcp/") for addr in addrs)
        with trio.fail_after(5):
            await a.connect(f"{addrs[0]}/p2p/{c.peer_id}" if "/p2p/" not in addrs[0] else addrs[0])
        assert c.peer_id in a.connected_peers()


# ---------------------------------------------------------------- shutdown


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _task_count() -> int:
    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(t) for n in task.child_nurseries for t in n.child_tasks)

    return count(trio.lowlevel.current_root_task())


async def test_open_close_cycles_do_not_leak() -> None:
    async def cycle(i: int) -> None:
        async with line(3, net=f"cycle-{i}") as hosts:
            t = topic(f"cycle-{i}", "listings")
            subs = [await h.subscribe(t, accept_all) for h in hosts]
            await wait_line_mesh(hosts, t)
            await hosts[0].publish(t, b"x")
            with trio.fail_after(5):
                assert (await subs[2].receive())[1] == b"x"

    await cycle(-1)  # warm-up: imports, lazily created globals
    fds, threads, tasks = _open_fds(), threading.active_count(), _task_count()
    for i in range(10):
        await cycle(i)
    assert _open_fds() <= fds + 3, (fds, _open_fds())
    assert threading.active_count() <= threads + 1, (threads, threading.active_count())
    assert _task_count() <= tasks + 2, (tasks, _task_count())

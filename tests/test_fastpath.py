"""The host's fast path (node/host/fastpath.py, docs/LIBP2P.md §60-§64, §66, §67) and the node's batched gossip store.

Each test names its section. The hosts run on 127.0.0.1; every wait is bounded.
Counting tests look at what crossed a real connection (frames written, records
verified), never at time. A few read private attributes (``P2PHost._host``) where
no public API shows the fact; they say so.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import libp2p.pubsub.pubsub as pubsub_mod
import libp2p.pubsub.utils as pubsub_utils
import pytest
import trio
from libp2p.network.stream.exceptions import StreamReset
from libp2p.peer.envelope import consume_envelope
from libp2p.peer.id import ID
from libp2p.peer.peerstore import issue_and_cache_local_record
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import ValidationCache, ValidationResult
from libp2p.pubsub.rpc_queue import RpcQueue
from libp2p.utils.varint import decode_varint_from_bytes
from swapmeet.node.host import P2PHost, open_host, topic
from swapmeet.node.host.fastpath import COALESCE_BYTES, BufferedStream, LruValidationCache, _coalescing_sender
from swapmeet.node.host.gossip import peer_b58

from tests.p2p_helpers import LOOPBACK, accept_all, wait_line_mesh
from tests.p2p_helpers import line as _line
from tests.p2p_helpers import seed as p2p_seed

NET = "fastpath"
T = topic(NET, "listings")
ROOT = Path(__file__).resolve().parent.parent


def line(n: int, label: str, **kwargs: Any) -> Any:
    return _line(n, NET, label, **kwargs)


def count_frames(host: P2PHost) -> Counter[int]:
    """Yamux frame types this host writes on each of its connections (reads the private ``_host``)."""
    written: Counter[int] = Counter()
    for conn in host._host.get_network().get_connections():
        muxed = conn.muxed_conn
        original = muxed._write_frame

        async def counting(data: bytes, original: Any = original) -> None:
            written[data[1]] += 1  # the yamux header: version, type, flags, stream id, length
            await original(data)

        muxed._write_frame = counting
    return written


async def publish_and_receive(a: P2PHost, b: P2PHost, n: int) -> Counter[int]:
    """``a`` publishes ``n`` messages of 310 bytes to ``b``; the yamux frames ``b`` wrote meanwhile, by type."""
    await a.subscribe(T, accept_all)
    sub = await b.subscribe(T, accept_all)
    await wait_line_mesh([a, b], T)
    written = count_frames(b)
    for i in range(n):
        await a.publish(T, b"message %d " % i + bytes(300))
    with trio.fail_after(30):
        for _ in range(n):
            await sub.receive()
    return written


# ------------------------------------------------------------ §61 window updates

TYPE_DATA, TYPE_WINDOW_UPDATE = 0, 1


async def test_s61_receiving_gossip_sends_no_window_update_per_message() -> None:
    """§61: the receiver of 200 messages of 310 bytes (62 KB in all) credits its sender in a few WINDOW_UPDATEs,
    not one or more per message."""
    n = 200
    async with line(2, "s61") as (a, b):
        written = await publish_and_receive(a, b, n)
        assert written[TYPE_WINDOW_UPDATE] < n // 10, written


def test_s61_library_fact_yamux_credits_every_read() -> None:
    """§61, library fact: with the library's default (a fresh process, no fast path) the receiver writes
    at least one WINDOW_UPDATE per message."""
    script = textwrap.dedent(
        """
        import sys, trio
        sys.path.insert(0, sys.argv[1])
        from tests.p2p_helpers import line
        from tests.test_fastpath import count_frames, publish_and_receive, TYPE_WINDOW_UPDATE, NET

        async def main():
            async with line(2, NET, "s61-bare", fastpath=False) as (a, b):
                written = await publish_and_receive(a, b, 100)
                print(written[TYPE_WINDOW_UPDATE])

        trio.run(main)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PY_YAMUX_")}  # the library's defaults
    out = subprocess.run(
        [sys.executable, "-c", script, str(ROOT)], capture_output=True, text=True, timeout=120, env=env, check=True
    )
    assert int(out.stdout.split()[-1]) >= 100, out.stdout + out.stderr


# ------------------------------------------------------------ §62 buffered reads


class ChunkStream:
    """A stream whose reads return the given chunks, then b"" (end of stream)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.reads = 0
        self.protocol = "/meshsub/1.1.0"

    async def read(self, n: int | None = None) -> bytes:
        self.reads += 1
        return self.chunks.pop(0) if self.chunks else b""


async def test_s62_varint_and_body_come_from_one_read() -> None:
    """§62: pubsub's read(1), read(1), read(n) of one RPC cost one read of the stream beneath."""
    body = bytes(range(200))
    raw = ChunkStream([bytes([0xC8, 0x01]) + body + bytes([0x03]) + b"abc"])
    stream = BufferedStream(raw)
    assert await stream.read(1) == b"\xc8"
    assert await stream.read(1) == b"\x01"
    assert await stream.read(200) == body
    assert await stream.read(1) == b"\x03"
    assert await stream.read(10) == b"abc"  # no more than what is there, as a stream read
    assert raw.reads == 1
    assert await stream.read(1) == b""  # end of stream passes through
    assert stream.protocol == "/meshsub/1.1.0"  # everything else is the wrapped stream's


# ------------------------------------------------------------ §63 signed peer records


async def test_s63_a_peers_record_is_verified_once_not_per_rpc(monkeypatch: pytest.MonkeyPatch) -> None:
    """§63: 100 RPCs from one peer: the fast receiver verifies its signed record a few times at most;
    a receiver without the fast path (same process) verifies it on every RPC (library fact)."""
    verified: Counter[str] = Counter()
    original = pubsub_utils.consume_envelope

    def counting(data: bytes, domain: str) -> Any:
        verified[domain] += 1
        return original(data, domain)

    monkeypatch.setattr(pubsub_utils, "consume_envelope", counting)
    n = 100
    async with line(2, "s63-fast") as (a, b):
        await publish_and_receive(a, b, n)
    fast = sum(verified.values())
    verified.clear()
    async with line(2, "s63-bare", fastpath=False) as (a, b):
        await publish_and_receive(a, b, n)
    bare = sum(verified.values())
    assert fast < 10, fast
    assert bare >= n, bare


async def _reissue_record_seen_by(a: P2PHost, b: P2PHost) -> None:
    """``a`` re-issues its signed record (as identify does when a's addresses change) and ``b`` gets it
    (as from identify), after a's pubsub has cached the one before (reads the private ``_host``)."""
    pubsub_mod.env_to_send_in_RPC(a._host)  # a's pubsub builds and caches its record: seq S1
    await trio.sleep(0.01)
    newer = issue_and_cache_local_record(a._host)  # seq S2 > S1, cached by a's peerstore
    envelope, _ = consume_envelope(newer, "libp2p-peer-record")
    assert b._host.get_peerstore().consume_peer_record(envelope, 7200)


async def test_s53_a_peer_that_reissued_its_record_is_heard_at_once() -> None:
    """§63: a peer re-issues its record (its addresses changed) and the other learns the new one by
    identify before the first pubsub RPC arrives: that RPC, the hello with a's subscriptions, must not
    carry the record before (which the library's receiver drops whole, docs/LIBP2P.md §53)."""
    async with (
        open_host(p2p_seed("s63-reissue-a"), LOOPBACK, net=NET) as a,
        open_host(p2p_seed("s63-reissue-b"), LOOPBACK, net=NET) as b,
    ):
        await a.subscribe(T, accept_all)
        await b.subscribe(T, accept_all)
        await _reissue_record_seen_by(a, b)
        await b.connect(a.listen_addrs()[0])
        with trio.fail_after(10):
            while a.peer_id not in b.topic_peers(T):
                await trio.sleep(0.02)


async def test_s53_our_rpcs_carry_the_record_identify_sends() -> None:
    """§53, the sending half: once the peerstore's record is re-issued, our next RPC carries it,
    though the one before was built less than RECORD_REUSE_S ago."""
    async with (
        open_host(p2p_seed("s53-send"), LOOPBACK, net=NET) as a,
        open_host(p2p_seed("s53-send-b"), LOOPBACK, net=NET) as b,
    ):
        await _reissue_record_seen_by(a, b)
        sent, _ = pubsub_mod.env_to_send_in_RPC(a._host)
        assert sent == a._host.get_peerstore().get_local_record().marshal_envelope()


async def test_s53_an_rpc_whose_record_is_out_of_date_is_processed() -> None:
    """§53, the receiving half: an RPC whose sender record is valid but older than the one held is
    processed (the library drops it whole); a record signed by another key, or garbage, is not."""
    async with (
        open_host(p2p_seed("s53-recv-a"), LOOPBACK, net=NET) as a,
        open_host(p2p_seed("s53-recv-b"), LOOPBACK, net=NET) as b,
    ):
        older = issue_and_cache_local_record(a._host)
        await trio.sleep(0.01)
        await _reissue_record_seen_by(a, b)
        other = issue_and_cache_local_record(b._host)  # a valid record, but b's

        def rpc(record: bytes) -> rpc_pb2.RPC:
            return rpc_pb2.RPC(senderRecord=record)

        a_id = a._host.get_id()
        assert not pubsub_utils.maybe_consume_signed_record(rpc(older), b._host, a_id)  # library fact
        assert pubsub_mod.maybe_consume_signed_record(rpc(older), b._host, a_id)  # ours (§53)
        assert not pubsub_mod.maybe_consume_signed_record(rpc(other), b._host, a_id)
        assert not pubsub_mod.maybe_consume_signed_record(rpc(b"\x0a\x03abc"), b._host, a_id)
        held = b._host.get_peerstore().get_peer_record(a_id)
        assert held is not None and held.marshal_envelope() != older  # the older record is not stored


# ------------------------------------------------------------ §64 validation cache


def test_s64_the_validation_cache_keeps_the_librarys_semantics() -> None:
    """§64: same answers as the library's ValidationCache over a random run of gets and puts (LRU, size cap)."""
    rng = random.Random(7)
    ours, theirs = LruValidationCache(300, 50), ValidationCache(300, 50)
    keys = [bytes([i]) for i in range(120)]
    for _ in range(5000):
        key = rng.choice(keys)
        if rng.random() < 0.5:
            result = ValidationResult(is_valid=rng.random() < 0.5, timestamp=time.time())
            ours.put(key, result)
            theirs.put(key, result)
        else:
            assert ours.get(key) is theirs.get(key)
    assert set(ours.cache) == set(theirs.cache)


def test_s64_an_expired_verdict_is_forgotten() -> None:
    cache = LruValidationCache(300, 10)
    cache.put(b"old", ValidationResult(is_valid=False, timestamp=time.time() - 301))
    cache.put(b"new", ValidationResult(is_valid=True, timestamp=time.time()))
    assert cache.get(b"old") is None
    assert cache.get(b"new") is not None
    cache.clear_expired()
    assert cache.size() == 1


# ------------------------------------------------------------ §60 our share


def test_s60_peer_b58_is_the_peer_id() -> None:
    raw = ID.from_base58("12D3KooWEeDFiUzuFeom3mTKvMoiCxHqvQ5r4Rd2yjsSPDqQcLur").to_bytes()
    assert peer_b58(raw) == "12D3KooWEeDFiUzuFeom3mTKvMoiCxHqvQ5r4Rd2yjsSPDqQcLur"
    assert peer_b58(raw) == ID(raw).to_base58()


# ------------------------------------------------------------ §66 messages handled in the reading task


def count_push_spawns(host: P2PHost) -> list[int]:
    """How many tasks this host's pubsub spawns for ``push_msg`` (wraps the private ``_pubsub.manager``)."""
    pubsub = host._pubsub
    manager = pubsub.manager
    spawned = [0]
    run_task = manager.run_task

    def counting(async_fn: Any, *args: Any, **kwargs: Any) -> None:
        if getattr(async_fn, "__name__", "") == "push_msg":
            spawned[0] += 1
        run_task(async_fn, *args, **kwargs)

    manager.run_task = counting
    return spawned


async def receive_in_order(fastpath: bool, n: int) -> tuple[int, list[bytes]]:
    """``a`` publishes ``n`` messages to ``b`` as fast as it can; b's push_msg spawns and what b received."""
    async with line(2, f"s66-{fastpath}", fastpath=fastpath) as (a, b):
        await a.subscribe(T, accept_all)
        sub = await b.subscribe(T, accept_all)
        await wait_line_mesh([a, b], T)
        spawned = count_push_spawns(b)
        for i in range(n):
            await a.publish(T, b"message %03d" % i)
        with trio.fail_after(30):
            got = [(await sub.receive())[1] for _ in range(n)]
        return spawned[0], got


async def test_s66_received_messages_are_handled_in_order_without_a_task_each() -> None:
    """§66: 100 messages from one peer reach the subscriber in the order published, and the fast host
    spawns no task for any of them (the library spawns one per message and copy: the next test)."""
    spawned, got = await receive_in_order(True, 100)
    assert got == [b"message %03d" % i for i in range(100)]
    assert spawned == 0


async def test_s66_a_message_the_library_fails_on_is_dropped_and_reading_goes_on() -> None:
    """§66: push_msg raising on one message (in the library it failed its own task) costs that message
    only; the peer's next messages are still read and delivered."""
    async with line(2, "s66-fail") as (a, b):
        await a.subscribe(T, accept_all)
        sub = await b.subscribe(T, accept_all)
        await wait_line_mesh([a, b], T)
        push_msg = b._pubsub.push_msg

        async def failing(peer_id: Any, msg: Any) -> None:
            if msg.data == b"boom":
                raise ValueError("a message the library cannot take")
            await push_msg(peer_id, msg)

        b._pubsub.push_msg = failing
        await a.publish(T, b"boom")
        await a.publish(T, b"after")
        with trio.fail_after(10):
            assert (await sub.receive())[1] == b"after"


async def test_s66_library_fact_pubsub_spawns_a_task_per_received_message() -> None:
    """§66, library fact: without the fast path, every received message is handled in a task of its own."""
    spawned, got = await receive_in_order(False, 50)
    assert sorted(got) == [b"message %03d" % i for i in range(50)]
    assert spawned >= 50


# ------------------------------------------------------------ §67 waiting RPCs in one write


class RecordingStream:
    """A pubsub stream that records each write; ``fail`` makes writes raise StreamReset."""

    def __init__(self, fail: bool = False) -> None:
        self.writes: list[bytes] = []
        self.fail = fail

    async def write(self, data: bytes) -> None:
        if self.fail:
            raise StreamReset("gone")
        self.writes.append(data)


class DeadPeers:
    """Stands in for the Pubsub the sender reports dead peers to."""

    def __init__(self) -> None:
        self.dead: list[Any] = []

    def _handle_dead_peer(self, peer_id: Any) -> None:
        self.dead.append(peer_id)


def rpc_with(data: bytes, control: bool = False) -> rpc_pb2.RPC:
    rpc = rpc_pb2.RPC()
    if control:
        rpc.control.graft.add(topicID=data.decode())
    else:
        rpc.publish.add(data=data, topicIDs=[T])
    return rpc


def split_rpcs(data: bytes) -> list[rpc_pb2.RPC]:
    """The varint-prefixed RPCs in one write, as the receiving pubsub reads them."""
    rpcs = []
    while data:
        size, used = decode_varint_from_bytes(data), 0
        while data[used] & 0x80:
            used += 1
        used += 1
        rpc = rpc_pb2.RPC()
        rpc.ParseFromString(data[used : used + size])
        rpcs.append(rpc)
        data = data[used + size :]
    return rpcs


async def run_sender(queue: RpcQueue, stream: RecordingStream) -> DeadPeers:
    pubsub = DeadPeers()
    with trio.fail_after(5):
        await _coalescing_sender(pubsub)(ID(b"peer"), stream, queue)  # type: ignore[arg-type]
    return pubsub


async def test_s67_rpcs_that_wait_go_out_in_one_write_in_the_queues_order() -> None:
    """§67: 50 RPCs waiting in a peer's queue go out in one write, each with its own length prefix, control
    first as the library's queue orders them; a lone RPC goes out alone as soon as it is queued."""
    queue = RpcQueue(max_size=512)  # the node's queue size (the library's default is 32)
    for i in range(50):
        queue.push(rpc_with(b"message %02d" % i))
    queue.push(rpc_with(b"mesh", control=True), priority=True)
    queue.close()
    stream = RecordingStream()
    pubsub = await run_sender(queue, stream)
    assert len(stream.writes) == 1
    rpcs = split_rpcs(stream.writes[0])
    assert rpcs[0].control.graft[0].topicID == "mesh"
    assert [r.publish[0].data for r in rpcs[1:]] == [b"message %02d" % i for i in range(50)]
    assert pubsub.dead == []  # a closed queue is a peer that left, not a failure

    lone = RpcQueue()
    stream = RecordingStream()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_sender, lone, stream)
        lone.push(rpc_with(b"alone"))
        with trio.fail_after(5):
            while not stream.writes:
                await trio.sleep(0.01)
        lone.close()
    assert [r.publish[0].data for r in split_rpcs(stream.writes[0])] == [b"alone"]


async def test_s67_one_write_holds_at_most_coalesce_bytes_and_a_failed_write_drops_the_peer() -> None:
    """§67: a write stops at COALESCE_BYTES (plus the RPC that crossed it); a reset stream is a dead peer,
    as in the library's write_msg."""
    queue = RpcQueue(max_size=512)
    body = bytes(1000)
    for i in range(200):  # about 200 kB waiting
        queue.push(rpc_with(b"%03d" % i + body))
    queue.close()
    stream = RecordingStream()
    await run_sender(queue, stream)
    assert len(stream.writes) >= 3
    assert all(len(w) < COALESCE_BYTES + 1100 for w in stream.writes)
    sent = [r.publish[0].data[:3] for w in stream.writes for r in split_rpcs(w)]
    assert sent == [b"%03d" % i for i in range(200)]

    queue = RpcQueue()
    queue.push(rpc_with(b"lost"))
    pubsub = await run_sender(queue, RecordingStream(fail=True))
    assert pubsub.dead == [ID(b"peer")]

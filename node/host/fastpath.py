"""Cuts py-libp2p 0.8.1's CPU per gossip message: the host's fast path (docs/LIBP2P.md §60-§64, §66, §67).

A gossip message costs py-libp2p far more in frames, locks and bookkeeping
around it than in its own bytes (the profile is docs/LIBP2P.md §60). What this
module changes, each a section of that document:

- §61 one WINDOW_UPDATE per CREDIT_BATCH bytes read, not one per read: yamux
  in 0.8.1 credits every read back to the sender at once, and pubsub reads each
  RPC in three reads (two varint bytes, then the body), so each message cost
  three extra frames back to its sender, each one encrypted, sent, received,
  decrypted and demultiplexed;
- §62 pubsub reads its streams through a buffer (:class:`BufferedStream`): one
  yamux read per burst of RPCs instead of three per RPC, and its credit to the
  sender batched (§61);
- §63 the signed peer record that py-libp2p puts in *every* pubsub RPC is built
  once a second, not once per RPC, and a peer's record is verified when it
  changes, not on every RPC it sends (:func:`_cached_env_to_send`,
  :func:`_cached_consume_record`); and, as §53 asks of both, never older than
  the record identify sent, and an RPC whose record is merely out of date is
  read, not dropped;
- §64 the validation-result cache is an ordered dict (:class:`LruValidationCache`):
  the library's keeps its LRU order in a list and scans it on every message;
- §66 each received message is handled in the task that read it, in the
  order it came (:func:`_in_order_reader`): the library spawned a managed task
  for every copy (its parent found by a walk over all the service's tasks),
  most copies a node receives are duplicates dropped first thing in that task,
  and the spawned tasks of one read ran in any order;
- §67 the RPCs waiting in a peer's outbound queue go out in one write
  (:func:`_coalescing_sender`): one yamux frame, one Noise message and one TCP
  send for all of them, instead of one each. The bytes on the wire are the
  same (a pubsub stream is a sequence of length-prefixed RPCs); the batching
  only happens when RPCs wait, that is when the node is busy.

Everything here is per host: a host opened with ``fastpath=False`` (the
benchmarks' baseline) keeps the library's behaviour, also in the same process
(the two module-level hooks of §63 look the host up first). Relies on
``Pubsub.continuously_read_stream``, ``Pubsub.validation_cache``,
``Pubsub.push_msg``, ``Pubsub.handle_subscription``, ``Pubsub.router.handle_rpc``,
``Pubsub.handle_sending_messages`` / ``RpcQueue._queue``,
``NetStream.muxed_stream``, ``YamuxStream._auto_tune_and_send_window_update``
and the names ``env_to_send_in_RPC`` / ``maybe_consume_signed_record`` in
``libp2p.pubsub.pubsub`` and ``libp2p.pubsub.gossipsub``.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import libp2p.pubsub.gossipsub as _gossipsub_mod
import libp2p.pubsub.pubsub as _pubsub_mod
from libp2p.abc import IHost
from libp2p.io.exceptions import IOException, MessageTooLarge
from libp2p.network.connection.exceptions import RawConnError
from libp2p.network.stream.exceptions import StreamClosed, StreamEOF, StreamError, StreamReset
from libp2p.peer.envelope import consume_envelope
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import RpcQueue
from libp2p.utils import encode_varint_prefixed
from libp2p.utils.varint import read_varint_prefixed_bytes_limited

log = logging.getLogger("swapmeet.node.host")

#: Bytes asked of yamux per read of a pubsub stream (§62); yamux returns what it holds, up to this.
READ_CHUNK = 256 * 1024
#: Bytes read from a pubsub stream before we credit them to the sender (§61): a quarter of yamux's
#: 256 KiB initial window, so the sender never waits for a credit we hold back.
CREDIT_BATCH = 64 * 1024
#: How long a built signed peer record is reused before it is checked against our addresses again (§63).
RECORD_REUSE_S = 1.0
#: Peers whose last verified record we remember, per host (§63).
RECORD_CACHE_PEERS = 4096
#: At most this many bytes of waiting RPCs go to a peer in one write (§67): a quarter of yamux's initial
#: window, so one write never waits for more credit than a reader gives back at once (CREDIT_BATCH).
COALESCE_BYTES = 64 * 1024


class BufferedStream:
    """A pubsub stream read through a buffer: ``read(n)`` is served from what one yamux read returned (§62).

    Everything but ``read`` is the wrapped stream's (``muxed_conn``, ``reset``, ``write``...).
    The yamux stream beneath credits what was read in batches of CREDIT_BATCH bytes (§61).
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._buffer = bytearray()
        muxed = getattr(stream, "muxed_stream", None)
        if muxed is not None and hasattr(muxed, "_auto_tune_and_send_window_update"):
            muxed._auto_tune_and_send_window_update = _batched_credit(muxed._auto_tune_and_send_window_update)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def read(self, n: int | None = None) -> bytes:
        if not self._buffer:
            chunk = await self._stream.read(READ_CHUNK)
            if not chunk:
                return b""
            self._buffer += chunk
        if n is None or n < 0 or n >= len(self._buffer):
            data = bytes(self._buffer)
            self._buffer.clear()
            return data
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data


def _batched_credit(credit: Callable[..., Any]) -> Callable[..., Any]:
    """Yamux's per-read credit, called once CREDIT_BATCH bytes were read (as if one read had returned them)."""
    pending = 0

    async def batched(*, bytes_read: int = 0) -> None:
        nonlocal pending
        if bytes_read <= 0:
            await credit(bytes_read=bytes_read)
            return
        pending += bytes_read
        if pending >= CREDIT_BATCH:
            total, pending = pending, 0
            await credit(bytes_read=total)

    return batched


class LruValidationCache:
    """``Pubsub.validation_cache`` with the library's semantics (TTL, LRU, ``max_size``) in O(1) (§64)."""

    def __init__(self, ttl: float, max_size: int) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self.cache: OrderedDict[bytes, Any] = OrderedDict()

    def get(self, msg_id: bytes) -> Any | None:
        result = self.cache.get(msg_id)
        if result is None:
            return None
        if time.time() - result.timestamp > self.ttl:
            del self.cache[msg_id]
            return None
        self.cache.move_to_end(msg_id)
        return result

    def put(self, msg_id: bytes, result: Any) -> None:
        # As the library does: make room first, even when msg_id is already held.
        while self.cache and len(self.cache) >= self.max_size:
            self.cache.popitem(last=False)
        self.cache[msg_id] = result
        self.cache.move_to_end(msg_id)

    def clear_expired(self) -> None:
        now = time.time()
        for msg_id in [k for k, r in self.cache.items() if now - r.timestamp > self.ttl]:
            del self.cache[msg_id]

    def size(self) -> int:
        return len(self.cache)


class _HostRecords:
    """What §63 remembers for one fast host: our record as last built, and each peer's last verified one."""

    def __init__(self) -> None:
        self.own: tuple[bytes, bool] | None = None
        self.own_at = 0.0
        # The peerstore's local record when ``own`` was built: identify re-issues it when our
        # addresses change, and from then on ``own`` is out of date (§53).
        self.own_source: object = None
        self.peers: OrderedDict[ID, bytes] = OrderedDict()


_FAST_HOSTS: weakref.WeakKeyDictionary[IHost, _HostRecords] = weakref.WeakKeyDictionary()
_ORIGINAL: dict[str, Callable[..., Any]] = {}


def _cached_env_to_send(host: IHost) -> tuple[bytes, bool]:
    """``env_to_send_in_RPC`` rebuilding our record at most once per RECORD_REUSE_S (§63) or when re-issued (§53)."""
    records = _FAST_HOSTS.get(host)
    if records is None:
        return _ORIGINAL["env_to_send_in_RPC"](host)
    now = time.monotonic()
    local = host.get_peerstore().get_local_record()
    # Never older than what identify sends: a peer that got our newer record by identify drops
    # whole any RPC carrying an older one, our hello with its subscriptions included (§53).
    if records.own is None or now - records.own_at > RECORD_REUSE_S or local is not records.own_source:
        records.own = _ORIGINAL["env_to_send_in_RPC"](host)
        records.own_source = host.get_peerstore().get_local_record()
        records.own_at = now
        return records.own
    return records.own[0], False


def _cached_consume_record(msg: rpc_pb2.RPC, host: IHost, peer_id: ID) -> bool:
    """``maybe_consume_signed_record`` verifying a peer's record only when its bytes change (§63); §53 for old ones."""
    records = _FAST_HOSTS.get(host)
    if records is None or not msg.HasField("senderRecord"):
        return bool(_ORIGINAL["maybe_consume_signed_record"](msg, host, peer_id))
    record = msg.senderRecord
    if records.peers.get(peer_id) == record:
        return True
    ok = bool(_ORIGINAL["maybe_consume_signed_record"](msg, host, peer_id)) or _superseded(host, peer_id, record)
    if ok:
        records.peers[peer_id] = record
        records.peers.move_to_end(peer_id)
        while len(records.peers) > RECORD_CACHE_PEERS:
            records.peers.popitem(last=False)
    return ok


def _superseded(host: IHost, peer_id: ID, data: bytes) -> bool:
    """Whether ``data`` is ``peer_id``'s own valid record, only older than the one we hold (§53).

    The library drops a whole RPC whose record it does not store, and it does not store an older
    one: a record that crossed a newer one in flight (identify on another stream) would cost us
    the RPC's messages, subscriptions and GRAFTs. Such an RPC is processed; its record is not used.
    """
    try:
        envelope, record = consume_envelope(data, "libp2p-peer-record")  # checks the signature
        signer = ID.from_pubkey(envelope.public_key)
    except Exception:  # any malformed envelope: the library's verdict (drop the RPC) stands
        return False
    if signer != peer_id or record.peer_id != peer_id:
        return False  # someone else's record: not an out-of-date one of this peer's
    held = host.get_peerstore().get_peer_record(peer_id)
    return held is not None and held.record().seq > record.seq


def _hook_record_functions() -> None:
    """Point the two pubsub modules' names at the caching versions, once per process (§63)."""
    if _ORIGINAL:
        return
    _ORIGINAL["env_to_send_in_RPC"] = _pubsub_mod.env_to_send_in_RPC
    _ORIGINAL["maybe_consume_signed_record"] = _pubsub_mod.maybe_consume_signed_record
    for module in (_pubsub_mod, _gossipsub_mod):
        module.env_to_send_in_RPC = _cached_env_to_send  # type: ignore[attr-defined]
        module.maybe_consume_signed_record = _cached_consume_record  # type: ignore[attr-defined]


def _in_order_reader(pubsub: Pubsub) -> Callable[[Any], Awaitable[None]]:
    """``Pubsub.continuously_read_stream``: the library's loop, step for step, but each message is handled
    here, in the order received, instead of in a task spawned for it (§66), and read through a buffer (§62).

    The next RPC from this peer is read once this one's messages were validated and queued for
    forwarding, which bounds what one peer can make us hold at once. It cannot wait long: our validators
    are synchronous (``set_topic_validator(..., False)``), and forwarding only queues (§22). A message
    ``push_msg`` fails on is dropped and the reading goes on (in the library it failed its own task).
    Hosts are opened without libp2p's metrics channel, so the library's per-RPC metrics event is not sent.
    """

    async def continuously_read_stream(stream: Any) -> None:
        peer_id = stream.muxed_conn.peer_id
        buffered = BufferedStream(stream)
        try:
            while pubsub.manager.is_running:
                incoming = await read_varint_prefixed_bytes_limited(buffered, pubsub.max_inbound_rpc_size)
                rpc = rpc_pb2.RPC()
                rpc.ParseFromString(incoming)
                # the module's name, so that §63's caching version is the one called
                if not _pubsub_mod.maybe_consume_signed_record(rpc, pubsub.host, peer_id):
                    continue  # a record that is not the peer's own: the whole RPC is dropped, as the library does
                for msg in rpc.publish:
                    if not pubsub._is_subscribed_to_msg(msg):
                        continue
                    try:
                        await pubsub.push_msg(peer_id, msg)  # a copy already seen returns at once
                    except Exception as exc:  # a message the library cannot take: the peer's others still count
                        log.debug("pubsub: a message from %s failed: %r", peer_id, exc)
                if rpc.subscriptions and len(rpc.subscriptions) <= pubsub.max_subscriptions_per_rpc:
                    for sub in rpc.subscriptions:
                        pubsub.handle_subscription(peer_id, sub)
                if rpc.HasField("control"):
                    await pubsub.router.handle_rpc(rpc, peer_id)
        except MessageTooLarge:
            with contextlib.suppress(Exception):
                await stream.reset()
            pubsub._handle_dead_peer(peer_id)
        except (StreamEOF, StreamError, IOException, RawConnError):
            pass  # the stream or its connection ended: the library's loop ends here too

    return continuously_read_stream


def _coalescing_sender(pubsub: Pubsub) -> Callable[[ID, Any, RpcQueue], Awaitable[None]]:
    """``Pubsub.handle_sending_messages`` that writes every RPC waiting in the queue at once (§67).

    The library's loop pops one RPC and writes it, one frame per RPC. Here the first RPC is awaited as
    there, and whatever else waits by then (in the queue's own order: control before messages) is
    appended, each RPC with its own varint length prefix, up to COALESCE_BYTES. The errors are handled
    as the library's ``write_msg`` and loop handle them: the peer is dropped as dead.
    """

    async def handle_sending_messages(peer_id: ID, stream: Any, queue: RpcQueue) -> None:
        try:
            while True:
                rpc = await queue.pop()
                if rpc is None:
                    return  # the queue was closed: the peer is gone
                frames = [encode_varint_prefixed(rpc.SerializeToString())]
                size = len(frames[0])
                while size < COALESCE_BYTES and (waiting := queue._queue.pop()) is not None:
                    frames.append(encode_varint_prefixed(waiting.SerializeToString()))
                    size += len(frames[-1])
                try:
                    await stream.write(b"".join(frames))
                except (StreamClosed, StreamReset):
                    pubsub._handle_dead_peer(peer_id)
                    return
        except Exception:
            pubsub._handle_dead_peer(peer_id)

    return handle_sending_messages


def install_fastpath(host: IHost, pubsub: Pubsub) -> None:
    """Turn on §61-§64, §66 and §67 for this host and its pubsub (before the pubsub service runs)."""
    # §61, §62, §66: Pubsub.stream_handler calls self.continuously_read_stream: an instance attribute wins.
    pubsub.continuously_read_stream = _in_order_reader(pubsub)  # type: ignore[method-assign]
    # §67: _handle_new_peer runs self.handle_sending_messages for each peer; an instance attribute wins.
    pubsub.handle_sending_messages = _coalescing_sender(pubsub)  # type: ignore[method-assign]
    # §64
    old = pubsub.validation_cache
    pubsub.validation_cache = LruValidationCache(old.ttl, old.max_size)  # type: ignore[assignment]
    # §63
    _FAST_HOSTS[host] = _HostRecords()
    _hook_record_functions()

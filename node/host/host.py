"""The running libp2p host: :func:`open_host` and the :class:`P2PHost` it yields.

One host: TCP + Noise + Yamux, GossipSub with per-topic validators and peer
scoring (:mod:`.gossip`), framed stream protocols (:mod:`.streams`), bootstrap
dialling, mDNS and the DHT (:mod:`.discovery`), all inside one trio nursery;
leaving ``open_host`` shuts everything down without leaking sockets, threads or
tasks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from functools import lru_cache, partial
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair as _ed25519_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as _x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.peer.peerstore import PeerStoreError
from libp2p.pubsub.gossipsub import PROTOCOL_ID as GOSSIPSUB_V10
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11 as GOSSIPSUB_V11
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V12 as GOSSIPSUB_V12
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service
from libp2p.utils.address_validation import expand_wildcard_address
from swapmeet.protocol.errors import SwapmeetError

from ..config import validate_net
from ..refusals import RefusalLog
from .autonat import DialBack, Reachability
from .discovery import (
    Background,
    ConnectionNotifee,
    bootstrap_loop,
    find_market,
    run_dht,
    start_mdns,
    stop_mdns,
)
from .errors import (
    DialError,
    EndOfStream,
    FrameTooLargeError,
    P2PError,
    P2PTimeoutError,
    ProtocolNotSupportedError,
    PublishRejectedError,
    StreamClosedError,
)
from .fastpath import install_fastpath
from .gossip import (
    SUBSCRIPTION_BUFFER,
    CountingSend,
    GossipSettings,
    RoomyQueues,
    Subscription,
    Validator,
    content_msg_id,
    drop_stale_stream,
    keep_subscriptions_while_connected,
    mesh_diagnosis,
    peer_b58,
    resend_subscriptions,
)
from .holepunch import HolePuncher
from .liveness import Liveness, LivenessSettings
from .logs import configure_logging
from .muxer import Violation, enforce_window
from .names import topic
from .relay import HOP, STOP, RelayClient, RelayLimits, RelayService, is_relayed, relay_of
from .streams import DEFAULT_MAX_FRAME_SIZE, FramedStream, HandlerEntry, RequestHandler, StreamHandler

log = logging.getLogger("swapmeet.node.host")

DEFAULT_LISTEN_ADDRS: tuple[str, ...] = ("/ip4/0.0.0.0/tcp/0",)
_RPC_OVERHEAD = 64 * 1024
#: Seconds allowed for the shielded host.close() at shutdown (docs/LIBP2P.md §4).
_CLOSE_TIMEOUT = 5.0
#: Longest publish() waits for a full outbound queue to drain (docs/LIBP2P.md §22).
_PUBLISH_STALL = 2.0
#: Seconds a new peer has to tell us its protocols before we stop watching (docs/LIBP2P.md §41).
_VET_TIMEOUT = 20.0
_IDENTIFY = "/ipfs/id/1.0.0"
#: Seconds we refuse to dial a peer again after finding it speaks only another network's protocols.
_FOREIGN_S = 600.0
#: Seconds a dial to a peer's direct addresses gets before we try a relay.
_DIRECT_TRY_S = 3.0
#: Relays tried for one dial through a relay.
_MAX_RELAY_TRIES = 3
#: Seconds between two looks at our relay reservations.
_RELAY_KEEP_S = 5.0


def identity_key_pair(seed: bytes) -> KeyPair:
    """The libp2p Ed25519 key pair of a 32-byte seed (the node's identity key).

    Its public key bytes are PyNaCl's ``VerifyKey`` bytes, so the host's PeerID is
    ``swapmeet.protocol.identity.peer_id(public_key)``.
    """
    if not isinstance(seed, bytes | bytearray) or len(seed) != 32:
        raise ValueError("an Ed25519 seed is exactly 32 bytes")
    return _ed25519_key_pair(bytes(seed))


# -------------------------------------------------------------------------- host


@lru_cache(maxsize=4096)  # a base58 decode: liveness, gossip and the API ask for the same few peers
def _to_id(peer_id: str) -> ID:
    try:
        return ID.from_base58(peer_id)
    except Exception as exc:
        raise ValueError(f"not a PeerID: {peer_id!r}") from exc


def _parse_dial_addr(addr: str) -> tuple[multiaddr.Multiaddr, PeerInfo]:
    try:
        maddr = multiaddr.Multiaddr(addr)
        info = info_from_p2p_addr(maddr)
    except Exception as exc:
        raise ValueError(f"not a dialable multiaddr with /p2p/<peer id>: {addr!r} ({exc})") from exc
    return maddr, info


def _parse_listen_addr(addr: str) -> multiaddr.Multiaddr:
    try:
        maddr = multiaddr.Multiaddr(addr)
    except Exception as exc:
        raise ValueError(f"not a multiaddr: {addr!r}") from exc
    names = [p.name for p in maddr.protocols()]
    # TCP only: listen addrs also pick the transports in new_host()
    # (libp2p/__init__.py _build_transports_for_swarm), and we want no others.
    if len(names) != 2 or names[0] not in ("ip4", "ip6") or names[1] != "tcp":
        raise ValueError(f"listen address must be /ip4|ip6/<addr>/tcp/<port>, got {addr!r}")
    return maddr


class P2PHost:
    """A running libp2p host: identity, connections, gossip and stream protocols.

    Created by :func:`open_host`; valid only inside its ``async with`` block.

    Size: this is the one facade over libp2p (the architecture test keeps libp2p in this package);
    each public method wraps one libp2p operation (a dial, a topic, a stream) so that no room above
    touches libp2p, and splitting it would hand rooms a second object to hold for the same host.
    """

    def __init__(
        self,
        *,
        host: IHost,
        pubsub: Pubsub,
        router: GossipSub,
        dht: Any | None,
        nursery: trio.Nursery,
        net: str,
        max_frame_size: int,
        max_message_size: int,
        outbound_queue_size: int,
        allowed_topics: frozenset[str] | None,
        on_violation: Violation,
        refusals: RefusalLog,
        relay_client: RelayClient,
        relay_service: RelayService,
    ) -> None:
        self._host = host
        #: Our reservations on peers' relays, and dialling through them (relay.py).
        self.relay_client = relay_client
        #: The relay we offer to peers (on or off: :meth:`set_relay_service`).
        self.relay_service = relay_service
        #: Peers that spoke only other networks' protocols: dropped, never listed (docs/LIBP2P.md §41).
        #: AutoNAT's verdict on us (set by open_host once it runs).
        self._reach: Reachability | None = None
        self._foreign: dict[ID, float] = {}  # peer -> trio time until which we do not dial it
        self._vetting: set[ID] = set()
        self._relay_dials: dict[ID, trio.Event] = {}  # peer -> set when our dial through a relay to it ends
        #: Where the node's refusals of peer input are logged (rate-limited per peer).
        self.refusals = refusals
        self._allowed_topics = allowed_topics
        self._pubsub = pubsub
        self._router = router
        self._dht = dht
        self._nursery = nursery
        self.net = net
        self._prefix = f"/swapmeet/{net}/"
        self._max_frame_size = max_frame_size
        self._max_message_size = max_message_size
        self._queue_high_water = max(1, outbound_queue_size * 3 // 4)
        self._validators: dict[str, Validator] = {}
        self._handlers: dict[str, HandlerEntry] = {}
        self._my_id: ID = host.get_id()
        self.peer_id: str = self._my_id.to_base58()
        self._connections_changed = trio.Event()
        self._on_violation = on_violation
        #: Pings each connection and redials silent ones (docs/LIBP2P.md §65); None when turned off.
        self.liveness: Liveness | None = None
        #: DCUtR: relayed connections upgraded to direct ones (holepunch.py, docs/LIBP2P.md §45).
        self.hole_puncher: HolePuncher | None = None
        network = host.get_network()
        for conn in network.get_connections():  # any accepted before we were built
            enforce_window(conn.muxed_conn, on_violation)
        network.register_notifee(ConnectionNotifee(self._on_connection))

    # ------------------------------------------------------------ identity

    def listen_addrs(self) -> list[str]:
        """Our dialable multiaddrs, each ending in ``/p2p/<peer id>``.

        Wildcard listen addresses (0.0.0.0, ::) are expanded to the interface
        addresses, since a peer cannot dial 0.0.0.0.
        """
        out: list[str] = []
        for addr in self._host.get_transport_addrs():
            names = {p.name for p in addr.protocols()}
            wildcard = ("ip4" in names and addr.value_for_protocol("ip4") == "0.0.0.0") or (
                "ip6" in names and addr.value_for_protocol("ip6") == "::"
            )
            concrete = expand_wildcard_address(addr) if wildcard else [addr]
            out.extend(f"{a}/p2p/{self.peer_id}" for a in concrete)
        return out

    # ---------------------------------------------------------- connections

    async def connect(self, addr: str, *, timeout: float = 10.0) -> str:
        """Dial ``/ip4/.../tcp/.../p2p/<id>`` or ``.../p2p/<relay>/p2p-circuit/p2p/<id>`` (no-op if connected).

        Returns the peer id.
        """
        pair = relay_of(addr)
        if pair is not None:
            relay, target = _to_id(pair[0]), _to_id(pair[1])
            if not self._host.get_network().get_connections(target):
                head = addr.split("/p2p-circuit", 1)[0]
                if not self._host.get_network().get_connections(relay):
                    await self.connect(head, timeout=timeout)
                try:
                    with trio.fail_after(timeout):
                        await self._dial_relayed(target, [relay])
                except trio.TooSlowError as exc:
                    raise P2PTimeoutError(f"dialling {addr} took longer than {timeout} s") from exc
            return pair[1]
        _, info = _parse_dial_addr(addr)
        if info.peer_id == self._my_id:
            raise ValueError("refusing to dial ourselves")
        self._refuse_foreign(info.peer_id)
        network = self._host.get_network()
        if not network.get_connections(info.peer_id):
            # py-libp2p 0.8.1 workaround (the one place for it): Swarm.dial_peer dials a
            # single TCP address per peer, picked from everything the peerstore holds
            # (stale ones included: a peer restarted on a new port stays unreachable),
            # and after a failed dial it refuses every dial to that peer for 60 s (its
            # negative cache). So the address we are asked to dial becomes the only one
            # the peerstore holds, and the negative cache is lifted for this attempt.
            # Identify refills the peerstore once connected.
            self._host.get_peerstore().clear_addrs(info.peer_id)
            network.unblock_peer(info.peer_id)
        try:
            with trio.fail_after(timeout):
                await self._host.connect(info)
        except trio.TooSlowError as exc:
            raise P2PTimeoutError(f"dialling {addr} took longer than {timeout} s") from exc
        except (BaseLibp2pError, OSError) as exc:
            raise DialError(f"cannot dial {addr}: {exc}") from exc
        return info.peer_id.to_base58()

    async def disconnect(self, peer_id: str) -> None:
        """Close all connections to ``peer_id``."""
        await self._host.disconnect(_to_id(peer_id))

    def is_connected(self, peer_id: str) -> bool:
        """Whether at least one connection to ``peer_id`` is open."""
        return bool(self._host.get_network().get_connections(_to_id(peer_id)))

    def _on_connection(self, conn: INetConn, connected: bool) -> None:
        if connected:
            enforce_window(conn.muxed_conn, self._on_violation)
            peer = conn.muxed_conn.peer_id
            if peer not in self._vetting:
                self._vetting.add(peer)
                try:
                    self._nursery.start_soon(self._vet, peer)
                except RuntimeError:  # shutting down
                    self._vetting.discard(peer)
        drop_stale_stream(self._pubsub, conn.muxed_conn.peer_id)  # docs/LIBP2P.md §48
        self._connections_changed.set()

    def _protocols(self, peer: ID) -> set[str]:
        try:
            return {str(p) for p in self._host.get_peerstore().get_protocols(peer)}
        except (BaseLibp2pError, PeerStoreError):
            return set()

    def speaks_our_net(self, peer_id: str) -> bool:
        """Whether the peer told us (identify) that it speaks a protocol of our network."""
        return any(p.startswith(self._prefix) for p in self._protocols(_to_id(peer_id)))

    async def _vet(self, peer: ID) -> None:
        """Once identify has told us a new peer's protocols: drop it if it speaks only other networks'.

        A peer of no market at all (a plain DHT server or relay) stays connected but is not one
        of our :meth:`market_peers` (docs/LIBP2P.md §41).
        """
        try:
            with trio.move_on_after(_VET_TIMEOUT):
                while self._host.get_network().get_connections(peer):
                    protocols = self._protocols(peer)
                    if any(p.startswith(self._prefix) for p in protocols):
                        self._foreign.pop(peer, None)
                        self._connections_changed.set()  # now one of our market peers
                        return
                    # identify lists itself among the protocols: this is the whole list. A host
                    # that serves no market protocol itself (a plain DHT server) judges nobody.
                    if _IDENTIFY in protocols and any(p.startswith(self._prefix) for p in self._handlers):
                        nets = sorted({p.split("/")[2] for p in protocols if p.startswith("/swapmeet/")})
                        if nets:
                            self._foreign[peer] = trio.current_time() + _FOREIGN_S
                            log.info("closing the connection to %s: it speaks network %s, not %r", peer, nets, self.net)
                            with suppress(Exception):
                                await self._host.disconnect(peer)
                        return
                    await trio.sleep(0.1)
        finally:
            self._vetting.discard(peer)

    def _refuse_foreign(self, peer: ID) -> None:
        until = self._foreign.get(peer)
        if until is not None:
            if until > trio.current_time():
                raise DialError(f"{peer} is a peer of another network; not dialling it")
            del self._foreign[peer]

    def market_peers(self) -> list[str]:
        """Connected peers that speak our network's protocols (what ``peers`` lists)."""
        return [p for p in self.connected_peers() if self.speaks_our_net(p)]

    def connections(self, peer_id: str) -> list[dict[str, Any]]:
        """Each open connection to the peer: ``{"relayed": bool, "addr": str}``."""
        out = []
        for conn in self._host.get_network().get_connections(_to_id(peer_id)):
            relayed = is_relayed(conn)
            addrs: list[Any] = []
            with suppress(Exception):
                addrs = list(conn.get_transport_addresses())
            if not addrs:
                with suppress(Exception):
                    remote = conn.muxed_conn.secured_conn.get_remote_address()  # type: ignore[attr-defined]
                    if remote:
                        addrs = [f"/ip4/{remote[0]}/tcp/{remote[1]}"]
            out.append({"relayed": relayed, "addr": str(addrs[0]) if addrs else ""})
        return out

    def hole_punch(self, peer_id: str) -> str | None:
        """``direct``, ``trying`` or ``failed: why`` if we tried to punch through to the peer, else None."""
        return self.hole_puncher.state(_to_id(peer_id)) if self.hole_puncher is not None else None

    # ------------------------------------------------------------- relays

    def circuit_addrs(self) -> list[str]:
        """Our ``/p2p-circuit`` addresses through the relays we hold reservations on."""
        return [str(a) for a in self.relay_client.circuit_addrs()]

    def reachability(self) -> str:
        """``public``, ``private`` or ``unknown``: what our peers' AutoNAT dial-backs found (autonat.py)."""
        return self._reach.status if self._reach is not None else "unknown"

    def relay_status(self) -> dict[str, Any]:
        """The relay service's state and counters, and our reservations (``node status``)."""
        stats = self.relay_service.stats
        return {
            "service": self.relay_service.on,
            "reservations": sorted(r.to_base58() for r in self.relay_client.held),
            "circuits_relayed": stats.circuits_opened,
            "bytes_relayed": stats.bytes_relayed,
            "circuits_cut": stats.circuits_cut,
            "reservations_refused": stats.reservations_refused,
            "circuits_refused": stats.circuits_refused,
            "hole_punches": {
                "direct": self.hole_puncher.succeeded if self.hole_puncher else 0,
                "failed": self.hole_puncher.failed if self.hole_puncher else 0,
            },
        }

    def set_relay_service(self, on: bool) -> None:
        """Offer (or stop offering) the capped relay service to our peers."""
        if on and not self.relay_service.on:
            self.relay_service.start()
            log.info("relay service on")
        elif not on and self.relay_service.on:
            self.relay_service.stop()
            log.info("relay service off")

    def _relays_for(self, peer: ID) -> list[ID]:
        """Relays to try for ``peer``: from its known circuit addresses, then our relays, then any HOP peer."""
        out: list[ID] = []
        for addr in self.known_addrs(peer.to_base58()):
            pair = relay_of(addr)
            if pair is not None and pair[1] == peer.to_base58():
                with suppress(ValueError):
                    out.append(_to_id(pair[0]))
        out.extend(self.relay_client.held)
        network = self._host.get_network()
        for other in self._host.get_connected_peers():
            conns = network.get_connections(other)
            if conns and not all(is_relayed(c) for c in conns) and HOP in self._protocols(other):
                out.append(other)
        seen: set[ID] = set()
        return [r for r in out if r != peer and r != self._my_id and not (r in seen or seen.add(r))]  # type: ignore[func-returns-value]

    async def _dial_relayed(self, peer: ID, relays: list[ID] | None = None) -> None:
        """Connect to ``peer`` through one of at most three relays; DialError if none brings us there.

        One such dial per peer at a time: callers that find none open (a trade's stream, the DHT's
        discovery, a redial) would each open a circuit, and the peer would hold two connections
        through the relay, each counted against the relay's per-peer circuit cap. A caller that
        finds a dial under way waits for it and dials only if it brought no connection.
        """
        while (under_way := self._relay_dials.get(peer)) is not None:
            await under_way.wait()
        if self._host.get_network().get_connections(peer):
            return
        self._relay_dials[peer] = done = trio.Event()
        errors = []
        try:
            for relay in (relays if relays is not None else self._relays_for(peer))[:_MAX_RELAY_TRIES]:
                if not self._host.get_network().get_connections(relay):
                    continue
                try:
                    await self.relay_client.dial(relay, peer)
                except (BaseLibp2pError, OSError, ConnectionError, trio.TooSlowError, Exception) as exc:
                    errors.append(f"via {relay.to_base58()[-8:]}: {exc}")
                    continue
                log.info("connected to %s through relay %s", peer, relay)
                return
        finally:
            del self._relay_dials[peer]
            done.set()
        raise DialError(f"cannot reach {peer} through a relay ({'; '.join(errors) or 'no relay known'})")

    async def wait_connections_changed(self, timeout: float) -> None:
        """Return when a connection opened or closed since the last call, or after ``timeout`` seconds.

        Wakes early on the library's connection notifications; callers still compare
        :meth:`connected_peers` themselves (a notification may come before or after the
        peer is listed), so the timeout is their safety net, not their clock.
        """
        with trio.move_on_after(timeout):
            await self._connections_changed.wait()
        self._connections_changed = trio.Event()

    def connected_peers(self) -> list[str]:
        """Peer ids with at least one open connection."""
        return sorted(p.to_base58() for p in self._host.get_connected_peers())

    def known_addrs(self, peer_id: str) -> list[str]:
        """Addresses the peerstore holds for ``peer_id`` (from dials, identify, mDNS, DHT)."""
        return [str(a) for a in self.known_multiaddrs(peer_id)]

    def known_multiaddrs(self, peer_id: str) -> list[multiaddr.Multiaddr]:
        """:meth:`known_addrs` as multiaddrs: a str() of each decodes it again, and a caller that keeps them
        in case it needs them (liveness, each ping) makes text of them only when it does (docs/LIBP2P.md §68)."""
        try:
            return list(self._host.get_peerstore().addrs(_to_id(peer_id)))
        except (BaseLibp2pError, PeerStoreError):
            # PeerStoreError is a KeyError, not a BaseLibp2pError (docs/LIBP2P.md §9); it is raised
            # for a peer whose addresses expired or that disconnected a moment ago.
            return []

    # -------------------------------------------------------------- gossip

    def _check_topic(self, topic_id: str) -> None:
        # A topic of another network name would silently mix markets.
        if not topic_id.startswith(self._prefix):
            raise ValueError(f"topic {topic_id!r} is not on network {self.net!r} (expected {self._prefix}...)")
        if self._allowed_topics is not None and topic_id not in self._allowed_topics:
            raise ValueError(f"topic {topic_id!r} is not among this host's gossip_topics")

    async def subscribe(self, topic_id: str, validator: Validator) -> Subscription:
        """Join ``topic_id``; ``validator(from_peer, data) -> bool`` gates every message.

        The validator runs before a message is delivered to us *or forwarded* to our
        mesh peers (a libp2p topic validator). It must be fast and must not raise
        (an exception counts as a reject). ``from_peer`` is the signed originator.
        """
        self._check_topic(topic_id)
        if topic_id in self._validators:
            raise ValueError(f"already subscribed to {topic_id}")
        self._validators[topic_id] = validator
        my_id = self._my_id

        def libp2p_validator(forwarder: ID, msg: rpc_pb2.Message) -> bool:
            # publish() already validated our own messages; don't run it twice.
            if forwarder == my_id and msg.from_id == my_id.to_bytes():
                return True
            try:
                return bool(validator(peer_b58(msg.from_id), msg.data))
            except Exception:
                # The library only catches ValidationError around sync validators; anything
                # else stops the whole Pubsub service, and the host with it (docs/LIBP2P.md §17).
                log.exception("validator for %s raised; treating the message as invalid", topic_id)
                return False

        self._pubsub.set_topic_validator(topic_id, libp2p_validator, False)
        await self._pubsub.subscribe(topic_id)
        # The library delivers into a 32-slot channel with send_nowait and drops on
        # overflow (docs/LIBP2P.md §21): a reader that falls behind for a moment,
        # say while it waits on SQLite, loses messages. So we swap in our own, larger
        # channel (the library closes whatever is in subscribed_topics_send on unsubscribe).
        send, receive = trio.open_memory_channel[rpc_pb2.Message](SUBSCRIPTION_BUFFER)
        subscription = Subscription(self, topic_id, receive)
        old = self._pubsub.subscribed_topics_send[topic_id]
        self._pubsub.subscribed_topics_send[topic_id] = CountingSend(send, subscription)
        await old.aclose()
        return subscription

    async def unsubscribe(self, topic_id: str) -> None:
        """Leave ``topic_id``; its Subscription ends."""
        self._validators.pop(topic_id, None)
        await self._pubsub.unsubscribe(topic_id)
        self._pubsub.remove_topic_validator(topic_id)

    async def publish(self, topic_id: str, data: bytes) -> None:
        """Sign (StrictSign) and gossip ``data`` on ``topic_id``.

        Raises PublishRejectedError if our own validator for the topic rejects it
        (the library would drop it silently: docs/LIBP2P.md §20), FrameTooLargeError if it is
        larger than the configured maximum message size.
        """
        self._check_topic(topic_id)
        if len(data) > self._max_message_size:
            raise FrameTooLargeError(
                f"refusing to publish {len(data)} bytes on {topic_id}: the limit is {self._max_message_size}"
            )
        validator = self._validators.get(topic_id)
        if validator is not None and not validator(self.peer_id, data):
            raise PublishRejectedError(f"our own validator for {topic_id} rejects this message")
        await self._wait_for_outbound_room()
        await self._pubsub.publish(topic_id, bytes(data))

    async def _wait_for_outbound_room(self) -> None:
        # pubsub.publish() only *enqueues* per-peer RPCs and never yields to the
        # sender tasks, so publishing in a loop overflows the queues and drops
        # (docs/LIBP2P.md §22). Give the senders a chance first. A peer whose queue
        # stays full is waited for at most `_PUBLISH_STALL` s per publish, then left
        # to drop (as go-libp2p does); while it stays full, every publish pays that
        # wait (any peer's queue counts, whether or not it is on the topic).
        deadline = trio.current_time() + _PUBLISH_STALL
        while True:
            if all(len(q) < self._queue_high_water for q in self._pubsub.peer_queues.values()):
                return
            if trio.current_time() > deadline:
                log.debug("publishing although an outbound queue is still full")
                return
            await trio.sleep(0.001)

    def mesh_peers(self, topic_id: str) -> list[str]:
        """Peers in our GossipSub mesh for ``topic_id`` (we forward full messages to them)."""
        return sorted(p.to_base58() for p in self._router.mesh.get(topic_id, ()))

    def topic_peers(self, topic_id: str) -> list[str]:
        """Connected peers that told us they subscribe to ``topic_id``."""
        return sorted(p.to_base58() for p in self._pubsub.peer_topics.get(topic_id, ()))

    async def wait_for_mesh(
        self, topic_id: str, peers: Iterable[str] = (), *, min_peers: int = 1, timeout: float = 10.0
    ) -> None:
        """Wait until ``peers`` (or else any ``min_peers`` peers) are in our mesh for the topic.

        Right after connecting the mesh is not formed yet (docs/LIBP2P.md §24):
        a test or a benchmark that means to measure the mesh waits for it. The
        wait is event-driven for named peers (GossipSub.wait_for_mesh) and a short
        poll otherwise.
        """
        wanted = [_to_id(p) for p in peers]
        try:
            with trio.fail_after(timeout):
                if wanted:
                    for pid in wanted:
                        # The router has its own (5 s default) timeout; ours bounds the total.
                        await self._router.wait_for_mesh(pid, topic_id, timeout=math.inf)
                else:
                    while len(self._router.mesh.get(topic_id, ())) < min_peers:
                        await trio.sleep(0.01)
        except trio.TooSlowError as exc:
            missing = [p for p in wanted if p not in self._router.mesh.get(topic_id, ())]
            why = "; ".join(mesh_diagnosis(self._pubsub, topic_id, p) for p in missing)
            raise P2PTimeoutError(
                f"mesh for {topic_id} not ready after {timeout} s (have {self.mesh_peers(topic_id)})"
                + (f"; missing {why}" if why else "")
            ) from exc

    def dht_peers(self) -> list[str]:
        """Peer ids in our Kademlia routing table ([] without the DHT)."""
        if self._dht is None:
            return []
        return sorted(p.to_base58() for p in self._dht.routing_table.get_peer_ids())

    def peer_score(self, peer_id: str, topic_id: str) -> float:
        """The GossipSub score we give ``peer_id`` on ``topic_id`` (diagnostics)."""
        return float(self._router.scorer.score(_to_id(peer_id), [topic_id]))

    # ------------------------------------------------------------- streams

    def set_stream_handler(
        self,
        protocol: str,
        handler: StreamHandler,
        *,
        max_frame_size: int | None = None,
        max_concurrent: int = 64,
        max_per_peer: int = 8,
    ) -> None:
        """Serve ``protocol``: ``handler(stream)`` runs in our nursery per inbound stream.

        The stream is closed when the handler returns and reset if it raises. Beyond
        ``max_concurrent`` simultaneous streams in all, or ``max_per_peer`` from one peer,
        new ones are reset (a refusal: one rate-limited log line per peer).
        """
        self._handlers[protocol] = HandlerEntry(
            handler=handler,
            max_frame_size=max_frame_size or self._max_frame_size,
            max_concurrent=max_concurrent,
            max_per_peer=max_per_peer,
        )

        async def libp2p_handler(stream: INetStream) -> None:
            # The library awaits the handler in its own task and never closes the
            # stream itself (docs/LIBP2P.md §29). We move the work into our nursery
            # so it is cancelled with the host and obeys our concurrency limit.
            entry = self._handlers.get(protocol)
            if entry is None:
                await stream.reset()
                return
            peer = stream.muxed_conn.peer_id.to_base58()
            refusal = entry.admit(peer)
            if refusal is not None:
                self.refusals.refused(peer, f"a {protocol} stream", refusal)
                await stream.reset()
                return
            try:
                self._nursery.start_soon(self._run_handler, entry, stream, peer)
            except RuntimeError:  # nursery closed: we are shutting down
                entry.release(peer)
                await stream.reset()

        self._host.set_stream_handler(TProtocol(protocol), libp2p_handler)

    async def _run_handler(self, entry: HandlerEntry, stream: INetStream, peer: str) -> None:
        framed = FramedStream(stream, entry.max_frame_size)
        try:
            await entry.handler(framed)
        except (P2PError, BaseLibp2pError, trio.TooSlowError, SwapmeetError) as exc:
            # The peer's doing (bad input, a broken protocol, a stall, a closed stream): a refusal,
            # rate-limited per peer, never a traceback.
            self.refusals.refused(peer, f"a {framed.protocol} stream", str(exc) or type(exc).__name__)
            await framed.reset()
        except Exception:
            log.exception("%s handler crashed on a stream from %s", framed.protocol, framed.peer_id)
            await framed.reset()
        else:
            await framed.aclose()
        finally:
            entry.release(peer)

    def set_request_handler(
        self,
        protocol: str,
        handler: RequestHandler,
        *,
        max_frame_size: int | None = None,
        timeout: float = 30.0,
        max_concurrent: int = 64,
        max_per_peer: int = 8,
    ) -> None:
        """Serve one-shot requests: ``response = await handler(from_peer, request)``.

        An oversize request or a handler error resets the stream, which the
        requester sees as StreamClosedError.
        """

        async def serve(stream: FramedStream) -> None:
            with trio.fail_after(timeout):
                request = await stream.receive()
                response = await handler(stream.peer_id, request)
                await stream.send(response)

        self.set_stream_handler(
            protocol, serve, max_frame_size=max_frame_size, max_concurrent=max_concurrent, max_per_peer=max_per_peer
        )

    def remove_stream_handler(self, protocol: str) -> None:
        self._handlers.pop(protocol, None)
        self._host.remove_stream_handler(TProtocol(protocol))

    async def open_stream(
        self, peer_id: str, protocol: str, *, timeout: float = 10.0, max_frame_size: int | None = None
    ) -> FramedStream:
        """Open a framed stream to ``peer_id`` (dialling from the peerstore if needed).

        Use it as ``async with await host.open_stream(...) as s:`` for multi-frame
        protocols (sync); the caller owns the stream.
        """
        pid = _to_id(peer_id)
        self._refuse_foreign(pid)
        try:
            with trio.fail_after(timeout):
                if not self._host.get_network().get_connections(pid):
                    await self._dial_direct_then_relayed(pid)
                stream = await self._host.new_stream(pid, [TProtocol(protocol)])
        except trio.TooSlowError as exc:
            raise P2PTimeoutError(f"opening {protocol} to {peer_id} took longer than {timeout} s") from exc
        except BaseLibp2pError as exc:
            if "protocol not supported" in repr(exc.__cause__).lower() or "not supported" in str(exc).lower():
                raise ProtocolNotSupportedError(f"{peer_id} does not speak {protocol}") from exc
            raise DialError(f"cannot open {protocol} to {peer_id}: {exc}") from exc
        return FramedStream(stream, max_frame_size or self._max_frame_size)

    async def dial_provider(self, info: PeerInfo, *, timeout: float) -> None:
        """Connect to a peer found in the DHT: its direct addresses, else through a relay."""
        if info.peer_id == self._my_id:
            raise ValueError("refusing to dial ourselves")
        self._refuse_foreign(info.peer_id)
        if info.addrs:
            self._host.get_peerstore().add_addrs(info.peer_id, list(info.addrs), 600)
        try:
            with trio.fail_after(timeout):
                await self._dial_direct_then_relayed(info.peer_id)
        except trio.TooSlowError as exc:
            raise P2PTimeoutError(f"dialling market peer {info.peer_id} took longer than {timeout} s") from exc

    def _direct_addrs(self, peer: ID) -> list[str]:
        return [a for a in self.known_addrs(peer.to_base58()) if "/p2p-circuit" not in a]

    async def _dial_direct_then_relayed(self, peer: ID) -> None:
        """Dial ``peer``'s known direct addresses (briefly), else go through a relay.

        A peer behind a NAT advertises addresses nobody outside can dial; a dial to one fails
        or hangs, so it gets :data:`_DIRECT_TRY_S`, and the relay is the fallback.
        """
        direct = self._direct_addrs(peer)
        if direct:
            with trio.move_on_after(_DIRECT_TRY_S), suppress(BaseLibp2pError, OSError):
                await self._host.connect(PeerInfo(peer, [multiaddr.Multiaddr(a) for a in direct]))
            if self._host.get_network().get_connections(peer):
                return
        await self._dial_relayed(peer)

    async def request(
        self,
        peer_id: str,
        protocol: str,
        payload: bytes,
        timeout: float = 10.0,
        *,
        max_frame_size: int | None = None,
    ) -> bytes:
        """Send one request frame and return the one response frame."""
        limit = max_frame_size or self._max_frame_size
        if len(payload) > limit:
            # Check before dialling: no point opening a stream for it.
            raise FrameTooLargeError(
                f"refusing to send a {len(payload)}-byte request on {protocol}: the limit is {limit} bytes"
            )
        try:
            with trio.fail_after(timeout):
                stream = await self.open_stream(peer_id, protocol, timeout=math.inf, max_frame_size=limit)
                try:
                    await stream.send(payload)
                    await stream.close_write()
                    response = await stream.receive()
                except BaseException:
                    await stream.reset()
                    raise
                await stream.aclose()
                return response
        except trio.TooSlowError as exc:
            raise P2PTimeoutError(f"{protocol} request to {peer_id} took longer than {timeout} s") from exc
        except EndOfStream as exc:
            # A server refuses (oversize request, handler error) by resetting the
            # stream, but yamux in 0.8.1 reports a RST as a clean EOF to a waiting
            # reader (docs/LIBP2P.md §30). So both look the same here.
            raise StreamClosedError(
                f"{peer_id} closed or reset {protocol} without answering "
                "(request refused as too large, handler failed, or peer shutting down)"
            ) from exc

    # ----------------------------------------------------------------- DHT

    async def find_peer(self, peer_id: str, *, timeout: float = 10.0) -> list[str]:
        """Addresses of ``peer_id`` from the peerstore or a Kademlia lookup ([] if unknown)."""
        if self._dht is None:
            raise RuntimeError("the DHT is not enabled on this host (open_host(enable_dht=True))")
        with trio.move_on_after(timeout):
            info = await self._dht.find_peer(_to_id(peer_id))
            if info is not None:
                return [str(a) for a in info.addrs]
        return []


# ------------------------------------------------------------------ open_host


def _connection_config(max_connections: int) -> ConnectionConfig:
    high = min(300, max_connections)
    low = min(100, high)
    return ConnectionConfig(
        # With the default of 3, every connect() sits in a fallback dial timer for
        # ~250 ms (docs/LIBP2P.md §1); one connection per peer is all we use anyway.
        max_connections_per_peer=1,
        max_connections=max_connections,
        high_watermark=high,
        low_watermark=low,
        min_connections=min(50, low),
    )


async def _close_connection(conn: INetConn) -> None:
    try:
        await conn.close()
    except Exception:
        log.debug("closing a connection failed", exc_info=True)


async def _close_host_shielded(host: IHost) -> None:
    # host.run()'s own cleanup runs while cancelled and leaks fds, threads and
    # tasks, and the port keeps accepting connections (docs/LIBP2P.md §4). An
    # explicit host.close() that cannot be cancelled, but cannot hang either, fixes it.
    with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT) as scope:
        # Closing one connection sleeps a fixed 0.2 s and Swarm.close() closes them
        # one after another (docs/LIBP2P.md §5): 50 peers would take 10 s. So we
        # close them concurrently first; host.close() then finds none left.
        async with trio.open_nursery() as nursery:
            for conn in host.get_network().get_connections():
                nursery.start_soon(_close_connection, conn)
        try:
            await host.close()
        except Exception:
            log.debug("host.close() failed", exc_info=True)
    if scope.cancelled_caught:
        log.warning("libp2p host did not close within %s s", _CLOSE_TIMEOUT)


def _bootstrap_entries(bootstrap: Sequence[str]) -> list[tuple[str, multiaddr.Multiaddr, PeerInfo]]:
    boot: list[tuple[str, multiaddr.Multiaddr, PeerInfo]] = []
    for addr in bootstrap:
        try:
            boot.append((addr, *_parse_dial_addr(addr)))
        except ValueError as exc:
            # A bad entry (e.g. in a saved-peers file) must not stop the node.
            log.warning("ignoring bootstrap address: %s", exc)
    return boot


def _new_libp2p_host(
    seed: bytes,
    maddrs: list[multiaddr.Multiaddr],
    max_connections: int,
    extra_addrs: Callable[[], list[multiaddr.Multiaddr]],
) -> IHost:
    key_pair = identity_key_pair(seed)

    def addrs_factory(candidates: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
        # What identify (and so the DHT) tells peers: our listen addresses, plus our
        # /p2p-circuit addresses through the relays we hold reservations on.
        return [*candidates, *extra_addrs()]

    return new_host(
        addrs_factory=addrs_factory,
        key_pair=key_pair,
        # Without explicit options the host also offers TLS, SECIO, plaintext and
        # Mplex (docs/LIBP2P.md §2).
        sec_opt={NOISE_PROTOCOL_ID: NoiseTransport(key_pair, noise_privkey=_x25519_key_pair().private_key)},
        # Its receive window is enforced on each connection (P2PHost, docs/LIBP2P.md §32).
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        listen_addrs=maddrs,
        connection_config=_connection_config(max_connections),
        # Discovery is ours (discovery.py): the built-in mDNS advertises on a fixed port
        # and service name shared by every libp2p app, and the built-in bootstrap
        # does not tell us which peers failed.
        enable_mDNS=False,
        bootstrap=None,
    )


def _new_router(settings: GossipSettings) -> GossipSub:
    return GossipSub(
        # 1.1 (scoring, PX) and 1.0 for old peers; 1.2 only on request (see
        # GossipSettings.meshsub_v12). 1.3/1.4/2.0 in this library are drafts.
        protocols=([GOSSIPSUB_V12] if settings.meshsub_v12 else []) + [GOSSIPSUB_V11, GOSSIPSUB_V10],
        degree=settings.degree,
        degree_low=settings.degree_low,
        degree_high=settings.degree_high,
        time_to_live=settings.fanout_ttl,
        gossip_window=settings.gossip_window,
        gossip_history=settings.gossip_history,
        heartbeat_initial_delay=0.1,
        heartbeat_interval=settings.heartbeat_interval,
        # Peer exchange off: peers come from bootstrap, mDNS and the DHT, not from
        # whoever PRUNEs us.
        do_px=False,
        score_params=settings.score_params(),
        # Adaptive gossip stretches the heartbeat to 30-60 s from its first health
        # check on (docs/LIBP2P.md §12).
        adaptive_gossip_enabled=False,
        # Caps forwarding at 10 msgs/s per forwarding peer per topic, our own
        # publishes included (docs/LIBP2P.md §13). Rate limits belong in our
        # validators, which know the author.
        spam_protection_enabled=False,
        # IP-diversity grafting/pruning (docs/LIBP2P.md §14): every peer of a LAN
        # swarm behind one NAT, or of a test swarm on 127.0.0.1, shares an IP, so it
        # only adds churn for us.
        eclipse_protection_enabled=False,
    )


def _new_pubsub(
    host: IHost,
    router: GossipSub,
    settings: GossipSettings,
    per_publication: frozenset[str],
    allowed: frozenset[str] | None,
) -> Pubsub:
    pubsub = Pubsub(
        host,
        router,
        seen_ttl=settings.seen_ttl,
        # StrictSign: every message carries the originator's signature, which is
        # what go/js-libp2p expect (docs/LIBP2P.md §25).
        strict_signing=True,
        msg_id_constructor=partial(content_msg_id, per_publication=per_publication),
        max_inbound_rpc_size=settings.max_message_size + _RPC_OVERHEAD,
        allowed_topics=allowed,
    )
    pubsub.peer_queues = RoomyQueues(settings.outbound_queue_size)
    keep_subscriptions_while_connected(pubsub)  # docs/LIBP2P.md §46
    return pubsub


async def _cut_off(p2p: P2PHost, violators: trio.MemoryReceiveChannel[ID]) -> None:
    """Disconnect every peer that broke flow control (the muxer already dropped what it sent)."""
    async for peer in violators:
        with suppress(Exception):  # it may be gone already; the connection is what we want gone
            await p2p.disconnect(peer.to_base58())


def _start_relaying(
    p2p: P2PHost, host: IHost, nursery: trio.Nursery, client: RelayClient, *, serve: bool, reserve: int
) -> None:
    """AutoNAT, circuits relays bring us, our relay service if ``serve``, and ``reserve`` reservations.

    The relay service follows reachability: on unless AutoNAT finds us private (a relay nobody
    can dial is no use), never with ``serve`` off.
    """
    dial_back = DialBack(host)
    dial_back.start()
    p2p._reach = Reachability(host, dial_back, p2p.listen_addrs)
    nursery.start_soon(p2p._reach.run)
    host.set_stream_handler(STOP, client.handle_stop)
    p2p.set_relay_service(serve)
    if reserve > 0:
        # Every node that holds relay reservations (all swapmeet nodes; not a plain DHT server)
        # upgrades its relayed connections where the NATs allow (docs/LIBP2P.md §45).
        p2p.hole_puncher = HolePuncher(host, on_direct=partial(resend_subscriptions, p2p._pubsub))
        p2p.hole_puncher.start()
        nursery.start_soon(p2p.hole_puncher.run)

    async def follow() -> None:
        while serve:
            p2p.set_relay_service(p2p.reachability() != "private")
            await trio.sleep(1.0)

    nursery.start_soon(follow)
    if reserve > 0:
        # New reservations reach peers in identify answers on new connections (the addrs_factory
        # of _new_libp2p_host); no identify push to connected peers (docs/LIBP2P.md §42).
        nursery.start_soon(client.keep, _RELAY_KEEP_S, lambda: None, lambda: p2p.reachability() != "public")


class _ListenAddrs:
    """Our direct listen addresses, for the relay service's reservation answers (set once the host exists)."""

    def __init__(self) -> None:
        self.p2p: P2PHost | None = None

    def get(self) -> list[str]:
        if self.p2p is None:
            return []
        every = [a.rsplit("/p2p/", 1)[0] for a in self.p2p.listen_addrs()]
        # Loopback is useless to other machines: only if it is all we have (a swarm on one machine).
        return [a for a in every if not a.startswith(("/ip4/127.", "/ip6/::1/"))] or every


def _violation_channel() -> tuple[Callable[[ID], None], trio.MemoryReceiveChannel[ID]]:
    """A callback for peers that broke a rule, and the channel ``_cut_off`` reads them from (never blocks)."""
    send, receive = trio.open_memory_channel[ID](64)

    def on_violation(peer: ID) -> None:
        with suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            send.send_nowait(peer)

    return on_violation, receive


def _new_host_with_relay_client(
    seed: bytes, maddrs: list[multiaddr.Multiaddr], max_connections: int, reservations: int
) -> tuple[IHost, RelayClient]:
    """The libp2p host, advertising the circuit addresses of the relay client made for it (docs/LIBP2P.md §42)."""
    holder: list[RelayClient] = []
    host = _new_libp2p_host(seed, maddrs, max_connections, lambda: holder[0].circuit_addrs() if holder else [])
    holder.append(RelayClient(host, want=reservations))
    return host, holder[0]


async def _start_background(
    p2p: P2PHost,
    host: IHost,
    nursery: trio.Nursery,
    bg: Background,
    *,
    dht: Any | None,
    liveness: LivenessSettings | None,
    find_market_by_name: bool,
    boot: list[Any],
    bootstrap_interval: float,
    enable_mdns: bool,
) -> None:
    """Start the host's own upkeep in its nursery: peerstore expiry, liveness, the DHT, bootstrap, mDNS."""
    # The peerstore never expires addresses by itself.
    nursery.start_soon(host.get_peerstore().start_cleanup_task, 300)
    if liveness is not None:
        p2p.liveness = Liveness(p2p, host, liveness)
        nursery.start_soon(p2p.liveness.run)
    if dht is not None:
        await nursery.start(run_dht, host, dht)
        if find_market_by_name:
            nursery.start_soon(find_market, p2p, dht, p2p.net)
    if boot:
        nursery.start_soon(bootstrap_loop, p2p, boot, bootstrap_interval)
    if enable_mdns:
        await start_mdns(p2p, host, p2p.net, nursery, bg)


@asynccontextmanager
async def open_host(
    seed: bytes,
    listen_addrs: Sequence[str] = DEFAULT_LISTEN_ADDRS,
    *,
    net: str,
    bootstrap: Sequence[str] = (),
    enable_mdns: bool = False,
    enable_dht: bool = False,
    gossip: GossipSettings | None = None,
    gossip_topics: Collection[str] | None = None,
    resend_topics: Collection[str] = (),
    max_connections: int = 200,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    bootstrap_interval: float = 30.0,
    debug: bool = False,
    refusals: RefusalLog | None = None,
    relay_service: bool = True,
    relay_limits: RelayLimits | None = None,
    relay_reservations: int = 2,
    find_market_by_name: bool = True,
    fastpath: bool = True,
    liveness: LivenessSettings | None = LivenessSettings(),  # noqa: B008 - frozen, shared safely
) -> AsyncIterator[P2PHost]:
    """Run a libp2p host for network ``net`` until the block exits.

    ``seed``: the node's 32-byte Ed25519 seed. ``listen_addrs``: TCP multiaddrs
    (port 0 picks a free port). ``bootstrap``: full multiaddrs dialled at start and
    re-dialled every ``bootstrap_interval`` s while disconnected; an unreachable one
    is logged, never fatal. ``enable_mdns``: find and dial peers of the same
    network on the LAN. ``enable_dht``: run a Kademlia DHT server (peer routing).
    ``gossip_topics``: if given, the topic *names* this node uses; remote
    subscriptions to anything else are ignored. ``resend_topics``: topic names
    where publishing the same bytes again is a retry, not a duplicate (see
    :func:`content_msg_id`). ``debug``: let py-libp2p's own logging through.
    ``refusals``: where refused peer input is logged (default: a log of the host's own).
    ``relay_service``: offer a capped Circuit Relay v2 service to peers (``relay_limits``).
    ``relay_reservations``: how many peers' relays to hold reservations on (0: none), so that
    peers can reach us through them when nobody can dial us. ``find_market_by_name`` (with
    ``enable_dht``): provide the market's DHT key and dial the other providers (discovery.py).
    ``fastpath``: cut py-libp2p's per-message costs (:mod:`.fastpath`, docs/LIBP2P.md §60-§64, §66, §67);
    off only for the unpatched baseline of the benchmarks. ``liveness``: how connections are pinged,
    closed when silent and redialled (:mod:`.liveness`, docs/LIBP2P.md §65); None turns it off.
    """
    validate_net(net)
    settings = gossip or GossipSettings()
    maddrs = [_parse_listen_addr(a) for a in listen_addrs]
    boot = _bootstrap_entries(bootstrap)
    allowed = frozenset(topic(net, n) for n in gossip_topics) if gossip_topics is not None else None
    configure_logging(debug)
    on_violation, violators = _violation_channel()
    host, relay_client = _new_host_with_relay_client(seed, maddrs, max_connections, relay_reservations)
    refusals = refusals or RefusalLog(log)
    router = _new_router(settings)
    per_publication = frozenset(topic(net, n) for n in resend_topics)
    pubsub = _new_pubsub(host, router, settings, per_publication, allowed)
    if fastpath:
        install_fastpath(host, pubsub)
    # NB: Pubsub() has already started a thread (the seen-messages sweeper,
    # docs/LIBP2P.md §6); from here on it must be stopped.
    dht: Any | None = None
    bg = Background()
    p2p_addrs = _ListenAddrs()
    try:
        if enable_dht:
            from libp2p.kad_dht.kad_dht import DHTMode, KadDHT

            dht = KadDHT(host, DHTMode.SERVER)
        async with (
            host.run(listen_addrs=maddrs),
            background_trio_service(pubsub),
            background_trio_service(router),
        ):
            await pubsub.wait_until_ready()
            try:
                async with trio.open_nursery() as nursery:
                    p2p = P2PHost(
                        host=host,
                        pubsub=pubsub,
                        router=router,
                        dht=dht,
                        nursery=nursery,
                        net=net,
                        max_frame_size=max_frame_size,
                        max_message_size=settings.max_message_size,
                        outbound_queue_size=settings.outbound_queue_size,
                        allowed_topics=allowed,
                        on_violation=on_violation,
                        refusals=refusals,
                        relay_client=relay_client,
                        relay_service=RelayService(
                            host, nursery, relay_limits or RelayLimits(), p2p_addrs.get, refusals
                        ),
                    )
                    p2p_addrs.p2p = p2p
                    _start_relaying(p2p, host, nursery, relay_client, serve=relay_service, reserve=relay_reservations)
                    nursery.start_soon(_cut_off, p2p, violators)
                    await _start_background(
                        p2p,
                        host,
                        nursery,
                        bg,
                        dht=dht,
                        liveness=liveness,
                        find_market_by_name=find_market_by_name,
                        boot=boot,
                        bootstrap_interval=bootstrap_interval,
                        enable_mdns=enable_mdns,
                    )
                    try:
                        yield p2p
                    finally:
                        nursery.cancel_scope.cancel()
            finally:
                # Close connections while pubsub still runs, so its dead-peer
                # handling sees an orderly teardown rather than a stopped service.
                await _close_host_shielded(host)
    finally:
        await _close_host_shielded(host)  # idempotent; covers failures before run()
        pubsub.seen_messages.stop()
        await stop_mdns(bg)

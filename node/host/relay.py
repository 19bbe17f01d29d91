"""Circuit Relay v2 among our own peers: a capped relay service, reservations, and dialling through a relay.

The wire format is the libp2p Circuit Relay v2 spec (HOP and STOP protocols, varint-delimited
protobufs, py-libp2p's generated messages), so any libp2p relay or client can talk to it. The
machinery is ours, not py-libp2p's ``CircuitV2Transport``/``CircuitV2Protocol`` (docs/LIBP2P.md
§40): their swarm never dials a ``/p2p-circuit`` address, their relay has no per-peer caps on
bytes or circuits, and their client reserves on relays it picks itself.

- :class:`RelayService` (HOP side, on a reachable node): grants reservations and bridges
  circuits, every resource capped per peer and in total (:class:`RelayLimits`): reservations
  held, reservation requests per minute, circuits open, bytes and seconds per circuit.
  A node connected to us through a relay may not reserve (a relay chain).
- :class:`RelayClient` (the private node's side): keeps reservations on up to ``want`` relays
  among connected peers that speak HOP, refreshes them, replaces one whose relay went away,
  and gives the ``/p2p-circuit`` addresses to advertise; dials a peer through a relay
  (:meth:`RelayClient.dial`) and accepts circuits relays bring us (STOP).

A relayed connection is an ordinary libp2p connection once upgraded (Noise + Yamux over the
relayed stream): gossip, sync and settlement streams run over it unchanged.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import multiaddr
import trio
from libp2p.abc import IHost, INetConn, INetStream
from libp2p.connection_types import ConnectionType
from libp2p.custom_types import TProtocol
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, Limit, Reservation, Status, StopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as CircuitPeerId
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg

from ..refusals import RefusalLog

log = logging.getLogger("swapmeet.node.host")

HOP = TProtocol("/libp2p/circuit/relay/0.2.0/hop")
STOP = TProtocol("/libp2p/circuit/relay/0.2.0/stop")
#: Seconds allowed for one control message (RESERVE, CONNECT, STATUS) on a HOP/STOP stream.
MESSAGE_TIMEOUT = 10.0
_CHUNK = 64 * 1024


def is_relayed(conn: INetConn) -> bool:
    """Whether a connection runs through a relay (a ``/p2p-circuit`` connection)."""
    with_type = getattr(conn, "get_connection_type", None)
    kind = with_type() if callable(with_type) else ConnectionType.UNKNOWN
    if kind is not ConnectionType.UNKNOWN:
        # Known from the raw connection up: ours through a relay say RELAYED (as the library's own circuit
        # transport does), TCP says DIRECT. Only an unknown type needs the addresses, a str() of each: this
        # runs for every connection each second (the hole-punch scan, docs/LIBP2P.md §68).
        return kind is ConnectionType.RELAYED
    get_addrs = getattr(conn, "get_transport_addresses", None)
    addrs = get_addrs() if callable(get_addrs) else []
    return any("/p2p-circuit" in str(a) for a in addrs or [])


def _status_name(code: int) -> str:
    try:
        return str(Status.Name(code))  # type: ignore[arg-type]
    except ValueError:
        return str(code)


@dataclass(frozen=True, slots=True)
class RelayLimits:
    """What a relay gives away, per peer and in total."""

    reservation_ttl: float = 300.0  # seconds a reservation lasts before it must be refreshed
    max_reservations: int = 64  # peers holding a reservation at once
    reserve_per_minute: int = 6  # RESERVE requests one peer may make per minute (refreshes included)
    max_circuits: int = 32  # circuits open at once
    max_circuits_per_peer: int = 4  # circuits one peer is an end of at once
    circuit_bytes: int = 16 * 1024 * 1024  # bytes one circuit may carry (both directions together)
    circuit_seconds: float = 600.0  # how long one circuit may stay open

    def limit(self) -> Limit:
        return Limit(duration=int(self.circuit_seconds), data=self.circuit_bytes)


@dataclass(slots=True)
class RelayStats:
    """Counters of a relay service, for ``node status`` and the benchmark."""

    reservations_granted: int = 0
    reservations_refused: int = 0
    circuits_opened: int = 0
    circuits_refused: int = 0
    circuits_cut: int = 0  # ended by a byte or time cap
    bytes_relayed: int = 0


class RelayService:
    """The HOP side: reservations and circuits, capped by :class:`RelayLimits` (see the module docstring)."""

    def __init__(
        self,
        host: IHost,
        nursery: trio.Nursery,
        limits: RelayLimits,
        public_addrs: Callable[[], list[str]],
        refusals: RefusalLog | None = None,
    ):
        self._host = host
        #: Where refused reservations, circuits and cut circuits are logged: rate-limited per peer,
        #: so that a peer asking again and again cannot fill our log.
        self.refusals = refusals or RefusalLog(log)
        self._nursery = nursery
        self.limits = limits
        self._public_addrs = public_addrs
        self.reservations: dict[ID, float] = {}  # peer -> expiry (time.time())
        self._requests: dict[ID, deque[float]] = {}  # peer -> monotonic times of recent RESERVE requests
        self._circuits: dict[ID, int] = {}
        self._open = 0
        self.stats = RelayStats()
        self.on = False

    def start(self) -> None:
        self.on = True
        self._host.set_stream_handler(HOP, self._handle_hop)

    def stop(self) -> None:
        self.on = False
        self._host.remove_stream_handler(HOP)
        self.reservations.clear()

    async def _handle_hop(self, stream: INetStream) -> None:
        # The library runs this in its own task and never closes the stream (docs/LIBP2P.md §29).
        peer = stream.muxed_conn.peer_id
        try:
            with trio.fail_after(MESSAGE_TIMEOUT):
                msg = await read_delimited_msg(stream, HopMessage)
            if msg.type == HopMessage.RESERVE:
                await self._reserve(stream, peer)
                await stream.close()
            elif msg.type == HopMessage.CONNECT:
                await self._connect(stream, peer, ID(msg.peer.id))
            else:
                await self._refuse(stream, Status.UNEXPECTED_MESSAGE)
        except Exception as exc:  # a peer's broken or stalled stream: its problem, never ours
            log.debug("relay: HOP stream from %s failed: %s", peer, exc)
            with trio.move_on_after(1.0):
                await stream.reset()

    async def _refuse(self, stream: INetStream, status: int) -> None:
        with trio.move_on_after(MESSAGE_TIMEOUT):
            await write_delimited_msg(stream, HopMessage(type=HopMessage.STATUS, status=status))
        await stream.close()

    def _prune(self) -> None:
        now = time.time()
        for peer in [p for p, exp in self.reservations.items() if exp <= now]:
            del self.reservations[peer]

    def _reserve_refusal(self, peer: ID, relayed: bool) -> int | None:
        if relayed:
            return Status.PERMISSION_DENIED  # no relay chains
        now = time.monotonic()
        recent = self._requests.setdefault(peer, deque())
        while recent and recent[0] <= now - 60.0:
            recent.popleft()
        if len(recent) >= self.limits.reserve_per_minute:
            return Status.RESOURCE_LIMIT_EXCEEDED
        recent.append(now)
        if len(self._requests) > 4 * self.limits.max_reservations:  # the table itself stays bounded
            for stale in [p for p, q in self._requests.items() if not q or q[-1] <= now - 60.0]:
                del self._requests[stale]
        self._prune()
        if peer not in self.reservations and len(self.reservations) >= self.limits.max_reservations:
            return Status.RESERVATION_REFUSED
        return None

    async def _reserve(self, stream: INetStream, peer: ID) -> None:
        refusal = self._reserve_refusal(peer, is_relayed_stream(stream))
        if refusal is not None:
            self.stats.reservations_refused += 1
            self.refusals.refused(peer.to_base58(), "a relay reservation", _status_name(refusal))
            await self._refuse(stream, refusal)
            return
        expire = int(time.time() + self.limits.reservation_ttl)
        new = peer not in self.reservations
        self.reservations[peer] = expire
        self.stats.reservations_granted += 1
        addrs = [multiaddr.Multiaddr(a).to_bytes() for a in self._public_addrs()]
        reply = HopMessage(
            type=HopMessage.STATUS,
            status=Status.OK,
            reservation=Reservation(expire=expire, addrs=addrs),
            limit=self.limits.limit(),
        )
        with trio.fail_after(MESSAGE_TIMEOUT):
            await write_delimited_msg(stream, reply)
        if new:
            log.info("relay: reservation for %s (%d held)", peer, len(self.reservations))

    def _circuit_refusal(self, src: ID, dst: ID, relayed: bool) -> int | None:
        self._prune()
        if relayed:
            return Status.PERMISSION_DENIED
        if dst not in self.reservations or not self._host.get_network().get_connections(dst):
            return Status.NO_RESERVATION
        if self._open >= self.limits.max_circuits:
            return Status.RESOURCE_LIMIT_EXCEEDED
        cap = self.limits.max_circuits_per_peer
        if self._circuits.get(src, 0) >= cap or self._circuits.get(dst, 0) >= cap:
            return Status.RESOURCE_LIMIT_EXCEEDED
        return None

    async def _connect(self, stream: INetStream, src: ID, dst: ID) -> None:
        refusal = self._circuit_refusal(src, dst, is_relayed_stream(stream))
        if refusal is not None:
            self.stats.circuits_refused += 1
            self.refusals.refused(src.to_base58(), f"a relay circuit to {dst}", _status_name(refusal))
            await self._refuse(stream, refusal)
            return
        for peer in (src, dst):
            self._circuits[peer] = self._circuits.get(peer, 0) + 1
        self._open += 1
        try:
            try:
                with trio.fail_after(MESSAGE_TIMEOUT):
                    out = await self._host.new_stream(dst, [STOP])
                    await write_delimited_msg(
                        out,
                        StopMessage(
                            type=StopMessage.CONNECT, peer=CircuitPeerId(id=src.to_bytes()), limit=self.limits.limit()
                        ),
                    )
                    answer = await read_delimited_msg(out, StopMessage)
            except Exception as exc:
                log.info("relay: %s did not take a circuit from %s: %s", dst, src, exc)
                await self._refuse(stream, Status.CONNECTION_FAILED)
                return
            if answer.type != StopMessage.STATUS or answer.status != Status.OK:
                await self._refuse(stream, Status.CONNECTION_FAILED)
                with trio.move_on_after(1.0):
                    await out.reset()
                return
            with trio.fail_after(MESSAGE_TIMEOUT):
                await write_delimited_msg(
                    stream, HopMessage(type=HopMessage.STATUS, status=Status.OK, limit=self.limits.limit())
                )
            self.stats.circuits_opened += 1
            await self._bridge(stream, out, src, dst)
        finally:
            self._open -= 1
            for peer in (src, dst):
                left = self._circuits.get(peer, 1) - 1
                if left:
                    self._circuits[peer] = left
                else:
                    self._circuits.pop(peer, None)

    async def _bridge(self, a: INetStream, b: INetStream, src: ID, dst: ID) -> None:
        """Copy bytes both ways until one end closes, the byte cap or the time cap; then reset both."""
        budget = [self.limits.circuit_bytes]
        capped = False

        async def pump(reader: INetStream, writer: INetStream, scope: trio.CancelScope) -> None:
            nonlocal capped
            try:
                while True:
                    data = await reader.read(_CHUNK)
                    if not data:
                        break
                    budget[0] -= len(data)
                    if budget[0] < 0:
                        capped = True
                        break
                    self.stats.bytes_relayed += len(data)
                    await writer.write(data)
            except Exception:
                pass
            scope.cancel()

        with trio.move_on_after(self.limits.circuit_seconds) as timer:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, a, b, nursery.cancel_scope)
                nursery.start_soon(pump, b, a, nursery.cancel_scope)
        if capped or timer.cancelled_caught:
            self.stats.circuits_cut += 1
            cap = f"{self.limits.circuit_bytes} bytes" if capped else f"{self.limits.circuit_seconds:g} s"
            self.refusals.refused(src.to_base58(), f"relayed traffic to {dst}", f"circuit cut at its cap of {cap}")
        with trio.CancelScope(shield=True), trio.move_on_after(2.0):
            for s in (a, b):
                try:
                    await s.reset()
                except Exception:
                    log.debug("relay: resetting a bridged stream failed", exc_info=True)


def direct_peers_speaking(host: IHost, protocol: str) -> list[ID]:
    """Connected peers that have a direct (not relayed) connection and said they speak ``protocol``."""
    network = host.get_network()
    store = host.get_peerstore()
    out = []
    for peer in host.get_connected_peers():
        conns = network.get_connections(peer)
        if not conns or all(is_relayed(c) for c in conns):
            continue
        try:
            protocols = {str(p) for p in store.get_protocols(peer)}
        except Exception:  # the peerstore forgot the peer meanwhile
            continue
        if protocol in protocols:
            out.append(peer)
    return out


def is_relayed_stream(stream: INetStream) -> bool:
    """Whether a stream runs over a relayed connection."""
    conn = getattr(stream, "swarm_conn", None)
    if conn is not None:
        return is_relayed(conn)
    secured = getattr(stream.muxed_conn, "secured_conn", None)
    raw = getattr(secured, "conn", None)
    return getattr(raw, "_connection_type", None) is ConnectionType.RELAYED


@dataclass(slots=True)
class Refused:
    """A relay that failed or refused a reservation: not asked again before ``until`` (``time.monotonic()``)
    while one of ``conns``, the connections it failed on, is still open."""

    until: float
    conns: list[INetConn]


@dataclass(slots=True)
class Held:
    """One reservation we hold on a relay."""

    expire: float
    addrs: list[str] = field(default_factory=list)  # the relay's addresses, without /p2p


class RelayClient:
    """Reservations on peers' relays, our ``/p2p-circuit`` addresses, dialling through relays, accepting circuits."""

    def __init__(self, host: IHost, *, want: int = 2) -> None:
        self._host = host
        self.want = want
        self.held: dict[ID, Held] = {}
        self._failed: dict[ID, Refused] = {}  # relays not to ask again for a while
        self.enabled = True

    # ------------------------------------------------------------- reservations

    def circuit_addrs(self) -> list[multiaddr.Multiaddr]:
        """Our addresses through the relays we hold reservations on."""
        me = self._host.get_id().to_base58()
        now = time.time()
        out = []
        for relay, held in self.held.items():
            if held.expire > now:
                out.extend(multiaddr.Multiaddr(f"{a}/p2p/{relay}/p2p-circuit/p2p/{me}") for a in held.addrs)
        return out

    async def reserve(self, relay: ID) -> bool:
        """Ask ``relay`` for a reservation (or refresh it); True if granted."""
        try:
            with trio.fail_after(MESSAGE_TIMEOUT):
                stream = await self._host.new_stream(relay, [HOP])
                try:
                    await write_delimited_msg(stream, HopMessage(type=HopMessage.RESERVE))
                    reply = await read_delimited_msg(stream, HopMessage)
                finally:
                    await stream.close()
        except Exception as exc:
            log.info("relay %s: reservation failed: %s", relay, exc)
            return False
        if reply.type != HopMessage.STATUS or reply.status != Status.OK:
            log.info("relay %s refused a reservation: %s", relay, _status_name(reply.status))
            return False
        addrs = []
        for raw in reply.reservation.addrs:
            try:
                addr = multiaddr.Multiaddr(raw)
            except Exception:
                continue
            text = str(addr).split("/p2p/", 1)[0]
            if text and "/p2p-circuit" not in text:
                addrs.append(text)
        first = relay not in self.held
        self.held[relay] = Held(expire=float(reply.reservation.expire), addrs=addrs)
        if first:
            log.info("reserved a slot on relay %s (%s)", relay, ", ".join(addrs) or "no addresses")
        return True

    def _refused(self, relay: ID, seconds: float, conns: list[INetConn]) -> None:
        """Do not ask ``relay`` again for ``seconds`` on ``conns`` (its connections when it failed us)."""
        self._failed[relay] = Refused(until=time.monotonic() + seconds, conns=conns)

    def _may_ask(self, relay: ID) -> bool:
        """Whether ``relay`` may be asked for a reservation: not refused lately on a connection still open.

        The pause belongs to the connections the relay failed us on. A relay that stalled fails
        the reservation we ask while liveness has not yet closed its silent connection (or
        while it closes it); once it is back on a new connection (the redial, docs/LIBP2P.md
        §65) it is asked at once, as a relay we held a reservation on is.
        """
        refused = self._failed.get(relay)
        if refused is None or refused.until <= time.monotonic():
            return True  # ``keep`` forgets expired refusals on each pass
        open_now = self._host.get_network().get_connections(relay)
        return not any(conn is old for conn in open_now for old in refused.conns)

    def _candidates(self) -> list[ID]:
        """Connected peers, over direct connections, that offer HOP."""
        offered = direct_peers_speaking(self._host, HOP)
        return [peer for peer in offered if peer not in self.held and self._may_ask(peer)]

    async def keep(self, interval: float, on_change: Callable[[], None], needed: Callable[[], bool]) -> None:
        """Hold reservations on ``want`` relays while ``needed()``: refresh them, replace the ones whose relay
        went away; drop them all once not needed (we are reachable)."""
        while True:
            self.enabled = needed()
            changed = False
            network = self._host.get_network()
            now = time.time()
            for relay in list(self.held):
                held = self.held[relay]
                # No connection: the relay went away, or liveness closed a connection that went silent
                # (a stalled relay, docs/LIBP2P.md §65). It may be asked again as soon as it is back.
                conns = list(network.get_connections(relay))
                gone = not conns or held.expire <= now
                if not gone and held.expire - now < max(60.0, 3 * interval):
                    gone = not await self.reserve(relay)
                if gone or not self.enabled:
                    del self.held[relay]
                    if conns:
                        self._refused(relay, 30.0, conns)
                    log.info("dropped the reservation on relay %s", relay)
                    changed = True
            if self.enabled:
                for relay in self._candidates()[: max(0, self.want - len(self.held))]:
                    conns = list(network.get_connections(relay))  # before asking: it may go while we wait
                    if await self.reserve(relay):
                        changed = True
                    else:
                        self._refused(relay, 60.0, conns)
            for relay in [r for r, refused in self._failed.items() if refused.until <= time.monotonic()]:
                del self._failed[relay]  # and with it the connections it held on to
            if changed:
                on_change()
            # Look again within a second: a new peer may offer a relay, a relay may have gone, or
            # reachability may have changed (the look itself is cheap: no I/O unless something is due).
            await trio.sleep(min(interval, 1.0))

    # ------------------------------------------------------------- circuits

    async def dial(self, relay: ID, peer: ID) -> INetConn:
        """Open a circuit to ``peer`` through ``relay`` and upgrade it to a libp2p connection."""
        with trio.fail_after(MESSAGE_TIMEOUT):
            stream = await self._host.new_stream(relay, [HOP])
            try:
                await write_delimited_msg(
                    stream, HopMessage(type=HopMessage.CONNECT, peer=CircuitPeerId(id=peer.to_bytes()))
                )
                reply = await read_delimited_msg(stream, HopMessage)
            except BaseException:
                await stream.reset()
                raise
        if reply.type != HopMessage.STATUS or reply.status != Status.OK:
            await stream.close()
            raise ConnectionError(f"relay {relay} did not connect us to {peer}: {_status_name(reply.status)}")
        addr = multiaddr.Multiaddr(f"/p2p/{relay}/p2p-circuit/p2p/{peer}")
        raw = RawConnection(stream=stream, initiator=True, connection_type=ConnectionType.RELAYED, addresses=[addr])
        conn: INetConn = await self._host.upgrade_outbound_connection(raw, peer)
        return conn

    async def handle_stop(self, stream: INetStream) -> None:
        """A relay brings us a circuit (STOP CONNECT): accept it only from a relay we hold a reservation on."""
        relay = stream.muxed_conn.peer_id
        try:
            with trio.fail_after(MESSAGE_TIMEOUT):
                msg = await read_delimited_msg(stream, StopMessage)
                if msg.type != StopMessage.CONNECT or relay not in self.held:
                    await write_delimited_msg(
                        stream, StopMessage(type=StopMessage.STATUS, status=Status.PERMISSION_DENIED)
                    )
                    await stream.close()
                    return
                src = ID(msg.peer.id)
                await write_delimited_msg(stream, StopMessage(type=StopMessage.STATUS, status=Status.OK))
            addr = multiaddr.Multiaddr(f"/p2p/{relay}/p2p-circuit/p2p/{src}")
            raw = RawConnection(
                stream=stream, initiator=False, connection_type=ConnectionType.RELAYED, addresses=[addr]
            )
            await self._host.upgrade_inbound_connection(raw, addr)
            log.info("accepted a relayed connection from %s via %s", src, relay)
        except Exception as exc:
            log.info("a circuit from relay %s failed: %s", relay, exc)
            with trio.move_on_after(1.0):
                await stream.reset()


def relay_of(addr: str) -> tuple[str, str] | None:
    """(relay peer id, target peer id) of a ``.../p2p/RELAY/p2p-circuit/p2p/TARGET`` address, else None."""
    if "/p2p-circuit" not in addr:
        return None
    head, _, tail = addr.partition("/p2p-circuit")
    if "/p2p/" not in head or not tail.startswith("/p2p/"):
        return None
    return head.rsplit("/p2p/", 1)[1], tail[len("/p2p/") :]


__all__ = ["HOP", "STOP", "RelayClient", "RelayLimits", "RelayService", "RelayStats", "is_relayed", "relay_of"]

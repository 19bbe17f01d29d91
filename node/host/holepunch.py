"""DCUtR hole punching: a relayed connection between two home nodes becomes a direct one where the NATs allow it.

The wire protocol is libp2p's DCUtR (``/libp2p/dcutr``: varint-delimited ``HolePunch``
protobufs, py-libp2p's generated messages), so it works with any DCUtR peer. The driver is
ours, not py-libp2p's ``DCUtRProtocol`` (docs/LIBP2P.md §45): that one answers any number of
sessions from one peer, each dialling up to 20 addresses the peer names three times over, and
its drive loop punches every relayed peer every 2 s.

How one upgrade goes (the spec's roles; "B" accepted the relayed connection, "A" dialled it):

1. B opens a DCUtR stream over the relayed connection and sends CONNECT with its addresses:
   the public IP peers observed for it (identify) with its TCP *listen* port, and its listen
   addresses. A answers CONNECT with its own; B measures the round trip and sends SYNC.
2. A dials B's addresses as soon as SYNC arrives; B waits half the round trip and dials A's.
   Both dial *from their listen port* (SO_REUSEPORT: py-libp2p's TCP listener sets it and its
   ``dial_with_source`` binds it). Behind a NAT that keeps a socket's public port whatever the
   destination (an endpoint-independent mapping), each SYN opens the mapping the other's SYN
   comes in through: a TCP simultaneous open, one connection on which both sides' connect()
   succeeds. So the security handshake needs fixed roles: A is the Noise initiator, B the
   responder (B upgrades its dial as an inbound connection).
3. Each side tries for :data:`ROUND_S` seconds, :data:`ROUNDS` rounds per session; B starts a
   new session at most :data:`SESSIONS_PER_PEER` times per relayed connection, and A answers
   at most :data:`ANSWERS_PER_MINUTE` sessions of one peer a minute, one at a time, dialling at
   most :data:`MAX_ADDRS` of the addresses it was given (every peer-spendable thing bounded).
4. A peer we reach only through relays is also dialled at its own addresses now and then
   (the spec's step 0, with a backoff): one that was unreachable for a while is then
   connected directly without any punching (docs/LIBP2P.md §47).
5. Once a direct connection exists, the relayed ones to that peer are closed after
   :data:`RELAY_GRACE_S` (what was under way on them finishes; new streams already take the
   direct connection, which the swarm prefers): gossip, sync and settlement move to it and
   the relay's circuit slot is freed. A NAT that maps each destination to a new port (``nftables
   masquerade fully-random``, "symmetric") defeats it: the connection stays relayed and
   :meth:`HolePuncher.state` says so (``peers --json``: ``hole_punch``).
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
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.rcmgr import Direction
from libp2p.relay.circuit_v2.pb.dcutr_pb2 import HolePunch
from libp2p.relay.circuit_v2.utils import write_delimited_msg
from libp2p.utils.varint import read_varint_prefixed_bytes_limited

from .relay import is_relayed

log = logging.getLogger("swapmeet.node.host")

PROTOCOL = TProtocol("/libp2p/dcutr")
MAX_MESSAGE = 4 * 1024  # the spec's limit on one message
MAX_ADDRS = 4  # addresses of a peer we dial in one round
MESSAGE_TIMEOUT = 10.0
ROUNDS = 1  # rounds of dialling per session (the spec's one; a failed session is retried as a whole)
ROUND_S = 3.0  # one round: each address redialled (its SYNs retransmitted) until it connects or time is up
SESSIONS_PER_PEER = 3  # sessions we start over one relayed connection (the spec: retry twice)
RETRY_S = 5.0  # from the start of one session with a peer to the next
ANSWERS_PER_MINUTE = 4  # sessions of one peer we answer a minute
RELAY_GRACE_S = 5.0  # a relayed connection stays this long after the direct one is up
RESYNC_AFTER_S = 1.0  # after closing it, this long until gossip subscriptions are sent again
_LOOK_S = 1.0
DIRECT_FIRST_S = 5.0  # a relayed peer's own addresses are dialled again after this, then twice as long each time
DIRECT_MAX_S = 300.0
DIRECT_DIAL_S = 3.0
NO_DIRECT = "no direct connection (a NAT that maps each destination to a new port?)"


@dataclass(slots=True)
class Punch:
    """What hole punching did for one peer (``peers --json``)."""

    state: str = "trying"  # trying | direct | failed
    sessions: int = 0
    last_try: float = field(default=0.0)  # monotonic
    detail: str = ""


def _tcp_of(addr: multiaddr.Multiaddr) -> tuple[str, int] | None:
    """(ip, port) of a plain ``/ip4|ip6/X/tcp/N`` address (no circuit, no DNS), else None."""
    text = str(addr)
    if "/p2p-circuit" in text:
        return None
    for proto in ("ip4", "ip6"):
        try:
            ip = addr.value_for_protocol(proto)
            port = addr.value_for_protocol("tcp")
        except Exception:
            continue
        if ip and port:
            return str(ip), int(port)
    return None


def _direct(host: IHost, peer: ID) -> bool:
    return any(not is_relayed(c) for c in host.get_network().get_connections(peer))


class HolePuncher:
    """DCUtR over our relayed connections: see the module docstring."""

    def __init__(self, host: IHost, on_direct: Callable[[ID], object] | None = None) -> None:
        self._host = host
        #: Called once the relayed connections to a peer are closed and the direct one carries on.
        self._on_direct = on_direct
        self.punches: dict[ID, Punch] = {}
        self._answers: dict[ID, deque[float]] = {}
        self._answering: set[ID] = set()
        self._running: set[ID] = set()
        self._direct_tries: dict[ID, tuple[float, float]] = {}  # peer -> (next try, monotonic; backoff)
        self.succeeded = 0
        self.failed = 0
        self._nursery: trio.Nursery | None = None

    def start(self) -> None:
        self._host.set_stream_handler(PROTOCOL, self._answer)

    def state(self, peer: ID) -> str | None:
        """``direct``, ``trying`` or ``failed: why`` for a peer we tried to punch through to; None if never."""
        punch = self.punches.get(peer)
        if punch is None:
            return None
        return f"failed: {punch.detail}" if punch.state == "failed" and punch.detail else punch.state

    # ------------------------------------------------------------- addresses

    def _listen(self) -> tuple[str, int] | None:
        """Our TCP listen (ip, port): where hole-punch dials leave from."""
        for addr in self._host.get_transport_addrs():
            found = _tcp_of(addr)
            if found is not None and ":" not in found[0]:
                return found
        return None

    def our_addrs(self) -> list[multiaddr.Multiaddr]:
        """Our public IPs as peers observed them (identify), with our listen port; then our listen addresses."""
        listen = self._listen()
        out: list[multiaddr.Multiaddr] = []
        # The observed-address manager's addresses need four observers before the host advertises
        # them; one (the relay) is enough to predict our mapping (docs/LIBP2P.md §45).
        manager = getattr(self._host, "_observed_addr_manager", None)
        if listen is not None and manager is not None:
            try:
                observed = manager.addrs(min_observers=1)
            except Exception:
                observed = []
            for addr in observed:
                found = _tcp_of(addr)
                if found is not None and ":" not in found[0]:
                    out.append(multiaddr.Multiaddr(f"/ip4/{found[0]}/tcp/{listen[1]}"))
        for addr in self._host.get_transport_addrs():
            found = _tcp_of(addr)
            if found is not None and found[0] not in ("0.0.0.0", "::") and not found[0].startswith("127."):
                out.append(multiaddr.Multiaddr(f"/ip4/{found[0]}/tcp/{found[1]}"))
        seen: set[str] = set()
        return [a for a in out if not (str(a) in seen or seen.add(str(a)))][:MAX_ADDRS]  # type: ignore[func-returns-value]

    # ------------------------------------------------------------- driving

    def _relayed_only(self) -> list[tuple[ID, list[INetConn]]]:
        """Connected peers we reach only through relays, with no session or dial of ours running for them."""
        network = self._host.get_network()
        out = []
        for peer in self._host.get_connected_peers():
            conns = list(network.get_connections(peer))
            if conns and all(is_relayed(c) for c in conns) and peer not in self._running:
                out.append((peer, conns))
        return out

    def _candidates(self, relayed_only: list[tuple[ID, list[INetConn]]]) -> list[ID]:
        """Of ``relayed_only``, the peers that came to us over a connection a relay brought (we are B)."""
        now = time.monotonic()
        out = []
        for peer, conns in relayed_only:
            if not any(getattr(c, "direction", None) == Direction.INBOUND for c in conns):
                continue
            punch = self.punches.get(peer)
            if punch is not None and (punch.sessions >= SESSIONS_PER_PEER or now - punch.last_try < RETRY_S):
                continue
            out.append(peer)
        return out

    async def run(self) -> None:
        """Start a session with every relayed peer that is due one; forget peers long gone."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            while True:
                relayed_only = self._relayed_only()  # once a pass: it looks at every connection
                for peer in self._candidates(relayed_only):
                    self._running.add(peer)
                    nursery.start_soon(self._initiate, peer)
                for peer in self._due_direct([(p, c) for p, c in relayed_only if p not in self._running]):
                    self._running.add(peer)
                    nursery.start_soon(self._dial_direct, peer)
                connected = set(self._host.get_connected_peers())
                for table in (self.punches, self._direct_tries):
                    for gone in [p for p in table if p not in connected]:
                        del table[gone]  # bounded by our connections; a new relayed connection starts afresh
                await trio.sleep(_LOOK_S)

    def _due_direct(self, relayed_only: list[tuple[ID, list[INetConn]]]) -> list[ID]:
        """Of ``relayed_only``, the peers with direct addresses to try again (their backoff is over)."""
        now = time.monotonic()
        out = []
        for peer, _conns in relayed_only:
            due, _ = self._direct_tries.get(peer, (0.0, DIRECT_FIRST_S))
            if due <= now and self._known_direct(peer):
                out.append(peer)
        return out

    def _known_direct(self, peer: ID) -> list[multiaddr.Multiaddr]:
        try:
            known = list(self._host.get_peerstore().addrs(peer))
        except Exception:
            return []
        return [a for a in known if _tcp_of(a) is not None][:MAX_ADDRS]

    async def _dial_direct(self, peer: ID) -> None:
        """Dial a relayed peer's own addresses (the spec's step 0): a peer that became reachable again
        (a relay whose port was blocked a while) is connected directly without any punching; nothing
        else would ever dial a peer we are connected to (docs/LIBP2P.md §47)."""
        _, backoff = self._direct_tries.get(peer, (0.0, DIRECT_FIRST_S))
        self._direct_tries[peer] = (time.monotonic() + backoff, min(DIRECT_MAX_S, 2 * backoff))
        network = self._host.get_network()
        try:
            for addr in self._known_direct(peer):
                with trio.move_on_after(DIRECT_DIAL_S):
                    try:
                        transport = network.transport_manager.transport_for_dialing(addr)  # type: ignore[attr-defined]
                        raw = await transport.dial(addr)
                        await self._host.upgrade_outbound_connection(raw, peer)
                    except Exception as exc:
                        log.debug("direct dial of relayed peer %s at %s failed: %s", peer, addr, exc)
                if _direct(self._host, peer):
                    log.info("reached %s directly at %s: leaving the relay", peer, addr)
                    self._retire_later(peer)
                    return
        finally:
            self._running.discard(peer)

    async def _initiate(self, peer: ID) -> None:
        punch = self.punches.setdefault(peer, Punch())
        punch.sessions += 1
        punch.last_try = time.monotonic()
        punch.state = "trying"
        try:
            with trio.fail_after(MESSAGE_TIMEOUT):
                stream = await self._host.new_stream(peer, [PROTOCOL])
            try:
                with trio.fail_after(MESSAGE_TIMEOUT):
                    sent = time.monotonic()
                    await write_delimited_msg(stream, HolePunch(type=HolePunch.CONNECT, ObsAddrs=self._encoded()))
                    reply = await _read(stream)
                    rtt = time.monotonic() - sent
                    if reply.type != HolePunch.CONNECT:
                        raise ValueError("the peer's answer is not CONNECT")
                    await write_delimited_msg(stream, HolePunch(type=HolePunch.SYNC))
            finally:
                with trio.move_on_after(1.0):
                    await stream.close()
            await trio.sleep(min(rtt / 2, 2.0))
            ok = await self._dial_rounds(peer, _decode(reply), as_responder=True)
        except Exception as exc:
            ok = False
            punch.detail = f"no DCUtR exchange ({type(exc).__name__}: {exc})"[:200]
        finally:
            self._running.discard(peer)
        self._settle(peer, punch, ok)

    def _settle(self, peer: ID, punch: Punch, ok: bool) -> None:
        if ok:
            punch.state, punch.detail = "direct", ""
            self.succeeded += 1
            log.info("hole punch to %s: direct connection (session %d)", peer, punch.sessions)
            self._retire_later(peer)
            return
        if not punch.detail:
            punch.detail = NO_DIRECT
        if punch.sessions >= SESSIONS_PER_PEER:
            punch.state = "failed"
            self.failed += 1
            log.info("hole punch to %s failed %d times: staying relayed (%s)", peer, punch.sessions, punch.detail)
        else:
            punch.state = "trying"

    def _retire_later(self, peer: ID) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._retire, peer)

    async def _retire(self, peer: ID) -> None:
        """Close the relayed connections to ``peer`` once the direct one has stood for a grace period."""
        await trio.sleep(RELAY_GRACE_S)
        if not _direct(self._host, peer):
            return
        closed = 0
        for conn in list(self._host.get_network().get_connections(peer)):
            if is_relayed(conn):
                closed += 1
                with trio.move_on_after(2.0):
                    try:
                        await conn.close()
                    except Exception:
                        log.debug("closing a relayed connection failed", exc_info=True)
        if closed and self._on_direct is not None:
            # Once the streams of the closed connection have ended at both ends (docs/LIBP2P.md §46).
            await trio.sleep(RESYNC_AFTER_S)
            if _direct(self._host, peer):
                self._on_direct(peer)
        if closed:
            log.info("closed the relayed connection to %s: the direct one carries everything", peer)

    # ------------------------------------------------------------- answering

    def _may_answer(self, peer: ID, relayed: bool) -> bool:
        if not relayed or peer in self._answering:
            return False
        now = time.monotonic()
        recent = self._answers.setdefault(peer, deque())
        while recent and recent[0] <= now - 60.0:
            recent.popleft()
        if len(recent) >= ANSWERS_PER_MINUTE:
            return False
        recent.append(now)
        if len(self._answers) > 1024:  # the table itself stays bounded
            for stale in [p for p, q in self._answers.items() if not q or q[-1] <= now - 60.0]:
                del self._answers[stale]
        return True

    async def _answer(self, stream: INetStream) -> None:
        """We are A: the peer (B) asks to punch through to us over the relayed connection it accepted."""
        peer = stream.muxed_conn.peer_id
        conn = getattr(stream, "swarm_conn", None)
        relayed = conn is not None and is_relayed(conn)
        if not self._may_answer(peer, relayed):
            why = "busy or over its rate" if relayed else "not over a relayed connection"
            log.info("hole punch: refused a DCUtR session from %s (%s)", peer, why)
            with trio.move_on_after(1.0):
                await stream.reset()
            return
        self._answering.add(peer)
        try:
            with trio.fail_after(MESSAGE_TIMEOUT):
                first = await _read(stream)
                if first.type != HolePunch.CONNECT:
                    raise ValueError("the first message is not CONNECT")
                await write_delimited_msg(stream, HolePunch(type=HolePunch.CONNECT, ObsAddrs=self._encoded()))
                sync = await _read(stream)
                if sync.type != HolePunch.SYNC:
                    raise ValueError("the second message is not SYNC")
            ok = await self._dial_rounds(peer, _decode(first), as_responder=False)
            punch = self.punches.setdefault(peer, Punch())
            punch.sessions += 1
            punch.last_try = time.monotonic()
            self._settle(peer, punch, ok)
        except Exception as exc:
            log.info("hole punch: DCUtR session from %s failed: %s", peer, exc)
            with trio.move_on_after(1.0):
                await stream.reset()
        finally:
            self._answering.discard(peer)
            with trio.move_on_after(1.0):
                await stream.close()

    # ------------------------------------------------------------- dialling

    def _encoded(self) -> list[bytes]:
        return [a.to_bytes() for a in self.our_addrs()]

    async def _dial_rounds(self, peer: ID, addrs: list[multiaddr.Multiaddr], *, as_responder: bool) -> bool:
        """Dial ``addrs`` from our listen port, :data:`ROUNDS` rounds of :data:`ROUND_S`; True once direct."""
        source = self._listen()
        targets = [a for a in addrs if _tcp_of(a) is not None][:MAX_ADDRS]
        if source is None or not targets:
            return False
        for _ in range(ROUNDS):
            with trio.move_on_after(ROUND_S):
                async with trio.open_nursery() as nursery:
                    for addr in targets:
                        scope = nursery.cancel_scope
                        nursery.start_soon(self._dial_until_direct, peer, addr, source, as_responder, scope)
            if _direct(self._host, peer):
                return True
        return _direct(self._host, peer)

    async def _dial_until_direct(
        self, peer: ID, addr: multiaddr.Multiaddr, source: tuple[str, int], as_responder: bool, done: trio.CancelScope
    ) -> None:
        network = self._host.get_network()
        while not _direct(self._host, peer):
            try:
                transport = network.transport_manager.transport_for_dialing(addr)  # type: ignore[attr-defined]
                raw = await transport.dial_with_source(addr, source)
                if as_responder:
                    muxed = await self._host.upgrade_inbound_connection(raw, addr)
                    if muxed.peer_id != peer:
                        await muxed.close()
                        raise ValueError(f"{addr} is {muxed.peer_id}, not {peer}")
                else:
                    await self._host.upgrade_outbound_connection(raw, peer)
            except Exception as exc:
                log.debug("hole punch dial of %s at %s failed: %s", peer, addr, exc)
                await trio.sleep(0.25)  # refused or in use: the other side's SYN may be on its way
        done.cancel()


async def _read(stream: INetStream) -> HolePunch:
    data = await read_varint_prefixed_bytes_limited(stream, MAX_MESSAGE)
    msg = HolePunch()
    msg.ParseFromString(data)
    return msg


def _decode(msg: HolePunch) -> list[multiaddr.Multiaddr]:
    out = []
    for raw in list(msg.ObsAddrs)[: 4 * MAX_ADDRS]:
        try:
            out.append(multiaddr.Multiaddr(raw))
        except Exception:
            continue
    return out


__all__ = ["PROTOCOL", "HolePuncher", "Punch"]

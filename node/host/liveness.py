"""Connections that stop answering are closed and redialled within seconds (docs/LIBP2P.md §65).

A TCP connection across a cut link is not closed by the kernel: its unacknowledged
data sits in retransmission backoff (about 52 s between tries after a minute), and
nothing in py-libp2p 0.8.1 notices (yamux's keepalive pings have no deadline that
closes the connection). The books of two halves of a swarm cut apart for a minute
agreed again only 50-53 s after the link returned: whatever was left of the
retransmission timer.

:class:`Liveness` pings every connected peer every ``interval`` seconds on the
standard ``/ipfs/ping/1.0.0`` protocol (one long-lived stream per peer; every
libp2p host answers it). A pong later than ``deadline`` seconds (or a failed
ping) marks the connection dead: its socket is shut down at once (a close that
had to flush a stuck send buffer would wait for the same retransmission timer),
the library tears the connection down as it does for any dropped link, and the
peer is redialled at the addresses the peerstore held for it, with a backoff of
at most ``redial_max_backoff`` seconds, for ``redial_for`` seconds. A new
connection is a "peer connected" event for the node (``node/peers.py``), which
starts book sync and ledger sync with that peer at once: a peer back from
silence is a reconnected peer, since silence longer than the deadline closes the
connection.
"""

from __future__ import annotations

import logging
import random
import socket
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from libp2p.abc import IHost, INetConn
from libp2p.host.ping import ID as PING_PROTOCOL
from libp2p.host.ping import perform_ping_roundtrip
from libp2p.peer.id import ID

if TYPE_CHECKING:
    from .host import P2PHost

log = logging.getLogger("swapmeet.node.host")


@dataclass(frozen=True, slots=True)
class LivenessSettings:
    """How often each connection is pinged, how long a pong may take, how long a lost peer is redialled."""

    # Seconds between pings on one connection; under the library ping handler's 10 s wait for the next ping.
    # Each ping costs both sides about 1 ms of CPU: at 2 s a 10-node swarm idled at about 1 % of a core
    # per node (docs/LIBP2P.md §65); a dead link is still found within interval + deadline (9 s).
    interval: float = 4.0
    # A pong later than this (s) marks the connection dead. Loopback and LAN answer in milliseconds, a
    # WAN in tenths; a busy py-libp2p node may take a second or two.
    deadline: float = 5.0
    # Redial a peer whose connection we closed for this long (s), at most this far apart (s).
    redial_for: float = 600.0
    redial_max_backoff: float = 2.0
    # One dial attempt (s): a cut link drops the SYN, so the attempt would otherwise hang.
    dial_timeout: float = 2.0


def _socket_of(conn: INetConn) -> Any | None:
    """The trio socket under a swarm connection (yamux -> secure session -> raw connection -> TCP stream)."""
    layer: Any = getattr(conn, "muxed_conn", None)
    for attr in ("secured_conn", "conn", "stream", "stream"):
        layer = getattr(layer, attr, None)
        if layer is None:
            return None
    return getattr(layer, "socket", None)


def open_connections(network: Any, peer: ID) -> list[INetConn]:
    """The peer's connections that are not closed (the swarm may still list one being torn down)."""
    return [c for c in network.get_connections(peer) if not getattr(c.muxed_conn, "is_closed", False)]


def hard_close(conn: INetConn) -> bool:
    """Shut the connection's socket down now; its readers see the end at once and the library tears it down.

    A plain ``close()`` first writes a yamux GO_AWAY, which waits behind whatever the dead link holds.
    """
    sock = _socket_of(conn)
    if sock is None:
        return False
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    return True


class Liveness:
    """Pings every connection of one host; closes the silent ones and redials their peers."""

    def __init__(self, p2p: P2PHost, host: IHost, settings: LivenessSettings) -> None:
        self.p2p = p2p
        self.host = host
        self.settings = settings
        self._watched: set[str] = set()
        self._redialling: set[str] = set()
        #: Connections closed for silence, since start (diagnostics and tests).
        self.closed_silent = 0

    async def run(self) -> None:
        """Watch each connected peer in a task of its own, for as long as it stays connected."""
        async with trio.open_nursery() as nursery:
            while True:
                for peer in self.p2p.connected_peers():
                    if peer not in self._watched:
                        self._watched.add(peer)
                        nursery.start_soon(self._watch, peer, nursery)
                await trio.sleep(min(1.0, self.settings.interval))

    async def _watch(self, peer: str, nursery: trio.Nursery) -> None:
        pid = ID.from_base58(peer)
        stream: Any = None
        try:
            while self.p2p.is_connected(peer):
                await trio.sleep(self.settings.interval * random.uniform(0.8, 1.0))
                if not self.p2p.is_connected(peer):
                    return
                # before closing: the peerstore may forget them; as multiaddrs, text only if the ping fails
                addrs = self.p2p.known_multiaddrs(peer)
                try:
                    with trio.fail_after(self.settings.deadline):
                        if stream is None:
                            stream = await self.host.new_stream(pid, [PING_PROTOCOL])
                        await perform_ping_roundtrip(stream)
                    continue
                except trio.TooSlowError:
                    why = f"no pong within {self.settings.deadline:g} s"
                except Exception as exc:  # the stream broke: its connection may have closed meanwhile
                    why = f"ping failed: {exc!r}"
                # The ping stream runs on one connection. The peer may have left and come back on a
                # new one meanwhile (same PeerID, new port): the failure is about the old connection
                # only, and the new one must not be closed for it (docs/LIBP2P.md §65).
                suspects = self._connections_under(pid, stream)
                if stream is not None:
                    with suppress(Exception), trio.move_on_after(1.0):
                        await stream.reset()
                stream = None
                if suspects:
                    await self._dead(peer, pid, suspects, [str(a) for a in addrs], nursery, why)
        finally:
            self._watched.discard(peer)
            if stream is not None:
                with suppress(Exception), trio.move_on_after(1.0):
                    await stream.reset()

    def _connections_under(self, pid: ID, stream: Any) -> list[INetConn]:
        """The open connections a failed ping condemns: the one its stream ran on, or, when the stream
        could not even be opened, every connection of the peer."""
        open_conns = open_connections(self.host.get_network(), pid)
        if stream is None:
            return open_conns
        return [c for c in open_conns if c.muxed_conn is stream.muxed_conn]

    async def _dead(
        self, peer: str, pid: ID, conns: list[INetConn], addrs: list[str], nursery: trio.Nursery, why: str
    ) -> None:
        self.closed_silent += 1
        for conn in conns:
            hard_close(conn)
            with suppress(Exception), trio.move_on_after(1.0):
                await conn.close()
        if self.p2p.is_connected(peer):  # another connection to the peer remains: the watch goes on with it
            log.info("a connection to %s is silent (%s): closed it, another remains", peer, why)
            return
        log.info("connection to %s is silent (%s): closing it and redialling", peer, why)
        dialable = [a if "/p2p/" in a else f"{a}/p2p/{peer}" for a in addrs if "/tcp/" in a and "/0.0.0.0/" not in a]
        if dialable and peer not in self._redialling:
            nursery.start_soon(self._redial, peer, dialable)

    async def _redial(self, peer: str, addrs: list[str]) -> None:
        self._redialling.add(peer)
        started = trio.current_time()
        backoff = 0.5
        try:
            while trio.current_time() - started < self.settings.redial_for:
                if self.p2p.is_connected(peer):  # it dialled us, or another path did
                    return
                for addr in addrs:
                    try:
                        await self.p2p.connect(addr, timeout=self.settings.dial_timeout)
                    except Exception as exc:  # unreachable for now: try the next, then again later
                        log.debug("redial of %s at %s failed: %s", peer, addr, exc)
                        continue
                    log.info("redialled %s after %.1f s", peer, trio.current_time() - started)
                    return
                await trio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(self.settings.redial_max_backoff, backoff * 2)
            log.info("gave up redialling %s after %.0f s", peer, self.settings.redial_for)
        finally:
            self._redialling.discard(peer)

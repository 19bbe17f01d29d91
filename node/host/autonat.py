"""Are we reachable? AutoNAT v1 with our own peers as the dialers-back.

py-libp2p's :class:`AutoNATService` speaks the protocol (``/libp2p/autonat/1.0.0``: "dial me
back at these addresses"); two of its parts do not do what AutoNAT needs (docs/LIBP2P.md §43):

- its dial-back is ``host.connect()``, which returns at once when a connection to the peer
  exists, and the request itself came over one: every dial-back "succeeds", so every node
  would call itself public. :class:`DialBack` dials the address on a fresh TCP connection,
  runs the Noise handshake (which proves the listener holds the peer's key) and closes it,
  without adding a connection to the swarm;
- it answers any number of requests. :class:`DialBack` answers at most
  :data:`REQUESTS_PER_MINUTE` per peer and runs at most :data:`CONCURRENT_DIALS` at once;
  each request dials at most :data:`MAX_DIAL_ADDRS` addresses (those of the requester's
  observed IP only, as the library already filters), each bounded by :data:`DIAL_TIMEOUT`.

:class:`Reachability` (the client side) asks up to three connected peers, over direct
connections, to dial us back, every :data:`CHECK_S` seconds (sooner while unknown), and keeps
their latest answers: ``public`` once at least one dial-back succeeded (two, when two or more
peers answered), ``private`` when every peer that answered failed to reach us, ``unknown``
before any answer.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.host.autonat.autonat import AUTONAT_PROTOCOL_ID, AutoNATService
from libp2p.host.autonat.pb.autonat_pb2 import Message
from libp2p.peer.id import ID

from .relay import direct_peers_speaking

log = logging.getLogger("swapmeet.node.host")

REQUESTS_PER_MINUTE = 4
CONCURRENT_DIALS = 8
MAX_DIAL_ADDRS = 4
DIAL_TIMEOUT = 5.0
QUERY_TIMEOUT = 20.0
CHECK_S = 120.0
UNKNOWN_CHECK_S = 2.0
SERVERS = 3


class DialBack(AutoNATService):
    """The AutoNAT server, dialling back on a fresh connection, per-peer rate-limited."""

    def __init__(self, host: IHost) -> None:
        super().__init__(host, serve=False)  # type: ignore[arg-type]
        self._recent: dict[ID, deque[float]] = {}
        self._dials = trio.CapacityLimiter(CONCURRENT_DIALS)

    def start(self) -> None:
        self.host.set_stream_handler(AUTONAT_PROTOCOL_ID, self._admit)

    async def _admit(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        now = trio.current_time()
        recent = self._recent.setdefault(peer, deque())
        while recent and recent[0] <= now - 60.0:
            recent.popleft()
        if len(recent) >= REQUESTS_PER_MINUTE:
            log.info("autonat: refused a dial-back request from %s (more than %d a minute)", peer, REQUESTS_PER_MINUTE)
            with trio.move_on_after(1.0):
                await stream.reset()
            return
        recent.append(now)
        if len(self._recent) > 1024:  # the table itself stays bounded
            for stale in [p for p, q in self._recent.items() if not q or q[-1] <= now - 60.0]:
                del self._recent[stale]
        with trio.move_on_after(QUERY_TIMEOUT):
            await self.handle_stream(stream)

    async def _try_dial(self, peer_id: ID, addrs: list[bytes]) -> bytes | None:
        network = self.host.get_network()
        async with self._dials:
            for raw in addrs[:MAX_DIAL_ADDRS]:
                try:
                    addr = multiaddr.Multiaddr(raw)
                    transport = network.transport_manager.transport_for_dialing(addr)  # type: ignore[attr-defined]
                    if transport is None:
                        continue
                    with trio.fail_after(DIAL_TIMEOUT):
                        conn = await transport.dial(addr)
                        try:
                            await network.upgrader.upgrade_security(conn, True, peer_id)  # type: ignore[attr-defined]
                        finally:
                            await conn.close()
                except Exception as exc:
                    log.debug("autonat: dial-back of %s at %s failed: %s", peer_id, raw, exc)
                    continue
                return bytes(raw)
        return None


class Reachability:
    """Our reachability, from peers' dial-back answers (see the module docstring)."""

    def __init__(self, host: IHost, client: AutoNATService, direct_addrs: Callable[[], list[str]]) -> None:
        self._host = host
        self._client = client
        self._direct_addrs = direct_addrs
        self.answers: dict[ID, bool] = {}
        self.status = "unknown"

    def _servers(self) -> list[ID]:
        out = direct_peers_speaking(self._host, str(AUTONAT_PROTOCOL_ID))
        # Peers that have not answered yet first, so that a new peer's view counts soon.
        out.sort(key=lambda p: p in self.answers)
        return out[:SERVERS]

    def _verdict(self) -> str:
        if not self.answers:
            return "unknown"
        ok = sum(self.answers.values())
        if ok >= (2 if len(self.answers) >= 2 else 1):
            return "public"
        if ok == 0:
            return "private"
        return self.status if self.status != "unknown" else "unknown"

    async def check(self) -> None:
        """Ask up to :data:`SERVERS` peers to dial us back; update :attr:`status`."""
        addrs = [multiaddr.Multiaddr(a.rsplit("/p2p/", 1)[0]).to_bytes() for a in self._direct_addrs()]
        for server in self._servers():
            try:
                status, _ = await self._client.query_server(server, addrs, timeout=QUERY_TIMEOUT)
            except Exception as exc:
                log.debug("autonat: %s did not answer: %s", server, exc)
                continue
            self.answers[server] = status == int(Message.OK)
        # Forget answers of peers we are no longer connected to (bounded by our connections).
        connected = set(self._host.get_connected_peers())
        for gone in [p for p in self.answers if p not in connected]:
            del self.answers[gone]
        verdict = self._verdict()
        if verdict != self.status:
            log.info(
                "reachability: %s (%d of %d peers reached us)", verdict, sum(self.answers.values()), len(self.answers)
            )
            self.status = verdict

    async def run(self) -> None:
        while True:
            await self.check()
            await trio.sleep(UNKNOWN_CHECK_S if self.status == "unknown" else CHECK_S)

"""Finding peers: bootstrap dialling, mDNS on the LAN, the Kademlia DHT's routing table, and the market by name.

:func:`find_market`: every node provides, on the public Kademlia DHT (``/ipfs/kad/1.0.0``, the
one any libp2p/IPFS DHT server speaks), a provider record under :func:`market_key` (the
SHA-256 multihash of ``swapmeet/<net>``), re-announced every ``announce_s`` seconds, and looks
the key up to dial the other providers: a node that knows any one DHT server finds its market.
A provider behind a NAT is dialled through a relay (its record carries its ``/p2p-circuit``
addresses once it holds a reservation, and our own relays are tried too).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import multiaddr
import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.tools.anyio_service import background_trio_service

from .errors import P2PError

if TYPE_CHECKING:
    from .host import P2PHost

log = logging.getLogger("swapmeet.node.host")

#: Seconds allowed for stopping mDNS at shutdown.
_STOP_TIMEOUT = 5.0


class ConnectionNotifee(INotifee):
    """Tells ``on_change(conn, connected)`` when a connection opens or closes (called on the trio thread).

    The callback must not block: the library awaits every notifee on its connection path.
    """

    def __init__(self, on_change: Callable[[INetConn, bool], None]) -> None:
        self._on_change = on_change

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._on_change(conn, True)
        await trio.lowlevel.checkpoint()

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._on_change(conn, False)
        await trio.lowlevel.checkpoint()

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        await trio.lowlevel.checkpoint()

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        await trio.lowlevel.checkpoint()

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        await trio.lowlevel.checkpoint()

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        await trio.lowlevel.checkpoint()


@dataclass(slots=True)
class Background:
    """State of the optional discovery machinery, for the shutdown path."""

    mdns: Any | None = None
    mdns_handler: Callable[[PeerInfo], None] | None = None


async def run_dht(host: IHost, dht: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Run the DHT service and keep its routing table filled from our connections.

    Connecting does not add a peer to the routing table; add_peer() must be called
    (docs/LIBP2P.md §26). We do it on every new connection. On the listening side
    the dialler's address is not in the peerstore yet when the connection is
    reported, so add_peer() declines it there and nothing retries: the section's
    strict xfail test says so until this is fixed.
    """
    send, receive = trio.open_memory_channel[ID](1000)

    def on_change(conn: INetConn, connected: bool) -> None:
        if connected:
            with suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                send.send_nowait(conn.muxed_conn.peer_id)

    host.get_network().register_notifee(ConnectionNotifee(on_change))
    async with background_trio_service(dht):
        for pid in host.get_connected_peers():
            await dht.add_peer(pid)
        task_status.started()
        async for pid in receive:
            try:
                await dht.add_peer(pid)
            except Exception:
                log.debug("DHT add_peer(%s) failed", pid, exc_info=True)


def market_key(net: str) -> str:
    """The DHT key of a market: the hex sha2-256 multihash (``1220`` + digest) of ``swapmeet/<net>``."""
    return "1220" + hashlib.sha256(f"swapmeet/{net}".encode()).hexdigest()


#: Providers dialled per lookup, and seconds one DHT operation (provide, lookup) may take.
_MAX_PROVIDERS = 20
_DHT_OP_S = 30.0
_DIAL_PROVIDER_S = 15.0


async def _providers_on_the_network(dht: Any, key: str) -> list[PeerInfo]:
    """Providers of ``key`` held by the DHT peers closest to it (docs/LIBP2P.md §44).

    ``KadDHT.find_providers`` answers from the local provider store whenever it holds a record
    for the key, and a node that provides the key always holds its own: it would never see
    another provider. So we ask the closest peers ourselves, each bounded.
    """
    raw = bytes.fromhex(key)
    store = dht.provider_store
    closest = list(await dht.peer_routing.find_closest_peers_network(raw))[:_MAX_PROVIDERS]
    found: dict[ID, PeerInfo] = {}

    async def ask(peer: ID) -> None:
        with trio.move_on_after(_DHT_OP_S / 3):
            try:
                providers, _closer = await store._get_providers_from_peer_with_closers(peer, raw)
            except Exception as exc:
                log.debug("GET_PROVIDERS to %s failed: %s", peer, exc)
                return
            for info in providers[:_MAX_PROVIDERS]:
                found.setdefault(info.peer_id, info)

    async with trio.open_nursery() as nursery:
        for peer in closest:
            if peer != dht.local_peer_id:
                nursery.start_soon(ask, peer)
    return list(found.values())


async def find_market(
    p2p: P2PHost, dht: Any, net: str, *, announce_s: float = 600.0, look_s: float = 10.0, enough: int = 8
) -> None:
    """Provide our market's key and dial the other providers (see the module docstring).

    Looks every ``look_s`` seconds while we have fewer than ``enough`` market peers, else every
    ``announce_s / 2``; every wait and every DHT operation is bounded.
    """
    key = market_key(net)
    announced = -math.inf
    while True:
        if dht.get_routing_table_size() == 0:
            await trio.sleep(1.0)  # nobody to ask yet
            continue
        if trio.current_time() - announced >= announce_s:
            with trio.move_on_after(_DHT_OP_S):
                if await dht.provide(key):
                    announced = trio.current_time()
                    log.info("announced market %r on the DHT", net)
        providers: list[PeerInfo] = []
        with trio.move_on_after(_DHT_OP_S):
            providers = await _providers_on_the_network(dht, key)
        for info in providers[:_MAX_PROVIDERS]:
            peer = info.peer_id.to_base58()
            if peer == p2p.peer_id or p2p.is_connected(peer):
                continue
            try:
                await p2p.dial_provider(info, timeout=_DIAL_PROVIDER_S)
            except (P2PError, ValueError) as exc:
                log.debug("market provider %s not reachable yet: %s", peer, exc)
                continue
            log.info("found market peer %s through the DHT", peer)
        await trio.sleep(look_s if len(p2p.market_peers()) < enough else announce_s / 2)


async def bootstrap_loop(p2p: P2PHost, boot: list[tuple[str, multiaddr.Multiaddr, PeerInfo]], interval: float) -> None:
    """Dial the bootstrap peers now, and again whenever we lose them."""
    warned: set[str] = set()

    # One task per peer, trying its addresses one after the other in the order given
    # (explicit bootstrap addresses first, then the newest saved ones): concurrent
    # dials to one peer would wait on each other inside py-libp2p's swarm and share
    # one outcome, so a stale address could hide a good one.
    by_peer: dict[ID, list[str]] = {}
    for addr, _maddr, info in boot:
        if info.peer_id.to_base58() != p2p.peer_id:
            by_peer.setdefault(info.peer_id, []).append(addr)

    async def dial(peer: ID, addrs: list[str]) -> None:
        for addr in addrs:
            if p2p.is_connected(peer.to_base58()):
                return
            try:
                await p2p.connect(addr, timeout=10.0)
            except (P2PError, ValueError) as exc:
                # One line, once per outage: an unreachable seed is normal.
                if addr not in warned:
                    warned.add(addr)
                    log.warning("bootstrap peer %s unreachable: %s", addr, exc)
                continue
            warned.difference_update(addrs)
            log.info("connected to bootstrap peer %s", addr)
            return

    while True:
        async with trio.open_nursery() as nursery:
            for peer, addrs in by_peer.items():
                nursery.start_soon(dial, peer, addrs)
        await trio.sleep(interval)


def _mdns_fingerprint(net: str) -> str:
    # DNS-SD service names are at most 15 characters ("p2p-" + 10 = 14), so the
    # network name goes in as a short hash; the libp2p mDNS spec's private-network
    # form is _p2p-<x>._udp.local.
    return "sm" + hashlib.sha256(net.encode()).hexdigest()[:8]


async def start_mdns(p2p: P2PHost, host: IHost, net: str, nursery: trio.Nursery, bg: Background) -> None:
    """Advertise ourselves on the LAN and dial peers of the same network we find."""
    from libp2p.discovery.events.peerDiscovery import peerDiscovery
    from libp2p.discovery.mdns.mdns import create_mdns_discovery

    all_addrs = [a.rsplit("/p2p/", 1)[0] for a in p2p.listen_addrs()]
    # Loopback is useless to other machines; advertise it only if it is all we have
    # (a swarm of nodes on one machine).
    addrs = [a for a in all_addrs if not a.startswith(("/ip4/127.", "/ip6/::1/"))] or all_addrs
    port = int(multiaddr.Multiaddr(addrs[0]).value_for_protocol("tcp")) if addrs else 0
    # Zeroconf() starts its own threads in here; bg.mdns is stopped on every exit path.
    bg.mdns = await trio.to_thread.run_sync(
        lambda: create_mdns_discovery(
            host.get_network(),
            port=port,
            listen_addrs=addrs,
            private_network_fingerprint=_mdns_fingerprint(net),
            host=None,
        )
    )
    found_send, found_receive = trio.open_memory_channel[PeerInfo](256)
    token = trio.lowlevel.current_trio_token()

    def on_found(info: PeerInfo) -> None:
        # Called on zeroconf's thread (docs/LIBP2P.md §27). Hand over to trio; never
        # block zeroconf, and never fail if trio is already gone.
        with suppress(trio.WouldBlock, trio.RunFinishedError, trio.BrokenResourceError, trio.ClosedResourceError):
            trio.from_thread.run_sync(found_send.send_nowait, info, trio_token=token)

    bg.mdns_handler = on_found
    peerDiscovery.register_peer_discovered_handler(on_found)

    async def dial_found() -> None:
        listener = bg.mdns.listener
        async for info in found_receive:
            # peerDiscovery is process-global: only act on peers *our* listener saw
            # (another host in this process may run another network).
            if info.peer_id not in {pid for pid, _ in listener.discovered_services.values()}:
                continue
            if info.peer_id.to_base58() == p2p.peer_id or p2p.is_connected(info.peer_id.to_base58()):
                continue
            for a in info.addrs:
                addr = f"{a}/p2p/{info.peer_id}" if "/p2p/" not in str(a) else str(a)
                try:
                    await p2p.connect(addr, timeout=5.0)
                    log.info("connected to mDNS peer %s", addr)
                    break
                except (P2PError, ValueError) as exc:
                    log.debug("mDNS peer %s not dialable: %s", addr, exc)

    async def sweep() -> None:
        while True:
            await trio.sleep(60)
            bg.mdns.listener.cleanup_stale_entries(max_age=240)

    nursery.start_soon(dial_found)
    nursery.start_soon(sweep)
    # register() announces with blocking waits (~1.5 s): off the trio thread, and
    # in the background so that open_host() does not wait for it.
    nursery.start_soon(partial(trio.to_thread.run_sync, bg.mdns.broadcaster.register, abandon_on_cancel=True))


async def stop_mdns(bg: Background) -> None:
    if bg.mdns_handler is not None:
        from libp2p.discovery.events.peerDiscovery import peerDiscovery

        peerDiscovery.unregister_peer_discovered_handler(bg.mdns_handler)
        bg.mdns_handler = None
    mdns, bg.mdns = bg.mdns, None
    if mdns is None:
        return

    def stop() -> None:
        mdns.broadcaster.unregister()
        mdns.listener.stop()
        mdns.zeroconf.close()

    # Unregistering sends goodbye packets with blocking waits; shielded so that it
    # runs even while we are being cancelled (else zeroconf's threads leak).
    with trio.CancelScope(shield=True), trio.move_on_after(_STOP_TIMEOUT):
        await trio.to_thread.run_sync(stop, abandon_on_cancel=True)

"""Who the node is connected to: connection changes as events, and the peers remembered across restarts.

:class:`PeerWatch` looks at the host's connections whenever the host reports one
opened or closed (and every :data:`PEER_WATCH_S` at the latest) and hands each
change to every room that asked for a channel with :meth:`PeerWatch.listen`
(book sync, ledger replication, settlement, the saved peers): one watcher
instead of one polling loop per room, and a new peer is synced with at once.

:class:`SavedPeers` is ``<home>/peers.json``: the addresses of the peers this
node was connected to, redialled at the next start (a persistent peerstore).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import trio
from swapmeet.ledger.durable import write_durably

from .host import P2PHost

log = logging.getLogger("swapmeet.node")

PEER_WATCH_S = 0.5
MAX_SAVED_PEERS = 64
_LISTENER_BUFFER = 64  # changes a slow listener may fall behind by before the watcher waits for it


@dataclass(frozen=True, slots=True)
class PeerChange:
    """One poll's news: who connected, who left, and everyone connected now."""

    connected: frozenset[str]
    disconnected: frozenset[str]
    current: frozenset[str]


class PeerWatch:
    """Connection changes of one host, fanned out to listeners; run it in the node's nursery."""

    def __init__(self, host: P2PHost) -> None:
        self.host = host
        self._listeners: list[trio.MemorySendChannel[PeerChange]] = []

    def listen(self) -> trio.MemoryReceiveChannel[PeerChange]:
        """A channel of every change from now on (call before :meth:`run` starts, or changes are missed)."""
        send, receive = trio.open_memory_channel[PeerChange](_LISTENER_BUFFER)
        self._listeners.append(send)
        return receive

    async def run(self) -> None:
        known: frozenset[str] = frozenset()
        while True:
            current = frozenset(self.host.connected_peers())
            connected, disconnected = current - known, known - current
            for peer in sorted(connected):
                log.info("peer connected: %s", peer)
            for peer in sorted(disconnected):
                log.info("peer disconnected: %s", peer)
            if connected or disconnected:
                change = PeerChange(frozenset(connected), frozenset(disconnected), current)
                for listener in self._listeners:
                    await listener.send(change)
            known = current
            # Woken by the host's connection notifications; the poll interval is only the safety net.
            await self.host.wait_connections_changed(PEER_WATCH_S)


class SavedPeers:
    """``peers.json``: one or two dialable addresses per peer, newest first, at most :data:`MAX_SAVED_PEERS`."""

    def __init__(self, path: Path, my_peer_id: str) -> None:
        self.path = path
        self.me = my_peer_id

    def load(self) -> list[str]:
        """The saved addresses, without our own and without junk (a damaged file reads as empty)."""
        try:
            addrs = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        mine = f"/p2p/{self.me}"
        return [a for a in addrs if isinstance(a, str) and "/p2p/" in a and not a.endswith(mine)][:MAX_SAVED_PEERS]

    def write(self, addrs: list[str]) -> None:
        """Merge fresh addresses in front of the saved ones (blocking: call it in a worker thread).

        A peer's fresh addresses replace the ones saved for it before: a peer that restarted on a new
        port must not be redialled at its old one first.
        """
        fresh_peers = {a.rsplit("/p2p/", 1)[1] for a in addrs}
        older = [a for a in self.load() if a.rsplit("/p2p/", 1)[1] not in fresh_peers]
        merged = list(dict.fromkeys([*addrs, *older]))[:MAX_SAVED_PEERS]
        write_durably(self.path, json.dumps(merged).encode())

    async def save(self, host: P2PHost) -> None:
        """Remember the connected peers' addresses (the host is read here, on the trio thread:
        py-libp2p is not thread-safe; only the file write goes to a worker thread)."""
        addrs = []
        for peer in host.connected_peers():
            for addr in host.known_addrs(peer)[:2]:
                if "/tcp/" in addr and "/ip4/0.0.0.0/" not in addr:
                    addrs.append(addr if "/p2p/" in addr else f"{addr}/p2p/{peer}")
        if addrs:
            await trio.to_thread.run_sync(self.write, addrs)

    async def keep(self, host: P2PHost, changes: trio.MemoryReceiveChannel[PeerChange], every_s: float) -> None:
        """Save on every new connection and every ``every_s`` seconds; a failed save is logged, never fatal."""
        next_save = trio.current_time() + every_s
        while True:
            with trio.move_on_at(next_save):
                change = await changes.receive()
                if not change.connected:
                    continue
            next_save = trio.current_time() + every_s
            try:
                await self.save(host)
            except Exception:
                log.exception("could not save the peers file %s", self.path)

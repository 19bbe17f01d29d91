"""The running node: the composition root that builds every room of a node and owns its one nursery.

:class:`Node` opens the offer book and the ledger, starts the libp2p host
(:mod:`.host`), and builds the rooms up front, each given the nursery, the
channels and the collaborators below it (nothing calls back up):

====================  ==========================================================
:mod:`.peers`         connection changes as events; ``peers.json``
:mod:`.ingest`        the one way verified book objects enter the book
:mod:`.bookgossip`    listings and offers topics (verified in, batched and paced out)
:mod:`.booksync`      catch-up of the offer book with each peer
:mod:`.replication`   own appends, other chains, fork proofs
:mod:`.settlement`    the settlement machine's driver (stream, topic, timers)
:mod:`.events`        what just changed, fanned out to live views (the web UI's Server-Sent Events)
:mod:`.photos`        listing photos by hash: kept, served, fetched and checked
:mod:`.ledgerview`    the ledger as the local user reads it: chains, reputations, audit
:mod:`.trading`       offers and trades for the local user
:mod:`.market`        status, publishing, search and lookups for the local user
:mod:`.http`          the local API on 127.0.0.1, token in ``api.cookie``; the web UI (:mod:`.ui`) on it
====================  ==========================================================

Channels between them: offers to or from us (ingest -> settlement), complete
exchanges learned from other chains (replication -> settlement), connection
changes (peers -> book sync, replication, settlement, saved peers).

It runs until SIGINT/SIGTERM or ``swapmeet node stop``; shutdown is
cancellation of the one nursery, so no task outlives the node.
"""

from __future__ import annotations

import fcntl
import gc
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio
from swapmeet.ledger.store import LedgerStore
from swapmeet.protocol.errors import SwapmeetError
from swapmeet.protocol.gossip import PER_PUBLICATION_TOPICS
from swapmeet.protocol.identity import Identity, public_key_from_peer_id
from swapmeet.protocol.objects import LedgerEntry, Offer
from swapmeet.protocol.replication import GOSSIP_TOPIC as LEDGER_TOPIC

from . import host as p2p
from .activity import Activity
from .book import OfferBook
from .bookgossip import TOPIC_KINDS, BookGossip
from .booksync import BookSync
from .budgets import Budgets
from .config import DEFAULT_LISTEN
from .cookie import new_token, remove_cookie, write_cookie
from .events import EventFeed
from .home import Home
from .http.app import create_app
from .http.server import serve_api
from .ingest import BookIngest
from .ledgerview import LedgerViews
from .market import Market
from .peers import PeerWatch, SavedPeers
from .photos import PhotoService, PhotoStore
from .refusals import RefusalLog
from .replication import Replication
from .settlement import SETTLE_TOPIC, SettlementService
from .trading import Trading

log = logging.getLogger("swapmeet.node")

PRUNE_S = 60.0
SAVE_PEERS_S = 30.0
CHANNEL_SIZE = 1024  # offers and learned entries waiting for settlement before their senders wait


@dataclass
class NodeConfig:
    listen: list[str] = field(default_factory=lambda: list(DEFAULT_LISTEN))
    api_port: int = 0
    net: str = "main"
    bootstrap: list[str] = field(default_factory=list)
    mdns: bool = True
    dht: bool = True
    relay_service: bool = True  # offer a capped Circuit Relay v2 service to peers
    debug: bool = False
    archive: bool = False  # replicate every chain heard of, not only counterparties' and followed ones
    follow: list[str] = field(default_factory=list)  # PeerIDs whose chains to replicate


class Node:
    """A swapmeet peer. Its rooms exist while :meth:`run` runs (``host``, ``market``, ``trading``...)."""

    def __init__(self, home: Home, identity: Identity, config: NodeConfig) -> None:
        self.home = home
        self.identity = identity
        self.config = config
        self.saved_peers = SavedPeers(home.peers_file, identity.peer_id)
        self._scope = trio.CancelScope()
        self.host: p2p.P2PHost | None = None
        self.book: OfferBook
        self.replication: Replication
        self.settlement: SettlementService
        self.market: Market
        self.trading: Trading

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until :meth:`stop` (or cancellation); ``task_status.started()`` once the API answers."""
        cfg = self.config
        token = new_token()
        book = self.book = OfferBook.in_home(self.home)
        activity = Activity()
        ledger_store: LedgerStore | None = None
        try:
            with self._scope:
                ledger_store = await trio.to_thread.run_sync(LedgerStore.open, self.home.ledger_db)
                async with (
                    p2p.open_host(
                        self.identity.seed,
                        cfg.listen,
                        net=cfg.net,
                        bootstrap=[*cfg.bootstrap, *self.saved_peers.load()],
                        enable_mdns=cfg.mdns,
                        enable_dht=cfg.dht,
                        relay_service=cfg.relay_service,
                        gossip_topics=[*TOPIC_KINDS, LEDGER_TOPIC, SETTLE_TOPIC],
                        # settlement re-sends lost messages (RETRY_S): each publication is its own message
                        resend_topics=PER_PUBLICATION_TOPICS,
                        debug=cfg.debug,
                        refusals=RefusalLog(log, activity),
                    ) as host,
                    trio.open_nursery() as nursery,
                ):
                    self.host = host
                    await self._start_rooms(nursery, host, book, ledger_store, activity)
                    port = await nursery.start(
                        partial(serve_api, create_app(self.market, self.trading, token), port=cfg.api_port)
                    )
                    write_cookie(self.home, port, token)
                    log.info("node %s on network %r", self.identity.peer_id, cfg.net)
                    for addr in host.listen_addrs():
                        log.info("listening on %s", addr)
                    task_status.started()
        finally:
            remove_cookie(self.home, token)
            self.host = None
            book.close()
            if ledger_store is not None:
                ledger_store.close()
            log.info("node stopped")

    async def _start_rooms(
        self, nursery: trio.Nursery, host: p2p.P2PHost, book: OfferBook, ledger_store: LedgerStore, activity: Activity
    ) -> None:
        """Build every room, lowest first, and start its tasks in ``nursery``."""
        cfg, me = self.config, self.identity.public_key
        offers_send, offers_receive = trio.open_memory_channel[Offer](CHANNEL_SIZE)
        learned_send, learned_receive = trio.open_memory_channel[list[LedgerEntry]](CHANNEL_SIZE)
        watch = PeerWatch(host)
        budgets = Budgets()
        events = EventFeed()
        ingest = BookIngest(book, me, offers_send, host.refusals, budgets)
        ingest.events = events
        gossip = BookGossip(host, cfg.net, ingest, me, activity)
        sync = BookSync(host, cfg.net, book, ingest, activity)
        self.replication = Replication(
            host,
            ledger_store,
            self.identity,
            cfg.net,
            self.home.forked_file,
            book,
            learned_send,
            activity,
            budgets,
            archive=cfg.archive,
            followed=[public_key_from_peer_id(p) for p in cfg.follow],
        )
        self.settlement = SettlementService(
            host, self.identity, cfg.net, self.home.settlement_state, self.replication, ingest, gossip, activity
        )
        self.settlement.events = events
        photo_store = await trio.to_thread.run_sync(PhotoStore, self.home.photos_dir)
        photos = PhotoService(host, cfg.net, photo_store, book, events)
        ingest.photos_wanted = photos.prefetch_send
        self.trading = Trading(self.identity, self.settlement, self.replication, book)
        self.market = Market(
            self.identity,
            cfg.net,
            host,
            book,
            ingest,
            gossip,
            self.settlement,
            self.replication,
            activity,
            self._scope,
            events=events,
            photos=photos,
            views=LedgerViews(self.home.ledger_db),
        )
        await self.replication.start(nursery, watch.listen())
        await self.settlement.start(nursery, offers=offers_receive, learned=learned_receive, changes=watch.listen())
        await gossip.start(nursery)
        await photos.start(nursery)
        await sync.start(nursery, watch.listen())  # after settlement: what a peer pushes may be an offer to us
        nursery.start_soon(self.saved_peers.keep, host, watch.listen(), SAVE_PEERS_S)
        nursery.start_soon(_every, PRUNE_S, partial(_prune, book))
        nursery.start_soon(watch.run)

    async def stop(self) -> None:
        self._scope.cancel()


async def _every(interval: float, job: Callable[[], Awaitable[Any]]) -> None:
    """Run a housekeeping job every ``interval`` seconds; its failure is logged, never stops the node."""
    while True:
        await trio.sleep(interval)
        try:
            await job()
        except Exception:
            log.exception("housekeeping job %s failed", getattr(job, "__name__", job))


async def _prune(book: OfferBook) -> None:
    removed = await trio.to_thread.run_sync(book.prune, int(time.time()))
    if removed:
        log.info("pruned %d expired object(s)", removed)


def configure_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not debug:
        # Third-party chatter (hypercorn, zeroconf, multiaddr...) only when debugging.
        for name in ("hypercorn", "zeroconf", "asyncio", "multiaddr", "async_service"):
            logging.getLogger(name).setLevel(logging.WARNING)


async def _main(node: Node) -> None:
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            nursery.start_soon(_stop_on_signal, signals, node)
            async with trio.open_nursery() as node_nursery:
                await node_nursery.start(node.run)
                # What start-up built (libp2p, the API's models, the rooms: some 150k objects) lives as long as
                # the process: out of the collector's reach, a full collection no longer walks it. Measured
                # under load, the nodes' full collections stalled them 400-700 ms at a time; after this, see
                # docs/SCALING.md. Here, not in Node.run: a process that runs several nodes (the tests) must
                # not pin what each one leaves behind.
                gc.freeze()
            nursery.cancel_scope.cancel()


async def _stop_on_signal(signals: Any, node: Node) -> None:
    async for signum in signals:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        await node.stop()
        return


def run_node(
    home: Home,
    identity: Identity,
    *,
    listen: list[str],
    api_port: int,
    net: str,
    bootstrap: list[str],
    mdns: bool,
    debug: bool,
    dht: bool = True,
    relay_service: bool = True,
    archive: bool = False,
    follow: list[str] | None = None,
) -> None:
    """Run a node in the foreground until SIGINT/SIGTERM or ``swapmeet node stop``."""
    configure_logging(debug)
    config = NodeConfig(
        listen=list(listen) or list(DEFAULT_LISTEN),
        api_port=api_port,
        net=net,
        bootstrap=list(bootstrap),
        mdns=mdns,
        dht=dht,
        relay_service=relay_service,
        debug=debug,
        archive=archive,
        follow=list(follow or []),
    )
    with hold_home_lock(home):
        check_ports_free(config)
        node = Node(home, identity, config)
        try:
            trio.run(_main, node)
        except BaseExceptionGroup as group:
            # A refusal raised inside the node's nurseries (say, the API port is taken) is the
            # user's to read as one line, not a bug: take it out of the group trio wraps it in.
            refusal = _only_refusal(group)
            if refusal is None:
                log.exception("the node crashed")
                raise
            raise refusal from None
        except Exception:
            # A crash is a bug: the node's log must say where, whatever the CLI prints.
            log.exception("the node crashed")
            raise


class PortInUse(SwapmeetError):
    exit_code = 2


def check_ports_free(config: NodeConfig) -> None:
    """Refuse to start on a TCP port another program (or another node) already listens on.

    py-libp2p binds with SO_REUSEPORT, so a second node on the same port would start and share
    the incoming connections, and a port held by another program fails without a word. A plain
    bind (no SO_REUSEPORT) tells both apart from a free port. Port 0 (any free port) is skipped.
    """
    wanted = [(f"/ip4/{host}/tcp/{port}", host, int(port)) for host, port in _tcp_listen_addrs(config.listen)]
    wanted.append(("the local API", "127.0.0.1", config.api_port))
    for label, host, port in wanted:
        if port == 0:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # SO_REUSEADDR: connections of a node that just stopped (TIME_WAIT) must not count as
            # "in use"; an active listener still does.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                flag = "--api-port" if label == "the local API" else "--listen"
                raise PortInUse(
                    f"cannot listen on {label} ({host}:{port}): {exc.strerror or exc}; "
                    f"is another node or program using it? choose another with {flag}"
                ) from None


def _tcp_listen_addrs(addrs: list[str]) -> list[tuple[str, str]]:
    out = []
    for addr in addrs:
        parts = addr.strip("/").split("/")
        if len(parts) >= 4 and parts[0] == "ip4" and parts[2] == "tcp":
            out.append((parts[1], parts[3]))
    return out


def _only_refusal(group: BaseExceptionGroup) -> SwapmeetError | None:
    """The one SwapmeetError a group holds when it holds nothing else (cancellations aside)."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        elif not isinstance(exc, trio.Cancelled):
            leaves.append(exc)

    walk(group)
    if len(leaves) == 1 and isinstance(leaves[0], SwapmeetError):
        return leaves[0]
    return None


class NodeAlreadyRunning(SwapmeetError):
    exit_code = 1


@contextmanager
def hold_home_lock(home: Home) -> Iterator[None]:
    """An exclusive lock on the home for the node's lifetime (released by the OS even on kill -9)."""
    home.ensure()
    fd = os.open(home.node_lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NodeAlreadyRunning(f"another node is already running for home {home}") from None
        yield
    finally:
        os.close(fd)

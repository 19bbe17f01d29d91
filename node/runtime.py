"""The running node: one trio nursery that owns every task of a swapmeet peer.

``run_node`` opens the offer book, starts the libp2p host (``p2p.open_host``),
joins the gossip topics, serves the book-sync stream protocol and the local
HTTP API, and runs until SIGINT/SIGTERM or ``swapmeet node stop``; shutdown is
cancellation of that one nursery, so no task outlives the node.

Data paths, all through the trust boundary before anything is stored or
forwarded:

- gossip in: the topic validator decodes the batch (every object verified,
  fresh, within its author's rate) *before* py-libp2p delivers or forwards it;
  the subscription reader then stores the already-verified objects.
- sync in: objects fetched from or pushed by a peer are decoded the same way,
  one by one, and stored.
- local API: what the user publishes is built by ``protocol.build`` (which
  decodes what it signs), stored, then queued for gossip.
- gossip out: objects waiting to be published are packed into batches, since
  py-libp2p's cost is per message, not per byte.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import random
import signal
import socket
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio
from swapmeet.ledger.store import LedgerStore
from swapmeet.protocol import batch, boundary, ledgerwire
from swapmeet.protocol.build import make_withdrawal
from swapmeet.protocol.errors import InvalidObject, SwapmeetError
from swapmeet.protocol.identity import Identity, public_key_from_peer_id
from swapmeet.protocol.objects import (
    KIND_LISTING,
    KIND_OFFER,
    KIND_WITHDRAWAL,
    Item,
    Leg,
    Listing,
    Notice,
    Offer,
    Rating,
    Receipt,
    Withdrawal,
)
from swapmeet.protocol.ratelimit import AuthorRateLimiter
from swapmeet.protocol.settlement import ExchangeState, OfferState, OfferView

from . import jsonview, p2p
from .api import (
    AmbiguousPrefix,
    Conflict,
    ListingSpec,
    Trade,
    UnknownObject,
    create_app,
    new_token,
    package_version,
    remove_cookie,
    serve_api,
    write_cookie,
)
from .book import OfferBook
from .home import Home
from .ledger_sync import NodeLedger
from .settle import SETTLE_TOPIC, SettlementService
from .sync import BookSync, sync_quietly

log = logging.getLogger("swapmeet.node")

DEFAULT_PORT = 4001
DEFAULT_LISTEN = (f"/ip4/0.0.0.0/tcp/{DEFAULT_PORT}",)
TOPIC_KINDS: dict[str, tuple[str, ...]] = {
    "listings": (KIND_LISTING, KIND_WITHDRAWAL),
    "offers": (KIND_OFFER,),
}
# No waiting window: objects that arrive while a publish is in flight go out together in the next
# message (natural batching), and a lone publication is not delayed.
PUBLISH_COALESCE_S = 0.0
PEER_WATCH_S = 0.5
RESYNC_S = 60.0
PRUNE_S = 60.0
SAVE_PEERS_S = 30.0
MAX_SAVED_PEERS = 64


@dataclass
class NodeConfig:
    listen: list[str] = field(default_factory=lambda: list(DEFAULT_LISTEN))
    api_port: int = 0
    net: str = "main"
    bootstrap: list[str] = field(default_factory=list)
    mdns: bool = True
    dht: bool = True
    debug: bool = False
    archive: bool = False  # replicate every chain heard of, not only counterparties' and followed ones
    follow: list[str] = field(default_factory=list)  # PeerIDs whose chains to replicate


def _now() -> int:
    return int(time.time())


class Node:
    """A swapmeet peer. Implements the local API's ``NodeAPI`` protocol."""

    def __init__(self, home: Home, identity: Identity, config: NodeConfig) -> None:
        self.home = home
        self.identity = identity
        self.config = config
        self.book = OfferBook.in_home(home)
        self.started = time.monotonic()
        self.host: p2p.P2PHost | None = None
        self._scope = trio.CancelScope()
        self._limiter = AuthorRateLimiter()  # every author's objects arriving by gossip
        # What we publish is paced below the budget every node enforces (80 %): delays on the
        # way can bunch paced messages together, and a receiver must still find them in budget.
        enforced = AuthorRateLimiter()
        self._own_pace = AuthorRateLimiter(rate=enforced.rate * 0.8, burst=enforced.burst * 0.8)
        self._nursery: trio.Nursery | None = None
        # Validator -> reader hand-over of decoded batches, keyed by the message's hash,
        # so a batch is verified once; bounded because a reader may never claim one.
        self._verified: OrderedDict[bytes, list[Any]] = OrderedDict()
        self._outbox: dict[str, list[bytes]] = {name: [] for name in TOPIC_KINDS}
        self._outbox_ready = trio.Event()
        self._ledger_store: LedgerStore | None = None
        self.ledger: NodeLedger
        self.settle: SettlementService

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        token = new_token()
        try:
            with self._scope:
                async with p2p.open_host(
                    self.identity.seed,
                    cfg.listen,
                    net=cfg.net,
                    bootstrap=[*cfg.bootstrap, *self._saved_peers()],
                    enable_mdns=cfg.mdns,
                    enable_dht=cfg.dht,
                    gossip_topics=[*TOPIC_KINDS, ledgerwire.GOSSIP_TOPIC, SETTLE_TOPIC],
                    resend_topics=[SETTLE_TOPIC],  # settlement re-sends lost messages (RETRY_S)
                    debug=cfg.debug,
                ) as host:
                    self.host = host
                    sync = BookSync(
                        host,
                        p2p.protocol_id(cfg.net, "book-sync"),
                        items=self._live_items,
                        fetch=self._raws,
                        accept=self._accept_from_peer,
                    )
                    self._ledger_store = await trio.to_thread.run_sync(LedgerStore.open, self.home.ledger_db)
                    self.ledger = NodeLedger(
                        self._ledger_store,
                        self.identity,
                        cfg.net,
                        self.home.forked_file,
                        archive=cfg.archive,
                        followed=[public_key_from_peer_id(p) for p in cfg.follow],
                        counterparties=lambda: self.settle.counterparties(),
                        on_learned=lambda entries: self.settle.learned(entries),
                    )
                    self.settle = SettlementService(
                        self.identity,
                        self.home.settlement_state,
                        self.ledger,
                        cfg.net,
                        gossip=self._gossip_settlement,
                        ingest=self._ingest_verified,
                        load=self.get,
                    )
                    sync.install()  # after settlement exists: what a peer pushes may be an offer to us
                    async with trio.open_nursery() as nursery:
                        self._nursery = nursery
                        await nursery.start(self.ledger.run, host)
                        await nursery.start(self.settle.run, host)
                        for name in TOPIC_KINDS:
                            sub = await host.subscribe(p2p.topic(cfg.net, name), self._validator(name))
                            nursery.start_soon(self._read_gossip, name, sub)
                        nursery.start_soon(self._publisher)
                        nursery.start_soon(self._watch_peers, sync)
                        nursery.start_soon(self._every, PRUNE_S, self._prune)
                        nursery.start_soon(self._every, SAVE_PEERS_S, self._save_peers)
                        port = await nursery.start(partial(serve_api, create_app(self, token), port=cfg.api_port))
                        write_cookie(self.home, port, token)
                        log.info("node %s on network %r", self.identity.peer_id, cfg.net)
                        for addr in host.listen_addrs():
                            log.info("listening on %s", addr)
                        task_status.started()
        finally:
            remove_cookie(self.home, token)
            self.host = None
            self.book.close()
            if self._ledger_store is not None:
                self._ledger_store.close()
            log.info("node stopped")

    async def stop(self) -> None:
        self._scope.cancel()

    async def _every(self, interval: float, job: Any) -> None:
        while True:
            await trio.sleep(interval)
            await self._housekeeping(job)

    async def _housekeeping(self, job: Any) -> None:
        """Run a housekeeping job; its failure is logged with its traceback but never stops the node."""
        try:
            await job()
        except Exception:
            log.exception("housekeeping job %s failed", getattr(job, "__name__", job))

    # ------------------------------------------------------------------ gossip

    def _validator(self, topic_name: str) -> Any:
        kinds = TOPIC_KINDS[topic_name]

        def validate(from_peer: str, data: bytes) -> bool:
            # Runs before py-libp2p delivers or forwards the message: nothing invalid passes on.
            try:
                objects = batch.decode_batch(data, kinds=kinds, now=_now())
            except InvalidObject as err:
                log.info("rejected a %s message from %s: %s", topic_name, from_peer[-8:], err)
                return False
            if from_peer == self.identity.peer_id:
                return True  # our own publication: paced by the publisher, not counted twice
            now = time.monotonic()
            for obj in objects:
                if not self._limiter.allow(obj.author, now):
                    log.info("rejected a %s message from %s: author over its rate limit", topic_name, from_peer[-8:])
                    return False
            self._verified[hashlib.sha256(data).digest()] = objects
            while len(self._verified) > 1024:
                self._verified.popitem(last=False)
            return True

        return validate

    async def _read_gossip(self, topic_name: str, sub: p2p.Subscription) -> None:
        assert self.host is not None
        async for from_peer, data in sub:
            objects = self._verified.pop(hashlib.sha256(data).digest(), None)
            if from_peer == self.host.peer_id:
                continue  # our own publication: stored before it was announced
            if objects is None:  # the hand-over cache turned over before we read it: verify again
                try:
                    objects = batch.decode_batch(data, kinds=TOPIC_KINDS[topic_name], now=_now())
                except InvalidObject:
                    continue
            new = await self._store(objects)
            if new:
                log.info("gossip from %s: %d new object(s)", from_peer[-8:], new)

    async def _store(self, objects: Iterable[Any]) -> int:
        """Verified book objects into the book; offers to or from us also go to settlement."""
        objects = list(objects)
        results = await trio.to_thread.run_sync(self.book.add_many, objects, _now())
        await self.settle.receive(o for o in objects if isinstance(o, Offer))
        return sum(1 for r in results if r.forward)  # new, or a newer version of what we held

    async def _ingest_verified(self, objects: list[Any]) -> None:
        """Verified objects that came for settlement (direct stream, settle topic): offers via the book."""
        offers = [o for o in objects if isinstance(o, Offer)]
        if offers:
            await self._store(offers)
        await self.settle.receive(o for o in objects if not isinstance(o, Offer))

    def _gossip_settlement(self, topic_name: str, raw: bytes) -> None:
        """Settlement's gossip: offers are stored and queued like any publication; the rest go out at once."""
        if topic_name == "offers":
            assert self._nursery is not None
            self._nursery.start_soon(self._publish_offer, raw)
            return
        self._nursery.start_soon(self._publish_now, topic_name, raw)  # type: ignore[union-attr]

    async def _publish_offer(self, raw: bytes) -> None:
        offer = boundary.decode(raw, kind=KIND_OFFER)
        await trio.to_thread.run_sync(self.book.add_many, [offer], _now())
        self._announce("offers", raw)

    async def _publish_now(self, topic_name: str, raw: bytes) -> None:
        assert self.host is not None
        try:
            await self.host.publish(p2p.topic(self.config.net, topic_name), batch.pack([raw])[0])
        except p2p.P2PError as exc:
            log.warning("could not publish on %s: %s", topic_name, exc)

    def _announce(self, topic_name: str, raw: bytes) -> None:
        self._outbox[topic_name].append(raw)
        self._outbox_ready.set()

    async def _publisher(self) -> None:
        assert self.host is not None
        me = self.identity.public_key
        while True:
            await self._outbox_ready.wait()
            await trio.sleep(PUBLISH_COALESCE_S)
            self._outbox_ready = trio.Event()
            for name, raws in self._outbox.items():
                # Pace our own objects at the per-author rate every other node enforces: a message
                # over it would be rejected whole by our peers. What is over stays for the next round.
                now = time.monotonic()
                ready = 0
                while ready < len(raws) and self._own_pace.allow(me, now):
                    ready += 1
                if ready == 0:
                    continue
                self._outbox[name] = raws[ready:]
                for data in batch.pack(raws[:ready], max_size=p2p.DEFAULT_MAX_MESSAGE_SIZE):
                    try:
                        await self.host.publish(p2p.topic(self.config.net, name), data)
                    except p2p.P2PError as exc:
                        log.warning("could not publish on %s: %s", name, exc)
            if any(self._outbox.values()):
                self._wake_publisher_after(1.0 / self._own_pace.rate)

    def _wake_publisher_after(self, delay: float) -> None:
        """Run the publisher again after ``delay`` (objects held back by pacing are waiting)."""
        event = self._outbox_ready

        async def wake() -> None:
            await trio.sleep(delay)
            event.set()

        assert self._nursery is not None
        self._nursery.start_soon(wake)

    # ------------------------------------------------------------------ sync

    async def _live_items(self) -> list[tuple[int, bytes]]:
        return await trio.to_thread.run_sync(self.book.ids_with_times, _now())

    async def _raws(self, ids: list[bytes]) -> list[bytes]:
        return await trio.to_thread.run_sync(self.book.raws, ids)

    async def _accept_from_peer(self, raws: list[bytes], peer: str) -> int:
        now, objects, refused = _now(), [], 0
        for raw in raws:
            try:
                objects.append(boundary.decode(raw, kind=(KIND_LISTING, KIND_WITHDRAWAL, KIND_OFFER), now=now))
            except InvalidObject as err:
                refused += 1
                log.debug("sync from %s: refused an object: %s", peer[-8:], err)
        if refused:
            log.info("sync from %s: refused %d invalid or expired object(s)", peer[-8:], refused)
        return await self._store(objects)

    async def _watch_peers(self, sync: BookSync) -> None:
        """Sync with every newly connected peer, and with a random one every RESYNC_S seconds."""
        assert self.host is not None
        me = self.host.peer_id
        known: set[str] = set()
        # One session at a time: after one peer has filled the gaps, sessions with the others
        # find little left to fetch (parallel sessions would each download the same objects).
        one_at_a_time = trio.Lock()

        async def sync_with(peer: str) -> None:
            async with one_at_a_time:
                await sync_quietly(sync, peer)

        last_resync = time.monotonic()
        async with trio.open_nursery() as nursery:
            while True:
                current = set(self.host.connected_peers())
                for peer in sorted(current - known):
                    log.info("peer connected: %s", peer)
                    if BookSync.initiates(me, peer):
                        nursery.start_soon(sync_with, peer)
                for peer in sorted(known - current):
                    log.info("peer disconnected: %s", peer)
                if current - known:
                    nursery.start_soon(self._housekeeping, self._save_peers)  # a restart redials them
                known = current
                if time.monotonic() - last_resync > RESYNC_S and current:
                    last_resync = time.monotonic()
                    mine = [p for p in current if BookSync.initiates(me, p)]
                    if mine:
                        nursery.start_soon(sync_with, random.choice(mine))
                await trio.sleep(PEER_WATCH_S)

    # ------------------------------------------------------------------ housekeeping

    async def _prune(self) -> None:
        removed = await trio.to_thread.run_sync(self.book.prune, _now())
        if removed:
            log.info("pruned %d expired object(s)", removed)

    def _saved_peers(self) -> list[str]:
        try:
            addrs = json.loads(self.home.peers_file.read_text())
        except (OSError, ValueError):
            return []
        mine = f"/p2p/{self.identity.peer_id}"
        return [a for a in addrs if isinstance(a, str) and "/p2p/" in a and not a.endswith(mine)][:MAX_SAVED_PEERS]

    async def _save_peers(self) -> None:
        """Remember connected peers' addresses so a restarted node redials them (a persistent peerstore)."""
        if self.host is None:
            return
        # Read the host's state here, on the trio thread (py-libp2p is not thread-safe);
        # only the file write goes to a worker thread.
        addrs = []
        for peer in self.host.connected_peers():
            for addr in self.host.known_addrs(peer)[:2]:
                if "/tcp/" in addr and "/ip4/0.0.0.0/" not in addr:
                    addrs.append(addr if "/p2p/" in addr else f"{addr}/p2p/{peer}")
        if addrs:
            await trio.to_thread.run_sync(self._write_peers, addrs)

    def _write_peers(self, addrs: list[str]) -> None:
        # A peer's fresh addresses replace the ones saved for it before: a peer that
        # restarted on a new port must not be redialled at its old one first.
        fresh_peers = {a.rsplit("/p2p/", 1)[1] for a in addrs}
        older = [a for a in self._saved_peers() if a.rsplit("/p2p/", 1)[1] not in fresh_peers]
        merged = list(dict.fromkeys([*addrs, *older]))[:MAX_SAVED_PEERS]
        tmp = self.home.peers_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(merged))
        os.replace(tmp, self.home.peers_file)

    # ------------------------------------------------------------------ NodeAPI

    def status(self) -> dict[str, Any]:
        stats = self.book.stats()
        host = self.host
        return {
            "peer_id": self.identity.peer_id,
            "net": self.config.net,
            "addrs": host.listen_addrs() if host else [],
            "peers": len(host.connected_peers()) if host else 0,
            "book": {"listings": stats.listings, "offers": stats.offers, "withdrawals": stats.withdrawals},
            "trades": self._trade_counts(),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "version": package_version(),
        }

    def _trade_counts(self) -> dict[str, int]:
        """What is waiting for the user, at a glance: offers to answer, exchanges by coarse state."""
        counts = {"offers_to_answer": 0, "awaiting_you": 0, "pending": 0, "complete": 0, "lapsed": 0}
        settle = getattr(self, "settle", None)
        if settle is None:  # not started yet
            return counts
        me = self.identity.public_key
        for o in settle.machine.offers():
            if o.state is OfferState.OPEN and o.offer.author != me:
                counts["offers_to_answer"] += 1
        for x in settle.machine.exchanges():
            counts[jsonview.TRADE_STATES[str(x.state)]] += 1
            if x.state is ExchangeState.AWAITING:
                counts["awaiting_you"] += 1
        return counts

    def peers(self) -> list[dict[str, Any]]:
        host = self.host
        if host is None:
            return []
        return [{"peer_id": p, "addrs": host.known_addrs(p)} for p in host.connected_peers()]

    async def publish(self, spec: ListingSpec) -> Listing:
        listing = spec.to_listing(self.identity, now=_now())
        await self._store([listing])
        self._announce("listings", listing.raw)
        log.info("published listing %s: %s", listing.id.hex()[:12], listing.title)
        return listing

    async def withdraw(self, listing_id: bytes) -> Withdrawal:
        obj = await trio.to_thread.run_sync(self.book.load, listing_id)
        if obj is None:
            raise UnknownObject(f"no live listing {listing_id.hex()[:12]} in the book")
        if not isinstance(obj, Listing):
            raise Conflict(f"{listing_id.hex()[:12]} is a {obj.kind}, not a listing")
        if obj.author != self.identity.public_key:
            raise Conflict(f"listing {listing_id.hex()[:12]} is not yours: only its author can withdraw it")
        withdrawal = make_withdrawal(self.identity, obj, created=max(_now(), obj.created))
        await self._store([withdrawal])
        self._announce("listings", withdrawal.raw)
        log.info("withdrew listing %s", listing_id.hex()[:12])
        return withdrawal

    async def listings(
        self,
        query: str | None = None,
        *,
        type: str | None = None,
        category: str | None = None,
        author: bytes | None = None,
        wants: str | None = None,
        limit: int = 100,
    ) -> list[Listing]:
        return await trio.to_thread.run_sync(
            lambda: self.book.search(
                query, kind=type, category=category, author=author, wants=wants, limit=limit, now=_now()
            )
        )

    async def resolve(self, prefix_hex: str) -> bytes:
        matches = set(await trio.to_thread.run_sync(self.book.ids_with_prefix, prefix_hex, 2))
        matches.update(i for i in self.settle.known_ids() if i.hex().startswith(prefix_hex))
        if not matches:
            raise UnknownObject(f"no object with an id starting {prefix_hex}")
        if len(matches) > 1:
            raise AmbiguousPrefix(f"{prefix_hex} matches several objects; type more of the id")
        return matches.pop()

    async def get(self, id: bytes) -> Any:
        obj = await trio.to_thread.run_sync(self.book.load, id)
        if obj is None and (offer := self.settle.machine.offer(id)) is not None:
            obj = offer.offer
        if obj is None:
            obj = self.settle.exchange(id)
        return obj

    # settlement (the NodeAPI's issue-5 half): see SettlementService

    async def make_offer(
        self,
        listing_id: bytes,
        give: list[Item],
        take: list[Item] | None = None,
        *,
        expires_in_s: int | None = None,
        note: str = "",
    ) -> Offer:
        return await self.settle.make_offer(listing_id, give, take, expires_in_s, note)

    async def offers(self, direction: str | None = None) -> list[OfferView]:
        return self.settle.offers(direction)

    async def accept(self, offer_id: bytes, *, deadline_in_s: int | None = None) -> Trade:
        return await self.settle.accept(offer_id, deadline_in_s)

    async def decline(self, offer_id: bytes, note: str = "") -> Notice:
        return await self.settle.decline(offer_id, note)

    async def counter(
        self,
        offer_id: bytes,
        give: list[Item],
        take: list[Item],
        *,
        expires_in_s: int | None = None,
        note: str = "",
    ) -> Offer:
        return await self.settle.counter(offer_id, give, take, expires_in_s, note)

    async def cancel(self, target_id: bytes, note: str = "") -> Notice:
        return await self.settle.cancel(target_id, note)

    async def propose(
        self,
        parties: list[bytes],
        legs: list[Leg],
        *,
        listings: list[bytes] = (),  # type: ignore[assignment]
        deadline_in_s: int | None = None,
    ) -> Trade:
        return await self.settle.propose(parties, legs, listings, deadline_in_s)

    async def sign(self, exchange_id: bytes) -> Trade:
        return await self.settle.sign(exchange_id)

    async def trades(self) -> list[Trade]:
        return await self.settle.trades()

    async def trade(self, exchange_id: bytes) -> Trade:
        return await self.settle.trade(exchange_id)

    async def confirm(self, exchange_id: bytes, legs: list[int] | None = None) -> Receipt:
        return await self.settle.confirm(exchange_id, legs)

    async def rate(self, exchange_id: bytes, score: int, *, subject: bytes | None = None, comment: str = "") -> Rating:
        return await self.settle.rate(exchange_id, score, subject, comment)

    async def forked(self) -> list[bytes]:
        return sorted(await self.ledger.forked())


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
            await node.run()
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

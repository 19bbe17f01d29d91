"""Settlement in the running node: carries out what the machine (:mod:`swapmeet.protocol.settlement`) decides.

The machine decides; this module does the I/O, in the order the decisions come:

- ``Persist``: the machine's state (``to_bytes``) is written to
  ``<home>/settlement.cbor`` crash-safely (:mod:`swapmeet.ledger.durable`)
  *before* anything after it is carried out, so every message sent is on disk
  and a restart (``resume``) sends it again (rule R7).
- ``Send``: a direct request on ``/swapmeet/<net>/settle/1.0.0`` (one signed
  object per stream, answered by an empty ack); if the peer cannot be reached
  in ``DIRECT_TIMEOUT`` the same signed bytes go out by gossip (exchanges and
  notices on the ``settle`` topic, offers on ``offers``), so they still reach
  the counterparty through the swarm. Sends run in the background: a slow
  peer never holds up the machine.
- ``AppendToLedger``: the complete exchange goes on our chain
  (``append(once=True)``: idempotent, so a crash between the append and the
  ``Appended`` event appends nothing twice), is announced on the ledger
  topic, and ``Appended`` is fed back.
- ``Announce``: a new offer is stored and gossiped on the offers topic
  (complete exchanges are announced as ledger entries by the append).
- ``Refuse`` answers a local command (:mod:`.trading` raises it as
  :class:`Conflict` or :class:`UnknownObject`); for a peer's message it is only logged.

What the machine is told comes through the trust boundary first: objects from
the direct stream are decoded and verified here, the settle topic is a
:class:`~swapmeet.node.gossip.VerifiedTopic`, offers arrive verified from
:class:`~swapmeet.node.ingest.BookIngest` (a channel) and complete exchanges
learned from other chains from :class:`~swapmeet.node.replication.Replication`
(a channel). One lock orders events: the machine is never entered by two tasks
at once.

Timers: a ``Tick`` at the machine's ``next_wakeup`` (offers expire, exchanges
lapse), and ``resume`` (re-send the current state) at start, every
``RETRY_S`` seconds and when a peer connects, until the machine says there is
nothing left to send.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import trio
from swapmeet.ledger.durable import write_durably
from swapmeet.protocol import batch, boundary
from swapmeet.protocol.errors import InvalidObject, SwapmeetError
from swapmeet.protocol.identity import Identity, peer_id
from swapmeet.protocol.objects import (
    KIND_EXCHANGE,
    KIND_NOTICE,
    KIND_OFFER,
    Exchange,
    LedgerEntry,
    Notice,
    Offer,
    Rating,
    Receipt,
)
from swapmeet.protocol.settlement import (
    Announce,
    Appended,
    AppendToLedger,
    Completed,
    Decision,
    Event,
    ExchangeReceived,
    Lapsed,
    LearnedComplete,
    NoticeReceived,
    Notify,
    OfferReceived,
    Persist,
    Refuse,
    Send,
    Settlement,
    Tick,
)

from .activity import Activity
from .bookgossip import BookGossip
from .events import EventFeed
from .gossip import PerPublisher, VerifiedTopic
from .host import P2PError, P2PHost, RequestRefused, protocol_id, topic
from .ingest import BookIngest
from .peers import PeerChange
from .replication import Replication

log = logging.getLogger("swapmeet.node.settlement")

SETTLE_PROTOCOL = "settle"  # /swapmeet/<net>/settle/1.0.0
SETTLE_TOPIC = "settle"  # /swapmeet/<net>/settle/1: exchanges and notices that could not go direct
SETTLE_KINDS = (KIND_EXCHANGE, KIND_NOTICE)
DIRECT_KINDS = (KIND_OFFER, KIND_EXCHANGE, KIND_NOTICE)
DIRECT_TIMEOUT = 5.0
RETRY_S = 15.0
RESUME_ON_CONNECT_S = 1.0  # at most one resume per second when peers come and go


def _now() -> int:
    return int(time.time())


def _decode_settle(data: bytes) -> list[Any]:
    return batch.decode_batch(data, kinds=SETTLE_KINDS, now=_now())


class OwnChain:
    """What our own chain says about past exchanges: loaded once at start, kept current by our appends.

    The machine forgets an exchange once it can no longer change (deadline + GRACE); the chain keeps
    it, and so ``trades``, ``trade``, ``confirm`` and ``rate`` keep working on it for as long as the
    chain exists, without re-reading the chain.
    """

    def __init__(self, me: bytes) -> None:
        self.me = me
        self.exchanges: dict[bytes, Exchange] = {}  # complete exchanges on our chain, by id
        self.receipts: dict[bytes, set[int]] = {}  # legs our receipts confirm, by exchange id
        self.ratings: dict[bytes, set[bytes]] = {}  # parties we rated, by exchange id
        self.counterparties: set[bytes] = set()

    def note(self, payload: Any) -> None:
        """Record one payload appended to our chain."""
        if isinstance(payload, Exchange):
            self.counterparties.update(p for p in payload.parties if p != self.me)
            self.exchanges[payload.id] = payload
        elif isinstance(payload, Receipt):
            self.receipts.setdefault(payload.exchange_id, set()).update(payload.legs)
        elif isinstance(payload, Rating):
            self.ratings.setdefault(payload.exchange.id, set()).add(payload.subject)


class SettlementService:
    """The machine's driver: events from the user (:mod:`.trading`), from peers, and from timers."""

    def __init__(
        self,
        host: P2PHost,
        identity: Identity,
        net: str,
        state_file: Path,
        replication: Replication,
        ingest: BookIngest,
        book_gossip: BookGossip,
        activity: Activity,
    ) -> None:
        self.host = host
        self.identity = identity
        self.me = identity.public_key
        self.state_file = state_file
        self.replication = replication
        self.ingest = ingest
        self.book_gossip = book_gossip
        self.machine = load_state(identity, state_file)
        self.own_chain = OwnChain(self.me)
        self.protocol = protocol_id(net, SETTLE_PROTOCOL)
        # Per publisher, not per object author: an exchange has several signers, and the publisher
        # (gossip messages are signed, so it is authenticated) is who chose to send it. Honest
        # fallback traffic is a few re-sends per RETRY_S; a flood is not forwarded.
        self.topic = VerifiedTopic(
            host, topic(net, SETTLE_TOPIC), "settle", _decode_settle, budget=PerPublisher(), activity=activity
        )
        self._lock = trio.Lock()
        self._changed = trio.Event()
        self._in_flight: set[tuple[bytes, bytes]] = set()
        self._acknowledged: set[tuple[bytes, bytes]] = set()  # (party, exchange id) on that party's chain
        self._deliveries: trio.Nursery | None = None
        self.events: EventFeed | None = None  # told when a trade or offer changed (the web UI's live pages)

    async def start(
        self,
        nursery: trio.Nursery,
        *,
        offers: trio.MemoryReceiveChannel[Offer],
        learned: trio.MemoryReceiveChannel[list[LedgerEntry]],
        changes: trio.MemoryReceiveChannel[PeerChange],
    ) -> None:
        """Load our chain's past, serve the settle stream and topic, resume; every task in ``nursery``."""
        self._deliveries = nursery
        for entry in await self.replication.own_entries():
            self.own_chain.note(entry.payload)
        self._share_counterparties()
        self.host.set_request_handler(self.protocol, self._serve, max_frame_size=boundary.MAX_SIZE[KIND_EXCHANGE] + 64)
        await self.topic.join()
        nursery.start_soon(self._read_topic)
        nursery.start_soon(self._read_offers, offers)
        nursery.start_soon(self._read_learned, learned)
        await self.resume()  # after a restart: lapse what is overdue, re-send what is in flight
        nursery.start_soon(self._clock)
        nursery.start_soon(self._resume_on_connect, changes)

    # ------------------------------------------------------------------ the machine

    async def handle(self, event: Event) -> list[Decision]:
        """Feed one event and carry out its decisions; the decisions (Refuse among them).

        Raises what carrying them out raises (a SwapmeetError from the ledger, say).
        """
        async with self._lock:
            decisions = self.machine.handle(event)
            await self._carry_out(decisions)
            self._share_counterparties()
        self._changed.set()
        self._tell(decisions)
        return decisions

    async def resume(self) -> None:
        async with self._lock:
            decisions = self.machine.resume(_now())
            await self._carry_out([d for d in decisions if not await self._holds_it(d)])
            self._share_counterparties()
        self._changed.set()
        self._tell(decisions)

    def _tell(self, decisions: Sequence[Decision]) -> None:
        """A state the machine persisted is a change a live view shows: one note per handled event."""
        if self.events is not None and any(isinstance(d, Persist) for d in decisions):
            self.events.publish("trade", "")

    def _share_counterparties(self) -> None:
        """Tell replication whose chains to keep: every party to our exchanges, past and current."""
        current = {p for v in self.machine.exchanges() for p in v.exchange.parties if p != self.me}
        self.replication.counterparties = frozenset(self.own_chain.counterparties | current)

    async def _holds_it(self, d: Decision) -> bool:
        """A re-send of a complete exchange to a party whose chain we hold with it on: it has it.

        resume() re-sends complete exchanges until deadline + GRACE because it cannot know
        whether the others got them; the replicated chains of our counterparties can.
        """
        if not (isinstance(d, Send) and isinstance(d.obj, Exchange) and d.obj.complete):
            return False
        key = (d.to, d.obj.id)
        if key not in self._acknowledged:
            entries = await self.replication.entries_with_payload(d.obj.id)
            self._acknowledged.update((e.author, d.obj.id) for e in entries)
        return key in self._acknowledged

    async def _carry_out(self, decisions: Sequence[Decision]) -> None:
        """Run decisions in order (the lock is held). Persist is durable before anything after it."""
        for d in decisions:
            if isinstance(d, Persist):
                state = self.machine.to_bytes()
                await trio.to_thread.run_sync(write_durably, self.state_file, state)
            elif isinstance(d, Send):
                self._send_soon(d.to, d.obj)
            elif isinstance(d, AppendToLedger):
                entry = await self.replication.append(d.exchange, once=True)
                self.own_chain.note(d.exchange)
                log.info("exchange %s appended to our chain at seq %d", d.exchange.id.hex()[:12], entry.seq)
                await self._carry_out(self.machine.handle(Appended(d.exchange.id)))
            elif isinstance(d, Announce):
                if isinstance(d.obj, Offer):
                    await self._gossip_offer(d.obj)
            elif isinstance(d, Completed):
                log.info("exchange %s complete", d.exchange_id.hex()[:12])
            elif isinstance(d, Lapsed):
                log.info("exchange %s lapsed: not every party signed before its deadline", d.exchange_id.hex()[:12])
            elif isinstance(d, Notify):
                log.info("%s", d.text)
            elif isinstance(d, Refuse):
                log.info("settlement refused (%s): %s", d.code, d.reason)
            # Reserve / Release: the machine keeps the reservations itself (R4); nothing to do here.

    # ------------------------------------------------------------------ sending

    def _send_soon(self, to: bytes, obj: Offer | Exchange | Notice) -> None:
        assert self._deliveries is not None, "start() first"
        if to == self.me:
            return
        key = (to, obj.raw[-64:])  # the signature bytes differ between copies of one exchange
        if key in self._in_flight:
            return
        self._in_flight.add(key)
        self._deliveries.start_soon(self._deliver, to, obj, key)

    async def _deliver(self, to: bytes, obj: Offer | Exchange | Notice, key: tuple[bytes, bytes]) -> None:
        peer = peer_id(to)
        try:
            await self.host.request(peer, self.protocol, obj.raw, timeout=DIRECT_TIMEOUT)
            log.debug("sent %s %s to %s directly", obj.kind, obj.id.hex()[:12], peer[-8:])
            return
        except (P2PError, trio.TooSlowError) as exc:
            log.info(
                "could not send %s %s to %s directly (%s): sending it by gossip",
                obj.kind,
                obj.id.hex()[:12],
                peer[-8:],
                exc,
            )
        finally:
            self._in_flight.discard(key)
        if isinstance(obj, Offer):
            await self._gossip_offer(obj)
            return
        try:
            await self.topic.publish(batch.pack([obj.raw])[0])
        except P2PError as exc:
            log.warning("could not publish on %s: %s", SETTLE_TOPIC, exc)

    async def _gossip_offer(self, offer: Offer) -> None:
        """Offers are stored and queued like any publication of ours (on the offers topic)."""
        await self.ingest.store([offer])
        self.book_gossip.announce("offers", offer.raw)

    # ------------------------------------------------------------------ receiving

    async def _serve(self, from_peer: str, request: bytes) -> bytes:
        """One object sent to us directly: verified here (the trust boundary), then ingested."""
        if not self.ingest.budgets.settle_request(from_peer):
            raise RequestRefused("over its budget of settle requests")
        try:
            obj = boundary.decode(request, kind=DIRECT_KINDS, now=_now())
        except InvalidObject as err:
            # Resets the stream: the sender falls back to gossip, where it is refused too.
            raise RequestRefused(f"refused a settle message: {err}") from err
        await self._ingest([obj], from_peer)
        return b""

    async def _ingest(self, objects: list[Any], from_peer: str) -> None:
        """Verified objects that came for settlement: offers via the book (which hands them back), the rest here."""
        offers = [o for o in objects if isinstance(o, Offer)]
        if offers:
            await self.ingest.store_from(from_peer, offers)
        await self.receive(o for o in objects if not isinstance(o, Offer))

    async def _read_topic(self) -> None:
        async for from_peer, objects in self.topic:
            await self._ingest(objects, from_peer)

    async def _read_offers(self, offers: trio.MemoryReceiveChannel[Offer]) -> None:
        async for offer in offers:
            await self.receive([offer])

    async def _read_learned(self, learned: trio.MemoryReceiveChannel[list[LedgerEntry]]) -> None:
        """Entries of other chains holding our exchanges (replication): completion learned elsewhere (R6)."""
        async for entries in learned:
            for entry in entries:
                if isinstance(entry.payload, Exchange) and entry.payload.complete:
                    await self.handle(LearnedComplete(entry.payload, _now()))

    async def receive(self, objects: Iterable[Any]) -> None:
        """Verified objects from peers (any path): those that concern this node become events."""
        now = _now()
        for obj in objects:
            event: Event | None = None
            if isinstance(obj, Offer) and self.me in (obj.maker, obj.taker) and obj.author != self.me:
                event = OfferReceived(obj, now)
            elif isinstance(obj, Exchange) and self.me in obj.parties:
                event = ExchangeReceived(obj, now)
            elif isinstance(obj, Notice) and obj.author != self.me and self.me in _parties_of(obj):
                event = NoticeReceived(obj, now)
            if event is not None:
                try:
                    await self.handle(event)
                except SwapmeetError as err:  # e.g. our chain refused the append: say so, keep serving
                    log.warning("could not act on %s %s: %s", obj.kind, obj.id.hex()[:12], err)

    # ------------------------------------------------------------------ timers

    async def _clock(self) -> None:
        """Tick at the machine's next wakeup; resume every RETRY_S while anything is in flight."""
        last_resume = time.monotonic()
        while True:
            wake = self.machine.next_wakeup()
            delay = RETRY_S if wake is None else min(RETRY_S, max(0.0, wake - time.time()) + 0.05)
            self._changed = trio.Event()
            with trio.move_on_after(delay):
                await self._changed.wait()
            wake = self.machine.next_wakeup()
            if wake is not None and time.time() >= wake:
                await self.handle(Tick(_now()))
            if time.monotonic() - last_resume >= RETRY_S:
                last_resume = time.monotonic()
                await self.resume()

    async def _resume_on_connect(self, changes: trio.MemoryReceiveChannel[PeerChange]) -> None:
        """A peer that (re)connects may be one our messages could not reach: send the current state again."""
        async for change in changes:
            pending = bool(change.connected)
            while pending:
                await self.resume()
                # At most one resume per RESUME_ON_CONNECT_S: changes meanwhile wait in the channel,
                # and one more resume covers all of them.
                await trio.sleep(RESUME_ON_CONNECT_S)
                pending = False
                while True:
                    try:
                        pending = bool(changes.receive_nowait().connected) or pending
                    except trio.WouldBlock:
                        break

    # ------------------------------------------------------------------ lookups

    def exchange(self, exchange_id: bytes) -> Exchange | None:
        """An exchange this node is a party to: the machine's copy, or the one on our chain."""
        view = self.machine.exchange(exchange_id)
        return view.exchange if view is not None else self.own_chain.exchanges.get(exchange_id)

    def known_ids(self) -> Iterable[bytes]:
        """Ids of every offer and exchange the machine holds, and of the exchanges on our chain."""
        yield from (v.offer.id for v in self.machine.offers())
        yield from (v.exchange.id for v in self.machine.exchanges())
        yield from self.own_chain.exchanges


def _parties_of(notice: Notice) -> tuple[bytes, ...]:
    if notice.exchange is not None:
        return notice.exchange.parties
    assert notice.offer is not None
    return (notice.offer.maker, notice.offer.taker)


def load_state(identity: Identity, path: Path) -> Settlement:
    """The machine as last persisted (every object in it re-verified), or a fresh one.

    Raises :class:`InvalidObject` (path: the file) when the file is damaged; the file is kept.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Settlement(identity)
    try:
        return Settlement.from_bytes(identity, data)
    except InvalidObject as err:
        # Never replaced silently: it may hold signatures other parties are waiting for.
        raise InvalidObject(
            str(path),
            f"damaged ({err.reason.removeprefix('damaged settlement state: ')}); move the file aside to start"
            " with an empty one"
            " (complete trades are safe on your ledger; trades still being signed would be forgotten)",
            "state",
        ) from err

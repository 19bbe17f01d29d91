"""Settlement in the running node: carries out what :class:`protocol.settlement.Settlement` decides.

The machine decides; this module does the I/O, in the order the decisions come:

- ``Persist``: the machine's state (``to_bytes``) is written to
  ``<home>/settlement.cbor`` atomically and durably (temp file, fsync, rename,
  fsync of the directory) *before* anything after it is carried out, so every
  message sent is on disk and a restart (``resume``) sends it again (rule R7).
- ``Send``: a direct request on ``/swapmeet/<net>/settle/1.0.0`` (one signed
  object per stream, answered by an empty ack); if the peer cannot be reached
  in ``DIRECT_TIMEOUT`` the same signed bytes go out by gossip (exchanges and
  notices on the ``settle`` topic, offers on ``offers``), so they still reach
  the counterparty through the swarm. Sends run in the background: a slow
  peer never holds up the machine.
- ``AppendToLedger``: the complete exchange goes on our chain
  (``append_own(once=True)``: idempotent, so a crash between the append and the
  ``Appended`` event appends nothing twice), is announced on the ledger
  topic, and ``Appended`` is fed back.
- ``Announce``: a new offer is gossiped on the offers topic (complete exchanges
  are announced as ledger entries by the append).
- ``Refuse`` answers a local command as :class:`Conflict` (or
  :class:`UnknownObject`); for a peer's message it is only logged.

Everything the machine is told comes through the trust boundary first:
objects from the direct stream and the settle topic are decoded and verified
here (or by the node's gossip validators) before they become events. One
lock orders events: the machine is never entered by two tasks at once.

Timers: a ``Tick`` at the machine's ``next_wakeup`` (offers expire, exchanges
lapse), and ``resume`` (re-send the current state) at start, every
``RETRY_S`` seconds and when a peer connects, until the machine says there is
nothing left to send.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import trio
from swapmeet.ledger.durable import fsync_dir
from swapmeet.protocol import batch, boundary, build
from swapmeet.protocol.errors import InvalidObject, SwapmeetError
from swapmeet.protocol.identity import Identity, peer_id
from swapmeet.protocol.objects import (
    KIND_EXCHANGE,
    KIND_NOTICE,
    KIND_OFFER,
    Exchange,
    Item,
    LedgerEntry,
    Leg,
    Listing,
    Notice,
    Offer,
    Rating,
    Receipt,
)
from swapmeet.protocol.ratelimit import AuthorRateLimiter
from swapmeet.protocol.settlement import (
    Accept,
    Announce,
    Appended,
    AppendToLedger,
    Cancel,
    Completed,
    Counter,
    Decision,
    Decline,
    Event,
    ExchangeReceived,
    ExchangeState,
    ExchangeView,
    Lapsed,
    LearnedComplete,
    MakeOffer,
    NoticeReceived,
    Notify,
    OfferReceived,
    OfferView,
    Persist,
    Propose,
    Refuse,
    Send,
    Settlement,
    Sign,
    Tick,
)

from . import p2p
from .api import DEFAULT_DEADLINE_S, DEFAULT_OFFER_TTL_S, Conflict, Trade, UnknownObject
from .ledger_sync import NodeLedger

log = logging.getLogger("swapmeet.node.settle")

SETTLE_PROTOCOL = "settle"  # /swapmeet/<net>/settle/1.0.0
SETTLE_TOPIC = "settle"  # /swapmeet/<net>/settle/1: exchanges and notices that could not go direct
SETTLE_KINDS = (KIND_EXCHANGE, KIND_NOTICE)
DIRECT_KINDS = (KIND_OFFER, KIND_EXCHANGE, KIND_NOTICE)
DIRECT_TIMEOUT = 5.0
RETRY_S = 15.0
RESUME_ON_CONNECT_S = 1.0  # at most one resume per second when peers come and go
MAX_PARTIES = 8

Ingest = Callable[[list[Any]], Awaitable[None]]  # the node's path for verified objects from peers
Gossip = Callable[[str, bytes], None]  # queue signed bytes for a topic ("offers" or "settle")
LoadListing = Callable[[bytes], Awaitable[Any]]


def _now() -> int:
    return int(time.time())


class SettlementService:
    """The node's settlement: commands from the local API, objects from peers, timers."""

    def __init__(
        self,
        identity: Identity,
        state_file: Path,
        ledger: NodeLedger,
        net: str,
        *,
        gossip: Gossip,
        ingest: Ingest,
        load: LoadListing,
    ) -> None:
        self.identity = identity
        self.me = identity.public_key
        self.state_file = state_file
        self.ledger = ledger
        self.net = net
        self._gossip = gossip
        self._ingest = ingest
        self._load = load
        self.machine = _load_state(identity, state_file)
        self._lock = trio.Lock()
        self._changed = trio.Event()
        self._host: p2p.P2PHost | None = None
        self._nursery: trio.Nursery | None = None
        self._in_flight: set[tuple[bytes, bytes]] = set()
        self._counterparties: set[bytes] = set()
        self._acknowledged: set[tuple[bytes, bytes]] = set()  # (party, exchange id) on that party's chain
        self._publishers = AuthorRateLimiter()  # settle-topic gossip, per publishing peer
        # What our chain says we did after exchanges completed, by exchange id (legs confirmed,
        # parties rated): read from the chain once by run(), then kept up to date by confirm()
        # and rate(), the only code that appends such entries, so `trades` never re-reads it.
        self._receipts: dict[bytes, set[int]] = {}
        self._ratings: dict[bytes, set[bytes]] = {}
        # Complete exchanges on our chain, by id. The machine forgets an exchange once it
        # can no longer change (deadline + GRACE); the chain keeps it, and so `trades`,
        # `trade`, `confirm` and `rate` keep working on it for as long as the chain exists.
        self._on_chain: dict[bytes, Exchange] = {}

    # ------------------------------------------------------------------ lifecycle

    @property
    def protocol(self) -> str:
        return p2p.protocol_id(self.net, SETTLE_PROTOCOL)

    @property
    def topic(self) -> str:
        return p2p.topic(self.net, SETTLE_TOPIC)

    async def run(self, host: p2p.P2PHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._host = host
        await self._load_own_chain()
        host.set_request_handler(self.protocol, self._serve, max_frame_size=boundary.MAX_SIZE[KIND_EXCHANGE] + 64)
        sub = await host.subscribe(self.topic, self._validate)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._read, sub)
            await self.resume()  # after a restart: lapse what is overdue, re-send what is in flight
            nursery.start_soon(self._clock)
            nursery.start_soon(self._watch_peers)
            task_status.started()

    def counterparties(self) -> frozenset[bytes]:
        """Parties to our exchanges (whose chains we replicate)."""
        current = {p for v in self.machine.exchanges() for p in v.exchange.parties if p != self.me}
        return frozenset(self._counterparties | current)

    # ------------------------------------------------------------------ the machine

    async def handle(self, event: Event) -> list[Decision]:
        """Feed one event and carry out its decisions; the decisions (Refuse among them)."""
        async with self._lock:
            decisions = self.machine.handle(event)
            await self._carry_out(decisions)
        self._changed.set()
        return decisions

    async def resume(self) -> None:
        async with self._lock:
            decisions = self.machine.resume(_now())
            await self._carry_out([d for d in decisions if not await self._holds_it(d)])
        self._changed.set()

    async def _holds_it(self, d: Decision) -> bool:
        """A re-send of a complete exchange to a party whose chain we hold with it on: it has it.

        resume() re-sends complete exchanges until deadline + GRACE because it cannot know
        whether the others got them; the replicated chains of our counterparties can.
        """
        if not (isinstance(d, Send) and isinstance(d.obj, Exchange) and d.obj.complete):
            return False
        key = (d.to, d.obj.id)
        if key not in self._acknowledged:
            entries = await self.ledger.entries_with_payload(d.obj.id)
            self._acknowledged.update((e.author, d.obj.id) for e in entries)
        return key in self._acknowledged

    async def _carry_out(self, decisions: Sequence[Decision]) -> None:
        """Run decisions in order (the lock is held). Persist is durable before anything after it."""
        for d in decisions:
            if isinstance(d, Persist):
                state = self.machine.to_bytes()
                await trio.to_thread.run_sync(_write_state, self.state_file, state)
            elif isinstance(d, Send):
                self._send_soon(d.to, d.obj)
            elif isinstance(d, AppendToLedger):
                entry = await self.ledger.append(d.exchange, once=True)
                self._counterparties.update(p for p in d.exchange.parties if p != self.me)
                self._on_chain[d.exchange.id] = d.exchange
                log.info("exchange %s appended to our chain at seq %d", d.exchange.id.hex()[:12], entry.seq)
                await self._carry_out(self.machine.handle(Appended(d.exchange.id)))
            elif isinstance(d, Announce):
                if isinstance(d.obj, Offer):
                    self._gossip("offers", d.obj.raw)
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
        if to == self.me or self._nursery is None:
            return
        key = (to, obj.raw[-64:])  # the signature bytes differ between copies of one exchange
        if key in self._in_flight:
            return
        self._in_flight.add(key)
        self._nursery.start_soon(self._deliver, to, obj, key)

    async def _deliver(self, to: bytes, obj: Offer | Exchange | Notice, key: tuple[bytes, bytes]) -> None:
        assert self._host is not None
        peer = peer_id(to)
        try:
            await self._host.request(peer, self.protocol, obj.raw, timeout=DIRECT_TIMEOUT)
            log.debug("sent %s %s to %s directly", obj.kind, obj.id.hex()[:12], peer[-8:])
            return
        except (p2p.P2PError, trio.TooSlowError) as exc:
            log.info(
                "could not send %s %s to %s directly (%s): sending it by gossip",
                obj.kind,
                obj.id.hex()[:12],
                peer[-8:],
                exc,
            )
        finally:
            self._in_flight.discard(key)
        self._gossip("offers" if isinstance(obj, Offer) else SETTLE_TOPIC, obj.raw)

    # ------------------------------------------------------------------ receiving

    async def _serve(self, from_peer: str, request: bytes) -> bytes:
        """One object sent to us directly: verified here (the trust boundary), then ingested."""
        try:
            obj = boundary.decode(request, kind=DIRECT_KINDS, now=_now())
        except InvalidObject as err:
            # Resets the stream: the sender falls back to gossip, where it is refused too.
            raise p2p.RequestRefused(f"refused a settle message: {err}") from err
        await self._ingest([obj])
        return b""

    def _validate(self, from_peer: str, data: bytes) -> bool:
        """The settle topic's gossip validator: runs before py-libp2p delivers or forwards."""
        try:
            objects = batch.decode_batch(data, kinds=SETTLE_KINDS, now=_now())
        except InvalidObject as err:
            log.info("rejected a settle message from %s: %s", from_peer[-8:], err)
            return False
        if from_peer == self.identity.peer_id:
            return True  # our own publication (paced by settlement's re-send timer)
        # Per publisher, not per object author: an exchange has several signers, and the
        # publisher (gossip messages are signed, so it is authenticated) is who chose to send
        # it. Honest fallback traffic is a few re-sends per RETRY_S; a flood is not forwarded.
        if not self._publishers.allow(from_peer.encode(), time.monotonic(), cost=len(objects)):
            log.info("rejected a settle message from %s: publisher over its rate limit", from_peer[-8:])
            return False
        return True

    async def _read(self, sub: p2p.Subscription) -> None:
        assert self._host is not None
        async for from_peer, data in sub:
            if from_peer == self._host.peer_id:
                continue
            try:
                objects = batch.decode_batch(data, kinds=SETTLE_KINDS, now=_now())
            except InvalidObject:
                continue
            await self._ingest(objects)

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

    async def learned(self, entries: list[LedgerEntry]) -> None:
        """Entries of other chains holding our exchanges (replication): completion learned elsewhere (R6)."""
        for entry in entries:
            if isinstance(entry.payload, Exchange) and entry.payload.complete:
                await self.handle(LearnedComplete(entry.payload, _now()))

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

    async def _watch_peers(self) -> None:
        """A peer that (re)connects may be one our messages could not reach: send the current state again."""
        assert self._host is not None
        known: set[str] = set(self._host.connected_peers())
        while True:
            await trio.sleep(RESUME_ON_CONNECT_S)
            current = set(self._host.connected_peers())
            if current - known:
                await self.resume()
            known = current

    # ------------------------------------------------------------------ commands (the NodeAPI's settlement half)

    async def _command(self, event: Event, ref: bytes | None = None) -> list[Decision]:
        decisions = await self.handle(event)
        for d in decisions:
            if isinstance(d, Refuse):
                if d.code == "unknown":
                    raise UnknownObject(d.reason + (f": {d.ref.hex()[:12]}" if d.ref else ""))
                raise Conflict(d.reason)
        return decisions

    async def make_offer(
        self, listing_id: bytes, give: list[Item], take: list[Item] | None, expires_in_s: int | None, note: str
    ) -> Offer:
        listing = await self._load(listing_id)
        if not isinstance(listing, Listing):
            raise UnknownObject(f"no live listing {listing_id.hex()[:12]} in the book")
        now = _now()
        expires = min(now + _positive(expires_in_s, DEFAULT_OFFER_TTL_S, "expires_in_s"), listing.expires)
        event = MakeOffer(listing, tuple(give), tuple(take if take else listing.have), now, expires, note)
        decisions = await self._command(event)
        return next(d.obj for d in decisions if isinstance(d, Send) and isinstance(d.obj, Offer))

    def offers(self, direction: str | None) -> list[OfferView]:
        views = self.machine.offers()
        if direction == "incoming":
            views = [v for v in views if v.offer.author != self.me]
        elif direction == "outgoing":
            views = [v for v in views if v.offer.author == self.me]
        elif direction is not None:
            raise InvalidObject("direction", f"expected incoming or outgoing, got {direction!r}", "value")
        return sorted(views, key=lambda v: (-v.offer.created, v.offer.id))

    def _offer(self, offer_id: bytes) -> OfferView:
        view = self.machine.offer(offer_id)
        if view is None:
            raise UnknownObject(f"no offer {offer_id.hex()[:12]} to or from this node")
        return view

    async def accept(self, offer_id: bytes, deadline_in_s: int | None) -> Trade:
        offer = self._offer(offer_id).offer
        now = _now()
        deadline = now + _positive(deadline_in_s, DEFAULT_DEADLINE_S, "deadline_in_s")
        await self._command(Accept(offer, now, os.urandom(boundary.NONCE_SIZE), deadline))
        exchange_id = self._offer(offer_id).exchange_id
        assert exchange_id is not None  # an accepted offer names its exchange
        return await self.trade(exchange_id)

    async def decline(self, offer_id: bytes, note: str) -> Notice:
        self._offer(offer_id)
        decisions = await self._command(Decline(offer_id, _now(), note))
        return _sent_notice(decisions)

    async def counter(
        self, offer_id: bytes, give: list[Item], take: list[Item], expires_in_s: int | None, note: str
    ) -> Offer:
        original = self._offer(offer_id).offer
        now = _now()
        expires = min(now + _positive(expires_in_s, DEFAULT_OFFER_TTL_S, "expires_in_s"), original.listing.expires)
        decisions = await self._command(Counter(offer_id, tuple(give), tuple(take), now, expires, note))
        return next(d.obj for d in decisions if isinstance(d, Send) and isinstance(d.obj, Offer))

    async def cancel(self, target_id: bytes, note: str) -> Notice:
        if self.machine.offer(target_id) is None and self.machine.exchange(target_id) is None:
            raise UnknownObject(f"no offer or exchange {target_id.hex()[:12]} of this node")
        decisions = await self._command(Cancel(target_id, _now(), note))
        return _sent_notice(decisions)

    async def propose(
        self, parties: list[bytes], legs: list[Leg], listings: Sequence[bytes], deadline_in_s: int | None
    ) -> Trade:
        if self.me not in parties:
            raise InvalidObject(
                "parties", "this node must be one of the parties to an exchange it proposes", "non-party"
            )
        if not 2 <= len(parties) <= MAX_PARTIES:
            raise InvalidObject("parties", f"an exchange has 2 to {MAX_PARTIES} parties, got {len(parties)}", "count")
        loaded = []
        for i, lid in enumerate(listings):
            listing = await self._load(lid)
            if not isinstance(listing, Listing):
                raise UnknownObject(f"listings[{i}]: no live listing {lid.hex()[:12]} in the book")
            loaded.append(listing)
        now = _now()
        deadline = now + _positive(deadline_in_s, DEFAULT_DEADLINE_S, "deadline_in_s")
        exchange = build.propose_exchange(
            parties=parties,
            legs=legs,
            listings=loaded,
            created=now,
            deadline=deadline,
            nonce=os.urandom(boundary.NONCE_SIZE),
        )
        await self._command(Propose(exchange, now))
        return await self.trade(exchange.id)

    async def sign(self, exchange_id: bytes) -> Trade:
        await self.trade(exchange_id)
        await self._command(Sign(exchange_id, _now()))
        return await self.trade(exchange_id)

    async def trades(self) -> list[Trade]:
        live = {v.exchange.id: v for v in self.machine.exchanges()}
        settled = (_settled_view(x) for xid, x in self._on_chain.items() if xid not in live)
        views = sorted([*live.values(), *settled], key=lambda v: (-v.exchange.created, v.exchange.id))
        return [self._trade(v) for v in views]

    async def trade(self, exchange_id: bytes) -> Trade:
        view = self.machine.exchange(exchange_id)
        if view is None and exchange_id in self._on_chain:
            view = _settled_view(self._on_chain[exchange_id])
        if view is None:
            raise UnknownObject(f"no exchange {exchange_id.hex()[:12]} that this node is a party to")
        return self._trade(view)

    def exchange(self, exchange_id: bytes) -> Exchange | None:
        """An exchange this node is a party to: the machine's copy, or the one on our chain."""
        view = self.machine.exchange(exchange_id)
        return view.exchange if view is not None else self._on_chain.get(exchange_id)

    def _trade(self, view: ExchangeView) -> Trade:
        xid = view.exchange.id
        return Trade(view, tuple(sorted(self._receipts.get(xid, ()))), tuple(sorted(self._ratings.get(xid, ()))))

    async def _load_own_chain(self) -> None:
        """One pass over our chain: past exchanges and their counterparties, legs confirmed, parties rated."""
        for entry in await self.ledger.own_entries():
            payload = entry.payload
            if isinstance(payload, Exchange):
                self._counterparties.update(p for p in payload.parties if p != self.me)
                self._on_chain[payload.id] = payload
            elif isinstance(payload, Receipt):
                self._receipts.setdefault(payload.exchange_id, set()).update(payload.legs)
            elif isinstance(payload, Rating):
                self._ratings.setdefault(payload.exchange.id, set()).add(payload.subject)

    async def _complete(self, exchange_id: bytes, what: str) -> Trade:
        trade = await self.trade(exchange_id)
        if trade.view.state is not ExchangeState.COMPLETE:
            raise Conflict(
                f"exchange {exchange_id.hex()[:12]} is {trade.view.state}: only a complete one can be {what}"
            )
        return trade

    async def confirm(self, exchange_id: bytes, legs: list[int] | None) -> Receipt:
        trade = await self._complete(exchange_id, "confirmed")
        x = trade.view.exchange
        mine = [i for i, leg in enumerate(x.legs) if x.parties[leg.receiver] == self.me]
        if legs is None:
            legs = [i for i in mine if i not in trade.confirmed_legs]
            if not mine:
                raise Conflict(f"this node receives nothing in exchange {exchange_id.hex()[:12]}: nothing to confirm")
            if not legs:
                raise Conflict(f"every leg this node receives in {exchange_id.hex()[:12]} is confirmed already")
        for i in legs:
            if i not in mine:
                raise InvalidObject("legs", f"leg {i} is not one this node receives (those are {mine})", "value")
        receipt = build.make_receipt(self.identity, x, legs=legs, created=_now())
        await self.ledger.append(receipt)
        self._receipts.setdefault(x.id, set()).update(legs)
        return receipt

    async def rate(self, exchange_id: bytes, score: int, subject: bytes | None, comment: str) -> Rating:
        trade = await self._complete(exchange_id, "rated")
        x = trade.view.exchange
        others = [p for p in x.parties if p != self.me]
        if subject is None:
            if len(others) != 1:
                raise InvalidObject(
                    "subject", "this exchange has several counterparties: say which one to rate", "missing"
                )
            subject = others[0]
        if subject not in others:
            raise InvalidObject("subject", f"{peer_id(subject)} is not a counterparty in this exchange", "non-party")
        if subject in trade.rated:
            raise Conflict(f"you rated {peer_id(subject)} for exchange {exchange_id.hex()[:12]} already")
        rating = build.make_rating(self.identity, x, subject=subject, score=score, created=_now(), comment=comment)
        await self.ledger.append(rating)
        self._ratings.setdefault(x.id, set()).add(subject)
        return rating

    def known_ids(self) -> Iterable[bytes]:
        """Ids of every offer and exchange the machine holds (for prefix resolution)."""
        yield from (v.offer.id for v in self.machine.offers())
        yield from (v.exchange.id for v in self.machine.exchanges())
        yield from self._on_chain


def _settled_view(x: Exchange) -> ExchangeView:
    """The view of a complete exchange the machine has forgotten: it is on our chain."""
    return ExchangeView(x, ExchangeState.COMPLETE, appended=True, notice=None)


def _parties_of(notice: Notice) -> tuple[bytes, ...]:
    if notice.exchange is not None:
        return notice.exchange.parties
    assert notice.offer is not None
    return (notice.offer.maker, notice.offer.taker)


def _sent_notice(decisions: Sequence[Decision]) -> Notice:
    for d in decisions:
        if isinstance(d, Send) and isinstance(d.obj, Notice):
            return d.obj
    raise Conflict("nothing to send: the offer or exchange was already answered")


def _positive(value: int | None, default: int, path: str) -> int:
    if value is None:
        return default
    if value <= 0:
        raise InvalidObject(path, f"must be a positive number of seconds, got {value}", "value")
    return value


def _load_state(identity: Identity, path: Path) -> Settlement:
    """The machine as last persisted (every object in it re-verified), or a fresh one."""
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


def _write_state(path: Path, data: bytes) -> None:
    """Atomic and durable: a crash leaves the old state or the new one, never a torn file."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)

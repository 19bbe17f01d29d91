"""Ledger replication in the node: appends to our own chain, copies of other chains, fork proofs spread.

The decisions are :mod:`swapmeet.ledger.replication`'s (which chains, which
ranges, what an announce or a fork alert calls for); the bytes are
:mod:`swapmeet.protocol.replication`'s. This module moves them:

- own appends (:meth:`Replication.append`): ``LedgerStore.append_own`` in a
  worker thread (durable when it returns), then an announce on the ledger
  topic ``/swapmeet/<net>/ledger/1``.
- gossip in: the topic is a :class:`~swapmeet.node.gossip.VerifiedTopic`
  (announced entries through the trust boundary, fork proofs checked offline,
  before py-libp2p delivers or forwards them); the reader then ingests,
  fetches what is missing or marks a forked author.
- pull sessions over ``/swapmeet/<net>/ledger-sync/1.0.0``: with every newly
  connected peer, every ``RESYNC_S`` seconds with a random one, and after an
  announce that leaves a gap. Everything fetched goes through ``store.ingest``.
- fork alerts: a fork the store finds is gossiped as its proof; a proof
  received marks the author (the store records it when it holds the chain;
  otherwise the proof is kept in ``<home>/forked.cbor``, :mod:`.forkproofs`),
  if the node deals with the author at all (it replicates the author's chain,
  or holds a listing or offer of theirs); other proofs are forwarded, not kept.
- budgets: the ledger topic is held to :class:`LedgerBudget` per publisher, pulled
  entries to the sending peer's object budget (:mod:`.budgets`).

Which chains (``Policy``): our counterparties' (settlement keeps
:attr:`Replication.counterparties` current), the authors we follow, or every
chain we hear of (``archive``).

Entries newly stored here that hold an exchange this node is a party to are
sent on the ``learned`` channel: settlement's repair path (rule R6) reads it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import trio
from swapmeet.ledger.replication import Policy, Puller, answer_heads, followup, plan_announce, plan_fork_alert
from swapmeet.ledger.store import IngestResult, LedgerStore
from swapmeet.protocol import boundary
from swapmeet.protocol import replication as wire
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.evidence import ForkProof
from swapmeet.protocol.identity import Identity, peer_id
from swapmeet.protocol.objects import KIND_ENTRY, Exchange, LedgerEntry, Payload
from swapmeet.protocol.ratelimit import AuthorRateLimiter

from .activity import Activity
from .book import OfferBook
from .budgets import Budgets, OverBudget
from .forkproofs import ForkProofs
from .gossip import VerifiedTopic
from .host import FramedStream, P2PError, P2PHost, protocol_id, topic
from .peers import PeerChange

log = logging.getLogger("swapmeet.node.ledger")

SESSION_TIMEOUT = 60.0
FRAME_TIMEOUT = 15.0
RESYNC_S = 30.0
MAX_SESSIONS = 3  # pull sessions at once: a peer that stalls costs only its own (each has deadlines)
# Passing on what a full pull session brought (see Replication._pass_on): at most one announce message's
# worth per session, at half the rate LedgerBudget holds every publisher to, so peers never refuse it.
PASS_ON_RATE = 2.5
PASS_ON_BURST = float(wire.MAX_ANNOUNCE)


class LedgerBudget:
    """The ledger topic's budget, per publishing peer: announced entries (a burst of 50, then 5 a second,
    far above what one node appends) and fork alerts (3, then one a minute: a proof is news once)."""

    reason = "publisher over its rate limit"

    def __init__(self) -> None:
        self._entries = AuthorRateLimiter(rate=5.0, burst=50.0)
        self._alerts = AuthorRateLimiter(rate=1 / 60, burst=3.0)

    def allow(self, from_peer: str, verified: Any, now: float) -> bool:
        if isinstance(verified, ForkProof):
            return self._alerts.allow(from_peer.encode(), now)
        return self._entries.allow(from_peer.encode(), now, cost=len(verified))


def _verify(data: bytes) -> Any:
    """A ledger-topic message, checked: verified announced entries, or a fork proof that holds."""
    message = wire.decode_gossip(data)
    if isinstance(message, wire.Announce):
        return wire.verify_announce(message, now=int(time.time()))
    return wire.verify_fork_alert(message)


class Replication:
    """The ledger side of a running node: one per node, its tasks in the nursery given to :meth:`start`."""

    def __init__(
        self,
        host: P2PHost,
        store: LedgerStore,
        identity: Identity,
        net: str,
        forked_file: Path,
        book: OfferBook,
        learned: trio.MemorySendChannel[list[LedgerEntry]],
        activity: Activity,
        budgets: Budgets,
        *,
        archive: bool = False,
        followed: Iterable[bytes] = (),
    ) -> None:
        self.host = host
        self.store = store
        self.identity = identity
        self.archive = archive
        self.followed = frozenset(followed)
        #: Parties to our exchanges, whose chains we replicate; kept current by settlement.
        self.counterparties: frozenset[bytes] = frozenset()
        self.activity = activity
        self.budgets = budgets
        self.topic = VerifiedTopic(
            host, topic(net, wire.GOSSIP_TOPIC), "ledger", _verify, budget=LedgerBudget(), activity=activity
        )
        self.protocol = protocol_id(net, wire.SYNC_PROTOCOL)
        self._learned = learned
        self.book = book
        self._alerted = ForkProofs(forked_file)  # proofs received for chains we don't hold
        self._alert_lock = trio.Lock()
        # One worker thread at a time on the store: its connection is serialized anyway, and a
        # burst of gossip must not take every thread of trio's pool.
        self._db = trio.CapacityLimiter(1)
        self._pulling: set[str] = set()
        self._sessions: trio.Nursery | None = None
        self._slots = trio.CapacityLimiter(MAX_SESSIONS)
        self._pass_on_pace = AuthorRateLimiter(rate=PASS_ON_RATE, burst=PASS_ON_BURST)

    def policy(self) -> Policy:
        return Policy(
            counterparties=self.counterparties,
            followed=self.followed,
            archive=self.archive,
            own=self.identity.public_key,
        )

    async def _db_call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self._db)

    async def start(self, nursery: trio.Nursery, changes: trio.MemoryReceiveChannel[PeerChange]) -> None:
        """Serve the stream, read the topic, pull from peers as they connect; all in ``nursery``."""
        self._sessions = nursery
        self.host.set_stream_handler(self.protocol, self._serve, max_frame_size=wire.MAX_FRAME)
        await self.topic.join()
        nursery.start_soon(self._read)
        nursery.start_soon(self._resync, changes)

    # ------------------------------------------------------------------ own chain

    async def append(self, payload: Payload, *, once: bool = False) -> LedgerEntry:
        """Append to our chain (durable when this returns), then announce the entry."""
        entry: LedgerEntry = await self._db_call(
            self.store.append_own, self.identity, payload, int(time.time()), once=once
        )
        await self.announce([entry.raw])
        return entry

    async def announce(self, raws: list[bytes]) -> None:
        """Gossip entries: ours, or others' passed on (at most MAX_ANNOUNCE per message)."""
        for i in range(0, len(raws), wire.MAX_ANNOUNCE):
            message = wire.encode_gossip(wire.Announce(tuple(raws[i : i + wire.MAX_ANNOUNCE])))
            try:
                await self.topic.publish(message)
            except P2PError as exc:
                log.warning("could not announce ledger entries: %s", exc)

    async def entries_with_payload(self, payload_id: bytes) -> list[LedgerEntry]:
        return await self._db_call(self.store.entries_with_payload, payload_id)

    async def own_entries(self) -> list[LedgerEntry]:
        return await self._db_call(lambda: list(self.store.chain(self.identity.public_key)))

    async def forked(self) -> set[bytes]:
        """Authors proven forked: fork entries in the store, plus proofs received for chains we don't hold."""
        held: set[bytes] = await self._db_call(self.store.forked_authors)
        return held | set(self._alerted.proofs)

    # ------------------------------------------------------------------ gossip

    async def _read(self) -> None:
        async for from_peer, checked in self.topic:
            try:
                if isinstance(checked, ForkProof):
                    await self._on_fork_proof(checked)
                else:
                    await self._on_announce(checked, from_peer)
            except InvalidObject as err:  # a proof that proves nothing new, or similar
                self.host.refusals.refused(from_peer, "a ledger message", str(err))

    async def _on_announce(self, entries: list[LedgerEntry], from_peer: str) -> None:
        heads = await self._db_call(self.store.heads)
        plan = plan_announce(self.policy(), heads, entries)
        if plan.ingest:
            await self._ingest(list(plan.ingest))
        for author, upto in plan.fetch:
            source = peer_id(author)
            source = source if source in self.host.connected_peers() else from_peer
            self._start_pull(source, wants=[(author, upto)])

    async def _on_fork_proof(self, proof: ForkProof) -> None:
        forked = await self.forked()
        plan = plan_fork_alert(self.policy(), wire.ForkAlert(proof.raw), forked)
        if plan.ingest:
            await self._ingest(list(plan.ingest), alert=False)
        if not plan.new or proof.author in await self._db_call(self.store.forked_authors):
            return
        if not await self._cares_about(proof.author):
            # Forwarded (the validator let it on), but not kept: no reason to spend disk on a stranger.
            log.debug("fork alert about %s: not an author this node deals with", peer_id(proof.author))
            return
        log.warning("fork alert: %s signed two different entries at seq %d", peer_id(proof.author), proof.seq)
        # On disk before it shows: whoever sees the mark can rely on the proof being kept.
        async with self._alert_lock:
            await trio.to_thread.run_sync(self._alerted.add, proof)

    async def _cares_about(self, author: bytes) -> bool:
        """Authors whose forks this node keeps proof of: those whose chains it replicates (counterparties,
        followed, everyone in archive mode) and those with a listing or offer in its book."""
        if self.policy().replicates(author):
            return True
        return await trio.to_thread.run_sync(self.book.has_author, author)

    async def _ingest(self, raws: list[bytes], *, alert: bool = True) -> IngestResult:
        """Store verified-by-ingest entries; alert new forks; hand our exchanges to settlement."""
        result: IngestResult = await self._db_call(self.store.ingest, raws)
        step = followup(result, forked=set(self._alerted.proofs))
        if alert:
            for author, seq in step.forks:
                await self._alert(author, seq)
        if result.accepted:
            await self._learn(raws)
        return result

    async def _alert(self, author: bytes, seq: int) -> None:
        proofs: list[ForkProof] = await self._db_call(self.store.fork_proofs, author)
        for proof in proofs:
            if proof.seq == seq:
                log.warning("fork found: %s signed two different entries at seq %d", peer_id(author), seq)
                try:
                    await self.topic.publish(wire.fork_alert(proof))
                except P2PError as exc:
                    log.warning("could not gossip a fork alert: %s", exc)
                return

    async def _learn(self, raws: list[bytes]) -> None:
        """Entries just stored that carry an exchange we are a party to (completion learned elsewhere)."""
        me = self.identity.public_key
        mine = []
        for raw in raws:
            try:
                entry = boundary.decode(raw, kind=KIND_ENTRY)
            except InvalidObject:
                continue
            payload = entry.payload
            if isinstance(payload, Exchange) and me in payload.parties and entry.author != me:
                mine.append(entry)
        if mine:
            await self._learned.send(mine)

    # ------------------------------------------------------------------ pull sessions

    def pull_from(self, peer: str) -> None:
        """Start a full session (heads, then ranges) with ``peer`` in the background."""
        self._start_pull(peer, wants=None)

    def _start_pull(self, peer: str, *, wants: list[tuple[bytes, int]] | None) -> None:
        assert self._sessions is not None, "start() first"
        if peer in self._pulling:
            return
        self._pulling.add(peer)
        self._sessions.start_soon(self._pull_quietly, peer, wants)

    async def _pull_quietly(self, peer: str, wants: list[tuple[bytes, int]] | None) -> None:
        try:
            async with self._slots:
                got = await self.pull(peer, wants=wants)
            if got:
                log.info("ledger sync with %s: %d new entr%s", peer[-8:], got, "y" if got == 1 else "ies")
        except (P2PError, InvalidObject, OverBudget, trio.TooSlowError) as exc:
            log.info("ledger sync with %s failed: %s", peer[-8:], exc)
        finally:
            self._pulling.discard(peer)

    async def pull(self, peer: str, *, wants: list[tuple[bytes, int]] | None = None) -> int:
        """One session as the requester; the number of entries stored. ``wants`` None: compare heads first.

        Raises the host's P2PError, InvalidObject (the peer broke the protocol), OverBudget or trio.TooSlowError.
        """
        heads = await self._db_call(self.store.heads)
        puller = Puller(self.policy(), heads, forked=await self.forked(), ask_heads=wants is None)
        for author, upto in wants or ():
            puller.want(author, upto)
        stored = 0
        learned: list[bytes] = []  # entries of others this full session brought: passed on after it
        with trio.fail_after(SESSION_TIMEOUT):
            stream = await self.host.open_stream(peer, self.protocol, max_frame_size=wire.MAX_FRAME)
            async with stream:
                while not isinstance(frame := puller.next_frame(), wire.End):
                    await stream.send(wire.encode_frame(frame))
                    with trio.fail_after(FRAME_TIMEOUT):
                        reply = wire.decode_frame(await stream.receive())
                    raws = puller.on_reply(reply)
                    if raws:
                        await self.budgets.take_objects(peer, len(raws))
                        result = await self._ingest(raws, alert=False)
                        stored += result.accepted
                        if wants is None:  # only what was verified and stored goes on (never a refused item)
                            learned.extend(raws[i] for i in result.stored)
                        for author, seq in puller.on_ingested(result):
                            await self._alert(author, seq)
                await stream.send(wire.encode_frame(wire.End()))
        for fault in puller.faults:
            log.info("ledger sync with %s: %s", peer[-8:], fault)
        self.activity.note("sync_sessions")
        self.activity.note("sync_objects", stored)
        await self._pass_on(learned)
        return stored

    async def _pass_on(self, raws: list[bytes]) -> None:
        """Announce the newest entries of other authors that a full session brought (at most MAX_ANNOUNCE).

        Ledger sync only pulls, and announces reach only the nodes connected when they were made: after
        a partition heals, the nodes at the ends of the links across it pull the other side's new entries
        when they reconnect, but the rest of their side would wait for a periodic resync with a random
        peer (RESYNC_S each, about a minute for a half of ten nodes). Announced once more, the entries
        reach every node at gossip speed; the message id is the content's, so two nodes passing on
        the same entries cost one message. Entries that came by gossip are never passed on (gossip
        already carried them), so nothing circulates. Within our own pace, or not at all (the periodic
        resync still brings them).
        """
        mine = self.identity.public_key
        theirs = [raw for raw in raws if wire.entry_position(raw)[0] != mine][-wire.MAX_ANNOUNCE :]
        if theirs and self._pass_on_pace.allow(b"", time.monotonic(), cost=len(theirs)):
            await self.announce(theirs)

    async def _serve(self, stream: FramedStream) -> None:
        """The responder: answer get-heads and get-range until the requester says end."""
        with trio.fail_after(SESSION_TIMEOUT):
            while True:
                with trio.fail_after(FRAME_TIMEOUT):
                    frame = wire.decode_frame(await stream.receive())
                reply: wire.Heads | wire.Entries
                if isinstance(frame, wire.GetHeads):
                    reply = answer_heads(frame, await self._db_call(self.store.heads))
                elif isinstance(frame, wire.GetRange):
                    raws = await self._db_call(self.store.entries_after, frame.author, frame.after, frame.limit)
                    reply = wire.fit_entries(raws)
                elif isinstance(frame, wire.End):
                    return
                else:
                    raise InvalidObject(wire.SYNC, f"unexpected {type(frame).__name__} from the requester", "protocol")
                await stream.send(wire.encode_frame(reply))

    async def _resync(self, changes: trio.MemoryReceiveChannel[PeerChange]) -> None:
        """Pull from each newly connected peer, and from a random one every RESYNC_S seconds."""
        current: frozenset[str] = frozenset()
        next_resync = trio.current_time() + RESYNC_S
        while True:
            with trio.move_on_at(next_resync):
                change = await changes.receive()
                current = change.current
                for peer in sorted(change.connected):
                    self.pull_from(peer)
                continue
            next_resync = trio.current_time() + RESYNC_S
            if current:
                self.pull_from(random.choice(sorted(current)))

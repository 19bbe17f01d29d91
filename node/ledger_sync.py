"""The node's ledger: appends to its own chain, replicates other chains, spreads fork proofs.

The decisions are :mod:`swapmeet.ledger.replication`'s (which chains, which
ranges, what an announce or a fork alert calls for); the bytes are
:mod:`swapmeet.protocol.ledgerwire`'s. This module moves them:

- own appends (:meth:`NodeLedger.append`): ``LedgerStore.append_own`` in a
  worker thread (durable when it returns), then an announce on the ledger
  topic ``/swapmeet/<net>/ledger/1``.
- gossip in: the topic validator checks every message before py-libp2p
  delivers or forwards it (announced entries through the trust boundary, fork
  proofs checked offline); the reader then ingests, fetches what is missing or
  marks a forked author.
- pull sessions over ``/swapmeet/<net>/ledger-sync/1.0.0``: with every newly
  connected peer, every ``RESYNC_S`` seconds with a random one, and after an
  announce that leaves a gap. Everything fetched goes through ``store.ingest``.
- fork alerts: a fork the store finds is gossiped as its proof; a proof
  received marks the author (the store records it when it holds the chain;
  otherwise the proof is kept in ``<home>/forked.cbor``).

Which chains (``Policy``): our counterparties' (parties to our exchanges), the
authors we follow, or every chain we hear of (``archive``).

Entries newly stored here that hold an exchange this node is a party to are
handed to ``on_learned`` (settlement's repair path, rule R6).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import trio
from swapmeet.ledger.durable import fsync_dir
from swapmeet.ledger.replication import Policy, Puller, answer_heads, followup, plan_announce, plan_fork_alert
from swapmeet.ledger.store import IngestResult, LedgerStore
from swapmeet.protocol import boundary, cbor, ledgerwire
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.evidence import ForkProof, decode_proof
from swapmeet.protocol.identity import Identity, peer_id
from swapmeet.protocol.ledgerwire import End, Entries, GetHeads, GetRange, Heads
from swapmeet.protocol.objects import KIND_ENTRY, Exchange, LedgerEntry, Payload

from . import p2p

log = logging.getLogger("swapmeet.node.ledger")

SESSION_TIMEOUT = 60.0
FRAME_TIMEOUT = 15.0
RESYNC_S = 30.0
MAX_PENDING_VERIFIED = 1024

Learned = Callable[[list[LedgerEntry]], Awaitable[None]]


class NodeLedger:
    """The ledger side of a running node (one per node; its tasks run in the node's nursery)."""

    def __init__(
        self,
        store: LedgerStore,
        identity: Identity,
        net: str,
        forked_file: Path,
        *,
        archive: bool = False,
        followed: Iterable[bytes] = (),
        counterparties: Callable[[], frozenset[bytes]] = frozenset,
        on_learned: Learned | None = None,
    ) -> None:
        self.store = store
        self.identity = identity
        self.net = net
        self.archive = archive
        self.followed = frozenset(followed)
        self._counterparties = counterparties
        self._on_learned = on_learned
        self._forked_file = forked_file
        self._alerted: dict[bytes, bytes] = _load_forked(forked_file)  # author -> fork proof bytes
        self._alert_lock = trio.Lock()
        self._host: p2p.P2PHost | None = None
        self._nursery: trio.Nursery | None = None
        # One worker thread at a time on the store: its connection is serialized anyway, and a
        # burst of gossip must not take every thread of trio's pool.
        self._db = trio.CapacityLimiter(1)
        self._verified: OrderedDict[bytes, Any] = OrderedDict()
        self._pulling: set[str] = set()

    # ------------------------------------------------------------------ plumbing

    @property
    def topic(self) -> str:
        return p2p.topic(self.net, ledgerwire.GOSSIP_TOPIC)

    @property
    def protocol(self) -> str:
        return p2p.protocol_id(self.net, ledgerwire.SYNC_PROTOCOL)

    def policy(self) -> Policy:
        return Policy(
            counterparties=self._counterparties(),
            followed=self.followed,
            archive=self.archive,
            own=self.identity.public_key,
        )

    async def _db_call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self._db)

    # ------------------------------------------------------------------ lifecycle

    async def run(self, host: p2p.P2PHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the stream, read the topic, pull from peers; until cancelled."""
        self._host = host
        host.set_stream_handler(self.protocol, self._serve, max_frame_size=ledgerwire.MAX_FRAME)
        sub = await host.subscribe(self.topic, self._validate)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._read, sub)
            nursery.start_soon(self._resync)
            task_status.started()

    # ------------------------------------------------------------------ own chain

    async def append(self, payload: Payload, *, once: bool = False) -> LedgerEntry:
        """Append to our chain (durable when this returns), then announce the entry."""
        entry: LedgerEntry = await self._db_call(
            self.store.append_own, self.identity, payload, int(time.time()), once=once
        )
        await self.announce([entry.raw])
        return entry

    async def announce(self, raws: list[bytes]) -> None:
        """Gossip entries of our chain (at most MAX_ANNOUNCE per message)."""
        if self._host is None:
            return
        for i in range(0, len(raws), ledgerwire.MAX_ANNOUNCE):
            message = ledgerwire.encode_gossip(ledgerwire.Announce(tuple(raws[i : i + ledgerwire.MAX_ANNOUNCE])))
            try:
                await self._host.publish(self.topic, message)
            except p2p.P2PError as exc:
                log.warning("could not announce ledger entries: %s", exc)

    async def entries_with_payload(self, payload_id: bytes) -> list[LedgerEntry]:
        return await self._db_call(self.store.entries_with_payload, payload_id)

    async def own_entries(self) -> list[LedgerEntry]:
        return await self._db_call(lambda: list(self.store.chain(self.identity.public_key)))

    async def forked(self) -> set[bytes]:
        """Authors proven forked: fork entries in the store, plus proofs received for chains we don't hold."""
        held: set[bytes] = await self._db_call(self.store.forked_authors)
        return held | set(self._alerted)

    # ------------------------------------------------------------------ gossip

    def _validate(self, from_peer: str, data: bytes) -> bool:
        # Runs before py-libp2p delivers or forwards: nothing unverified passes on.
        try:
            message = ledgerwire.decode_gossip(data)
            if isinstance(message, ledgerwire.Announce):
                checked: Any = ledgerwire.verify_announce(message, now=int(time.time()))
            else:
                checked = ledgerwire.verify_fork_alert(message)
        except InvalidObject as err:
            log.info("rejected a ledger message from %s: %s", from_peer[-8:], err)
            return False
        self._verified[hashlib.sha256(data).digest()] = checked
        while len(self._verified) > MAX_PENDING_VERIFIED:
            self._verified.popitem(last=False)
        return True

    async def _read(self, sub: p2p.Subscription) -> None:
        assert self._host is not None
        me = self._host.peer_id
        async for from_peer, data in sub:
            checked = self._verified.pop(hashlib.sha256(data).digest(), None)
            if from_peer == me:
                continue
            if checked is None:  # the hand-over cache turned over: verify again
                if not self._validate(from_peer, data):
                    continue
                checked = self._verified.pop(hashlib.sha256(data).digest())
            try:
                if isinstance(checked, ForkProof):
                    await self._on_fork_proof(checked)
                else:
                    await self._on_announce(checked, from_peer)
            except InvalidObject as err:  # a proof that proves nothing new, or similar
                log.info("ledger message from %s: %s", from_peer[-8:], err)

    async def _on_announce(self, entries: list[LedgerEntry], from_peer: str) -> None:
        policy = self.policy()
        heads = await self._db_call(self.store.heads)
        plan = plan_announce(policy, heads, entries)
        if plan.ingest:
            await self._ingest(list(plan.ingest))
        for author, upto in plan.fetch:
            source = peer_id(author)
            source = source if source in self._host_peers() else from_peer
            self._start_pull(source, wants=[(author, upto)])

    async def _on_fork_proof(self, proof: ForkProof) -> None:
        forked = await self.forked()
        plan = plan_fork_alert(self.policy(), ledgerwire.ForkAlert(proof.raw), forked)
        if plan.ingest:
            await self._ingest(list(plan.ingest), alert=False)
        if plan.new:
            log.warning("fork alert: %s signed two different entries at seq %d", peer_id(proof.author), proof.seq)
            if proof.author not in await self._db_call(self.store.forked_authors):
                # On disk before it shows: whoever sees the mark can rely on the proof being
                # kept. One save at a time, so a slower save never overwrites a newer one.
                async with self._alert_lock:
                    alerted = {**self._alerted, proof.author: proof.raw}
                    await trio.to_thread.run_sync(_save_forked, self._forked_file, alerted)
                    self._alerted[proof.author] = proof.raw

    async def _ingest(self, raws: list[bytes], *, alert: bool = True) -> IngestResult:
        """Store verified-by-ingest entries; alert new forks; hand our exchanges to settlement."""
        result: IngestResult = await self._db_call(self.store.ingest, raws)
        step = followup(result, forked=set(self._alerted))
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
                if self._host is not None:
                    try:
                        await self._host.publish(self.topic, ledgerwire.fork_alert(proof))
                    except p2p.P2PError as exc:
                        log.warning("could not gossip a fork alert: %s", exc)
                return

    async def _learn(self, raws: list[bytes]) -> None:
        """Entries just stored that carry an exchange we are a party to (completion learned elsewhere)."""
        if self._on_learned is None:
            return
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
            await self._on_learned(mine)

    # ------------------------------------------------------------------ pull sessions

    def _host_peers(self) -> list[str]:
        return self._host.connected_peers() if self._host is not None else []

    def pull_from(self, peer: str) -> None:
        """Start a full session (heads, then ranges) with ``peer`` in the background."""
        self._start_pull(peer, wants=None)

    def _start_pull(self, peer: str, *, wants: list[tuple[bytes, int]] | None) -> None:
        if self._nursery is None or peer in self._pulling:
            return
        self._pulling.add(peer)
        self._nursery.start_soon(self._pull_quietly, peer, wants)

    async def _pull_quietly(self, peer: str, wants: list[tuple[bytes, int]] | None) -> None:
        try:
            got = await self.pull(peer, wants=wants)
            if got:
                log.info("ledger sync with %s: %d new entr%s", peer[-8:], got, "y" if got == 1 else "ies")
        except (p2p.P2PError, InvalidObject, trio.TooSlowError) as exc:
            log.info("ledger sync with %s failed: %s", peer[-8:], exc)
        finally:
            self._pulling.discard(peer)

    async def pull(self, peer: str, *, wants: list[tuple[bytes, int]] | None = None) -> int:
        """One session as the requester; the number of entries stored. ``wants`` None: compare heads first."""
        assert self._host is not None
        heads = await self._db_call(self.store.heads)
        puller = Puller(self.policy(), heads, forked=await self.forked(), ask_heads=wants is None)
        for author, upto in wants or ():
            puller.want(author, upto)
        stored = 0
        with trio.fail_after(SESSION_TIMEOUT):
            stream = await self._host.open_stream(peer, self.protocol, max_frame_size=ledgerwire.MAX_FRAME)
            async with stream:
                while not isinstance(frame := puller.next_frame(), End):
                    await stream.send(ledgerwire.encode_frame(frame))
                    with trio.fail_after(FRAME_TIMEOUT):
                        reply = ledgerwire.decode_frame(await stream.receive())
                    raws = puller.on_reply(reply)
                    if raws:
                        result = await self._ingest(raws, alert=False)
                        stored += result.accepted
                        for author, seq in puller.on_ingested(result):
                            await self._alert(author, seq)
                await stream.send(ledgerwire.encode_frame(End()))
        for fault in puller.faults:
            log.info("ledger sync with %s: %s", peer[-8:], fault)
        return stored

    async def _serve(self, stream: p2p.FramedStream) -> None:
        """The responder: answer get-heads and get-range until the requester says end."""
        with trio.fail_after(SESSION_TIMEOUT):
            while True:
                with trio.fail_after(FRAME_TIMEOUT):
                    frame = ledgerwire.decode_frame(await stream.receive())
                reply: Heads | Entries
                if isinstance(frame, GetHeads):
                    reply = answer_heads(frame, await self._db_call(self.store.heads))
                elif isinstance(frame, GetRange):
                    raws = await self._db_call(self.store.entries_after, frame.author, frame.after, frame.limit)
                    reply = ledgerwire.fit_entries(raws)
                elif isinstance(frame, End):
                    return
                else:
                    raise InvalidObject(
                        ledgerwire.SYNC, f"unexpected {type(frame).__name__} from the requester", "protocol"
                    )
                await stream.send(ledgerwire.encode_frame(reply))

    async def _resync(self) -> None:
        """Pull from each newly connected peer, and from a random one every RESYNC_S seconds."""
        known: set[str] = set()
        last = time.monotonic()
        while True:
            current = set(self._host_peers())
            for peer in sorted(current - known):
                self.pull_from(peer)
            known = current
            if current and time.monotonic() - last > RESYNC_S:
                last = time.monotonic()
                self.pull_from(random.choice(sorted(current)))
            await trio.sleep(0.5)


def _load_forked(path: Path) -> dict[bytes, bytes]:
    """Fork proofs received for chains we don't hold, each re-checked (a bad file is ignored, logged)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    out: dict[bytes, bytes] = {}
    try:
        for raw in cbor.decode(data, path="forked", max_size=64 * 1024 * 1024):
            proof = decode_proof(raw)
            if isinstance(proof, ForkProof):
                out[proof.author] = proof.raw
    except (InvalidObject, TypeError) as err:
        log.warning("ignoring %s: %s", path, err)
    return out


def _save_forked(path: Path, proofs: dict[bytes, bytes]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(cbor.encode(sorted(proofs.values())))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)

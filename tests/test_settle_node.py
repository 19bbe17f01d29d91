"""Settlement and ledger replication in running nodes, in one process (real libp2p hosts on loopback).

Fast and deterministic companions of the process tests (test_settle_process.py):
they drive ``Node`` objects directly, so a test can stop a node, break its
direct dial, or hand a peer forged bytes, and look inside its state.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from swapmeet.node import host as p2p
from swapmeet.node import settlement as settle_module
from swapmeet.node.contract import Conflict
from swapmeet.node.home import Home
from swapmeet.node.runtime import Node, NodeConfig
from swapmeet.protocol import batch, build, cbor
from swapmeet.protocol import replication as wire
from swapmeet.protocol.boundary import ZERO_ID
from swapmeet.protocol.build import parse_item
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.identity import Identity
from swapmeet.protocol.listing_spec import ListingSpec
from swapmeet.protocol.objects import Exchange, Leg, Rating, Receipt
from swapmeet.protocol.settlement import GRACE, ExchangeState, OfferState, Tick

WAIT_S = 20.0
pytestmark = pytest.mark.slow


def item(text: str) -> Any:
    return parse_item(text)


async def until(check: Callable[[], Awaitable[bool] | bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await trio.sleep(0.02)


class Swarm:
    """Nodes in one nursery; each can be stopped and restarted from its home."""

    def __init__(self, nursery: trio.Nursery, root: Path) -> None:
        self.nursery = nursery
        self.root = root
        self.nodes: list[Node] = []
        self.identities: list[Identity] = []
        self.scopes: list[trio.CancelScope] = []

    async def add(self) -> Node:
        self.identities.append(Identity.generate())
        self.nodes.append(None)  # type: ignore[arg-type]
        self.scopes.append(trio.CancelScope())
        await self.start(len(self.nodes) - 1)
        return self.nodes[-1]

    async def start(self, i: int) -> Node:
        home = Home(self.root / f"node{i}").ensure()
        others = [n for j, n in enumerate(self.nodes) if j != i and n is not None and n.host is not None]
        boot = [a for n in others for a in n.host.listen_addrs() if "/127.0.0.1/" in a]  # type: ignore[union-attr]
        config = NodeConfig(listen=["/ip4/127.0.0.1/tcp/0"], bootstrap=boot, mdns=False, dht=False)
        node = Node(home, self.identities[i], config)
        self.nodes[i] = node
        await self.nursery.start(node.run)
        for other in others:
            await until(lambda o=other: o.host is not None and node.host.peer_id in o.host.connected_peers(), "connect")
        return node

    async def stop(self, i: int) -> None:
        node = self.nodes[i]
        await node.stop()
        await until(lambda: node.host is None, "the node to stop")


@asynccontextmanager
async def swarm(tmp_path: Path, n: int) -> AsyncIterator[Swarm]:
    async with trio.open_nursery() as nursery:
        s = Swarm(nursery, tmp_path)
        for _ in range(n):
            await s.add()
        try:
            yield s
        finally:
            nursery.cancel_scope.cancel()


async def publish(node: Node, title: str, have: str, want: str = "") -> Any:
    spec = ListingSpec(title=title, have=[item(have)], want=[item(want)] if want else [])
    return await node.market.publish(spec)


async def visible(node: Node, obj_id: bytes) -> None:
    await until(lambda: _holds(node, obj_id), f"{obj_id.hex()[:12]} to reach the node")


async def _holds(node: Node, obj_id: bytes) -> bool:
    return await node.market.get(obj_id) is not None


def state(node: Node, exchange_id: bytes) -> ExchangeState | None:
    view = node.settlement.machine.exchange(exchange_id)
    return None if view is None else view.state


def appended(node: Node, exchange_id: bytes) -> bool:
    view = node.settlement.machine.exchange(exchange_id)
    return view is not None and view.appended


async def chain_payloads(node: Node) -> list[Any]:
    return [e.payload for e in await node.replication.own_entries()]


# --------------------------------------------------------------------------- the flows


async def test_two_party_barter_lands_on_both_chains_and_replicates(tmp_path: Path) -> None:
    async with swarm(tmp_path, 2) as s:
        maker, taker = s.nodes
        listing = await publish(maker, "bike", "1 x bike", "2 x jam")
        await visible(taker, listing.id)
        offer = await taker.trading.make_offer(listing.id, [item("2 x jam")])
        await until(lambda: maker.settlement.machine.offer(offer.id) is not None, "the offer to reach the maker")
        trade = await maker.trading.accept(offer.id)
        xid = trade.view.exchange.id
        await until(lambda: appended(maker, xid) and appended(taker, xid), "both appends")
        assert state(maker, xid) is state(taker, xid) is ExchangeState.COMPLETE
        assert maker.settlement.machine.offer(offer.id).state is OfferState.ACCEPTED  # type: ignore[union-attr]
        for node in (maker, taker):
            payloads = await chain_payloads(node)
            assert [p.id for p in payloads if isinstance(p, Exchange)] == [xid]
            assert all(p.complete for p in payloads if isinstance(p, Exchange))

        receipt = await taker.trading.confirm(xid)
        assert isinstance(receipt, Receipt) and receipt.legs == (0,)  # leg 0: the maker gives the bike
        rating = await taker.trading.rate(xid, 5, comment="as described")
        assert isinstance(rating, Rating) and rating.subject == maker.identity.public_key
        with pytest.raises(Conflict, match="rated"):
            await taker.trading.rate(xid, 4)
        with pytest.raises(Conflict, match="confirmed already"):
            await taker.trading.confirm(xid)
        trade = await taker.trading.trade(xid)
        assert trade.confirmed_legs == (0,) and trade.rated == (maker.identity.public_key,)

        # Each replicates its counterparty's chain: the maker ends up with the taker's three entries.
        taker_key = taker.identity.public_key
        await until(lambda: maker.replication.store.head(taker_key) == (3, _head_id(taker)), "the taker's chain")
        assert maker.replication.store.verify().ok


async def test_a_settled_trade_outlives_the_machines_memory(tmp_path: Path) -> None:
    """The machine forgets a complete exchange at deadline + GRACE; the chain does not, nor does `trades`."""
    async with swarm(tmp_path, 2) as s:
        maker, taker = s.nodes
        listing = await publish(maker, "lamp", "1 x lamp", "1 x jam")
        await visible(taker, listing.id)
        offer = await taker.trading.make_offer(listing.id, [item("1 x jam")])
        await until(lambda: maker.settlement.machine.offer(offer.id) is not None, "the offer to reach the maker")
        x = (await maker.trading.accept(offer.id, deadline_in_s=60)).view.exchange
        await until(lambda: appended(maker, x.id) and appended(taker, x.id), "both appends")
        for node in (maker, taker):  # time passes: weeks later, as far as the machines know
            await node.settlement.handle(Tick(x.deadline + GRACE + 1))
            assert node.settlement.machine.exchange(x.id) is None
            (row,) = [t for t in await node.trading.trades() if t.view.exchange.id == x.id]
            assert (row.view.state, row.view.appended) == (ExchangeState.COMPLETE, True)
            assert await node.market.resolve(x.id.hex()[:10]) == x.id and (await node.market.get(x.id)).id == x.id
        receipt = await taker.trading.confirm(x.id)  # the lamp came late: it can still be confirmed, and rated
        assert receipt.legs == (0,) and (await taker.trading.trade(x.id)).confirmed_legs == (0,)
        await maker.trading.rate(x.id, 4)
        assert (await maker.trading.trade(x.id)).rated == (taker.identity.public_key,)


def _head_id(node: Node) -> bytes | None:
    head = node.replication.store.head(node.identity.public_key)
    return None if head is None else head[1]


async def test_three_party_ring_completes_on_every_chain(tmp_path: Path) -> None:
    async with swarm(tmp_path, 3) as s:
        a, b, c = s.nodes
        parties = [n.identity.public_key for n in s.nodes]
        legs = [Leg(0, 1, (item("1 x bike"),)), Leg(1, 2, (item("1 x lamp"),)), Leg(2, 0, (item("3 x jam"),))]
        trade = await a.trading.propose(parties, legs, deadline_in_s=120)
        xid = trade.view.exchange.id
        assert trade.view.state is ExchangeState.SIGNED
        await until(lambda: state(b, xid) is not None and state(c, xid) is not None, "the proposal to reach b and c")
        assert state(b, xid) is ExchangeState.AWAITING  # nobody signs a multi-party exchange without a command
        await b.trading.sign(xid)
        assert state(a, xid) is not ExchangeState.COMPLETE
        await c.trading.sign(xid)
        await until(lambda: all(appended(n, xid) for n in s.nodes), "all three appends")
        for node in s.nodes:
            assert [p.id for p in await chain_payloads(node) if isinstance(p, Exchange)] == [xid]
        with pytest.raises(InvalidObject, match="several counterparties"):
            await a.trading.rate(xid, 5)
        await a.trading.rate(xid, 5, subject=b.identity.public_key)


async def test_counter_offer_round_settles_on_the_counter_terms(tmp_path: Path) -> None:
    async with swarm(tmp_path, 2) as s:
        maker, taker = s.nodes
        listing = await publish(maker, "drill", "1 x drill", "5 x eggs")
        await visible(taker, listing.id)
        offer = await taker.trading.make_offer(listing.id, [item("2 x eggs")])
        await until(lambda: maker.settlement.machine.offer(offer.id) is not None, "the offer")
        counter = await maker.trading.counter(offer.id, [item("4 x eggs")], [item("1 x drill")])
        await until(lambda: taker.settlement.machine.offer(counter.id) is not None, "the counter-offer")
        assert taker.settlement.machine.offer(offer.id).state is OfferState.COUNTERED  # type: ignore[union-attr]
        trade = await taker.trading.accept(counter.id)
        xid = trade.view.exchange.id
        await until(lambda: appended(maker, xid) and appended(taker, xid), "both appends")
        legs = {(leg.giver, leg.receiver): leg.items for leg in trade.view.exchange.legs}
        taker_index = trade.view.exchange.index_of(taker.identity.public_key)
        assert legs[(taker_index, 1 - taker_index)] == (item("4 x eggs"),)


async def test_second_acceptance_beyond_the_quantity_is_refused(tmp_path: Path) -> None:
    async with swarm(tmp_path, 3) as s:
        maker, t1, t2 = s.nodes
        listing = await publish(maker, "the only drill", "1 x drill")
        await visible(t1, listing.id)
        await visible(t2, listing.id)
        o1 = await t1.trading.make_offer(listing.id, [item("2 x eggs")])
        o2 = await t2.trading.make_offer(listing.id, [item("3 x eggs")])
        await until(lambda: all(maker.settlement.machine.offer(o.id) for o in (o1, o2)), "both offers")
        await maker.trading.accept(o1.id)  # pending: the drill is reserved from the maker's signature on
        with pytest.raises(Conflict, match="drill"):
            await maker.trading.accept(o2.id)


async def only_gossip_between(maker: Node, taker: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """Wait for the settle-topic mesh, then make every direct settle request fail as a dead peer's would."""
    for node in (maker, taker):
        await until(lambda n=node: bool(n.host.mesh_peers(p2p.topic("main", "settle"))), "the settle mesh")

    async def unreachable(*args: Any, **kwargs: Any) -> bytes:
        raise p2p.DialError("test: direct dial disabled")

    for node in (maker, taker):
        monkeypatch.setattr(node.host, "request", unreachable)


async def test_messages_reach_the_counterparty_by_gossip_when_the_direct_dial_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with swarm(tmp_path, 2) as s:
        maker, taker = s.nodes
        listing = await publish(maker, "tent", "1 x tent")
        await visible(taker, listing.id)
        await only_gossip_between(maker, taker, monkeypatch)
        sent: list[str] = []
        for node in (maker, taker):
            settle_topic = node.settlement.topic
            original = settle_topic.publish

            async def spy(data: bytes, original: Any = original, label: str = settle_topic.label) -> None:
                sent.append(label)
                await original(data)

            monkeypatch.setattr(settle_topic, "publish", spy)
        offer = await taker.trading.make_offer(listing.id, [item("1 x rope")])
        await until(lambda: maker.settlement.machine.offer(offer.id) is not None, "the offer (gossiped on offers)")
        trade = await maker.trading.accept(offer.id)
        xid = trade.view.exchange.id
        await until(lambda: appended(maker, xid) and appended(taker, xid), "completion over gossip")
        assert "settle" in sent  # the exchange copies went by the settle topic


async def test_a_lost_gossip_message_is_sent_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No direct dial, and the first exchange to reach the taker by gossip is lost there: the retry settles it.

    (Gossip message ids hash the payload, so the retry -- the same bytes -- used to be dropped as a
    duplicate for two minutes by every node that had seen the first copy; the settle topic now
    counts every publication.)"""
    monkeypatch.setattr(settle_module, "RETRY_S", 1.0)
    async with swarm(tmp_path, 2) as s:
        maker, taker = s.nodes
        listing = await publish(maker, "stove", "1 x stove")
        await visible(taker, listing.id)
        await only_gossip_between(maker, taker, monkeypatch)
        lost: list[bytes] = []
        ingest = taker.settlement._ingest

        async def lossy(objects: list[Any], from_peer: str) -> None:
            if not lost and any(isinstance(o, Exchange) for o in objects):
                lost.extend(o.id for o in objects)  # delivered by gossip, then lost before settlement saw it
                return
            await ingest(objects, from_peer)

        monkeypatch.setattr(taker.settlement, "_ingest", lossy)
        offer = await taker.trading.make_offer(listing.id, [item("1 x kettle")])
        await until(lambda: maker.settlement.machine.offer(offer.id) is not None, "the offer (gossiped on offers)")
        xid = (await maker.trading.accept(offer.id)).view.exchange.id
        await until(lambda: appended(maker, xid) and appended(taker, xid), "completion after the retry", timeout=10)
        assert lost == [xid]


async def test_a_forged_countersignature_is_refused(tmp_path: Path) -> None:
    async with swarm(tmp_path, 2) as s:
        maker, taker = s.nodes
        listing = await publish(maker, "kayak", "1 x kayak")
        await visible(taker, listing.id)
        offer = await taker.trading.make_offer(listing.id, [item("1 x paddle")])
        await until(lambda: maker.settlement.machine.offer(offer.id) is not None, "the offer")
        await s.stop(1)  # the taker is gone: the maker's copy waits, signed by the maker only
        trade = await maker.trading.accept(offer.id)
        x = trade.view.exchange
        assert state(maker, x.id) is ExchangeState.SIGNED
        envelope = cbor.decode(x.raw, max_size=1 << 20)
        envelope[3][x.index_of(taker.identity.public_key)] = os.urandom(64)  # the taker's slot, forged
        forged = cbor.encode(envelope)
        with pytest.raises(p2p.RequestRefused, match="signatures"):
            await maker.settlement._serve("forger", forged)  # the direct stream's handler: refused at the boundary
        assert state(maker, x.id) is ExchangeState.SIGNED and not appended(maker, x.id)


# --------------------------------------------------------------------------- ledger replication: forks


def _signed_exchange(a: Identity, b: Identity, what: str) -> Exchange:
    now = int(time.time())
    x = build.propose_exchange(
        parties=[a.public_key, b.public_key],
        legs=[Leg(0, 1, (item(what),)), Leg(1, 0, (item("1 x thanks"),))],
        created=now,
        deadline=now + 600,
    )
    return build.sign_exchange(build.sign_exchange(x, a), b)


async def test_a_forked_chain_is_flagged_by_every_node(tmp_path: Path) -> None:
    """A raw peer signs two different entries at seq 1; an archive node finds the fork, every node that deals
    with the forker (here: holds its listing) is alerted and keeps the proof; a node that does not deal with an
    author forwards an alert about it but keeps nothing."""
    async with swarm(tmp_path, 3) as s:
        archive, relay, bystander = s.nodes
        archive.replication.archive = True  # replicates every chain it hears of
        forker, friend = Identity.generate(), Identity.generate()
        now = int(time.time())
        wares = build.make_listing(forker, title="wares", have=[item("1 x vase")], created=now, expires=now + 3600)
        for node in s.nodes:  # every node holds the forker's listing: it deals with the forker
            await node.market.ingest.store([wares])
        entries = [
            build.make_entry(forker, seq=1, prev=ZERO_ID, time=now, payload=_signed_exchange(forker, friend, what))
            for what in ("1 x bike", "1 x boat")
        ]
        topic = p2p.topic("main", wire.GOSSIP_TOPIC)
        for node in s.nodes:
            await until(lambda n=node: len(n.host.mesh_peers(topic)) == 2, "the ledger mesh")
        await relay.host.publish(topic, wire.encode_gossip(wire.Announce((entries[0].raw,))))
        await until(lambda: archive.replication.store.head(forker.public_key) is not None, "the first entry")
        assert bystander.replication.store.head(forker.public_key) is None  # not a chain it replicates
        await relay.host.publish(topic, wire.encode_gossip(wire.Announce((entries[1].raw,))))
        for node in s.nodes:
            await until(lambda n=node: _forked(n, forker.public_key), "every node to mark the forker")
        assert forker.public_key in archive.replication.store.forked_authors()  # the archive holds the proof entries
        assert bystander.home.forked_file.exists()  # the others keep the proof they were sent

        # A stranger's fork: forwarded, proven at the archive, kept by nobody who does not deal with it.
        stranger = Identity.generate()
        theirs = [
            build.make_entry(stranger, seq=1, prev=ZERO_ID, time=now, payload=_signed_exchange(stranger, friend, what))
            for what in ("1 x kite", "1 x kettle")
        ]
        for entry in theirs:
            await relay.host.publish(topic, wire.encode_gossip(wire.Announce((entry.raw,))))
        await until(lambda: stranger.public_key in archive.replication.store.forked_authors(), "the archive's proof")
        await trio.sleep(1.0)  # its alert has reached the others by now
        assert not await _forked(bystander, stranger.public_key)
        assert stranger.public_key not in bystander.replication._alerted


async def _forked(node: Node, author: bytes) -> bool:
    return author in await node.market.forked()


async def test_the_settle_topic_refuses_a_flood_from_one_publisher(tmp_path: Path) -> None:
    """Valid settle objects beyond one publisher's budget are not delivered or forwarded; others still are."""
    async with swarm(tmp_path, 1) as s:
        (node,) = s.nodes
        a, b = Identity.generate(), Identity.generate()
        flooder, honest = Identity.generate().peer_id, Identity.generate().peer_id
        messages = [batch.encode_batch([_signed_exchange(a, b, f"{k + 1} x apples").raw]) for k in range(80)]
        verdicts = [node.settlement.topic.validate(flooder, m) for m in messages]
        assert verdicts[:50] == [True] * 50  # the burst
        assert verdicts.count(False) >= 25  # then about 5 per second
        assert node.settlement.topic.validate(honest, messages[0])  # another publisher is not affected
        assert node.settlement.topic.validate(node.host.peer_id, messages[1])  # nor our own publications


def test_a_damaged_settlement_state_is_a_clear_error_and_is_kept(tmp_path: Path) -> None:
    from swapmeet.node.settlement import load_state

    state = tmp_path / "settlement.cbor"
    state.write_bytes(b"garbage")
    with pytest.raises(InvalidObject) as info:
        load_state(Identity.generate(), state)
    assert str(state) in str(info.value) and "move the file aside" in str(info.value)
    assert "\n" not in str(info.value) and state.read_bytes() == b"garbage"  # never replaced behind the user's back


async def test_entries_a_sync_session_brought_are_passed_on_by_gossip(tmp_path: Path) -> None:
    """Ledger sync only pulls: after a partition heals, the node at the end of a link across pulls the other
    side's new entries, and passes them on with one announce, so the rest of its side holds them within
    a second instead of at a periodic resync with a random peer (issue 16: chains agree again within 30 s)."""
    async with swarm(tmp_path, 3) as s:
        puller, source, bystander = s.nodes
        for node in s.nodes:
            node.replication.archive = True  # everyone keeps every chain it hears of
        topic = p2p.topic("main", wire.GOSSIP_TOPIC)
        for node in s.nodes:
            await until(lambda n=node: len(n.host.mesh_peers(topic)) == 2, "the ledger mesh")
        await trio.sleep(1.0)  # the sessions every connection started are over
        author, friend = Identity.generate(), Identity.generate()
        now = int(time.time())
        entry = build.make_entry(
            author, seq=1, prev=ZERO_ID, time=now, payload=_signed_exchange(author, friend, "1 x kite")
        )
        assert source.replication.store.ingest([entry.raw]).accepted == 1  # held there only, never announced
        assert await puller.replication.pull(source.host.peer_id) == 1  # a full session, as on a reconnect
        await until(lambda: bystander.replication.store.head(author.public_key) is not None, "the entry", timeout=5.0)

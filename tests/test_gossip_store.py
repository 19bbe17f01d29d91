"""Gossip's way into the book (node/bookgossip.py, node/ingest.py): messages that wait are stored together."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from swapmeet.node.activity import Activity
from swapmeet.node.book import OfferBook
from swapmeet.node.bookgossip import BookGossip
from swapmeet.node.budgets import Budgets
from swapmeet.node.ingest import BookIngest
from swapmeet.node.refusals import RefusalLog
from swapmeet.protocol.objects import Offer

from tests.protocol_fixtures import ALICE, BOB, listing


def ingest_in(tmp_path: Path) -> BookIngest:
    send, _ = trio.open_memory_channel[Offer](16)
    refusals = RefusalLog(logging.getLogger("t"))
    return BookIngest(OfferBook(tmp_path / "book.sqlite"), b"me" * 16, send, refusals, Budgets())


async def test_store_groups_counts_what_is_new_in_each_group(tmp_path: Path) -> None:
    ingest = ingest_in(tmp_path)
    a, b, c = (listing(ALICE, series=bytes([i]) * 16) for i in (1, 2, 3))
    d = listing(BOB, series=b"\x04" * 16)
    assert await ingest.store_groups([[a, b], [b, c], [a], [d]]) == [2, 1, 0, 1]
    assert await ingest.store([a, c, d]) == 0
    ingest.book.close()


class RecordingIngest:
    """Stands in for BookIngest: records each store_groups call, answers 'all new'."""

    def __init__(self) -> None:
        self.calls: list[list[list[Any]]] = []

    async def store_groups(self, groups: list[list[Any]]) -> list[int]:
        self.calls.append(groups)
        await trio.sleep(0)
        return [len(g) for g in groups]


async def test_messages_waiting_for_the_book_are_stored_in_one_transaction(caplog: pytest.LogCaptureFixture) -> None:
    """Three messages queued while the store is busy: one store_groups call, and one log line per message
    (the bench reads them per originator)."""
    gossip = BookGossip.__new__(BookGossip)
    gossip.ingest = RecordingIngest()  # type: ignore[assignment]
    gossip.activity = Activity()
    send, receive = trio.open_memory_channel[tuple[str, list[object]]](16)
    for i, peer in enumerate(("peer-aaaaaaaa", "peer-bbbbbbbb", "peer-cccccccc")):
        send.send_nowait((peer, [object()] * (i + 1)))
    await send.aclose()
    with caplog.at_level(logging.INFO, logger="swapmeet.node"):
        await gossip._store_batches(receive)
    assert [len(groups) for groups in gossip.ingest.calls] == [3]  # type: ignore[attr-defined]
    lines = [r.getMessage() for r in caplog.records if "gossip from" in r.getMessage()]
    assert lines == [
        "gossip from aaaaaaaa: 1 new object(s)",
        "gossip from bbbbbbbb: 2 new object(s)",
        "gossip from cccccccc: 3 new object(s)",
    ]


class RecordingTopic:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def publish(self, data: bytes) -> None:
        self.messages.append(data)


async def test_a_burst_of_publishes_goes_out_in_few_messages(autojump_clock: trio.testing.MockClock) -> None:
    """One listing alone goes out at once; the 15 announced right after it (one every 2 ms, as API calls
    arrive) gather into a few messages instead of one each."""
    from swapmeet.protocol import batch
    from swapmeet.protocol.ratelimit import AuthorRateLimiter

    gossip = BookGossip.__new__(BookGossip)
    gossip.me = b"me" * 16
    gossip._pace = AuthorRateLimiter(rate=100, burst=100)
    gossip._outbox = {"listings": {}, "offers": {}}
    gossip._outbox_ready = trio.Event()
    topic = RecordingTopic()
    gossip.topics = {"listings": topic, "offers": RecordingTopic()}  # type: ignore[dict-item]
    raws = [listing(ALICE, series=bytes([i]) * 16).raw for i in range(16)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(gossip._publish_waiting)
        gossip.announce("listings", raws[0])
        await trio.sleep(0.001)
        assert len(topic.messages) == 1  # alone, at once
        for raw in raws[1:]:
            gossip.announce("listings", raw)
            await trio.sleep(0.002)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    sent = [batch.split_batch(m) for m in topic.messages]
    assert sum(map(len, sent)) == 16
    assert len(topic.messages) <= 4, [len(x) for x in sent]


def paced_gossip() -> tuple[BookGossip, list[tuple[float, list[bytes]]]]:
    """A BookGossip with the real pace and no host; what it publishes on "listings": (when, objects)."""
    from swapmeet.node.bookgossip import OWN_PACE
    from swapmeet.protocol import batch
    from swapmeet.protocol.ratelimit import AUTHOR_BURST, AUTHOR_RATE, AuthorRateLimiter

    gossip = BookGossip.__new__(BookGossip)
    gossip.me = b"me" * 16
    gossip._pace = AuthorRateLimiter(rate=AUTHOR_RATE * OWN_PACE, burst=AUTHOR_BURST * OWN_PACE)
    gossip._outbox = {"listings": {}, "offers": {}}
    gossip._outbox_ready = trio.Event()
    sent: list[tuple[float, list[bytes]]] = []
    topic = RecordingTopic()

    async def publish(data: bytes) -> None:
        sent.append((trio.current_time(), batch.split_batch(data)))

    topic.publish = publish  # type: ignore[method-assign]
    gossip.topics = {"listings": topic, "offers": RecordingTopic()}  # type: ignore[dict-item]
    return gossip, sent


async def test_relayed_authors_are_paced_each_on_its_own_and_sent_in_messages_of_their_own(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Objects other authors signed (a relay): each author has its own pace (ALICE's backlog does not hold BOB
    back), and a message carries one author's objects (a receiver that finds one author over its budget
    rejects that message, not the others' objects with it)."""
    from swapmeet.node.bookgossip import PACED_BATCH

    gossip, sent = paced_gossip()
    alices = [listing(ALICE, series=bytes([i]) * 16).raw for i in range(50)]
    bobs = [listing(BOB, series=bytes([100 + i]) * 16).raw for i in range(10)]
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(gossip._publish_waiting)
        for raw in alices:
            gossip.announce("listings", raw, author=ALICE.public_key)
        for raw in bobs:
            gossip.announce("listings", raw, author=BOB.public_key)
        assert gossip.waiting(ALICE.public_key) == 50 and gossip.waiting(BOB.public_key) == 10
        await trio.sleep(30)
        nursery.cancel_scope.cancel()
    by_whom = {raw: "alice" for raw in alices} | {raw: "bob" for raw in bobs}
    messages = [(round(t - start, 2), {by_whom[raw] for raw in objects}, len(objects)) for t, objects in sent]
    assert messages == [
        (0.0, {"alice"}, 40),  # both within their burst at once, in two messages
        (0.0, {"bob"}, 10),
        (PACED_BATCH / 4.0, {"alice"}, PACED_BATCH),  # the rest of alice's at her pace
        (PACED_BATCH / 4.0 + 0.5, {"alice"}, 2),
    ], messages
    assert gossip.waiting(ALICE.public_key) == 0 and gossip._outbox["listings"] == {}


async def test_a_relay_that_would_leave_over_max_waiting_of_an_author_waiting_is_refused_whole() -> None:
    """One author's backlog is bounded: past its burst its objects wait for the pace, and a relay that would queue
    more than MAX_WAITING of them is refused whole (429 busy) with when to try again, before anything is stored."""
    import time

    from swapmeet.node.bookgossip import MAX_WAITING
    from swapmeet.node.contract import Busy
    from swapmeet.node.market import Market
    from swapmeet.protocol.identity import Identity

    gossip, _ = paced_gossip()  # its publisher is not running: everything announced waits
    shop = Identity(b"\x07" * 32)
    for i in range(MAX_WAITING - 40):  # what a relay of MAX_WAITING leaves after the burst of 40
        gossip.announce("listings", listing(shop, series=i.to_bytes(16, "big")).raw, author=shop.public_key)
    stored: list[object] = []

    class Ingest:
        async def store_new(self, objects: list[object]) -> list[bool]:
            stored.extend(objects)
            return [True] * len(objects)

    market = Market.__new__(Market)
    market.book_gossip, market.ingest = gossip, Ingest()  # type: ignore[assignment]
    now = int(time.time())
    more = [
        listing(shop, series=(10_000 + i).to_bytes(16, "big"), created=now, expires=now + 3600).raw for i in range(100)
    ]
    # 216 wait; 100 more would be 316: refused (it takes 15 s at 4/s to get under again)
    with pytest.raises(Busy, match=r"100 object\(s\) by .* already wait to go out .* try again in \d+ s"):
        await market.relay(more)
    assert stored == [] and gossip.waiting(shop.public_key) == MAX_WAITING - 40
    # another author is not held back by the shop's backlog
    theirs = [listing(ALICE, series=bytes([i]) * 16, created=now, expires=now + 3600).raw for i in range(100)]
    assert [new for _, new in await market.relay(theirs)] == [True] * 100
    assert gossip.waiting(ALICE.public_key) == 100


async def test_over_our_pace_objects_go_in_batches_not_one_a_message(autojump_clock: trio.testing.MockClock) -> None:
    """60 listings at once with our pace (40 at once, 4/s): 40 go at once, the rest in batches of PACED_BATCH
    as the tokens for a batch come (not one message per token), and the last batch as soon as it can."""
    from swapmeet.node.bookgossip import OWN_PACE, PACED_BATCH
    from swapmeet.protocol.ratelimit import AUTHOR_RATE

    gossip, sent = paced_gossip()
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(gossip._publish_waiting)
        for i in range(60):
            gossip.announce("listings", listing(ALICE, series=bytes([i]) * 16).raw)
        await trio.sleep(30)
        nursery.cancel_scope.cancel()
    sizes = [len(objects) for _, objects in sent]
    assert sizes == [40, PACED_BATCH, PACED_BATCH, 60 - 40 - 2 * PACED_BATCH], sizes
    sent_at = [t for t, _ in sent]
    gaps = [round(b - a, 2) for a, b in zip([start, *sent_at], sent_at, strict=False)]
    pace = AUTHOR_RATE * OWN_PACE
    assert gaps == [0.0, PACED_BATCH / pace, PACED_BATCH / pace, 4 / pace], gaps

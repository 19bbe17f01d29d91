"""Listing photos on the node: the store (bounded, by hash), the photo protocol's checks and limits, the book's
facets (tag and location search, the hashes held listings name), and ``swapmeet publish --photo``."""

from __future__ import annotations

import hashlib
import io
import logging
import time
from pathlib import Path
from typing import Any

import trio
from click.testing import CliRunner
from PIL import Image
from swapmeet.cli.main import cli
from swapmeet.node.book import OfferBook
from swapmeet.node.budgets import Budgets
from swapmeet.node.events import EventFeed
from swapmeet.node.ingest import BookIngest
from swapmeet.node.photos import NOT_HELD, OK, PER_PEER_CONCURRENT, REFUSED, PhotoService, PhotoStore
from swapmeet.node.refusals import RefusalLog
from swapmeet.protocol.build import make_listing, parse_item, sign_listing
from swapmeet.protocol.identity import Identity, peer_id
from swapmeet.protocol.listing_spec import ListingSpec
from swapmeet.protocol.objects import Offer
from swapmeet.protocol.ratelimit import AuthorRateLimiter

ALICE = Identity(b"\x01" * 32)


def jpeg(colour: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(out, "JPEG")
    return out.getvalue()


def test_the_store_is_bounded_and_keeps_what_it_must(tmp_path: Path) -> None:
    store = PhotoStore(tmp_path / "photos", max_bytes=3 * len(jpeg()) + 10)
    a, b, c = (store.put(jpeg((i, 0, 0))) for i in (1, 2, 3))
    assert store.get(a) is not None and store.total <= store.max_bytes
    d = store.put(jpeg((4, 0, 0)), keep=frozenset({a}))  # room is made by dropping the oldest not kept
    assert store.has(a) and store.has(d) and not store.has(b) and store.has(c)
    (tmp_path / "photos" / c.hex()).write_bytes(b"tampered")
    assert store.get(c) is None and not store.has(c)  # a file that no longer matches its name is dropped
    assert store.keep_only({a}, grace_s=0, now=time.time() + 1) == 1 and store.has(a) and not store.has(d)
    assert PhotoStore(tmp_path / "photos").has(a)  # found again after a restart


class FakeHost:
    def __init__(self, answers: dict[str, bytes]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def connected_peers(self) -> list[str]:
        return list(self.answers)

    def set_request_handler(self, protocol: str, handler: Any, **kw: Any) -> None:
        self.handler = handler

    async def request(self, peer: str, protocol: str, payload: bytes, **kw: Any) -> bytes:
        self.asked.append(peer)
        return self.answers[peer]


async def test_fetched_bytes_must_match_the_hash(tmp_path: Path) -> None:
    good = jpeg()
    h = hashlib.sha256(good).digest()
    host = FakeHost({"liar": OK + jpeg((250, 0, 0)), "empty": NOT_HELD, "honest": OK + good})
    book = OfferBook(tmp_path / "book.sqlite")
    service = PhotoService(host, "test", PhotoStore(tmp_path / "photos"), book, EventFeed())  # type: ignore[arg-type]
    with trio.fail_after(10):
        assert await service.fetch(h)
    assert host.asked == ["liar", "empty", "honest"] and service.store.get(h) == good
    liar_only = PhotoService(
        FakeHost({"liar": OK + b"\xff\xd8\xff junk"}), "test", PhotoStore(tmp_path / "p2"), book, EventFeed()
    )  # type: ignore[arg-type]
    assert not await liar_only.fetch(hashlib.sha256(b"other").digest()) and liar_only.store.total == 0
    book.close()


async def test_a_listing_that_names_photos_has_them_prefetched_as_it_enters_the_book(tmp_path: Path) -> None:
    good = jpeg((90, 90, 200))
    h = hashlib.sha256(good).digest()
    author = peer_id(ALICE.public_key)
    host = FakeHost({"other": OK + good, author: OK + good})
    book = OfferBook(tmp_path / "book.sqlite")
    service = PhotoService(host, "test", PhotoStore(tmp_path / "photos"), book, EventFeed())  # type: ignore[arg-type]
    offers, _ = trio.open_memory_channel[Offer](8)
    ingest = BookIngest(book, b"\x02" * 32, offers, RefusalLog(logging.getLogger("test")), Budgets())
    ingest.photos_wanted = service.prefetch_send
    now = int(time.time())
    plain = sign_listing(ALICE, ListingSpec(title="Jar", have=[parse_item("1 x jar")]), created=now)
    with_photo = sign_listing(ALICE, ListingSpec(title="Lamp", have=[parse_item("1 x lamp")], photos=[h]), created=now)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await service.start(nursery)
            assert await ingest.store([plain, with_photo]) == 2
            while not service.store.has(h):
                await trio.sleep(0.01)
            assert host.asked == [author]  # from its author first; the listing without photos asked nothing
            assert await ingest.store([with_photo]) == 0  # a duplicate is not fetched again
            await trio.sleep(0.05)
            assert host.asked == [author]
            nursery.cancel_scope.cancel()
    book.close()


async def test_serving_limits_each_peer(tmp_path: Path) -> None:
    book = OfferBook(tmp_path / "book.sqlite")
    service = PhotoService(FakeHost({}), "test", PhotoStore(tmp_path / "photos"), book, EventFeed())  # type: ignore[arg-type]
    h = service.store.put(jpeg())
    assert await service._serve("peer", h) == OK + jpeg()
    assert await service._serve("peer", b"short") == NOT_HELD
    service._in_flight["busy"] = PER_PEER_CONCURRENT
    assert await service._serve("busy", h) == REFUSED
    # bytes per minute: a peer over its budget is refused, others are not (a budget of three photos here)
    service._budget = AuthorRateLimiter(rate=0.0, burst=3 * len(jpeg()))
    answers = [await service._serve("greedy", h) for _ in range(4)]
    assert answers[:3] == [OK + jpeg()] * 3 and answers[3] == REFUSED
    assert await service._serve("other", h) == OK + jpeg()
    book.close()


def test_the_book_filters_by_tag_and_location_and_knows_photo_hashes(tmp_path: Path) -> None:
    now = int(time.time())
    photo = hashlib.sha256(b"p").digest()
    with OfferBook(tmp_path / "book.sqlite") as book:

        def listing(title: str, **kw: Any) -> Any:
            return make_listing(ALICE, title=title, have=[parse_item("1 x thing")], created=now, expires=now + 60, **kw)

        book.add_many([listing("Bench", tags=["garden"], loc="u33db", photos=[photo]), listing("Desk", loc="u0yj")])
        assert [x.title for x in book.search(tag="garden")] == ["Bench"]
        assert [x.title for x in book.search(loc="u33")] == ["Bench"]
        assert [x.title for x in book.search(loc="u")] and book.search(tag="%") == []
        assert book.photo_hashes() == {photo}
    with OfferBook(tmp_path / "book.sqlite") as again:  # reopened: the facets are there
        assert again.photo_hashes() == {photo}


def test_publish_photo_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--home", str(tmp_path / "h"), "publish", "--title", "X", "--have", "1 x y", "--photo", str(tmp_path)]
    )
    assert result.exit_code == 2 and "not a regular file (a directory)" in result.output
    assert len(result.output.strip().splitlines()) == 1

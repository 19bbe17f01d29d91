"""Batches of signed objects and the per-author rate limiter."""

from __future__ import annotations

import pytest
from swapmeet.protocol import batch, cbor
from swapmeet.protocol.errors import InvalidObject
from swapmeet.protocol.ratelimit import AuthorRateLimiter

from tests.protocol_fixtures import BOB, T, listing, offer


def test_batch_round_trip_verifies_each_object():
    objs = [listing(), offer(), listing(BOB, title="Tent")]
    data = batch.encode_batch([o.raw for o in objs])
    decoded = batch.decode_batch(data, kinds=("listing", "offer"), now=T + 20)
    assert decoded == objs


def test_bad_object_is_named_by_index():
    good, bad = listing(), bytearray(offer().raw)
    bad[-1] ^= 1
    with pytest.raises(InvalidObject) as info:
        batch.decode_batch(batch.encode_batch([good.raw, bytes(bad)]), kinds=("listing", "offer"), now=None)
    assert info.value.path.startswith("batch[2][1].")
    assert info.value.code == "signature"


def test_disallowed_kind_in_batch_is_refused():
    with pytest.raises(InvalidObject) as info:
        batch.decode_batch(batch.encode_batch([offer().raw]), kinds=("listing",), now=None)
    assert info.value.code == "kind"


@pytest.mark.parametrize(
    "value",
    [["swapmeet/1", "batch", []], ["swapmeet/1", "other", [b"x"]], ["swapmeet/1", "batch", ["text"]], {"a": 1}],
)
def test_malformed_batches_are_refused(value):
    with pytest.raises(InvalidObject):
        batch.split_batch(cbor.encode(value))


def test_pack_respects_size_and_count_limits():
    raws = [bytes([i % 256]) * 1000 for i in range(600)]
    batches = batch.pack(raws, max_size=50_000)
    assert sum(len(batch.split_batch(b)) for b in batches) == 600
    assert all(len(b) <= 50_000 for b in batches)
    assert [r for b in batches for r in batch.split_batch(b)] == raws
    many_small = batch.pack([b"x"] * 600)
    assert [len(batch.split_batch(b)) for b in many_small] == [256, 256, 88]


def test_rate_limiter_allows_burst_then_rate():
    limiter = AuthorRateLimiter(rate=2.0, burst=3.0)
    a, b = b"a" * 32, b"b" * 32
    assert [limiter.allow(a, 100.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow(b, 100.0)  # authors are independent
    assert not limiter.allow(a, 100.2)  # 0.4 tokens: not yet
    assert limiter.allow(a, 100.5)  # 1 token refilled after 0.5 s at 2/s


def test_rate_limiter_table_is_bounded():
    limiter = AuthorRateLimiter(max_authors=100)
    for i in range(1000):
        limiter.allow(i.to_bytes(32, "big"), 0.0)
    assert len(limiter._buckets) == 100


def test_wait_takes_when_it_can_and_says_how_long_when_it_cannot() -> None:
    limiter = AuthorRateLimiter(rate=10.0, burst=20.0)
    assert limiter.wait(b"peer", 0.0, 15) == 0.0  # taken: 5 left
    assert limiter.wait(b"peer", 0.0, 10) == 0.5  # 5 short at 10/s; nothing taken
    assert limiter.wait(b"peer", 0.5, 10) == 0.0  # 10 there after half a second
    assert limiter.wait(b"peer", 0.5, 21) == float("inf")  # more than the burst: never

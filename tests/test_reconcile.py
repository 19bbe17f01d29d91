"""Range-based set reconciliation (protocol/booksync/reconcile.py): correctness, strictness, traffic.

Both sides run in memory; a session is a list of messages, so every claim
(results, round count, frame limit, bytes on the wire) is checked on the exact
bytes a real stream would carry. Run with ``-s`` to see the traffic figures.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
import time
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from swapmeet.protocol.booksync.reconcile import (
    DEFAULT_FRAME_LIMIT,
    INFINITE_BOUND,
    INFINITY,
    VERSION,
    Mode,
    Range,
    Reconciler,
    decode_message,
    encode_message,
    encode_varint,
    fingerprint,
)
from swapmeet.protocol.errors import InvalidObject

Item = tuple[int, bytes]


@dataclass
class Session:
    initiator: Reconciler
    responder: Reconciler
    sent: list[bytes] = field(default_factory=list)  # initiator -> responder
    received: list[bytes] = field(default_factory=list)  # responder -> initiator

    @property
    def total_bytes(self) -> int:
        return sum(map(len, self.sent)) + sum(map(len, self.received))

    @property
    def messages(self) -> int:
        return len(self.sent) + len(self.received)


def sync(a: list[Item], b: list[Item], *, max_messages: int = 5000, **kw: int) -> Session:
    """Run a whole session: `a` initiates, `b` responds."""
    s = Session(Reconciler(a, **kw), Reconciler(b, **kw))
    msg: bytes | None = s.initiator.initiate()
    while msg is not None:
        s.sent.append(msg)
        reply = s.responder.respond(msg)
        s.received.append(reply)
        msg = s.initiator.reconcile(reply)
        assert s.messages < max_messages, "session does not terminate"
    limit = kw.get("frame_limit", DEFAULT_FRAME_LIMIT)
    assert max(map(len, s.sent + s.received)) <= limit
    return s


def check_result(s: Session, a: list[Item], b: list[Item]) -> None:
    ids_a = {i for _, i in a}
    ids_b = {i for _, i in b}
    assert s.initiator.have == ids_a - ids_b
    assert s.initiator.need == ids_b - ids_a
    assert s.initiator.done


def random_items(n: int, rng: random.Random, *, span: int = 30 * 86400) -> list[Item]:
    """Realistic items: unix-second timestamps over a month, random 32-byte ids."""
    base = 1_700_000_000
    return [(base + rng.randrange(span), rng.randbytes(32)) for _ in range(n)]


# ------------------------------------------------------------------ strategies

# Ids that often share long prefixes and timestamps that often collide, so the
# shortest-separating-prefix bounds and the tie-breaking by id get exercised.
_heads = st.lists(st.sampled_from([0, 1, 255]), max_size=31).map(bytes)
ids_st = st.builds(lambda head, tail: (head + tail)[:32], _heads, st.binary(min_size=32, max_size=32))
timestamps_st = st.one_of(st.integers(0, 3), st.integers(0, INFINITY - 1))
items_st = st.lists(st.tuples(timestamps_st, ids_st), max_size=250, unique_by=lambda it: it[1])


@st.composite
def set_pairs(draw: st.DrawFn) -> tuple[list[Item], list[Item]]:
    pool = draw(items_st)
    shape = draw(st.sampled_from(["random", "identical", "disjoint", "subset", "superset"]))
    if shape == "random":
        where = draw(st.lists(st.sampled_from("ab+"), min_size=len(pool), max_size=len(pool)))
    elif shape == "identical":
        where = ["+"] * len(pool)
    elif shape == "disjoint":
        where = [draw(st.sampled_from("ab")) for _ in pool]
    else:
        only = "a" if shape == "superset" else "b"
        where = [draw(st.sampled_from(["+", only])) for _ in pool]
    a = [it for it, w in zip(pool, where, strict=True) if w in "a+"]
    b = [it for it, w in zip(pool, where, strict=True) if w in "b+"]
    return a, b


params_st = st.fixed_dictionaries(
    {
        "buckets": st.sampled_from([2, 3, 16]),
        "idlist_threshold": st.sampled_from([1, 2, 16]),
        "frame_limit": st.sampled_from([4096, DEFAULT_FRAME_LIMIT]),
    }
)


# --------------------------------------------------------------- correctness


def message_bound(a: list[Item], b: list[Item], p: dict[str, int]) -> int:
    """Generous worst case for the number of messages of one session.

    Every split divides one side's items in a range by min(buckets, count)
    >= 2, so a range reaches a base case after about 2*log(n) messages; each
    frame-limit cut can restart the search once, and a frame carries at least
    ~frame/64 ids' worth of work.
    """
    n = max(len(a), len(b), 2)
    depth = 2 * math.ceil(math.log(n, p["buckets"])) + 4
    cuts = math.ceil(64 * (len(a) + len(b)) / p["frame_limit"])
    return depth * (cuts + 1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(set_pairs(), params_st)
@example(([], []), {"buckets": 16, "idlist_threshold": 16, "frame_limit": 65536})
def test_reconciliation_finds_exact_difference(pair: tuple[list[Item], list[Item]], p: dict[str, int]) -> None:
    a, b = pair
    s = sync(a, b, **p)
    check_result(s, a, b)
    assert s.messages <= message_bound(a, b, p)
    assert s.responder.done == (decode_message(s.received[-1]) == [])


@pytest.mark.parametrize(
    "shape", ["empty", "identical", "disjoint", "subset", "superset", "same_timestamp", "one_each"]
)
def test_named_shapes_at_scale(shape: str) -> None:
    rng = random.Random(shape)
    pool = random_items(3000, rng)
    if shape == "same_timestamp":  # every item at t=0: ordering is by id alone
        pool = [(0, i) for _, i in pool]
    a, b = {
        "empty": ([], []),
        "identical": (pool, pool),
        "disjoint": (pool[:1500], pool[1500:]),
        "subset": (pool[:2000], pool),
        "superset": (pool, pool[:2000]),
        "same_timestamp": (pool[:2990], pool[10:]),
        "one_each": (pool[1:], pool[:-1]),
    }[shape]
    s = sync(a, b)
    check_result(s, a, b)
    if shape in ("empty", "identical"):
        assert s.messages == 2  # one fingerprint round trip settles it
    if shape == "one_each":
        assert s.messages <= 8


def test_fingerprint_matches_definition() -> None:
    ids = [bytes([i]) * 32 for i in range(1, 6)] + [b"\xff" * 32]
    total = sum(int.from_bytes(i, "little") for i in ids) % 2**256
    expected = hashlib.sha256(total.to_bytes(32, "little") + bytes([len(ids)])).digest()[:16]
    assert fingerprint(ids) == expected
    assert fingerprint([]) == hashlib.sha256(bytes(33)).digest()[:16]
    # The prefix-sum path gives the same answer for every sub-range.
    r = Reconciler([(n, i) for n, i in enumerate(ids)])
    for lo in range(len(ids) + 1):
        for hi in range(lo, len(ids) + 1):
            assert r._fingerprint(lo, hi) == fingerprint(ids[lo:hi])


def test_varint_vectors() -> None:
    assert encode_varint(0) == b"\x00"
    assert encode_varint(127) == b"\x7f"
    assert encode_varint(128) == b"\x81\x00"
    assert encode_varint(300) == b"\x82\x2c"
    assert encode_varint(2**64 - 1) == b"\x81" + b"\xff" * 8 + b"\x7f"
    with pytest.raises(ValueError):
        encode_varint(2**64)


def test_build_10k_items_is_fast() -> None:
    items = random_items(10_000, random.Random(7))
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        Reconciler(items)
        best = min(best, time.perf_counter() - t0)
    print(f"\nbuild of 10,000 items: {best * 1000:.1f} ms")
    assert best < 0.1


# ---------------------------------------------------------------- frame limit


@pytest.mark.parametrize("frame_limit", [4096, DEFAULT_FRAME_LIMIT])
@pytest.mark.parametrize("direction", ["newcomer_initiates", "holder_initiates"])
def test_frame_limit_with_large_difference(frame_limit: int, direction: str) -> None:
    full = random_items(20_000, random.Random(20_000))
    a, b = ([], full) if direction == "newcomer_initiates" else (full, [])
    s = sync(a, b, frame_limit=frame_limit)  # sync() asserts every message <= frame_limit
    check_result(s, a, b)
    print(
        f"\n20k vs 0 ({direction}, frame {frame_limit}): {s.messages} messages, "
        f"{s.total_bytes} bytes, largest {max(map(len, s.sent + s.received))}"
    )


def test_frame_limit_with_scattered_differences() -> None:
    # Disjoint sets force splits, id lists and remainder fingerprints at once.
    rng = random.Random(3)
    a, b = random_items(3000, rng), random_items(3000, rng)
    s = sync(a, b, frame_limit=4096)
    check_result(s, a, b)


# -------------------------------------------------------------------- traffic


def test_traffic_grows_with_the_difference() -> None:
    rng = random.Random(10)
    common = random_items(9_995, rng)
    a = common + random_items(5, rng)
    b = common + random_items(5, rng)
    rng.shuffle(a)
    t0 = time.perf_counter()
    s = sync(a, b)
    elapsed = time.perf_counter() - t0
    check_result(s, a, b)
    full_list = 10_000 * 32
    print(
        f"\n10k vs 10k, 5+5 differ: {s.total_bytes} bytes "
        f"({100 * s.total_bytes / full_list:.2f}% of the id list), "
        f"{s.messages} messages, {elapsed * 1000:.0f} ms incl. building both sides"
    )
    assert s.total_bytes < 0.05 * full_list


def test_newcomer_costs_about_the_id_list() -> None:
    full = random_items(10_000, random.Random(11))
    s = sync([], full)
    check_result(s, [], full)
    ratio = s.total_bytes / (10_000 * 32)
    print(f"\nnewcomer 0 vs 10k: {s.total_bytes} bytes, overhead x{ratio:.4f}, {s.messages} messages")
    assert 1 <= ratio < 1.02
    # The other way round the initiator learns everything from fingerprints.
    s = sync(full, [])
    check_result(s, full, [])
    print(f"10k vs 0 (holder initiates): {s.total_bytes} bytes, {s.messages} messages")
    assert s.total_bytes < 1000


# ------------------------------------------------------------ hostile input


Sets = tuple[list[Item], list[Item]]
_PARAMS = {"frame_limit": 4096, "buckets": 4, "idlist_threshold": 4}


def _overlapping_sets(n: int, seed: int) -> Sets:
    pool = random_items(n, random.Random(seed), span=n // 8)  # many equal timestamps
    return pool[: n * 3 // 4], pool[n // 4 :]


# Small buckets/frame so every mode, cut id lists and remainders appear.
_SETS = _overlapping_sets(400, 99)
_CAPTURED = sync(*_SETS, **_PARAMS)
_TINY_SETS = _overlapping_sets(48, 98)
_TINY = sync(*_TINY_SETS, **_PARAMS)


_PEERS: dict[int, tuple[Reconciler, Reconciler]] = {}


def _peers(sets: Sets) -> tuple[Reconciler, Reconciler]:
    """A responder and an initiator that has sent its first message, reused while usable.

    Both sides keep no per-round state besides have/need (which garbage may
    grow harmlessly), so one pair serves many hostile messages.
    """
    pair = _PEERS.get(id(sets))
    if pair is None or pair[1].done:
        initiator = Reconciler(sets[0], max_rounds=10**9, **_PARAMS)
        initiator.initiate()
        pair = _PEERS[id(sets)] = (Reconciler(sets[1], max_rounds=10**9, **_PARAMS), initiator)
    return pair


def _feed_both(data: bytes, sets: Sets = _SETS) -> None:
    """Hostile bytes may only ever cause InvalidObject, on either side."""
    responder, initiator = _peers(sets)
    for call in (responder.respond, initiator.reconcile):
        with contextlib.suppress(InvalidObject):
            call(data)
    try:
        decoded = decode_message(data)
    except InvalidObject:
        return
    assert encode_message(decoded) == data  # anything accepted has exactly one encoding


def test_captured_session_uses_every_mode() -> None:
    modes = {r.mode for m in _CAPTURED.sent + _CAPTURED.received for r in decode_message(m)}
    assert modes == set(Mode)
    assert any(len(m) > 3500 for m in _CAPTURED.received)  # the frame limit was reached


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.binary(max_size=300).map(bytes([VERSION]).__add__)))
def test_garbage_raises_only_invalid_object(data: bytes) -> None:
    _feed_both(data)


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_mutated_messages_raise_only_invalid_object(data: st.DataObject) -> None:
    msgs = _CAPTURED.sent + _CAPTURED.received
    msg = bytearray(data.draw(st.sampled_from(msgs)))
    kind = data.draw(st.sampled_from(["truncate", "flip", "insert", "delete", "splice"]))
    pos = data.draw(st.integers(0, len(msg) - 1))
    if kind == "truncate":
        del msg[pos:]
    elif kind == "flip":
        msg[pos] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "insert":
        msg[pos:pos] = data.draw(st.binary(min_size=1, max_size=40))
    elif kind == "delete":
        del msg[pos : pos + data.draw(st.integers(1, 40))]
    else:  # splice the tail of another message
        other = data.draw(st.sampled_from(msgs))
        msg = msg[:pos] + other[data.draw(st.integers(0, len(other))) :]
    _feed_both(bytes(msg))


@pytest.mark.slow
def test_every_truncation_and_bit_flip_of_real_messages() -> None:
    for msg in _TINY.sent + _TINY.received:
        for cut in range(len(msg)):
            _feed_both(msg[:cut], _TINY_SETS)
        for pos in range(len(msg)):
            for bit in range(8):
                flipped = bytearray(msg)
                flipped[pos] ^= 1 << bit
                _feed_both(bytes(flipped), _TINY_SETS)


def _invalid(data: bytes, code: str) -> None:
    with pytest.raises(InvalidObject) as err:
        decode_message(data)
    assert err.value.code == code, str(err.value)


def _bound(ts: int, prefix: bytes = b"") -> bytes:
    return encode_varint(ts + 1) + encode_varint(len(prefix)) + prefix


V = bytes([VERSION])
FP = b"\x01" + bytes(16)  # mode Fingerprint + payload
INF = b"\x00\x00"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "truncated"),
        (b"\x61", "version"),  # negentropy v1 is not spoken here
        (V + b"\x80\x01\x00\x00", "varint"),  # non-minimal varint
        (V + b"\x81" * 10 + b"\x00", "varint"),  # 11-byte varint
        (V + b"\x82" + b"\x80" * 8 + b"\x00", "varint"),  # value >= 2**64
        (V + _bound(5) + FP + encode_varint(2**64 - 1) + b"\x00" + FP, "bound"),  # t >= 2**64 - 1
        (V + b"\x01" + encode_varint(33) + b"\x01" * 33, "bound"),  # prefix longer than an id
        (V + b"\x01\x02\x05\x00" + FP, "bound"),  # prefix ends in a zero byte
        (V + b"\x00\x01\x05" + FP, "bound"),  # infinity bound with a prefix
        (V + b"\x01\x00" + FP, "bound"),  # upper bound (0, "") equals the first lower bound
        (V + _bound(5) + FP + b"\x01\x00" + FP, "bound"),  # same bound twice (delta 0)
        (V + _bound(5) + FP + INF + FP + _bound(9) + FP, "bound"),  # range after infinity
        (V + _bound(5) + b"\x00" + _bound(4) + b"\x00" + INF + FP, "canonical"),  # adjacent Skips
        (V + _bound(5) + FP + INF + b"\x00", "canonical"),  # trailing Skip
        (V + INF + b"\x04", "mode"),  # mode 4 (negentropy's continuation) is unknown
        (V + INF + b"\x02\x02" + bytes(64), "duplicate"),
        (V + INF + b"\x02\x03" + bytes(64), "truncated"),  # count exceeds the bytes present
        (V + INF + b"\x02" + encode_varint(2**63), "truncated"),  # huge count, no allocation
        (V + INF + b"\x03\x00\x03\x01", "canonical"),  # IdDiff padding bit set
        (V + INF + b"\x03\x00" + encode_varint(2**40), "truncated"),  # huge bitmap
        (V + INF + b"\x01" + bytes(15), "truncated"),
        (V + INF + FP + b"\x00", "bound"),  # trailing garbage is a range after infinity
        (V + b"\x01\x00\x00" * (DEFAULT_FRAME_LIMIT // 3 + 1), "limit"),  # longer than a frame
    ],
)
def test_strict_decoding(data: bytes, code: str) -> None:
    _invalid(data, code)


def test_too_many_ranges() -> None:
    body = b"".join(_bound(1) + FP if n == 0 else b"\x02\x00" + FP for n in range(10))
    with pytest.raises(InvalidObject) as err:
        decode_message(V + body, max_ranges=5)
    assert err.value.code == "limit"


def test_semantic_checks_on_iddiff() -> None:
    ids = [bytes([n]) * 32 for n in range(1, 4)]
    a = [(1, ids[0]), (2, ids[1])]
    # A responder never accepts IdDiff.
    with pytest.raises(InvalidObject, match="only sent by the responder"):
        Reconciler([]).respond(encode_message([Range(INFINITE_BOUND, Mode.IDDIFF)]))

    def initiator() -> Reconciler:
        r = Reconciler(a)
        r.initiate()
        return r

    # The bitmap must cover exactly the ids the initiator listed (2 here).
    bad_count = Range(INFINITE_BOUND, Mode.IDDIFF, listed=3, bitmap=b"\x00")
    with pytest.raises(InvalidObject) as err:
        initiator().reconcile(encode_message([bad_count]))
    assert err.value.code == "bitmap"
    # A "missing" id cannot be one the initiator itself listed.
    lie = Range(INFINITE_BOUND, Mode.IDDIFF, ids=(ids[0],), listed=2, bitmap=b"\x00")
    with pytest.raises(InvalidObject) as err:
        initiator().reconcile(encode_message([lie]))
    assert err.value.code == "conflict"
    # A well-formed one is applied.
    r = initiator()
    ok = Range(INFINITE_BOUND, Mode.IDDIFF, ids=(ids[2],), listed=2, bitmap=b"\x40")
    assert r.reconcile(encode_message([ok])) is None
    assert (r.have, r.need) == ({ids[1]}, {ids[2]})


def test_peer_driven_limits() -> None:
    full = random_items(600, random.Random(5))
    # Rounds: a session that needs several rounds is cut off.
    ini = Reconciler([], max_rounds=2, frame_limit=4096)
    res = Reconciler(full, frame_limit=4096)
    msg = ini.initiate()
    with pytest.raises(InvalidObject) as err:
        for _ in range(10):
            msg = ini.reconcile(res.respond(msg))
    assert err.value.code == "limit"
    # Ids: a peer cannot make the need set grow without bound.
    ini = Reconciler([], max_ids=100)
    res = Reconciler(full)
    with pytest.raises(InvalidObject) as err:
        ini.reconcile(res.respond(ini.initiate()))
    assert err.value.code == "limit"
    # Frames: a message above our frame limit is refused before decoding.
    with pytest.raises(InvalidObject) as err:
        oversized = V + INF + b"\x02" + encode_varint(128) + bytes(128 * 32)
        Reconciler([], frame_limit=4096).respond(oversized)
    assert err.value.code == "limit"


# ------------------------------------------------------------------ API use


def test_local_items_are_checked() -> None:
    good = bytes(32)
    for bad, path in [
        ([(1, good, 3)], "items[0]"),
        ([(-1, good)], "items[0].timestamp"),
        ([(INFINITY, good)], "items[0].timestamp"),
        ([(True, good)], "items[0].timestamp"),
        ([(1, b"short")], "items[0].id"),
        ([(1, bytearray(32))], "items[0].id"),
        ([(1, good), (2, good)], "items[1].id"),
    ]:
        with pytest.raises(InvalidObject) as err:
            Reconciler(bad)
        assert err.value.path == path
    assert len(Reconciler([(1, good), (1, good)])) == 1  # a set: duplicates collapse


def test_misuse_and_parameters() -> None:
    with pytest.raises(RuntimeError):
        Reconciler([]).reconcile(V)
    r = Reconciler([])
    r.initiate()
    with pytest.raises(RuntimeError):
        r.initiate()
    with pytest.raises(RuntimeError):
        r.respond(V)
    assert r.reconcile(V) is None and r.done
    with pytest.raises(RuntimeError):
        r.reconcile(V)
    for kw in ({"frame_limit": 1000}, {"buckets": 1}, {"buckets": 100, "frame_limit": 4096}, {"idlist_threshold": 0}):
        with pytest.raises(ValueError):
            Reconciler([], **kw)

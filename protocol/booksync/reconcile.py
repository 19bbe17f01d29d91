"""Range-based set reconciliation ("swapmeet-rbsr/1"), a sans-IO state machine.

Two nodes each hold a set of *items* ``(timestamp, id)``. After a few message
rounds the *initiator* knows exactly which ids it has that the *responder*
lacks (``have``) and which ids the responder has that it lacks (``need``).
Traffic grows with the size of the difference, not the size of the sets.

The method is Aljoscha Meyer's range-based set reconciliation as used by
negentropy protocol v1 (same ordering, bounds, varints and fingerprint), with
one addition (the ``IdDiff`` reply, mode 3) that halves the cost of the last
step, and stricter decoding rules. It is *not* wire compatible with
negentropy: the version byte differs on purpose.

This module does no I/O: it turns bytes into bytes. The node moves them over a
stream (the initiator closes the stream once :meth:`Reconciler.reconcile`
returns ``None``) and then transfers the objects named in ``have``/``need``.

Specification
=============

Items and order
---------------
An item is ``(timestamp, id)``: ``timestamp`` an integer ``0 <= t < 2**64 - 1``
(``2**64 - 1`` is reserved as "infinity"), ``id`` exactly 32 bytes. One id has
one timestamp. Items are ordered by timestamp, then by id compared as unsigned
bytes (lexicographically). Each side sorts its own set once per session and
does not change it during the session.

Varint
------
Unsigned integer in base 128, most significant group first, high bit set on
every byte except the last (as negentropy; *not* LEB128): ``0 -> 00``,
``127 -> 7f``, ``128 -> 81 00``, ``300 -> 82 2c``. Decoders reject a
non-minimal encoding (first byte ``80``), more than 10 bytes, and values
``>= 2**64``.

Fingerprint
-----------
Of a list of ids: the sum of the ids read as little-endian unsigned 256-bit
integers, modulo ``2**256``, written as 32 little-endian bytes, followed by
the varint of the number of ids; SHA-256 of that; the first 16 bytes. (The
same function as negentropy v1.) The fingerprint of no ids is therefore
``SHA-256(32 zero bytes || 00)[:16]``.

Bounds and ranges
-----------------
A *bound* ``(t, prefix)`` stands for the point ``(t, prefix padded with zero
bytes to 32)`` in the item order. A range ``[lower, upper)`` holds the items
``lower <= item < upper``. Only upper bounds are sent: the lower bound of the
first range of a message is ``(0, "")`` and the lower bound of every other
range is the upper bound of the range before it, so the ranges of a message
tile ``[(0, ""), upper bound of its last range)``. Everything above the last
range is an implicit Skip. The "infinity" bound ``(2**64 - 1, "")`` lies above
every item.

Senders use the shortest bound that separates two neighbouring items ``a < b``
of their own set: ``(b.t, "")`` if the timestamps differ, otherwise
``(b.t, b.id[:n + 1])`` where ``n`` is the length of the common prefix of the
two ids.

Wire format
-----------
::

    Message  := <version: byte 0x01> <Range>*
    Range    := <upper: Bound> <mode: Varint> <payload>
    Bound    := <encodedTimestamp: Varint> <length: Varint> <prefix: byte * length>
    mode 0  Skip         payload empty
    mode 1  Fingerprint  payload <fingerprint: 16 bytes>
    mode 2  IdList       payload <n: Varint> <id: 32 bytes> * n
    mode 3  IdDiff       payload <k: Varint> <id: 32 bytes> * k
                                 <m: Varint> <bitmap: ceil(m / 8) bytes>

``encodedTimestamp`` is ``0`` for infinity, otherwise ``1 + (t - previous)``
where ``previous`` is the timestamp of the previous finite bound in the same
message (``0`` for the first).

A decoder MUST reject (``InvalidObject``) a message that:

* is empty, is longer than the frame limit, or has a version byte other than 1;
* is truncated anywhere (every byte after the version belongs to a range);
* has a bound whose timestamp is ``>= 2**64 - 1`` without using the infinity
  encoding, a prefix longer than 32 bytes, a prefix ending in a zero byte
  (it would equal the shorter prefix), or an infinity bound with a prefix;
* has upper bounds that do not strictly increase (starting above ``(0, "")``),
  or any range after an infinity bound;
* has two adjacent Skip ranges, or a Skip as its last range (both are
  expressed by coalescing/omission, so every message has one encoding);
* has a mode other than 0-3, an id repeated within one IdList or IdDiff, or
  non-zero padding bits in an IdDiff bitmap;
* has more than ``max(16384, frame_limit // 4)`` ranges (16384 at the default
  frame limit; honest messages stay far below it).

Semantics
---------
The initiator sends the first message, covering the whole universe. Then each
side answers every message with a message covering the same ground, range by
range, in order; adjacent Skips are coalesced and a trailing Skip omitted:

* **Skip**: nothing to do there; answered with Skip.
* **Fingerprint** (of the sender's items in the range): the receiver compares
  it with the fingerprint of its own items in the range. Equal: Skip.
  Different: if the receiver holds at most ``idlist_threshold`` items there
  (an implementation choice, default 16) it answers with an **IdList** of all
  of them, in item order; otherwise it splits its items in the range into
  ``min(buckets, count)`` non-empty groups of (nearly) equal size, cut at the
  shortest bounds between neighbours, and sends one Fingerprint range per
  group (the last group keeps the received upper bound). A split always
  produces at least two ranges, which guarantees termination.
* **IdList** (all the sender's ids in the range):
  - received by the initiator: it now knows the range exactly. Its own ids
    there that are not in the list go to ``have``, listed ids it lacks go to
    ``need``; answered with Skip.
  - received by the responder: it answers with an **IdDiff** over the same
    range: the ``k`` ids it holds in the range that the list lacks (in item
    order), then ``m`` = the number of ids in the received list and a bitmap
    whose bit ``i`` (bit ``0x80 >> (i % 8)`` of byte ``i // 8``) is 1 when the
    responder does *not* hold the ``i``-th listed id; padding bits are 0. If
    nothing differs it answers Skip. If the IdDiff does not fit in the frame
    it may answer with an IdList of its own ids instead (see below).
* **IdDiff** is only valid from the responder to the initiator. The
  initiator checks that ``m`` equals the number of its own items in the range
  (the ids it listed) and that none of the ``k`` ids is among them, then adds
  the ``k`` ids to ``need`` and its flagged ids to ``have``; answered with Skip.

The protocol ends when the initiator's answer is empty (no ranges): it then
has complete ``have``/``need`` sets and sends nothing more. The responder's
answer to a message that needed no work is a message with no ranges (just
the version byte).

Frame limit
-----------
No message may exceed the frame limit (both sides use the same value;
default 65536 bytes, minimum 4096). A sender that would exceed it stops
before the answer to some received range and ends its message with a single
*remainder* Fingerprint range: upper bound infinity, covering its own items
from the lower bound of that range to the end (everything it has not
answered, including later ranges, even ones the peer had marked Skip). The
peer treats it as any other Fingerprint, so the rest of the work continues in
later rounds. An IdList that does not fit may be cut: an IdList of the first
ids, closed by the shortest bound before the first id left out, then the
remainder Fingerprint from that bound. A sender always answers (or cuts) at
least the first non-Skip range it received, so every round makes progress and
the lowest unresolved point only moves up.

Resource limits
---------------
Besides the frame limit and the range cap, a :class:`Reconciler` stops a
session (``InvalidObject`` with code ``"limit"``) after ``max_rounds`` received
messages or once ``need`` exceeds ``max_ids``. Per message, work is bounded
by the message size plus one pass over the local items.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from itertools import accumulate, repeat
from typing import NoReturn

from ..errors import InvalidObject

VERSION = 0x01
ID_SIZE = 32
FINGERPRINT_SIZE = 16
INFINITY = 2**64 - 1  # reserved timestamp: above every item
DEFAULT_FRAME_LIMIT = 65536
MIN_FRAME_LIMIT = 4096
DEFAULT_BUCKETS = 16
DEFAULT_IDLIST_THRESHOLD = 16
MAX_RANGES = 16384
DEFAULT_MAX_ROUNDS = 1024
DEFAULT_MAX_IDS = 1_000_000

_MOD_MASK = 2**256 - 1
_ZERO_ID = bytes(ID_SIZE)
_MAX_VARINT_BYTES = 10  # ceil(64 / 7)
_SMALL_VARINTS = [bytes((i,)) for i in range(128)]
# Worst-case size of one encoded range without payload: timestamp varint (10),
# prefix length (1), prefix (32), mode (1).
_MAX_RANGE_HEAD = 44
# Room kept free in every message for what may have to follow when the frame
# fills up: a pending Skip (44) plus the remainder Fingerprint to infinity
# (2 + 1 + 16).
_RESERVE = _MAX_RANGE_HEAD + 19

Bound = tuple[int, bytes]
"""``(timestamp, id prefix)``; the prefix never ends in a zero byte."""

MIN_BOUND: Bound = (0, b"")
INFINITE_BOUND: Bound = (INFINITY, b"")


class Mode(IntEnum):
    """What a range's payload is (the varint after its bound)."""

    SKIP = 0
    FINGERPRINT = 1
    IDLIST = 2
    IDDIFF = 3


@dataclass(frozen=True, slots=True)
class Range:
    """One decoded range. Which payload fields are meaningful depends on ``mode``."""

    upper: Bound
    mode: Mode
    fingerprint: bytes = b""  # FINGERPRINT
    ids: tuple[bytes, ...] = ()  # IDLIST: all ids; IDDIFF: ids the listing side lacks
    listed: int = 0  # IDDIFF: m, the number of ids the bitmap covers
    bitmap: bytes = b""  # IDDIFF: bit i set = the responder lacks listed id i


# --------------------------------------------------------------------------- codec


def encode_varint(n: int) -> bytes:
    """Big-endian base-128 varint (negentropy style)."""
    if 0 <= n < 128:
        return _SMALL_VARINTS[n]  # modes, lengths, counts: the common case
    if n < 0 or n > INFINITY:
        raise ValueError(f"varint out of range: {n}")
    out = bytearray((n & 0x7F,))
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.reverse()
    return bytes(out)


def _key(bound: Bound) -> tuple[int, bytes]:
    """The point in item order that a bound stands for."""
    ts, prefix = bound
    return ts, prefix + _ZERO_ID[len(prefix) :]


def fingerprint(ids: Iterable[bytes]) -> bytes:
    """Fingerprint of a collection of ids (order does not matter)."""
    total = 0
    count = 0
    for i in ids:
        total += int.from_bytes(i, "little")
        count += 1
    return _fingerprint_of_sum(total, count)


def _fingerprint_of_sum(total: int, count: int) -> bytes:
    data = (total & _MOD_MASK).to_bytes(32, "little") + encode_varint(count)
    return hashlib.sha256(data).digest()[:FINGERPRINT_SIZE]


def _pack_bits(flags: Sequence[bool]) -> bytes:
    out = bytearray((len(flags) + 7) // 8)
    for i, flag in enumerate(flags):
        if flag:
            out[i >> 3] |= 0x80 >> (i & 7)
    return bytes(out)


def _bit(bitmap: bytes, i: int) -> bool:
    return bool(bitmap[i >> 3] & (0x80 >> (i & 7)))


class _Writer:
    """Appends ranges to a message, tracking the timestamp delta base."""

    __slots__ = ("buf", "last_ts")

    def __init__(self) -> None:
        self.buf = bytearray((VERSION,))
        self.last_ts = 0

    def range(self, r: Range) -> None:
        ts, prefix = r.upper
        buf = self.buf
        if ts == INFINITY:
            buf += b"\x00\x00"
        else:
            buf += encode_varint(ts - self.last_ts + 1)
            self.last_ts = ts
            buf += encode_varint(len(prefix))
            buf += prefix
        buf += encode_varint(r.mode)
        if r.mode == Mode.FINGERPRINT:
            buf += r.fingerprint
        elif r.mode == Mode.IDLIST:
            buf += encode_varint(len(r.ids))
            buf += b"".join(r.ids)
        elif r.mode == Mode.IDDIFF:
            buf += encode_varint(len(r.ids))
            buf += b"".join(r.ids)
            buf += encode_varint(r.listed)
            buf += r.bitmap

    def mark(self) -> tuple[int, int]:
        return len(self.buf), self.last_ts

    def reset(self, mark: tuple[int, int]) -> None:
        del self.buf[mark[0] :]
        self.last_ts = mark[1]


def encode_message(ranges: Iterable[Range]) -> bytes:
    """Encode ranges verbatim (the caller keeps bounds increasing and Skips coalesced)."""
    w = _Writer()
    for r in ranges:
        w.range(r)
    return bytes(w.buf)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, path: str) -> bytes:
        if n > self.remaining():
            raise InvalidObject(path, f"truncated: needs {n} bytes, {self.remaining()} left", "truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def varint(self, path: str) -> int:
        data = self.data
        result = 0
        for i in range(_MAX_VARINT_BYTES):
            if self.pos >= len(data):
                raise InvalidObject(path, "truncated varint", "truncated")
            b = data[self.pos]
            self.pos += 1
            if i == 0 and b == 0x80:
                raise InvalidObject(path, "non-minimal varint", "varint")
            result = (result << 7) | (b & 0x7F)
            if not b & 0x80:
                if result > INFINITY:
                    raise InvalidObject(path, "varint exceeds 2**64 - 1", "varint")
                return result
        raise InvalidObject(path, f"varint longer than {_MAX_VARINT_BYTES} bytes", "varint")


def decode_message(data: bytes, *, max_size: int = DEFAULT_FRAME_LIMIT, max_ranges: int = MAX_RANGES) -> list[Range]:
    """Strictly decode one message; any defect raises ``InvalidObject`` and nothing else."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidObject("reconcile", f"expected bytes, got {type(data).__name__}", "type")
    data = bytes(data)
    if len(data) > max_size:
        raise InvalidObject("reconcile", f"message of {len(data)} bytes exceeds the frame limit of {max_size}", "limit")
    if not data:
        raise InvalidObject("reconcile.version", "empty message", "truncated")
    if data[0] != VERSION:
        raise InvalidObject("reconcile.version", f"unsupported version {data[0]}", "version")
    r = _Reader(data, 1)
    ranges: list[Range] = []
    last_ts = 0
    prev_key = _key(MIN_BOUND)
    prev_mode: Mode | None = None
    while r.remaining():
        i = len(ranges)
        path = f"reconcile.ranges[{i}]"
        if i >= max_ranges:
            raise InvalidObject("reconcile.ranges", f"more than {max_ranges} ranges", "limit")
        if prev_key[0] == INFINITY:
            raise InvalidObject(path, "range after the infinity bound", "bound")
        enc = r.varint(path + ".upper.timestamp")
        if enc == 0:
            ts = INFINITY
        else:
            ts = last_ts + enc - 1
            if ts >= INFINITY:
                raise InvalidObject(path + ".upper.timestamp", "timestamp out of range", "bound")
            last_ts = ts
        plen = r.varint(path + ".upper.length")
        if plen > ID_SIZE:
            raise InvalidObject(path + ".upper.length", f"prefix of {plen} bytes", "bound")
        prefix = r.take(plen, path + ".upper.prefix")
        if ts == INFINITY and plen:
            raise InvalidObject(path + ".upper.prefix", "infinity bound with a prefix", "bound")
        if plen and prefix[-1] == 0:
            raise InvalidObject(path + ".upper.prefix", "prefix ends in a zero byte", "bound")
        upper = (ts, prefix)
        key = _key(upper)
        if key <= prev_key:
            raise InvalidObject(path + ".upper", "bounds must strictly increase", "bound")
        prev_key = key
        mode_n = r.varint(path + ".mode")
        if mode_n == Mode.SKIP:
            if prev_mode == Mode.SKIP:
                raise InvalidObject(path, "adjacent Skip ranges must be coalesced", "canonical")
            rng = Range(upper, Mode.SKIP)
        elif mode_n == Mode.FINGERPRINT:
            rng = Range(upper, Mode.FINGERPRINT, fingerprint=r.take(FINGERPRINT_SIZE, path + ".fingerprint"))
        elif mode_n == Mode.IDLIST:
            rng = Range(upper, Mode.IDLIST, ids=_read_ids(r, path))
        elif mode_n == Mode.IDDIFF:
            ids = _read_ids(r, path)
            m = r.varint(path + ".listed")
            nbytes = (m + 7) // 8
            bitmap = r.take(nbytes, path + ".bitmap")
            if m % 8 and bitmap[-1] & (0xFF >> (m % 8)):
                raise InvalidObject(path + ".bitmap", "non-zero padding bits", "canonical")
            rng = Range(upper, Mode.IDDIFF, ids=ids, listed=m, bitmap=bitmap)
        else:
            raise InvalidObject(path + ".mode", f"unknown mode {mode_n}", "mode")
        prev_mode = rng.mode
        ranges.append(rng)
    if prev_mode == Mode.SKIP:
        raise InvalidObject(
            f"reconcile.ranges[{len(ranges) - 1}]", "a trailing Skip range must be omitted", "canonical"
        )
    return ranges


def _read_ids(r: _Reader, path: str) -> tuple[bytes, ...]:
    n = r.varint(path + ".count")
    # Check against the bytes actually present before allocating anything.
    if n > r.remaining() // ID_SIZE:
        raise InvalidObject(path + ".count", f"{n} ids announced, message too short", "truncated")
    start = r.pos
    ids = tuple(r.data[start + j * ID_SIZE : start + (j + 1) * ID_SIZE] for j in range(n))
    r.pos = start + n * ID_SIZE
    if len(set(ids)) != n:
        raise InvalidObject(path + ".ids", "repeated id", "duplicate")
    return ids


# ---------------------------------------------------------------- state machine


def _explain_bad_items(items: list) -> NoReturn:
    """Raise the precise error for the first bad local item."""
    seen: dict[bytes, int] = {}
    for n, item in enumerate(items):
        try:
            ts, id_ = item
        except (TypeError, ValueError):
            raise InvalidObject(f"items[{n}]", "must be a (timestamp, id) pair") from None
        if type(ts) is not int or not 0 <= ts < INFINITY:
            raise InvalidObject(f"items[{n}].timestamp", "must be an int in [0, 2**64 - 1)")
        if type(id_) is not bytes or len(id_) != ID_SIZE:
            raise InvalidObject(f"items[{n}].id", f"must be {ID_SIZE} bytes")
        if seen.setdefault(id_, ts) != ts:
            raise InvalidObject(f"items[{n}].id", "same id with two timestamps", "duplicate")
    raise InvalidObject("items", "invalid items")


class _Output:
    """A message under construction, with Skip coalescing and the frame budget."""

    __slots__ = ("limit", "pending_skip", "w")

    def __init__(self, frame_limit: int) -> None:
        self.w = _Writer()
        self.limit = frame_limit - _RESERVE
        self.pending_skip: Bound | None = None

    def skip(self, upper: Bound) -> None:
        self.pending_skip = upper  # coalesced with any earlier pending Skip

    def add(self, pieces: Iterable[Range]) -> bool:
        """Append ranges if they fit in the budget; otherwise leave the message unchanged."""
        mark = self.w.mark()
        if self.pending_skip is not None:
            self.w.range(Range(self.pending_skip, Mode.SKIP))
        for p in pieces:
            self.w.range(p)
        if len(self.w.buf) > self.limit:
            self.w.reset(mark)
            return False
        self.pending_skip = None
        return True

    def used(self) -> int:
        return len(self.w.buf)

    def close_with_remainder(self, fp: bytes) -> None:
        # The reserve guarantees this fits even after a failed add().
        if self.pending_skip is not None:
            self.w.range(Range(self.pending_skip, Mode.SKIP))
            self.pending_skip = None
        self.w.range(Range(INFINITE_BOUND, Mode.FINGERPRINT, fingerprint=fp))

    def finish(self) -> bytes:
        return bytes(self.w.buf)  # a pending Skip is trailing: omitted


class Reconciler:
    """One side of one reconciliation session over a fixed set of items.

    Call :meth:`initiate` then :meth:`reconcile` on the initiating side, or
    :meth:`respond` on the other; one instance plays one role once. Every
    message is checked strictly; any defect or limit overrun raises
    ``InvalidObject``, after which the instance must be discarded.
    """

    def __init__(
        self,
        items: Iterable[tuple[int, bytes]],
        *,
        frame_limit: int = DEFAULT_FRAME_LIMIT,
        buckets: int = DEFAULT_BUCKETS,
        idlist_threshold: int = DEFAULT_IDLIST_THRESHOLD,
        max_rounds: int = DEFAULT_MAX_ROUNDS,
        max_ids: int = DEFAULT_MAX_IDS,
    ) -> None:
        if frame_limit < MIN_FRAME_LIMIT:
            raise ValueError(f"frame_limit must be at least {MIN_FRAME_LIMIT}")
        # A full split must fit in an otherwise empty frame, or a round could
        # end without progress.
        split_size = buckets * (_MAX_RANGE_HEAD + FINGERPRINT_SIZE)
        if buckets < 2 or split_size + 2 * _RESERVE + 1 > frame_limit:
            raise ValueError("buckets must be >= 2 and a full split must fit in one frame")
        if idlist_threshold < 1:
            # With 0, a range holding one item would be "split" into one range
            # equal to itself and two peers could bounce it forever.
            raise ValueError("idlist_threshold must be >= 1")
        self.frame_limit = frame_limit
        self.buckets = buckets
        self.idlist_threshold = idlist_threshold
        self.max_rounds = max_rounds
        self.max_ids = max_ids

        items = list(items)
        # Fast path: C-level checks over the whole list (10k items in ~10 ms);
        # on any doubt the slow item-by-item loop names the offending item.
        try:
            keys = sorted({(ts, id_) for ts, id_ in items})
        except (TypeError, ValueError):
            _explain_bad_items(items)
        ids = [k[1] for k in keys]
        stamps = [k[0] for k in keys]
        if keys and not (
            set(map(type, stamps)) == {int}
            and set(map(type, ids)) == {bytes}
            and set(map(len, ids)) == {ID_SIZE}
            and stamps[0] >= 0
            and stamps[-1] < INFINITY
            and len(set(ids)) == len(ids)
        ):
            _explain_bad_items(items)
        # Sorted once per session; the prefix sums make any range's
        # fingerprint O(1) and bisect on the keys finds a bound in O(log n).
        self._keys: list[tuple[int, bytes]] = keys
        self._ids: list[bytes] = ids
        self._sums: list[int] = [0, *accumulate(map(int.from_bytes, ids, repeat("little")))]

        self.have: set[bytes] = set()
        self.need: set[bytes] = set()
        self.rounds = 0  # messages received
        self.done = False
        self._role: str | None = None

    def __len__(self) -> int:
        return len(self._ids)

    # ---- public API

    def initiate(self) -> bytes:
        """The initiator's first message: the whole universe, split or listed."""
        if self._role is not None:
            raise RuntimeError("initiate() must be the first call, and only once")
        self._role = "initiator"
        out = _Output(self.frame_limit)
        stop = self._answer_mismatch(out, 0, len(self._ids), INFINITE_BOUND)
        if stop is not None:
            out.close_with_remainder(self._fingerprint(stop, len(self._ids)))
        return out.finish()

    def reconcile(self, msg: bytes) -> bytes | None:
        """Initiator: process the responder's message; the next message, or None when done."""
        if self._role != "initiator" or self.done:
            raise RuntimeError("reconcile() is for an initiator that is not finished")
        reply = self._receive(msg, initiator=True)
        if len(reply) == 1:  # no ranges: everything is resolved
            self.done = True
            return None
        return reply

    def respond(self, msg: bytes) -> bytes:
        """Responder: process the initiator's message and return the reply (always send it).

        A reply without ranges (just the version byte) means this side had
        nothing left to say; ``done`` is then True.
        """
        if self._role == "initiator":
            raise RuntimeError("respond() is for the responding side")
        self._role = "responder"
        reply = self._receive(msg, initiator=False)
        self.done = len(reply) == 1
        return reply

    # ---- internals

    def _fingerprint(self, lo: int, hi: int) -> bytes:
        return _fingerprint_of_sum(self._sums[hi] - self._sums[lo], hi - lo)

    def _bound_before(self, i: int) -> Bound:
        """The shortest bound above item i-1 and at most item i (0 < i < n)."""
        ts, cur = self._keys[i]
        prev_ts, prev = self._keys[i - 1]
        if prev_ts != ts:
            return (ts, b"")
        j = 0
        while cur[j] == prev[j]:  # ids differ, so this stops before 32
            j += 1
        return (ts, cur[: j + 1])

    def _index(self, bound: Bound) -> int:
        if bound[0] == INFINITY:
            return len(self._keys)
        return bisect_left(self._keys, _key(bound))

    def _receive(self, msg: bytes, *, initiator: bool) -> bytes:
        self.rounds += 1
        if self.rounds > self.max_rounds:
            raise InvalidObject("reconcile", f"more than {self.max_rounds} rounds", "limit")
        ranges = decode_message(msg, max_size=self.frame_limit, max_ranges=max(MAX_RANGES, self.frame_limit // 4))
        out = _Output(self.frame_limit)
        lo = 0  # index of our first item at or above the current lower bound
        for n, r in enumerate(ranges):
            hi = self._index(r.upper)
            stop: int | None = None
            if r.mode == Mode.SKIP:
                out.skip(r.upper)
            elif r.mode == Mode.FINGERPRINT:
                if self._fingerprint(lo, hi) == r.fingerprint:
                    out.skip(r.upper)
                else:
                    stop = self._answer_mismatch(out, lo, hi, r.upper)
            elif r.mode == Mode.IDLIST:
                if initiator:
                    self._resolve_list(lo, hi, r.ids)
                    out.skip(r.upper)
                else:
                    stop = self._answer_list(out, lo, hi, r)
            else:  # IDDIFF
                if not initiator:
                    raise InvalidObject(f"reconcile.ranges[{n}].mode", "IdDiff is only sent by the responder", "mode")
                self._resolve_diff(lo, hi, r, f"reconcile.ranges[{n}]")
                out.skip(r.upper)
            if stop is not None:
                # Frame full: hand everything from `stop` on back as one
                # Fingerprint; the peer re-splits it in a later round.
                out.close_with_remainder(self._fingerprint(stop, len(self._ids)))
                break
            lo = hi
        return out.finish()

    def _answer_mismatch(self, out: _Output, lo: int, hi: int, upper: Bound) -> int | None:
        """Answer a range whose fingerprints differ. Returns where the frame ran out, if it did."""
        count = hi - lo
        if count <= self.idlist_threshold:
            return self._send_ids(out, lo, hi, upper)
        nb = min(self.buckets, count)
        pieces = []
        start = lo
        for j in range(1, nb + 1):
            end = lo + count * j // nb
            bound = upper if j == nb else self._bound_before(end)
            pieces.append(Range(bound, Mode.FINGERPRINT, fingerprint=self._fingerprint(start, end)))
            start = end
        return None if out.add(pieces) else lo

    def _send_ids(self, out: _Output, lo: int, hi: int, upper: Bound) -> int | None:
        """IdList of our items in [lo, hi), cut short if the frame is too small for all."""
        if out.add([Range(upper, Mode.IDLIST, ids=tuple(self._ids[lo:hi]))]):
            return None
        # Room for ids after the worst-case pending Skip and range head.
        fit = (out.limit - out.used() - 2 * _MAX_RANGE_HEAD - _MAX_VARINT_BYTES) // ID_SIZE
        fit = min(fit, hi - lo - 1)
        if fit < 1:
            return lo
        cut = lo + fit
        ok = out.add([Range(self._bound_before(cut), Mode.IDLIST, ids=tuple(self._ids[lo:cut]))])
        assert ok, "IdList chunk size computed wrongly"
        return cut

    def _answer_list(self, out: _Output, lo: int, hi: int, r: Range) -> int | None:
        """Responder: answer the initiator's IdList with what differs."""
        own = self._ids[lo:hi]
        theirs = set(r.ids)
        mine = set(own)
        extra = tuple(i for i in own if i not in theirs)
        lacks = [i not in mine for i in r.ids]
        if not extra and not any(lacks):
            out.skip(r.upper)
            return None
        diff = Range(r.upper, Mode.IDDIFF, ids=extra, listed=len(r.ids), bitmap=_pack_bits(lacks))
        if out.add([diff]):
            return None
        # Too many ids of ours for one frame: a (possibly cut) IdList of ours
        # tells the initiator the same thing for the part it covers.
        return self._send_ids(out, lo, hi, r.upper)

    def _resolve_list(self, lo: int, hi: int, their_ids: tuple[bytes, ...]) -> None:
        own = self._ids[lo:hi]
        theirs = set(their_ids)
        mine = set(own)
        self.have.update(i for i in own if i not in theirs)
        self.need.update(i for i in their_ids if i not in mine)
        self._check_need()

    def _resolve_diff(self, lo: int, hi: int, r: Range, path: str) -> None:
        own = self._ids[lo:hi]
        if r.listed != len(own):
            raise InvalidObject(path + ".listed", f"covers {r.listed} ids but we listed {len(own)} there", "bitmap")
        mine = set(own)
        for j, i in enumerate(r.ids):
            if i in mine:
                raise InvalidObject(f"{path}.ids[{j}]", "id we listed reported as missing", "conflict")
        self.have.update(i for n, i in enumerate(own) if _bit(r.bitmap, n))
        self.need.update(r.ids)
        self._check_need()

    def _check_need(self) -> None:
        if len(self.need) > self.max_ids:
            raise InvalidObject("reconcile", f"peer announced more than {self.max_ids} ids", "limit")

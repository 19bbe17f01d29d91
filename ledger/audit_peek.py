"""A cheap look at the layout of a raw ledger entry, for routing and bookkeeping only.

The audit's parent process must decide which worker gets an entry, and later
find the bytes behind a finding's evidence, without paying for a full decode
(which is what the workers are for). :func:`peek` reads the canonical wire
layout of an entry by hand: ``[domain, "entry", author, {seq, prev, time,
payload}, signature]``, and for a rating payload the exchange it embeds.

Nothing read here is trusted. A peek only *routes* bytes (to the worker that
will verify them through :mod:`swapmeet.protocol.boundary`) or names the
*claimed* author and sequence number of an entry that the boundary rejected.
Bytes that do not have the expected layout give ``None``; they are still
audited, just routed by their hash.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from swapmeet.protocol import cbor
from swapmeet.protocol.objects import DOMAIN, KIND_ENTRY, KIND_EXCHANGE, KIND_RATING

_DOMAIN = cbor.encode(DOMAIN)
_ENTRY_PREFIX = b"\x85" + _DOMAIN + cbor.encode(KIND_ENTRY)
_EXCHANGE_PREFIX = b"\x84" + _DOMAIN + cbor.encode(KIND_EXCHANGE)
_RATING_PREFIX = b"\x85" + _DOMAIN + cbor.encode(KIND_RATING)
_SIG_TRAILER = b"\x58\x40"  # a 64-byte byte string
_SIG_TRAILER_SIZE = 2 + 64

# Map keys of a canonical entry body and rating body, in canonical order
# (RFC 8949 4.2.1 bytewise order of the encoded keys: shorter keys first).
_SEQ, _PREV, _TIME, _PAYLOAD = (cbor.encode(k) for k in ("seq", "prev", "time", "payload"))
_SCORE, _COMMENT, _CREATED, _SUBJECT, _EXCHANGE = (
    cbor.encode(k) for k in ("score", "comment", "created", "subject", "exchange")
)

_UINT, _BYTES, _TEXT, _MAP = 0, 2, 3, 5


@dataclass(frozen=True, slots=True)
class Peek:
    """What the layout of an entry claims (unverified)."""

    author: bytes
    seq: int
    prev: bytes
    payload: bytes
    exchange: bytes | None
    """The bytes of the exchange the payload is or embeds (a rating's), else None."""


def _head(data: bytes, i: int) -> tuple[int, int, int]:
    """(major type, argument, next offset) of the CBOR head at ``i``."""
    initial = data[i]
    major, info = initial >> 5, initial & 31
    if info < 24:
        return major, info, i + 1
    if info > 27:
        raise ValueError("not a definite-length head")
    size = 1 << (info - 24)
    if i + 1 + size > len(data):
        raise ValueError("truncated head")
    return major, int.from_bytes(data[i + 1 : i + 1 + size], "big"), i + 1 + size


def _expect(data: bytes, i: int, major: int) -> tuple[int, int]:
    found, value, i = _head(data, i)
    if found != major:
        raise ValueError("unexpected type")
    return value, i


def _key(data: bytes, i: int, key: bytes) -> int:
    if data[i : i + len(key)] != key:
        raise ValueError("unexpected key")
    return i + len(key)


def _bytes(data: bytes, i: int) -> tuple[bytes, int]:
    size, i = _expect(data, i, _BYTES)
    if i + size > len(data):
        raise ValueError("truncated byte string")
    return data[i : i + size], i + size


def _skip_text(data: bytes, i: int) -> int:
    size, i = _expect(data, i, _TEXT)
    return i + size


def peek(raw: bytes) -> Peek | None:
    """The claimed author, seq, prev and payload of a raw entry; None if it is not laid out like one."""
    try:
        if not raw.startswith(_ENTRY_PREFIX) or raw[-_SIG_TRAILER_SIZE:-64] != _SIG_TRAILER:
            return None
        author, i = _bytes(raw, len(_ENTRY_PREFIX))
        fields, i = _expect(raw, i, _MAP)
        if fields != 4 or len(author) != 32:
            return None
        seq, i = _expect(raw, _key(raw, i, _SEQ), _UINT)
        prev, i = _bytes(raw, _key(raw, i, _PREV))
        _time, i = _expect(raw, _key(raw, i, _TIME), _UINT)
        payload, i = _bytes(raw, _key(raw, i, _PAYLOAD))
        if i != len(raw) - _SIG_TRAILER_SIZE:
            return None
        return Peek(author, seq, prev, payload, embedded_exchange(payload))
    except (IndexError, ValueError):
        return None


def embedded_exchange(payload: bytes) -> bytes | None:
    """The exchange bytes of an entry payload: the payload itself, or the exchange a rating carries."""
    if payload.startswith(_EXCHANGE_PREFIX):
        return payload
    if not payload.startswith(_RATING_PREFIX):
        return None
    try:
        _author, i = _bytes(payload, len(_RATING_PREFIX))
        fields, i = _expect(payload, i, _MAP)
        if fields != 5:
            return None
        _score, i = _expect(payload, _key(payload, i, _SCORE), _UINT)
        i = _skip_text(payload, _key(payload, i, _COMMENT))
        _created, i = _expect(payload, _key(payload, i, _CREATED), _UINT)
        _subject, i = _bytes(payload, _key(payload, i, _SUBJECT))
        exchange, i = _bytes(payload, _key(payload, i, _EXCHANGE))
        return exchange if exchange.startswith(_EXCHANGE_PREFIX) else None
    except (IndexError, ValueError):
        return None


def grouping_key(raw: bytes) -> bytes:
    """The exchange bytes an entry carries (as :func:`peek` finds them), else the entry itself: a cheap grouping key.

    Faster than :func:`peek` (a few ``find`` calls instead of a field-by-field
    walk), because the parent computes it for every entry. Each candidate is
    confirmed by its byte-string head running exactly to where the value must
    end (the signature trailer of the entry, or of the rating), so text that
    merely contains a key name cannot fool it; when in doubt it falls back to
    :func:`peek`. Being only a key, a wrong answer would cost speed, never correctness.
    """
    end = len(raw) - _SIG_TRAILER_SIZE
    # The payload is the last field of an entry body, which starts after the 51 bytes of envelope and author.
    payload = _value_ending_at(raw, raw.find(_PAYLOAD, 51, 160), len(_PAYLOAD), end)
    if payload is None:
        claimed = peek(raw)
        return raw if claimed is None or claimed.exchange is None else claimed.exchange
    if payload.startswith(_EXCHANGE_PREFIX):
        return payload
    if payload.startswith(_RATING_PREFIX):
        # The exchange is the last field of a rating body; the comment before it is free text.
        at = payload.find(_EXCHANGE, len(_RATING_PREFIX) + 34)
        while at >= 0:
            found = _value_ending_at(payload, at, len(_EXCHANGE), len(payload) - _SIG_TRAILER_SIZE)
            if found is not None:
                return found
            at = payload.find(_EXCHANGE, at + 1)
    return raw


def _value_ending_at(data: bytes, key_at: int, key_size: int, end: int) -> bytes | None:
    """The byte string after the key at ``key_at``, if its head says it runs exactly to ``end``."""
    if key_at < 0:
        return None
    try:
        major, size, start = _head(data, key_at + key_size)
    except (IndexError, ValueError):
        return None
    return data[start:end] if major == _BYTES and start + size == end else None


def digest(data: bytes) -> bytes:
    """SHA-256 of some bytes: how entries and exchange encodings are matched across passes."""
    return hashlib.sha256(data).digest()

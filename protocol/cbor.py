"""Deterministic CBOR (RFC 8949 section 4.2.1): the only encoding swapmeet signs or hashes.

``encode`` produces core deterministic CBOR. ``decode`` is strict: it accepts
exactly the bytes ``encode`` would produce for the value it returns, so one value
has one encoding and one id. What it refuses, and why:

- more than ``max_size`` bytes or ``max_depth`` nested containers: bounds the
  memory and recursion a hostile peer can make us spend;
- tags (all of them, including bignums and self-describe): the protocol uses
  none, and cbor2 would otherwise build dates, decimals or shared references;
- floats, ``undefined`` and other simple values are let through here but no
  schema field accepts them (the schema layer checks every type exactly);
- indefinite lengths, duplicate map keys, non-text map keys, map keys out of
  the RFC 8949 bytewise order: each gives a second encoding of the same value;
- non-shortest integer or length heads and trailing bytes: caught by
  re-encoding the decoded value and comparing it with the input.

Every failure raises :class:`InvalidObject`; nothing else escapes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

import cbor2

from .errors import InvalidObject

DEFAULT_MAX_DEPTH = 8


def encode(value: Any) -> bytes:
    """Core deterministic CBOR of ``value`` (maps in bytewise key order, shortest heads)."""
    return cbor2.dumps(value, canonical=True)


class _RejectEveryTag(Mapping[int, Any]):
    """A ``semantic_decoders`` mapping that claims every tag and refuses it.

    cbor2 decodes many tags natively (dates, bignums, shared references...) and
    only calls ``tag_hook`` for the rest; claiming every tag here is the one way
    to see them all.
    """

    def __getitem__(self, tag: int) -> Any:
        # Any arguments: cbor2 6.2 calls a semantic decoder with the decoder, 6.3 with
        # (value, immutable), a shareable tag's initializer with (immutable). The refusal
        # must be ours whatever the version passes, not a TypeError that happens to be caught
        # (tests/test_protocol_rules.py checks the reason).
        def refuse(*_args: Any) -> NoReturn:
            raise ValueError(f"CBOR tag {tag} is not allowed")

        return refuse

    def __contains__(self, tag: object) -> bool:
        return True

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0


_REJECT_EVERY_TAG = _RejectEveryTag()
_loads = cbor2.loads
_dumps = cbor2.dumps
_KEY_ORDER_OK: dict[tuple[Any, ...], bool] = {}


def _deterministic_key_order(keys: tuple[Any, ...]) -> bool:
    # For text keys, RFC 8949 bytewise order of the *encoded* keys is exactly
    # (length of the UTF-8, then the UTF-8 bytes): the head grows with the length.
    if not all(type(k) is str for k in keys):
        return False
    encoded = [k.encode("utf-8") for k in keys]
    return all((len(a), a) < (len(b), b) for a, b in itertools.pairwise(encoded))


def _check_map(value: dict[Any, Any], _immutable: bool) -> dict[Any, Any]:
    # cbor2 6 calls object_hook(map, immutable) for every decoded map.
    keys = tuple(value)
    ok = _KEY_ORDER_OK.get(keys)
    if ok:  # only well-ordered key sets are ever cached
        return value
    if ok is None:
        ok = _deterministic_key_order(keys)
        # The schema has a few dozen key sets: cache only small, well-ordered ones, so
        # hostile maps (many or long keys) can neither fill the cache nor pin memory.
        if ok and len(_KEY_ORDER_OK) < 1024 and len(keys) <= 16 and sum(map(len, keys)) <= 256:
            _KEY_ORDER_OK[keys] = ok
    if not ok:
        raise ValueError(f"map keys must be text in deterministic order, got {list(keys)!r}")
    return value


def decode(data: bytes, *, path: str = "", max_size: int, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Decode one deterministic CBOR item that fills ``data`` exactly."""
    if type(data) is not bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidObject(path, f"expected bytes, got {type(data).__name__}", "type")
        data = bytes(data)
    if len(data) > max_size:
        raise InvalidObject(path, f"{len(data)} bytes exceeds the limit of {max_size}", "size")
    if not data:
        raise InvalidObject(path, "empty input", "encoding")
    try:
        value = _loads(
            data,
            semantic_decoders=_REJECT_EVERY_TAG,
            object_hook=_check_map,
            max_depth=max_depth,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
            str_errors="strict",
        )
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError, OverflowError) as exc:
        raise InvalidObject(path, f"not valid deterministic CBOR: {_reason(exc)}", "encoding") from None
    # Key order is already checked, so a plain (insertion-order) re-encode is the
    # canonical one; it is also ~40% cheaper than cbor2's canonical mode.
    try:
        again = _dumps(value)
    except (cbor2.CBOREncodeError, ValueError, TypeError) as exc:
        raise InvalidObject(path, f"not valid deterministic CBOR: {_reason(exc)}", "encoding") from None
    if again == data:
        return value
    if cbor2.dumps(value, canonical=True) != data:
        # (The second comparison only runs on this failure path: cbor2's plain mode writes
        # floats as doubles, its canonical mode in shortest form; a canonical float gets
        # through here and the schema, which has no float fields, names the field.)
        if len(again) < len(data) and data.startswith(again):
            reason = f"{len(data) - len(again)} trailing bytes after the CBOR item"
        else:
            reason = "not the deterministic encoding (non-shortest integer or length)"
        raise InvalidObject(path, reason, "encoding")
    return value


def _reason(exc: BaseException) -> str:
    # cbor2 chains the real cause (e.g. our tag refusal) behind a generic message.
    cause = exc.__cause__ or exc.__context__
    text = str(exc)
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return text or type(exc).__name__

"""The serialised state of the settlement machine: :func:`encode` and :func:`restore` (to_bytes / from_bytes).

Deterministic CBOR ``{"v": 1, "me": key, "offers": [...], "exchanges":
[...], "settled": [...]}``, records in id order, objects as their signed
bytes. Equal states give equal bytes, so the node can compare states by
their bytes and tests can check that a restored state is the one written.
Restoring trusts nothing: every object goes through the trust boundary
again, and bytes that are not the canonical encoding of what they decode to
are refused.
"""

from __future__ import annotations

from typing import Any

from .. import boundary, cbor
from ..errors import InvalidObject
from ..objects import KIND_EXCHANGE, KIND_NOTICE, KIND_OFFER, Item
from .state import Records, _ExchangeRecord, _OfferRecord
from .vocabulary import ExchangeState, OfferState

STATE_VERSION = 1


def encode(records: Records, me: bytes) -> bytes:
    """The records of the machine of ``me`` as deterministic CBOR: equal states give equal bytes. Raises nothing."""
    offers = []
    for r in records.sorted_offers():
        o: dict[str, Any] = {"offer": r.offer.raw, "state": str(r.state)}
        if r.exchange is not None:
            o["exchange"] = r.exchange
        if r.answer is not None:
            o["answer"] = r.answer
        if r.notice is not None:
            o["notice"] = r.notice.raw
        offers.append(o)
    exchanges = []
    for x in records.sorted_exchanges():
        d: dict[str, Any] = {"exchange": x.x.raw, "state": str(x.state), "appended": x.appended}
        d["released"] = x.released
        if x.notice is not None:
            d["notice"] = x.notice.raw
        exchanges.append(d)
    settled = [
        [xid, horizon, [[lid, [i.to_cbor() for i in items]] for lid, items in given]]
        for xid, (horizon, given) in sorted(records.settled.items())
    ]
    state = {"v": STATE_VERSION, "me": me, "offers": offers, "exchanges": exchanges, "settled": settled}
    return cbor.encode(state)


def restore(records: Records, me: bytes, data: bytes) -> None:
    """Fill the empty ``records`` from ``data``, a state written by :func:`encode` for ``me``.

    Every field is checked for its exact type and range before it is used (the bytes are a file
    that may be damaged, or written by someone else), so nothing of another type can reach a record.
    Raises InvalidObject: path ``settlement`` when ``data`` is not CBOR (from :func:`.cbor.decode`)
    or is not the canonical encoding of the state it holds; a path under ``settlement`` (code
    ``state``) naming the field that is missing, unknown or mistyped, or an unknown state;
    ``settlement.v`` for an unknown state version; ``settlement.me`` for another identity's state;
    and the boundary's own error (its path names the object) for an object that no longer verifies.
    """
    value = cbor.decode(data, path="settlement", max_size=max(len(data), 1))
    state = _map(value, "settlement", ("v", "me", "offers", "exchanges", "settled"))
    if state["v"] != STATE_VERSION:
        raise InvalidObject("settlement.v", f"unknown state version {state['v']!r}", "version")
    if state["me"] != me:
        raise InvalidObject("settlement.me", "this state belongs to another identity", "identity")
    for i, r in enumerate(_list(state["offers"], "settlement.offers")):
        path = f"settlement.offers[{i}]"
        r = _map(r, path, ("offer", "state"), ("exchange", "answer", "notice"))
        offer = boundary.decode(_blob(r["offer"], f"{path}.offer"), kind=KIND_OFFER)
        notice = boundary.decode(_blob(r["notice"], f"{path}.notice"), kind=KIND_NOTICE) if "notice" in r else None
        records.offers[offer.id] = _OfferRecord(
            offer,
            _enum(OfferState, r["state"], f"{path}.state"),
            _id(r["exchange"], f"{path}.exchange") if "exchange" in r else None,
            _id(r["answer"], f"{path}.answer") if "answer" in r else None,
            notice,
        )
    for i, r in enumerate(_list(state["exchanges"], "settlement.exchanges")):
        path = f"settlement.exchanges[{i}]"
        r = _map(r, path, ("exchange", "state", "appended", "released"), ("notice",))
        x = boundary.decode(_blob(r["exchange"], f"{path}.exchange"), kind=KIND_EXCHANGE)
        notice = boundary.decode(_blob(r["notice"], f"{path}.notice"), kind=KIND_NOTICE) if "notice" in r else None
        records.exchanges[x.id] = _ExchangeRecord(
            x,
            _enum(ExchangeState, r["state"], f"{path}.state"),
            _bool(r["appended"], f"{path}.appended"),
            _bool(r["released"], f"{path}.released"),
            notice,
        )
    for i, r in enumerate(_list(state["settled"], "settlement.settled")):
        path = f"settlement.settled[{i}]"
        xid, horizon, given = _list(r, path, 3)
        records.settled[_id(xid, f"{path}[0]")] = (
            _int(horizon, f"{path}[1]", 0, 2 * boundary.MAX_TIME),
            tuple(_given(g, f"{path}[2][{j}]") for j, g in enumerate(_list(given, f"{path}[2]"))),
        )
    if encode(records, me) != data:
        raise InvalidObject("settlement", "not the canonical encoding of a settlement state", "encoding")


# --------------------------------------------------------------------------- field checks of restore


def _damaged(path: str, reason: str) -> InvalidObject:
    return InvalidObject(path, f"damaged settlement state: {reason}", "state")


def _map(value: Any, path: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    if type(value) is not dict:
        raise _damaged(path, f"expected a map, got {type(value).__name__}")
    for key in required:
        if key not in value:
            raise _damaged(f"{path}.{key}", "missing")
    for key in value:
        if key not in required and key not in optional:
            raise _damaged(f"{path}.{key!s:.40}", "unknown field")
    return value


def _list(value: Any, path: str, length: int | None = None) -> list[Any]:
    if type(value) is not list:
        raise _damaged(path, f"expected an array, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise _damaged(path, f"expected {length} elements, got {len(value)}")
    return value


def _blob(value: Any, path: str) -> bytes:
    if type(value) is not bytes:
        raise _damaged(path, f"expected a byte string, got {type(value).__name__}")
    return value


def _id(value: Any, path: str) -> bytes:
    if type(value) is not bytes or len(value) != boundary.ID_SIZE:
        raise _damaged(path, f"expected a {boundary.ID_SIZE}-byte id")
    return value


def _int(value: Any, path: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:  # not bool, not float
        raise _damaged(path, f"expected an integer from {low} to {high}")
    return value


def _bool(value: Any, path: str) -> bool:
    if type(value) is not bool:
        raise _damaged(path, f"expected true or false, got {type(value).__name__}")
    return value


def _enum(kind: type[OfferState] | type[ExchangeState], value: Any, path: str) -> Any:
    if type(value) is not str or value not in kind._value2member_map_:
        raise _damaged(path, f"unknown {kind.__name__} {value!r:.40}")
    return kind(value)


def _given(value: Any, path: str) -> tuple[bytes, tuple[Item, ...]]:
    lid, items = _list(value, path, 2)
    out = []
    for k, raw in enumerate(_list(items, f"{path}[1]")):
        where = f"{path}[1][{k}]"
        f = _map(raw, where, ("item", "qty", "unit"))
        if type(f["item"]) is not str or type(f["unit"]) is not str:
            raise _damaged(where, "item and unit must be text")
        out.append(Item(f["item"], _int(f["qty"], f"{where}.qty", 1, boundary.MAX_QTY), f["unit"]))
    return _id(lid, f"{path}[0]"), tuple(out)

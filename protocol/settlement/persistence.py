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

    Raises InvalidObject: with path ``settlement`` when ``data`` is not CBOR (from :func:`.cbor.decode`), is
    damaged (a missing or mistyped field, an unknown state) or is not the canonical encoding of the state it
    holds; ``settlement.v`` for an unknown state version; ``settlement.me`` for another identity's state; and
    the boundary's own error (its path names the object) for an object that no longer verifies.
    """
    value = cbor.decode(data, path="settlement", max_size=max(len(data), 1))
    try:
        if value["v"] != STATE_VERSION:
            raise InvalidObject("settlement.v", f"unknown state version {value['v']!r}", "version")
        if value["me"] != me:
            raise InvalidObject("settlement.me", "this state belongs to another identity", "identity")
        for r in value["offers"]:
            offer = boundary.decode(r["offer"], kind=KIND_OFFER)
            notice = boundary.decode(r["notice"], kind=KIND_NOTICE) if "notice" in r else None
            records.offers[offer.id] = _OfferRecord(
                offer, OfferState(r["state"]), r.get("exchange"), r.get("answer"), notice
            )
        for r in value["exchanges"]:
            x = boundary.decode(r["exchange"], kind=KIND_EXCHANGE)
            notice = boundary.decode(r["notice"], kind=KIND_NOTICE) if "notice" in r else None
            state = ExchangeState(r["state"])
            records.exchanges[x.id] = _ExchangeRecord(x, state, r["appended"] is True, r["released"] is True, notice)
        for xid, horizon, given in value["settled"]:
            records.settled[xid] = (
                horizon,
                tuple((lid, tuple(Item(i["item"], i["qty"], i["unit"]) for i in items)) for lid, items in given),
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidObject("settlement", f"damaged settlement state: {exc!r}", "state") from exc
    if encode(records, me) != data:
        raise InvalidObject("settlement", "not the canonical encoding of a settlement state", "encoding")

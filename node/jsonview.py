"""Stable JSON renderings of swapmeet objects, for the local API and the CLI's ``--json``.

These shapes are an interface: scripts parse them. Add fields when needed,
never rename or drop one. Conventions: ids, series and other hashes are
lowercase hex; authors and parties are PeerIDs (``12D3KooW...``, see
:func:`swapmeet.protocol.identity.peer_id`); times are integer Unix seconds;
absent optional fields are ``null``, never missing. Every rendering carries
``"kind"`` so a mixed list (``GET /v1/objects/...``) can be told apart.

item::

    {"item": str, "qty": int, "unit": str}          # unit "pc" = pieces

listing::

    {"kind": "listing", "id": hex, "author": PeerID, "title": str,
     "type": "goods"|"service"|"rental"|"loan"|"task",
     "have": [item], "want": [item], "desc": str, "tags": [str], "category": str,
     "created": int, "expires": int, "series": hex, "rev": int,
     "window": [start, end] | null, "due": int | null, "loc": geohash | null}

withdrawal::

    {"kind": "withdrawal", "id": hex, "author": PeerID, "series": hex, "created": int}

offer::

    {"kind": "offer", "id": hex, "author": PeerID, "listing": hex (the listing's id),
     "maker": PeerID, "taker": PeerID, "give": [item], "take": [item],
     "counters": hex | null, "note": str, "created": int, "expires": int}

Other kinds (exchange, entry, rating, receipt) render as ``{"kind", "id"}``
plus a few fields for now; the settlement issue extends them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from swapmeet.protocol.identity import peer_id
from swapmeet.protocol.objects import (
    Exchange,
    Item,
    LedgerEntry,
    Listing,
    Offer,
    Rating,
    Receipt,
    SignedObject,
    Withdrawal,
)


def items(values: Iterable[Item]) -> list[dict[str, Any]]:
    return [{"item": i.item, "qty": i.qty, "unit": i.unit} for i in values]


def listing(x: Listing) -> dict[str, Any]:
    return {
        "kind": "listing",
        "id": x.id.hex(),
        "author": peer_id(x.author),
        "title": x.title,
        "type": x.type,
        "have": items(x.have),
        "want": items(x.want),
        "desc": x.desc,
        "tags": list(x.tags),
        "category": x.category,
        "created": x.created,
        "expires": x.expires,
        "series": x.series.hex(),
        "rev": x.rev,
        "window": list(x.window) if x.window is not None else None,
        "due": x.due,
        "loc": x.loc,
    }


def withdrawal(x: Withdrawal) -> dict[str, Any]:
    return {
        "kind": "withdrawal",
        "id": x.id.hex(),
        "author": peer_id(x.author),
        "series": x.series.hex(),
        "created": x.created,
    }


def offer(x: Offer) -> dict[str, Any]:
    return {
        "kind": "offer",
        "id": x.id.hex(),
        "author": peer_id(x.author),
        "listing": x.listing.id.hex(),
        "maker": peer_id(x.maker),
        "taker": peer_id(x.taker),
        "give": items(x.give),
        "take": items(x.take),
        "counters": x.counters.hex() if x.counters is not None else None,
        "note": x.note,
        "created": x.created,
        "expires": x.expires,
    }


def _exchange(x: Exchange) -> dict[str, Any]:
    return {
        "kind": "exchange",
        "id": x.id.hex(),
        "parties": [peer_id(p) for p in x.parties],
        "signed_by": [peer_id(p) for p in x.signed_by],
        "complete": x.complete,
        "created": x.created,
        "deadline": x.deadline,
    }


def _other(x: LedgerEntry | Rating | Receipt) -> dict[str, Any]:
    return {"kind": x.kind, "id": x.id.hex(), "author": peer_id(x.author)}


def render(obj: SignedObject) -> dict[str, Any]:
    """The JSON rendering of any object, by kind."""
    if isinstance(obj, Listing):
        return listing(obj)
    if isinstance(obj, Withdrawal):
        return withdrawal(obj)
    if isinstance(obj, Offer):
        return offer(obj)
    if isinstance(obj, Exchange):
        return _exchange(obj)
    return _other(obj)

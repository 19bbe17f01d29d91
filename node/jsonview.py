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

    (``swapmeet listings`` rows add ``"author_forked": bool``: this node holds a
    fork proof against the author.)

withdrawal::

    {"kind": "withdrawal", "id": hex, "author": PeerID, "series": hex, "created": int}

offer::

    {"kind": "offer", "id": hex, "author": PeerID, "listing": hex (the listing's id),
     "maker": PeerID, "taker": PeerID, "give": [item], "take": [item],
     "counters": hex | null, "note": str, "created": int, "expires": int}

offer row (``GET /v1/offers``, ``swapmeet offers --json``; an offer with this node's view of it)::

    offer + {"from": PeerID (its author), "to": PeerID (who has to answer it),
             "state": "open"|"accepted"|"declined"|"countered"|"cancelled"|"expired",
             "exchange": hex | null (the exchange that settles it, once accepted),
             "answer": hex | null (the counter-offer that answered it, once countered)}

exchange (any copy, as stored; ``legs`` name parties by PeerID, ``index`` is the leg's
position, which receipts refer to)::

    {"kind": "exchange", "id": hex, "parties": [PeerID],
     "legs": [{"index": int, "from": PeerID, "to": PeerID, "items": [item]}],
     "signed_by": [PeerID], "complete": bool, "created": int, "deadline": int,
     "offer": hex | null (the offer it settles), "listings": [hex]}

trade (``GET /v1/trades``, ``swapmeet trades --json``; an exchange this node is a party to)::

    exchange + {"state": "pending"|"complete"|"lapsed",
                "detail": "awaiting"|"signed"|"complete"|"lapsed"|"cancelled",
                "appended": bool (on this node's chain), "confirmed_legs": [int] (by this node's receipts),
                "rated": [PeerID] (parties this node rated), "forked": [PeerID] (parties with a fork proof),
                "notice": hex | null (the cancel notice that ended it)}

    ``state`` is coarse and stable for scripts: awaiting and signed are "pending"; lapsed and
    cancelled are "lapsed" (it will never complete). ``detail`` is the settlement machine's state:
    "awaiting" means waiting for this node's signature, "signed" for the other parties'.

notice::

    {"kind": "notice", "id": hex, "author": PeerID, "action": "decline"|"cancel",
     "about": hex (the offer or exchange), "about_kind": "offer"|"exchange", "note": str, "created": int}

rating::

    {"kind": "rating", "id": hex, "author": PeerID, "exchange": hex, "subject": PeerID,
     "score": 1..5, "comment": str, "created": int}

receipt::

    {"kind": "receipt", "id": hex, "author": PeerID, "exchange": hex, "legs": [int], "created": int}

entry (a ledger chain link)::

    {"kind": "entry", "id": hex, "author": PeerID, "seq": int, "prev": hex, "time": int,
     "payload": exchange | rating | receipt}
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any

from swapmeet.protocol.identity import peer_id
from swapmeet.protocol.objects import (
    Exchange,
    Item,
    LedgerEntry,
    Listing,
    Notice,
    Offer,
    Rating,
    Receipt,
    SignedObject,
    Withdrawal,
)

if TYPE_CHECKING:
    from swapmeet.protocol.settlement import OfferView

    from .api import Trade

# ExchangeState -> the coarse state scripts rely on
TRADE_STATES: dict[str, str] = {
    "awaiting": "pending",
    "signed": "pending",
    "complete": "complete",
    "lapsed": "lapsed",
    "cancelled": "lapsed",
}


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


def offer_row(view: OfferView) -> dict[str, Any]:
    """An offer with this node's view of it (state, settling exchange, answering counter-offer)."""
    x = view.offer
    return {
        **offer(x),
        "from": peer_id(x.author),
        "to": peer_id(x.recipient),
        "state": str(view.state),
        "exchange": view.exchange_id.hex() if view.exchange_id is not None else None,
        "answer": view.answer_id.hex() if view.answer_id is not None else None,
    }


def exchange(x: Exchange) -> dict[str, Any]:
    parties = [peer_id(p) for p in x.parties]
    return {
        "kind": "exchange",
        "id": x.id.hex(),
        "parties": parties,
        "legs": [
            {"index": i, "from": parties[leg.giver], "to": parties[leg.receiver], "items": items(leg.items)}
            for i, leg in enumerate(x.legs)
        ],
        "signed_by": [peer_id(p) for p in x.signed_by],
        "complete": x.complete,
        "created": x.created,
        "deadline": x.deadline,
        "offer": x.offer.id.hex() if x.offer is not None else None,
        "listings": [listing.id.hex() for listing in x.listings],
    }


def trade(t: Trade, forked: Collection[bytes] = ()) -> dict[str, Any]:
    """An exchange this node is a party to; ``forked``: authors this node holds a fork proof against."""
    view = t.view
    x = view.exchange
    detail = str(view.state)
    return {
        **exchange(x),
        "state": TRADE_STATES.get(detail, detail),
        "detail": detail,
        "appended": view.appended,
        "confirmed_legs": sorted(t.confirmed_legs),
        "rated": [peer_id(p) for p in t.rated],
        "forked": [peer_id(p) for p in x.parties if p in forked],
        "notice": view.notice.id.hex() if view.notice is not None else None,
    }


def notice(x: Notice) -> dict[str, Any]:
    return {
        "kind": "notice",
        "id": x.id.hex(),
        "author": peer_id(x.author),
        "action": x.action,
        "about": x.target_id.hex(),
        "about_kind": "offer" if x.offer is not None else "exchange",
        "note": x.note,
        "created": x.created,
    }


def rating(x: Rating) -> dict[str, Any]:
    return {
        "kind": "rating",
        "id": x.id.hex(),
        "author": peer_id(x.author),
        "exchange": x.exchange.id.hex(),
        "subject": peer_id(x.subject),
        "score": x.score,
        "comment": x.comment,
        "created": x.created,
    }


def receipt(x: Receipt) -> dict[str, Any]:
    return {
        "kind": "receipt",
        "id": x.id.hex(),
        "author": peer_id(x.author),
        "exchange": x.exchange_id.hex(),
        "legs": list(x.legs),
        "created": x.created,
    }


def entry(x: LedgerEntry) -> dict[str, Any]:
    return {
        "kind": "entry",
        "id": x.id.hex(),
        "author": peer_id(x.author),
        "seq": x.seq,
        "prev": x.prev.hex(),
        "time": x.time,
        "payload": render(x.payload),
    }


def render(obj: SignedObject) -> dict[str, Any]:
    """The JSON rendering of any object, by kind."""
    if isinstance(obj, Listing):
        return listing(obj)
    if isinstance(obj, Withdrawal):
        return withdrawal(obj)
    if isinstance(obj, Offer):
        return offer(obj)
    if isinstance(obj, Exchange):
        return exchange(obj)
    if isinstance(obj, Notice):
        return notice(obj)
    if isinstance(obj, Rating):
        return rating(obj)
    if isinstance(obj, Receipt):
        return receipt(obj)
    if isinstance(obj, LedgerEntry):
        return entry(obj)
    raise TypeError(f"no JSON rendering for {type(obj).__name__}")
